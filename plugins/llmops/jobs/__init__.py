"""Pod-job CLIs: ``python -m llmops.jobs.<name>``. They know nothing about Airflow."""
