"""The pod jobs of ``model_refresh``, planned inside Airflow tasks from run-time facts (the staged
version, the current champion): receive, stage, qualification per hardware class, the canary.

Heavy work (verifying, copying, serving, evaluating) runs in those pod jobs; the verdicts are
:mod:`llmops.refresh.qualify`'s and the actions :mod:`llmops.refresh.actions`'.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmops.config.settings import Settings
from llmops.core.hardware import HardwareClass, config_path, hardware_pin_problem, load_hardware_class
from llmops.core.job_container import jobs_container
from llmops.core.podjob import PodJob, Resources, literal_template
from llmops.evals.eval_job import evaluation_pod_job
from llmops.io import registry
from llmops.serving.weights import (
    S3_ENDPOINT_TEMPLATE,
    champion_target,
    fetch_container,
    model_dir,
    target_hardware_pins,
    with_s3_secrets,
)

EXPERIMENT = "llmops-refresh"


class PinMismatch(RuntimeError):
    """A version would serve on something other than what it was qualified on; the message names the fix."""


def receive_job(settings: Settings) -> PodJob:
    """Verify the drop named by ``params.drop_uri`` (quarantine it when anything is wrong); on a pass,
    write its receipt in the models bucket, without which stage stages nothing."""
    args = ["--drop-uri", literal_template("params.drop_uri"), "--experiment", EXPERIMENT,
            "--models-bucket", "{{ var.value.llmops_bucket_models }}", *_airflow_attempt_args()]
    return PodJob(name="receive", main=with_s3_secrets(jobs_container(
        settings, "receive", args,
        # The runtime allowlist receive checks the drop's pin against: the jobs image holds the
        # project at the same path as the Airflow image, so the worker's path is the pod's.
        env={"AWS_ENDPOINT_URL": S3_ENDPOINT_TEMPLATE, "LLMOPS_RUNTIMES_FILE": str(settings.runtimes_file)},
        resources=Resources(cpu="2", memory="2Gi"),
    )), timeout_s=3600)


def stage_job(settings: Settings) -> PodJob:
    """Stage the received drop content-addressed (refused unless it matches receive's receipt), pin it,
    register it as ``challenger``."""
    args = ["--drop-uri", literal_template("params.drop_uri"), "--registered-model", literal_template("params.model"),
            "--hardware-classes", literal_template("params.hardware_classes | join(',')"),
            "--models-bucket", "{{ var.value.llmops_bucket_models }}",
            # Stage refuses unless these (what this run's receive verified) are the receipt's and the
            # drop's ETags now; S3 refuses to copy an object that changed after receive verified it.
            "--source-etags", literal_template("ti.xcom_pull(task_ids='receive')['etags'] | tojson"),
            "--experiment", EXPERIMENT, *_airflow_attempt_args()]
    # The vLLM version the runtime was qualified with, from the allowlist entry receive matched.
    args += ["--runtime-version", literal_template("ti.xcom_pull(task_ids='receive')['runtime']['vllm_version']")]
    return PodJob(name="stage", main=with_s3_secrets(jobs_container(
        settings, "stage", args,
        env={"AWS_ENDPOINT_URL": S3_ENDPOINT_TEMPLATE}, resources=Resources(cpu="2", memory="2Gi"),
    )), timeout_s=3600)


def _airflow_attempt_args() -> list[str]:
    """The Airflow run and try of a receive/stage pod: its MLflow run is tagged with them (and resumed on a retry)."""
    return ["--airflow-run-id", literal_template("run_id"), "--airflow-try", literal_template("ti.try_number")]


def plan_qualification(settings: Settings, hw_name: str, *, selected: list[str], model: str,
                       stage_result: dict[str, Any], evalset_config: str) -> list[dict[str, Any]]:
    """Pod jobs qualifying the staged candidate (and the champion, for a paired comparison) on ``hw_name``.

    Returns [] when the class is not among the run's target classes.
    """
    from airflow.sdk import BaseHook

    if hw_name not in selected:
        return []
    tracking_uri = BaseHook.get_connection("llmops_mlflow").host
    s3_endpoint = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
    reg = registry.ModelRegistry(tracking_uri)
    targets = [candidate_target(stage_result)]
    champion = champion_target(reg, model)
    if champion is not None and champion["version"] != targets[0]["version"]:
        targets.append(champion)
    hw = load_hardware_class(hw_name, settings.hardware_configs_dir)
    return qualification_jobs(settings, hw, model=model, targets=targets, evalset_config=evalset_config,
                              s3_endpoint=s3_endpoint, tracking_uri=tracking_uri)


def candidate_target(stage_result: dict[str, Any]) -> dict[str, str]:
    """The staged candidate as a serving target: its weights and the runtime its manifest pins."""
    target = {"role": "candidate", "version": str(stage_result["model_version"]),
              "weights_uri": stage_result["weights_uri"], "weight_digest": stage_result["weight_digest"],
              "runtime_image": stage_result["runtime_image"],
              "runtime_version": str(stage_result.get("runtime_version") or "")}
    target.update({f"hardware_config.{name}": digest
                   for name, digest in sorted((stage_result.get("hardware_configs") or {}).items())})
    return target


def qualification_jobs(settings: Settings, hw: HardwareClass, *, model: str, targets: list[dict[str, str]],
                       evalset_config: str, s3_endpoint: str | None, tracking_uri: str,
                       latency_requests: int = 32) -> list[dict[str, Any]]:
    """One serving + eval pod job per target (``role``, ``version``, ``weights_uri``, ``weight_digest``,
    ``runtime_image``).

    The serving pod's init container fetches the staged weights into the model cache and
    verifies their digest: vLLM never starts on weights that do not match the pin. Each target
    is served by the runtime it is pinned to (candidate: its drop's; champion: its own pin).
    """
    jobs = []
    for target in targets:
        dest = model_dir(model, target["weight_digest"])
        fetch = fetch_container(settings, target, model, s3_endpoint)
        job = evaluation_pod_job(
            settings, hw, name=f"qualify-{target['role']}-{hw.name}", model_path=dest,
            served_model_name=f"{model}-v{target['version']}", evalset=evalset_config, experiment=EXPERIMENT,
            vllm_image=target["runtime_image"], runtime_version=target.get("runtime_version", ""),
            tags={"model": model, "model_version": target["version"], "role": target["role"],
                  "llmops.stage": "qualify",
                  "pinned_hardware_config_hash": target.get(f"hardware_config.{hw.name}", "none")},
            latency_requests=latency_requests, mlflow_tracking_uri=tracking_uri,
        )
        jobs.append(replace(job, init_containers=(fetch,)).to_dict())
    return jobs


def plan_canary(settings: Settings, *, model: str, stage_result: dict[str, Any], verdict: dict[str, Any],
                spec: dict[str, Any], stop_before_last_step: bool = False, from_step: int = 0,
                failures_so_far: int = 0, canary_extra_args: list[str] | None = None,
                name: str = "canary") -> list[dict[str, Any]]:
    """The canary pod job (stable = champion, canary = candidate), or [] when there is no champion.

    Runs on the default hardware class: traffic is split by a real proxy in front of two vLLM
    servers, and the controller rolls back to 0% on a breach.
    """
    from airflow.sdk import BaseHook

    from llmops.canary.plan import canary_pod_job

    if verdict.get("champion_version") is None:
        return []
    tracking_uri = BaseHook.get_connection("llmops_mlflow").host
    s3_endpoint = BaseHook.get_connection("llmops_s3").extra_dejson.get("endpoint_url")
    reg = registry.ModelRegistry(tracking_uri)
    champion = champion_target(reg, model)
    if champion is None:
        return []
    candidate = candidate_target(stage_result)
    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    for target in (champion, candidate):
        problem = hardware_pin_problem(target_hardware_pins(target), hw,
                                       config_path(hw.name, settings.hardware_configs_dir))
        if problem:
            raise PinMismatch(f"canary of {model}: {target['role']} version {target['version']}: {problem}")
    tags = {"model": model, "model_version": candidate["version"], "champion_version": champion["version"],
            "llmops.stage": "canary"}
    if settings.canary_router == "gateway":
        return [_gateway_canary_job(settings, hw, model=model, candidate=candidate, champion=champion, spec=spec,
                                    tags=tags, from_step=from_step, failures_so_far=failures_so_far,
                                    stop_before_last_step=stop_before_last_step, tracking_uri=tracking_uri,
                                    name=name, canary_extra_args=canary_extra_args)]
    job = canary_pod_job(
        settings, hw, stable_model_path=model_dir(model, champion["weight_digest"]),
        canary_model_path=model_dir(model, candidate["weight_digest"]), served_model_name=model, spec=spec,
        stable_image=champion["runtime_image"], canary_image=candidate["runtime_image"],
        experiment=EXPERIMENT, model_stable=f"{model}@{champion['version']}",
        model_canary=f"{model}@{candidate['version']}",
        tags=tags, canary_extra_args=canary_extra_args or (), from_step=from_step, failures_so_far=failures_so_far,
        stop_before_last_step=stop_before_last_step, mlflow_tracking_uri=tracking_uri, name=name,
        exit_zero_on_rollback=True,  # a rollback is a verdict: check_canary fails the run without a retry
    )
    inits = (fetch_container(settings, champion, model, s3_endpoint, name="fetch-stable"),
             fetch_container(settings, candidate, model, s3_endpoint, name="fetch-canary"))
    return [replace(job, init_containers=inits).to_dict()]


def _gateway_canary_job(settings: Settings, hw: HardwareClass, *, model: str, candidate: dict[str, Any],
                        champion: dict[str, str], spec: dict[str, Any], tags: dict[str, str], from_step: int,
                        failures_so_far: int, stop_before_last_step: bool, tracking_uri: str, name: str,
                        canary_extra_args: list[str] | None) -> dict[str, Any]:
    """Gateway mode: apply ``<model>-canary`` rendered from the candidate's pinned manifest (its runtime,
    the class's flags plus ``canary_extra_args``, refused on the same allowlist as the embedded canary
    pod's), with the route at 0% to it first; then the controller-only job. A resumed run (after an
    approval) finds the canary already applied."""
    from llmops.canary.plan import canary_controller_job
    from llmops.io import s3 as s3io
    from llmops.serving.deployments import ServingRoute, serve_candidate
    from llmops.serving.objects import read_deployment_manifest

    route = ServingRoute.for_model(settings, model)
    if from_step == 0:
        manifest = read_deployment_manifest(s3io.client_from_connection(), candidate["weights_uri"])
        serve_candidate(settings, model, manifest=manifest, hw=hw, extra_vllm_args=canary_extra_args or ())
    job = canary_controller_job(
        settings, hw, route_args=route.controller_args(), served_model_name=model, spec=spec, name=name,
        experiment=EXPERIMENT, model_stable=f"{model}@{champion['version']}",
        model_canary=f"{model}@{candidate['version']}", tags=tags, from_step=from_step,
        failures_so_far=failures_so_far, stop_before_last_step=stop_before_last_step, exit_zero_on_rollback=True,
        mlflow_tracking_uri=tracking_uri)
    return job.to_dict()


def canary_spec(settings: Settings, *, weights: list[int], window_s: int, failure_limit: int) -> dict[str, Any]:
    """The canary spec of a run (validated): its steps, and thresholds suited to the serving class.

    The TTFT ratio allowed between canary and stable follows the class's measured noise
    (``slo.max_regression``), never tighter than 1.2x.
    """
    from llmops.canary.analysis import CanarySpec

    hw = load_hardware_class(settings.default_hardware_class, settings.hardware_configs_dir)
    spec = CanarySpec.from_dict({
        "steps": [{"weight": int(w), "window_s": float(window_s)} for w in weights],
        "failure_limit": int(failure_limit),
        # No relative latency check on a noisy class: TTFT then only fails when 10x worse.
        "max_ttft_p95_ratio": max(1.2, 1.0 + hw.slo.max_regression) if hw.slo.max_regression is not None else 10.0,
        # Windows on the embedded default are short: ask for fewer requests per decision.
        "min_requests": 10 if window_s < 60 else 50,
    })
    return spec.to_dict()
