"""The project's I/O clients, one of each: S3 (:mod:`.s3`, the only client factory, and
:mod:`.s3_copy`), content integrity (:mod:`.integrity`), the MLflow registry and tracking
(:mod:`.registry`, :mod:`.tracking`) and the OpenAI-compatible client (:mod:`.openai_client`)."""
