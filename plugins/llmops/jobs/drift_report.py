"""Pod job: the weekly drift report of a model's champion (and previous) over its eval history.

    python -m llmops.jobs.drift_report --model tiny-chat --week 2026-W47 \\
        --evaluations '[{"mlflow_run_id": "...", ...}]' --evalsets '[{"name": ..., "config": ...}]' \\
        [--weeks 8] [--threshold 0.05] [--categories reverse,json] [--fail-on regression]

Reads this week's eval runs (``--evaluations``: the eval pods' results), the earlier weekly
runs and the qualification baselines from MLflow; analyses every series
(:mod:`llmops.drift.analysis`); renders the HTML page with charts and the Markdown summary
with the failure-case lists; logs them to MLflow (experiment ``llmops-eval-drift``, run tagged
``llmops.stage=drift_report``) as ``drift/report.html``, ``drift/summary.md`` and
``drift/report.json``, with metrics under stable names (``drift/<evalset>/<category>/...``).

Result (``return.json``): ``{drift_detected, alerts, changed_evalsets, report_run_id, week, model,
series}``. A drift is a verdict, not an error: the job exits 0 and the DAG's final check fails
the run. Exit 2 on wrong input.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmops.core.podjob import VERDICT_EXIT_CODE
from llmops.jobs.common import optional_env, setup_logging, write_result

log = setup_logging("llmops.jobs.drift_report")

EXIT_INVALID = VERDICT_EXIT_CODE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--week", required=True, help="ISO week of this run, YYYY-Www")
    parser.add_argument("--evaluations", required=True, help="JSON list of this week's eval job results")
    parser.add_argument("--evalsets", default="[]", help="JSON list of the hygiene job's eval-set summaries")
    parser.add_argument("--weeks", type=int, default=8, help="weeks of history in the trend and charts")
    parser.add_argument("--threshold", type=float, default=0.05, help="smallest absolute score change that is drift")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--fail-on", default="regression", choices=("regression", "any"))
    parser.add_argument("--categories", default="", help="comma-separated categories (default: every one)")
    parser.add_argument("--hardware-class", default=None, help="class the weekly evals ran on (baseline choice)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default llmops-eval-drift)")
    parser.add_argument("--out-dir", type=Path, default=None, help="also write the report files here")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="MLflow run tag")
    return parser.parse_args(argv)


def _prompts(evalsets: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, str]]:
    """(eval set name, revision) -> item id -> prompt text, for the failure-case lists."""
    from llmops.evals.evalset import EvalSetError, load_evalset

    found: dict[tuple[str, str], dict[str, str]] = {}
    for summary in evalsets:
        try:
            loaded = load_evalset(Path(summary["config"]))
        except (EvalSetError, OSError, KeyError) as exc:
            log.warning("prompts of %s not available: %s", summary.get("name"), exc)
            continue
        found[(loaded.name, loaded.revision)] = {
            i.id: "\n".join(m["content"] for m in i.messages if m["role"] == "user") for i in loaded.items}
    return found


def build(args: argparse.Namespace, tracking_uri: str | None) -> tuple[Any, dict[Any, Any], list[dict[str, Any]]]:
    """Fetch the history, analyse every series; return (report, failures by series, eval-set summaries)."""
    from llmops.drift import analysis, failures, history, report, series

    evaluations = json.loads(args.evaluations)
    evalsets = json.loads(args.evalsets)
    if not isinstance(evaluations, list) or not evaluations:
        raise ValueError("--evaluations: expected a non-empty JSON list of eval job results")
    options = analysis.DriftOptions(threshold=args.threshold, confidence=args.confidence, weeks=args.weeks,
                                    fail_on=args.fail_on)
    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    store = history.DriftHistory(tracking_uri, experiment=args.experiment or history.EXPERIMENT)
    prompts = _prompts(evalsets)
    past = store.weekly_runs(args.model)
    current: list[series.WeeklyEval] = []
    for result in evaluations:
        run_id = result.get("mlflow_run_id")
        if not run_id:
            raise ValueError(f"--evaluations: an eval result has no mlflow_run_id: {result}")
        run = store.run(run_id)
        current.append(replace(run, items=store.items(run_id, prompts.get((run.evalset, run.evalset_revision)))))
    notes = []
    analysed, failure_lists = [], {}
    for now in current:
        if now.week != args.week:
            raise ValueError(f"eval run {now.run_id} is tagged week {now.week}, the report is for {args.week}")
        ser = series.build_series(now, past, args.weeks)
        item_prompts = prompts.get((now.evalset, now.evalset_revision))
        last = ser.comparable_last_week
        if last is not None:
            last = replace(last, items=store.items(last.run_id, item_prompts))
            ser = replace(ser, last_week=last)
        baseline = store.qualification_baseline(args.model, now.version, now.evalset, args.hardware_class,
                                                item_prompts)
        if baseline is None:
            notes.append(f"{now.alias} v{now.version} on {now.evalset}: no qualification run of this version in "
                         "llmops-refresh (registered outside model_refresh?): no baseline comparison")
        previous = None
        if now.alias == "champion":
            previous = next((c for c in current if c.alias == "previous" and c.evalset == now.evalset
                             and c.evalset_revision == now.evalset_revision), None)
        wanted = [c for c in categories if c in now.scores] if categories else None
        unknown = [c for c in categories if c not in now.scores]
        if categories and not wanted:
            notes.append(f"{now.evalset}: none of the categories {categories} is scored; all are reported")
        elif unknown and now.alias == "champion":
            notes.append(f"{now.evalset}: categories {unknown} are not in this eval set; reported: {wanted}")
        analysed.append(analysis.analyse_series(ser, baseline=baseline, previous=previous, options=options,
                                                categories=wanted or None))
        last_items = last.items if last is not None else ()
        failure_lists[(now.alias, now.evalset)] = report.SeriesFailures(
            worst=failures.worst_failing(now.items, last_items), new=failures.newly_failing(now.items, last_items))
    return analysis.build_report(args.model, args.week, analysed, options, notes), failure_lists, evalsets


def main(argv: list[str] | None = None) -> int:
    """Build, render and log the report; exit 0 (drift is reported in the result), 2 on wrong input."""
    from llmops.drift import report as render
    from llmops.drift.series import SeriesError

    args = parse_args(argv)
    tracking_uri = optional_env("MLFLOW_TRACKING_URI")
    try:
        drift_report, failure_lists, evalsets = build(args, tracking_uri)
    except (ValueError, SeriesError, json.JSONDecodeError) as exc:
        log.error("cannot build the drift report: %s", exc)
        return EXIT_INVALID
    markdown = render.render_markdown(drift_report, failure_lists, evalsets)
    page = render.render_html(drift_report, failure_lists, evalsets)
    log.info("drift report for %s %s:\n%s", args.model, args.week, markdown)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "report.html").write_text(page)
        (args.out_dir / "summary.md").write_text(markdown)
    cases = render.failure_cases(failure_lists)
    run_id = _log_to_mlflow(args, tracking_uri, drift_report, markdown, page, cases)
    alerts = [a.describe() for a in drift_report.alerts]
    write_result({
        "model": args.model, "week": args.week, "drift_detected": drift_report.drift_detected, "alerts": alerts,
        "alert_categories": sorted({f"{a.evalset}/{a.category}" for a in drift_report.alerts}),
        "changed_evalsets": [list(c) for c in drift_report.changed_evalsets], "report_run_id": run_id,
        "series": [{"alias": s.alias, "version": s.version, "evalset": s.evalset, "revision": s.evalset_revision,
                    "drifted": [c.category for c in s.categories if c.drifted]} for s in drift_report.series],
    })
    return 0


def _log_to_mlflow(args: argparse.Namespace, tracking_uri: str | None, drift_report: Any, markdown: str,
                   page: str, cases: list[dict[str, Any]]) -> str | None:
    if tracking_uri is None:
        log.warning("MLFLOW_TRACKING_URI is not set: the report is not recorded in MLflow")
        return None
    import mlflow

    from llmops.drift import history
    from llmops.drift.report import report_metrics
    from llmops.io import tracking

    experiment_id = tracking.configure(tracking_uri, args.experiment or history.EXPERIMENT)
    tags = dict(t.split("=", 1) for t in args.tag)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"drift {args.model} {args.week}") as run:
        mlflow.set_tags({history.STAGE_TAG: history.REPORT_STAGE, "model": args.model, "week": args.week,
                         "drift_detected": str(drift_report.drift_detected).lower(),
                         "alert_categories": ",".join(sorted({f"{a.evalset}/{a.category}"
                                                             for a in drift_report.alerts})) or "none",
                         **tags})
        mlflow.log_params({"weeks": args.weeks, "threshold": args.threshold, "confidence": args.confidence,
                           "fail_on": args.fail_on, "categories": args.categories or "all"})
        mlflow.log_metrics(report_metrics(drift_report))
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("report.html", page), ("summary.md", markdown),
                               ("report.json", json.dumps(drift_report.to_dict(), indent=1, default=str)),
                               ("failure_cases.json", json.dumps(cases, indent=1))):
                path = Path(tmp) / name
                path.write_text(text)
                mlflow.log_artifact(str(path), artifact_path="drift")
        log.info("MLflow run %s: drift/report.html, drift/summary.md", run.info.run_id)
        return run.info.run_id


if __name__ == "__main__":
    raise SystemExit(main())
