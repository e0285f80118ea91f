"""The ``challenger`` alias against a real MLflow server (SQLite store, S3 artifacts on the local
endpoint): a version rejected at the qualify gate or rolled back by its canary stops being the
registry's challenger; an alias that already moved to a newer version is left alone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
EVALSET = ROOT / "include" / "evalsets" / "synthetic_chat_v1.yaml"


def _register(reg: Any, model: str, tag: str) -> str:
    digest = (tag * 64)[:64]
    version, created = reg.register(model, f"s3://llmops-models/models/{model}/sha256-{digest}/",
                                    {"weight_digest": digest, "tokenizer_hash": "tok", "chat_template_hash": "tpl"})
    assert created
    return version.version


@pytest.fixture
def reg(platform):
    from llmops.io.registry import ModelRegistry

    return ModelRegistry(platform.endpoints.mlflow_url)


def test_reject_drops_the_challenger_alias_the_version_holds(reg) -> None:
    from llmops.io.registry import CHALLENGER, STATUS_TAG

    model = f"aliases-{uuid.uuid4().hex[:8]}"
    version = _register(reg, model, "a")
    reg.set_alias(model, CHALLENGER, version)

    outcome = reg.reject(model, version, {"llmops.gate_reasons": "[cpu] category 'reverse' dropped"})
    assert outcome == {"version": version, "status": "rejected", "challenger_removed": True}
    assert reg.by_alias(model, CHALLENGER) is None
    rejected = reg.get(model, version)
    assert rejected.aliases == ()
    assert rejected.tags[STATUS_TAG] == "rejected"
    assert rejected.tags["llmops.gate_reasons"] == "[cpu] category 'reverse' dropped"
    # A retried task rejects again without error and without touching anything else.
    assert reg.reject(model, version, {})["challenger_removed"] is False
    assert reg.get(model, version).tags["llmops.gate_reasons"] == "[cpu] category 'reverse' dropped"


def test_reject_leaves_a_challenger_that_moved_to_a_newer_version(reg) -> None:
    from llmops.io.registry import CHALLENGER, CHAMPION, STATUS_TAG

    model = f"aliases-{uuid.uuid4().hex[:8]}"
    champion, old, new = (_register(reg, model, tag) for tag in "abc")
    reg.set_alias(model, CHAMPION, champion)
    reg.set_alias(model, CHALLENGER, new)  # a newer drop was staged while the old one was judged

    assert reg.reject(model, old, {"llmops.canary_reasons": "error_rate"})["challenger_removed"] is False
    assert reg.by_alias(model, CHALLENGER).version == new
    assert reg.by_alias(model, CHAMPION).version == champion
    assert reg.get(model, old).tags[STATUS_TAG] == "rejected"


def test_promote_still_moves_the_challenger_off_the_new_champion(reg) -> None:
    from llmops.io.registry import CHALLENGER, CHAMPION, PREVIOUS

    model = f"aliases-{uuid.uuid4().hex[:8]}"
    first, second = _register(reg, model, "a"), _register(reg, model, "b")
    reg.set_alias(model, CHAMPION, first)
    reg.set_alias(model, CHALLENGER, second)
    assert reg.promote(model, second)["changed"] is True
    assert reg.by_alias(model, CHALLENGER) is None
    assert (reg.by_alias(model, CHAMPION).version, reg.by_alias(model, PREVIOUS).version) == (second, first)


# -- the qualify gate and the canary check, through the registry and real eval-run artifacts -------------------


def _eval_run(experiment_id: str, tmp_path: Path, model: str, version: str, role: str, broken: str | None) -> str:
    """A qualify eval run as the eval pod logs it: per-item rows in ``eval/eval_results.json``."""
    import mlflow

    from llmops.evals.evalset import load_evalset

    rows = [{"id": item.id, "category": item.category, "reference": item.reference, "prediction": "",
             "score": 0.0 if item.category == broken else 1.0, "latency_s": 0.01, "error": None}
            for item in load_evalset(EVALSET).items]
    folder = tmp_path / f"{version}-{role}"
    folder.mkdir(exist_ok=True)
    (folder / "eval_results.json").write_text(json.dumps(rows))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"llmops.stage": "qualify", "model": model, "model_version": version, "role": role})
        mlflow.log_artifact(str(folder / "eval_results.json"), artifact_path="eval")
    return run.info.run_id


def _latency(rounds: int, tpot: list[float]) -> dict[str, Any]:
    """The eval job's ``latency`` result: one measurement, or one entry per round (``--latency-rounds``)."""
    if rounds == 1:
        return {"requests": 32.0, "errors": 0.0, "ttft_p99_ms": 40.0, "tpot_p99_ms": tpot[0]}
    per_round = [{"requests": 32.0, "errors": 0.0, "ttft_p99_ms": 40.0 + i, "tpot_p99_ms": tpot[i % len(tpot)]}
                 for i in range(rounds)]
    return {"rounds": per_round}  # the gate takes the rounds' median


def _result(run_id: str, role: str, revision: str, latency: dict[str, Any]) -> dict[str, Any]:
    return {"mlflow_run_id": run_id, "hardware_class": "cpu", "role": role, "evalset_revision": revision,
            "latency": latency}


def test_gate_rejection_drops_the_challenger_and_a_pass_keeps_it(platform, reg, tmp_path: Path) -> None:
    import mlflow

    from llmops.config import settings as settings_mod
    from llmops.core.hardware import load_hardware_class
    from llmops.evals.evalset import load_evalset
    from llmops.io import tracking
    from llmops.io.registry import CHALLENGER, CHAMPION, STATUS_TAG
    from llmops.refresh import qualify
    from llmops.refresh.plan import EXPERIMENT

    settings = settings_mod.load()
    slo = load_hardware_class("cpu", settings.hardware_configs_dir).slo
    revision = load_evalset(EVALSET).revision
    experiment_id = tracking.configure(platform.endpoints.mlflow_url, EXPERIMENT)
    model = f"aliases-{uuid.uuid4().hex[:8]}"
    champion, degraded, better = (_register(reg, model, tag) for tag in "abc")
    reg.set_alias(model, CHAMPION, champion)
    champ_run = _eval_run(experiment_id, tmp_path, model, champion, "champion", None)
    # One slow round (the reported 109.6 ms TPOT p99) among rounds well inside the 100 ms SLO.
    noisy = _latency(slo.latency_rounds, [22.0, 109.6, 18.5, 25.0, 19.9])

    def judge(version: str, broken: str | None, airflow_run_id: str | None = None) -> dict[str, Any]:
        run = _eval_run(experiment_id, tmp_path, model, version, "candidate", broken)
        return qualify.judge_qualification(
            settings, model=model, candidate_version=version, evalset_config=str(EVALSET),
            results=[_result(run, "candidate", revision, noisy), _result(champ_run, "champion", revision, noisy)],
            tracking_uri=platform.endpoints.mlflow_url, airflow_run_id=airflow_run_id)

    reg.set_alias(model, CHALLENGER, degraded)
    with pytest.raises(qualify.GateFailed, match=r"\[cpu\] category 'reverse' dropped by 1\.0000"):
        judge(degraded, broken="reverse")
    assert reg.by_alias(model, CHALLENGER) is None, "a rejected version must not stay the challenger"
    assert reg.get(model, degraded).tags[STATUS_TAG] == "rejected"
    assert "'reverse'" in reg.get(model, degraded).tags["llmops.gate_reasons"]
    assert reg.by_alias(model, CHAMPION).version == champion

    reg.set_alias(model, CHALLENGER, better)
    summary = judge(better, broken=None, airflow_run_id="manual__gate-retried")
    assert judge(better, broken=None, airflow_run_id="manual__gate-retried") == summary, "a retry, same verdict"
    assert summary["passed"] is True
    assert reg.by_alias(model, CHALLENGER).version == better, "a qualified version stays the challenger"
    assert reg.get(model, better).tags[STATUS_TAG] == "qualified"
    verdict = summary["verdicts"]["cpu"]
    tpot = next(row for row in verdict["latency"] if row["metric"] == "tpot_p99_ms")
    if slo.latency_rounds > 1:
        assert verdict["latency_estimate"] == f"median of {slo.latency_rounds} rounds on a shared-CPU class"
        assert len(tpot["candidate_rounds_ms"]) == slo.latency_rounds and tpot["candidate_ms"] < 100
    else:
        assert verdict["latency_estimate"] == "single measurement"

    # The verdict says how latency was judged, in MLflow too.
    gate_runs = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list",
                                   filter_string=f"tags.`llmops.stage` = 'gate' and tags.model = '{model}'")
    assert {r.data.tags["model_version"]: r.data.tags["latency_estimate"] for r in gate_runs} == {
        degraded: verdict["latency_estimate"], better: verdict["latency_estimate"]}
    assert len(gate_runs) == 2, "the retried gate logged no second verdict run"
    markdown = Path(mlflow.artifacts.download_artifacts(
        run_id=next(r.info.run_id for r in gate_runs if r.data.tags["model_version"] == better),
        artifact_path="gate/verdict.md")).read_text()
    assert f"Latency: {verdict['latency_estimate']}" in markdown


def test_canary_rollback_drops_the_challenger(platform, reg) -> None:
    from llmops.io.registry import CHALLENGER, CHAMPION, STATUS_TAG
    from llmops.refresh import qualify

    model = f"aliases-{uuid.uuid4().hex[:8]}"
    champion, candidate = _register(reg, model, "a"), _register(reg, model, "b")
    reg.set_alias(model, CHAMPION, champion)
    reg.set_alias(model, CHALLENGER, candidate)
    rolled_back = {"outcome": "rolled_back", "reasons": ["step 1: error_rate 1.000 > 0.050"],
                   "breach_to_rollback_s": 0.12}
    with pytest.raises(qualify.GateFailed, match="rolled back to 0%"):
        qualify.check_canary(model, candidate, rolled_back, platform.endpoints.mlflow_url)
    assert reg.by_alias(model, CHALLENGER) is None
    tags = reg.get(model, candidate).tags
    assert tags[STATUS_TAG] == "rejected" and "error_rate" in tags["llmops.canary_reasons"]
    assert tags["llmops.breach_to_rollback_s"] == "0.12"
    assert reg.by_alias(model, CHAMPION).version == champion

    # A canary that completed changes nothing in the registry (promote does that).
    other = _register(reg, model, "c")
    reg.set_alias(model, CHALLENGER, other)
    assert qualify.check_canary(model, other, {"outcome": "promoted"}, platform.endpoints.mlflow_url) == {
        "outcome": "promoted"}
    assert reg.by_alias(model, CHALLENGER).version == other
