"""The runtime re-qualification's pure decision: same weights, same answers, per category."""

from __future__ import annotations

import pytest

from llmops.refresh.runtime_upgrade import (
    DEFAULT_MAX_ANSWER_CHANGE,
    DEFAULT_MAX_SCORE_DELTA,
    ItemAnswer,
    RuntimeUpgradeInputError,
    judge_runtime_upgrade,
)

CATEGORIES = ("arithmetic", "copy", "json", "reverse")


def _items(per_category: int = 10, **overrides: tuple[str, float]) -> list[ItemAnswer]:
    """``per_category`` correct answers per category; ``overrides`` = {item id: (prediction, score)}."""
    items = []
    for category in CATEGORIES:
        for i in range(per_category):
            item_id = f"{category}-{i:03d}"
            prediction, score = overrides.get(item_id.replace("-", "_"), (f"answer {item_id}", 1.0))
            items.append(ItemAnswer(id=item_id, category=category, prediction=prediction, score=score))
    return items


def test_identical_answers_pass_with_every_category_the_same() -> None:
    verdict = judge_runtime_upgrade(_items(), _items())
    assert verdict.passed and verdict.changed_categories == []
    assert [(r.category, r.n, r.changed_answers, r.score_delta) for r in verdict.categories] == [
        (c, 10, 0, 0.0) for c in CATEGORIES]
    assert verdict.reasons[0].startswith("passed: 40 items in 4 categories")


def test_the_defaults_are_strict() -> None:
    assert DEFAULT_MAX_ANSWER_CHANGE == 0.0 and DEFAULT_MAX_SCORE_DELTA == 0.0
    # One changed answer of 40, even one that scores the same, fails by default.
    verdict = judge_runtime_upgrade(_items(), _items(copy_003=("another string", 1.0)))
    assert not verdict.passed and verdict.changed_categories == ["copy"]


def test_one_category_flipped_is_named_alone_with_its_changed_items() -> None:
    flipped = {f"reverse_{i:03d}": ("wrong", 0.0) for i in range(10)}
    verdict = judge_runtime_upgrade(_items(), _items(**flipped))
    assert not verdict.passed
    assert verdict.changed_categories == ["reverse"]
    row = {r.category: r for r in verdict.categories}["reverse"]
    assert (row.changed_answers, row.changed_share, row.old_mean, row.new_mean) == (10, 1.0, 1.0, 0.0)
    assert row.score_delta == pytest.approx(-1.0)
    assert row.changed_ids == ("reverse-000", "reverse-001", "reverse-002", "reverse-003", "reverse-004")
    assert len(verdict.reasons) == 1 and "'reverse'" in verdict.reasons[0]
    assert "10 of 10 answers changed" in verdict.reasons[0] and "and 5 more" in verdict.reasons[0]


def test_score_neutral_answer_changes_fail_strict_and_pass_within_a_tolerance() -> None:
    # Both answers wrong, in different ways: the score does not move, the answers do.
    old = _items(json_001=("{'a'", 0.0), json_002=("{'b'", 0.0))
    new = _items(json_001=("{'c'", 0.0), json_002=("{'d'", 0.0))
    strict = judge_runtime_upgrade(old, new)
    assert strict.changed_categories == ["json"]
    row = {r.category: r for r in strict.categories}["json"]
    assert (row.changed_answers, row.score_delta) == (2, 0.0)
    assert "2 of 10 answers changed" in strict.reasons[0] and "mean score" not in strict.reasons[0]
    assert judge_runtime_upgrade(old, new, max_answer_change=0.2).passed


def test_a_score_move_beyond_the_delta_fails_even_within_the_answer_tolerance() -> None:
    new = _items(arithmetic_000=("0", 0.0), arithmetic_001=("0", 0.0))
    verdict = judge_runtime_upgrade(_items(), new, max_answer_change=0.5, max_score_delta=0.1)
    assert verdict.changed_categories == ["arithmetic"]
    assert "mean score moved 1.000 -> 0.800 (-0.200" in verdict.reasons[0]
    assert "answers changed" not in verdict.reasons[0]
    assert judge_runtime_upgrade(_items(), new, max_answer_change=0.5, max_score_delta=0.2).passed


def test_a_better_score_is_a_change_too() -> None:
    old = _items(copy_000=("nope", 0.0))
    verdict = judge_runtime_upgrade(old, _items(), max_answer_change=0.1, max_score_delta=0.05)
    assert verdict.changed_categories == ["copy"]
    assert "+0.100" in verdict.reasons[0]


def test_thresholds_are_inclusive() -> None:
    new = _items(copy_000=("x", 0.0))  # 1 of 10 changed, delta -0.1
    assert judge_runtime_upgrade(_items(), new, max_answer_change=0.1, max_score_delta=0.1).passed
    assert not judge_runtime_upgrade(_items(), new, max_answer_change=0.09, max_score_delta=0.1).passed
    assert not judge_runtime_upgrade(_items(), new, max_answer_change=0.1, max_score_delta=0.09).passed


def test_whitespace_counts_and_an_error_on_one_side_is_a_change() -> None:
    verdict = judge_runtime_upgrade(_items(), _items(copy_000=("answer copy-000 ", 1.0)))
    assert verdict.changed_categories == ["copy"]
    old = _items()
    new = [ItemAnswer(i.id, i.category, i.prediction, i.score, error="timeout") if i.id == "json-004" else i
           for i in old]
    assert judge_runtime_upgrade(old, new).changed_categories == ["json"]
    both = [ItemAnswer(i.id, i.category, "", 0.0, error="e") if i.id == "json-004" else i for i in old]
    assert judge_runtime_upgrade(both, both).passed


def test_several_categories_changed_are_all_named_in_order() -> None:
    new = _items(reverse_000=("x", 0.0), arithmetic_005=("y", 0.0))
    verdict = judge_runtime_upgrade(_items(), new)
    assert verdict.changed_categories == ["arithmetic", "reverse"]
    assert len(verdict.reasons) == 2


@pytest.mark.parametrize("drop_from", ["old", "new"])
def test_missing_items_are_refused_naming_them(drop_from: str) -> None:
    full, partial = _items(), [i for i in _items() if i.id != "copy-007"]
    old, new = (partial, full) if drop_from == "old" else (full, partial)
    with pytest.raises(RuntimeUpgradeInputError, match=f"1 only on the {'new' if drop_from == 'old' else 'old'} "
                                                       f"runtime \\('copy-007'\\).*limit_per_category"):
        judge_runtime_upgrade(old, new)


def test_a_different_limit_is_refused_with_the_count_of_ids() -> None:
    with pytest.raises(RuntimeUpgradeInputError, match="20 only on the old runtime.*and 15 more"):
        judge_runtime_upgrade(_items(10), _items(5))


def test_an_item_in_another_category_is_refused() -> None:
    old = _items()
    new = [ItemAnswer(i.id, "copy", i.prediction, i.score) if i.id == "json-000" else i for i in old]
    with pytest.raises(RuntimeUpgradeInputError, match="'json-000' have different categories"):
        judge_runtime_upgrade(old, new)


def test_duplicates_empty_runs_and_bad_scores_are_refused() -> None:
    items = _items()
    with pytest.raises(RuntimeUpgradeInputError, match="new runtime: item id 'copy-000' appears twice"):
        judge_runtime_upgrade(items, [*items, items[10]])
    with pytest.raises(RuntimeUpgradeInputError, match="old runtime: no scored items"):
        judge_runtime_upgrade([], items)
    with pytest.raises(RuntimeUpgradeInputError, match="score nan"):
        judge_runtime_upgrade(items, [ItemAnswer(i.id, i.category, i.prediction, float("nan")) for i in items])
    with pytest.raises(RuntimeUpgradeInputError, match="empty category"):
        judge_runtime_upgrade([ItemAnswer("a", "", "x", 1.0)], [ItemAnswer("a", "", "x", 1.0)])


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1"])
def test_tolerances_must_be_shares(bad: object) -> None:
    with pytest.raises(RuntimeUpgradeInputError, match="max_answer_change"):
        judge_runtime_upgrade(_items(), _items(), max_answer_change=bad)  # type: ignore[arg-type]
    with pytest.raises(RuntimeUpgradeInputError, match="max_score_delta"):
        judge_runtime_upgrade(_items(), _items(), max_score_delta=bad)  # type: ignore[arg-type]


def test_rows_of_eval_results_json_are_read_and_malformed_ones_named() -> None:
    row = {"id": "x1", "category": "copy", "reference": "ab", "prediction": "ab", "score": 1, "latency_s": 0.1,
           "error": None}
    assert ItemAnswer.from_row(row) == ItemAnswer("x1", "copy", "ab", 1.0, None)
    with pytest.raises(RuntimeUpgradeInputError, match="run abc/eval_results.json: row 'x1' has no prediction"):
        ItemAnswer.from_row({k: v for k, v in row.items() if k != "prediction"}, "run abc/eval_results.json")
    with pytest.raises(RuntimeUpgradeInputError, match="score 'high'"):
        ItemAnswer.from_row({**row, "score": "high"})


def test_the_verdict_serialises_for_the_verdict_file_and_mlflow() -> None:
    verdict = judge_runtime_upgrade(_items(), _items(reverse_002=("x", 0.0)))
    data = verdict.to_dict()
    assert data["passed"] is False and data["changed_categories"] == ["reverse"]
    assert set(data["per_category"]) == set(CATEGORIES)
    assert data["per_category"]["reverse"]["changed_ids"] == ["reverse-002"]
    assert data["per_category"]["reverse"]["changed"] is True
    import json

    json.dumps(data)  # JSON-ready
    text = verdict.to_markdown()
    assert "FAILED: answers changed" in text and "| reverse | 10 | 1 | 0.100 |" in text and "CHANGED" in text


# -- the I/O module's pure parts: the verdict file receive reads, the failure message, the jobs --


def _runtime(image: str = "llmops.local/vllm-cpu-rebuild@sha256:" + "1d" * 32, accelerator: str = "cpu"):
    from llmops.core.runtimes import Runtime

    return Runtime(image=image, vllm_version="0.32.0+cpu", accelerator=accelerator,
                   cuda="12.8" if accelerator == "cuda" else None, driver="570.1" if accelerator == "cuda" else None)


def _outcome(model: str, passed: bool, changed: list[str]) -> dict:
    return {"model": model, "champion_version": "3", "passed": passed, "changed_categories": changed,
            "per_category": {"arithmetic": {"changed": bool(changed)}}, "mlflow_run_id": f"run-{model}",
            "reasons": [], "pinned_runtime_image": "old@sha256:" + "0" * 64}


def test_the_verdict_file_has_the_shape_receive_reads() -> None:
    from llmops.core.runtimes import RuntimeAllowlist
    from llmops.refresh.runtime_requalify import verdict_document

    runtime = _runtime()
    rejected = verdict_document(runtime, [_outcome("a", True, []), _outcome("b", False, ["arithmetic"])],
                                max_answer_change=0.0, max_score_delta=0.0, airflow_run_id="r1")
    assert rejected["status"] == "rejected" and rejected["runtime"] == runtime.to_dict()
    assert (rejected["model"], rejected["champion_version"], rejected["mlflow_run_id"]) == ("b", "3", "run-b")
    assert rejected["changed_categories"] == ["arithmetic"] and set(rejected["models"]) == {"a", "b"}
    listed = RuntimeAllowlist(source="include/runtimes.yaml", runtimes=(runtime,))
    with pytest.raises(ValueError, match="categories that changed: arithmetic; verdict run run-b"):
        listed.require(runtime.image, rejected=rejected)
    qualified = verdict_document(runtime, [_outcome("a", True, [])], max_answer_change=0.0, max_score_delta=0.0,
                                 airflow_run_id="r1")
    assert qualified["status"] == "qualified" and qualified["changed_categories"] == []


def test_a_rejection_fails_naming_runtime_model_and_categories() -> None:
    from llmops.refresh.runtime_requalify import RuntimeRejected, raise_if_rejected

    raise_if_rejected({"qualified": [_outcome("a", True, [])], "rejected": []})
    entry = {**_outcome("b", False, ["arithmetic", "copy"]), "runtime": _runtime().to_dict(),
             "verdict_uri": "s3://m/runtimes/x/verdict.json"}
    with pytest.raises(RuntimeRejected, match=r"vllm-cpu-rebuild@sha256:1d.* changed the answers of b champion v3 "
                                              r"\(same weights as on old@sha256:0+\) in categories arithmetic, copy"):
        raise_if_rejected({"qualified": [], "rejected": [entry]})


def test_the_benchmark_trigger_names_the_runtime_change_only_when_a_pin_moved() -> None:
    from llmops.refresh.runtime_requalify import benchmark_trigger

    assert benchmark_trigger([]) is None
    assert benchmark_trigger([{"moved": False, "model": "m"}]) is None
    runtime = _runtime()
    extra = benchmark_trigger([{"moved": True, "model": "m", "version": "3", "hardware_class": "cpu",
                                "runtime": runtime.to_dict(), "previous_runtime_image": "old@sha256:" + "0" * 64}])
    assert extra["classes"] == ["cpu"]
    assert "runtime image changed old@sha256:" in extra["changes"][0] and "moved m v3" in extra["changes"][0]
    assert extra["runtime_requalified"][0]["identity"] == runtime.identity


def test_a_runtime_serves_only_on_its_accelerator() -> None:
    from llmops.config import settings
    from llmops.core.hardware import load_hardware_class
    from llmops.refresh.runtime_requalify import serves_on

    conf = settings.load()
    cpu, gpu = (load_hardware_class(name, conf.hardware_configs_dir) for name in ("cpu", "h100x1"))
    assert serves_on(_runtime(), cpu) and not serves_on(_runtime(), gpu)
    cuda = _runtime("docker.io/vllm/vllm-openai@sha256:" + "a" * 64, "cuda")
    assert serves_on(cuda, gpu) and not serves_on(cuda, cpu)


def test_each_champion_is_evaluated_once_on_its_pin_and_once_per_new_runtime() -> None:
    from llmops.config import settings
    from llmops.core.podjob import PodJob
    from llmops.core.runtimes import RuntimeAllowlist
    from llmops.refresh.runtime_requalify import requalification_jobs

    conf = settings.load()
    pinned_image = "llmops.local/vllm-cpu@sha256:" + "ab" * 32
    target = {"role": "champion", "version": "3", "weights_uri": "s3://models/m/sha256-" + "e" * 64 + "/",
              "weight_digest": "e" * 64, "runtime_image": pinned_image, "runtime_version": "0.32.0+cpu"}
    new = [_runtime(), _runtime("llmops.local/vllm-cpu-bf16@sha256:" + "bf" * 32)]
    pairs = [{"runtime": r.to_dict(), "model": "m", "champion_version": "3", "target": target} for r in new]
    known = RuntimeAllowlist(source="x", runtimes=(_runtime(pinned_image), *new))
    jobs = [PodJob.from_dict(job) for job in requalification_jobs(
        conf, pairs, evalset_config="e.yaml", limit_per_category=23, s3_endpoint=None, tracking_uri="http://mlflow",
        known=known)]
    assert len(jobs) == 3
    images = [next(c.image for c in job.containers if c.name == "vllm") for job in jobs]
    assert images == [pinned_image, new[0].image, new[1].image]
    for job, identity in zip(jobs, ("pinned", new[0].identity, new[1].identity), strict=True):
        args = list(job.main.args)
        tags = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--tag")
        assert tags["requalify_identity"] == identity and tags["requalify_model"] == "m"
        assert tags["runtime_identity"] == (known.find(images[jobs.index(job)]).identity)
        assert args[args.index("--limit-per-category") + 1] == "23"
        # Every side serves the very same weights, fetched and digest-verified before vLLM starts.
        [fetch] = job.init_containers
        assert "e" * 64 in fetch.args and "--full-verify" in fetch.args


# -- the pin moves under the model's refresh lease -----------------------------------------------


def test_a_pin_moves_only_under_the_models_lease_and_gives_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.config import settings as settings_mod
    from llmops.refresh import actions, runtime_requalify

    conf = settings_mod.load()
    qualified = {"model": "m", "runtime": {"image": "llmops.local/vllm-cpu-rebuild@sha256:" + "1" * 64}}
    monkeypatch.setattr(actions, "claim_model", lambda model, run_id: (False, f"{model}: refresh run r9 holds it"))
    with pytest.raises(runtime_requalify.ModelBusy, match=r"r9 holds it; the champion's pin moves to .* later try"):
        runtime_requalify.move_pin_under_lease(conf, qualified=qualified, tracking_uri="t", models_bucket="b",
                                               run_id="req-1")

    released: list[tuple[str, str]] = []
    monkeypatch.setattr(actions, "claim_model", lambda model, run_id: (True, "held"))
    monkeypatch.setattr(actions, "release_model", lambda model, run_id: released.append((model, run_id)) or True)

    def fails(*_: object, **__: object) -> None:
        raise RuntimeError("S3 went away mid-move")

    monkeypatch.setattr(runtime_requalify, "move_pin", fails)
    with pytest.raises(RuntimeError, match="mid-move"):
        runtime_requalify.move_pin_under_lease(conf, qualified=qualified, tracking_uri="t", models_bucket="b",
                                               run_id="req-1")
    assert released == [("m", "req-1")]


def test_a_live_pin_move_holds_the_lease_against_a_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from llmops.refresh import actions

    live = {("runtime_requalify", "scheduled__1")}
    monkeypatch.setattr(RuntimeTaskInstance, "get_dr_count", staticmethod(
        lambda dag_id, run_ids, states: sum((dag_id, r) in live for r in run_ids)))
    assert actions.lease_holder_alive("scheduled__1")  # a refresh waits for the pin move
    assert not actions.lease_holder_alive("manual__gone")  # a dead holder is taken over
