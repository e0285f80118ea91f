"""The main container of every pod job: ``python -m llmops.jobs.<module>`` in the jobs image.

Values only known at run time (params, upstream XComs, connections) are Jinja templates inside
the pod job, rendered by Airflow before either launcher reads it.
"""

from __future__ import annotations

from llmops.config.settings import Settings
from llmops.core.podjob import Container, Resources

# Rendered at run time from the Airflow connection, never read at parse time.
MLFLOW_URI_TEMPLATE = "{{ conn.llmops_mlflow.host }}"


def jobs_container(settings: Settings, module: str, args: list[str], *, env: dict[str, str] | None = None,
                   resources: Resources | None = None, mlflow_tracking_uri: str = MLFLOW_URI_TEMPLATE) -> Container:
    """The main container of a pod job: ``python -m llmops.jobs.<module> <args>`` in the jobs image."""
    return Container(
        name="job",
        image=settings.jobs_image,
        command=("python", "-m", f"llmops.jobs.{module}"),
        args=tuple(args),
        env={"MLFLOW_TRACKING_URI": mlflow_tracking_uri, **(env or {})},
        resources=resources or Resources(cpu="1", memory="2Gi"),
    )
