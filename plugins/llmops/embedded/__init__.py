"""The embedded platform: real S3 endpoint, MLflow and Airflow on localhost, no Docker or Kubernetes."""
