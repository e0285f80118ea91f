"""Makes the project's own tiny chat models (nothing is downloaded from a model hub).

Run inside the vLLM environment (torch and transformers live there)::

    PYTHONPATH=plugins .venv-vllm/bin/python -m llmops.modelmaker --out .data/models

Modules: ``tasks`` (pure: synthetic chat tasks, eval set, scoring; no torch),
``evalset`` (CLI writing the held-out eval set), ``tokenizer`` (byte-level BPE
with fixed tokens and a ChatML template), ``train`` (training and HF greedy
evaluation), ``maker`` (variants, seeds, caching, atomic writes).

Importing this package must stay cheap: it imports nothing.
"""
