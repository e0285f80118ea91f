"""A value a user types into a DAG's Params form reaches a pod as data: a ``$(VAR)`` in it is
never expanded (the kubelet and the local launcher expand ``$(VAR)`` in args), so a param
cannot pull a secret from the pod's env into its arguments, task log or result."""

from __future__ import annotations

import jinja2
import pytest

from llmops.config import settings as settings_mod
from llmops.core.podjob import expand_env_refs, literal, literal_template
from llmops.corpus import plan as corpus_plan
from llmops.drift import plan as drift_plan
from llmops.refresh import plan as refresh_plan
from llmops.serving.vllm_args import override_args

HOSTILE = "s3://drops/$(AWS_SECRET_ACCESS_KEY)/x$$y$(VLLM_PORT)"
POD_ENV = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "VLLM_PORT": "8000"}


def _render(template: str, **context: object) -> str:
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(**context)


def test_a_literal_survives_the_kubelets_expansion() -> None:
    assert expand_env_refs(literal(HOSTILE), POD_ENV) == HOSTILE
    assert expand_env_refs(HOSTILE, POD_ENV) != HOSTILE  # what happened before: the secret leaked
    rendered = _render(literal_template("params.drop_uri"), params={"drop_uri": HOSTILE})
    assert expand_env_refs(rendered, POD_ENV) == HOSTILE


def _user_args(jobs: list) -> list[str]:
    args = []
    for job in jobs:
        for container in (*job.init_containers, *job.sidecars, job.main):
            args += [a for a in (*container.args, *container.env.values()) if "params." in a or "xcom_pull" in a]
    return args


def test_every_templated_param_of_a_pod_job_is_rendered_as_a_literal() -> None:
    settings = settings_mod.load({})
    jobs = [refresh_plan.receive_job(settings), refresh_plan.stage_job(settings), drift_plan.hygiene_job(settings),
            corpus_plan.plan_job(settings, "main"), corpus_plan.validate_job(settings, "main"),
            corpus_plan.publish_job(settings, "main")]
    templated = _user_args(jobs)
    assert len(templated) >= 8  # the params these jobs take: drop_uri, model, classes, prefix, ...
    unescaped = [a for a in templated if "replace('$', '$$')" not in a]
    assert not unescaped, f"params reaching a pod without literal_template(): {unescaped}"


@pytest.mark.parametrize("extra", [["--seed", "$(AWS_SECRET_ACCESS_KEY)"],
                                   ["--seed=$(AWS_SECRET_ACCESS_KEY)"]])
def test_canary_and_benchmark_vllm_args_from_params_are_literals(extra: list[str]) -> None:
    args = override_args(("--port", "$(VLLM_PORT)"), extra)
    assert expand_env_refs(" ".join(args), POD_ENV) == "--port 8000 --seed $(AWS_SECRET_ACCESS_KEY)"
