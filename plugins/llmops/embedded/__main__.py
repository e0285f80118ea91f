"""Command line of the embedded platform: ``python -m llmops.embedded <command>``.

* ``up``      start the S3 endpoint, MLflow and Airflow (idempotent), restore saved S3 data
* ``run``     run the platform smoke job on it and print where to see the results
* ``refresh-demo``  three weight drops through the sensor-triggered refresh pipeline
* ``down``    save S3 data and stop every service
* ``status``  what runs and where it listens
* ``env``     shell ``export`` lines to use the platform from another terminal
* ``serve``   ``up``, then wait for Ctrl-C, then ``down``
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time

from llmops.config import settings as settings_mod
from llmops.embedded import s3state
from llmops.embedded.airflow_api import AirflowApi, AirflowApiError
from llmops.embedded.platform import EmbeddedPlatform, Endpoints
from llmops.embedded.services import ServiceError
from llmops.io import s3 as s3io

MAIN_DAG_ID = "platform_smoke"


def build_platform() -> EmbeddedPlatform:
    """The platform for this checkout, configured from the environment."""
    return EmbeddedPlatform(data_dir=settings_mod.load().data_dir, endpoints=Endpoints.from_env())


def up(platform: EmbeddedPlatform, with_airflow: bool = True) -> None:
    """Start the services in order; restore the S3 data a previous ``down`` saved."""
    platform.write_local_secrets()
    settings_mod.export(platform.s3_env())
    s3_service, *others = platform.services(with_airflow=with_airflow)
    started = s3_service.start()
    s3 = s3io.client(endpoint_url=platform.endpoints.s3_url)
    if started:
        restored = s3state.restore(s3, platform.data_dir / "s3")
        print(f"s3: started on {platform.endpoints.s3_url}, restored {restored} objects")
    created = s3state.ensure_buckets(s3, platform.settings_file.buckets())
    if created:
        print(f"s3: created buckets {', '.join(created)}")
    for service in others:
        print(f"{service.name}: starting ...", flush=True)
        began = time.monotonic()
        fresh = service.start()
        print(f"{service.name}: {'started' if fresh else 'already running'} on port {service.port}"
              f" ({time.monotonic() - began:.0f}s)")
    if with_airflow:
        api = _api(platform)
        for pool in platform.settings_file.pools:
            api.upsert_pool(pool.name, pool.slots, pool.description)
    _print_endpoints(platform)


def down(platform: EmbeddedPlatform) -> None:
    """Save the S3 data, then stop Airflow, MLflow and the S3 endpoint."""
    services = platform.services()
    s3_service = services[0]
    if s3_service.pid() is not None and s3_service.healthy():
        settings_mod.export(platform.s3_env())
        saved = s3state.save(s3io.client(endpoint_url=platform.endpoints.s3_url), platform.data_dir / "s3")
        print(f"s3: saved {saved} objects to {platform.data_dir / 's3'}")
    for service in reversed(services):
        print(f"{service.name}: {'stopped' if service.stop() else 'not running'}")


def run_main_job(platform: EmbeddedPlatform, conf: dict[str, object] | None = None) -> int:
    """Trigger the main DAG through the REST API, follow it, print where to look."""
    api = _api(platform)
    api.wait_for_dag(MAIN_DAG_ID)
    api.unpause(MAIN_DAG_ID)
    run_id = api.trigger(MAIN_DAG_ID, conf)
    print(f"triggered {MAIN_DAG_ID} run {run_id}; following it (the first vLLM start takes ~30-60 s) ...",
          flush=True)
    state = api.wait_for_run(MAIN_DAG_ID, run_id)
    for ti in api.task_instances(MAIN_DAG_ID, run_id):
        print(f"  task {ti['task_id']:<24} {ti['state']}")
    airflow = platform.endpoints.airflow_url
    print(f"\nrun {state}: {airflow}/dags/{MAIN_DAG_ID}/runs/{run_id}")
    if state == "success":
        result = api.xcom(MAIN_DAG_ID, run_id, "serve_and_evaluate")
        if isinstance(result, dict):
            print("eval scores:", {c: round(s["mean"], 3) for c, s in result.get("scores", {}).items()})
            print(f"MLflow run:  {platform.endpoints.mlflow_url}/#/experiments/"
                  f"{result.get('mlflow_experiment_id', '')}/runs/{result.get('mlflow_run_id')}")
    print(f"Airflow login: admin / {platform.admin_password()}")
    return 0 if state == "success" else 1


def _api(platform: EmbeddedPlatform) -> AirflowApi:
    password = platform.admin_password()
    if password is None:
        raise ServiceError("Airflow has not generated its admin password yet: is it running? (`status`)")
    return AirflowApi(platform.endpoints.airflow_url, "admin", password)


def _print_endpoints(platform: EmbeddedPlatform) -> None:
    for name, where in platform.describe().items():
        print(f"  {name:<20} {where}")
    password = platform.admin_password()
    if password:
        print(f"  {'Airflow login':<20} admin / {password}")


def status(platform: EmbeddedPlatform) -> int:
    """Print each service's state; exit 0 only when all are healthy."""
    healthy = True
    for service in platform.services():
        pid = service.pid()
        ok = pid is not None and service.healthy()
        healthy &= ok
        print(f"{service.name:<8} {'up' if ok else 'down':<5} port {service.port:<6} pid {pid or '-'}"
              f"  log {service.log_file}")
    _print_endpoints(platform)
    return 0 if healthy else 1


def print_env(platform: EmbeddedPlatform) -> None:
    """``export`` lines so another shell (or the Airflow CLI) talks to this platform."""
    for key, value in sorted(platform.airflow_env().items()):
        print(f"export {key}={shlex.quote(value)}")


def serve(platform: EmbeddedPlatform) -> None:
    """Run in the foreground until Ctrl-C, then stop everything cleanly."""
    up(platform)
    print("platform up; Ctrl-C stops it")
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop:
        time.sleep(0.5)
    down(platform)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m llmops.embedded", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "run", "refresh-demo", "down", "status", "env", "serve"])
    parser.add_argument("--no-airflow", action="store_true", help="up: only the S3 endpoint and MLflow")
    args = parser.parse_args(argv)
    platform = build_platform()
    try:
        if args.command == "up":
            up(platform, with_airflow=not args.no_airflow)
        elif args.command == "run":
            return run_main_job(platform)
        elif args.command == "refresh-demo":
            from llmops.embedded import scenario

            images = platform.local_images()
            return scenario.run(platform, _api(platform), images["LLMOPS_VLLM_IMAGE"],
                                settings_mod.load().models_dir / "tiny-chat")
        elif args.command == "down":
            down(platform)
        elif args.command == "status":
            return status(platform)
        elif args.command == "env":
            print_env(platform)
        elif args.command == "serve":
            serve(platform)
    except (ServiceError, AirflowApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


