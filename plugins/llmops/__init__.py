"""LLM lifecycle pipelines: the library behind the DAGs.

Importing this package must stay cheap: DAG files import it at parse time, and
pod jobs import it inside the vLLM image, where Airflow is not installed. Heavy
modules (mlflow, boto3, pandas, great_expectations, torch) are imported inside
the functions that need them.
"""
