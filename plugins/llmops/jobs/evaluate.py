"""Pod job: evaluate a served model on an eval set and record the run in MLflow.

Runs beside a vLLM sidecar (same pod, ``127.0.0.1:$(VLLM_PORT)``)::

    python -m llmops.jobs.evaluate --evalset include/evalsets/synthetic_chat_v1.yaml \\
        --model tiny-chat --experiment llmops-smoke --tag hardware_class=cpu

Result (``return.json``): MLflow run id, eval-set revision, per-category scores and, with
``--latency-requests``, TTFT/TPOT percentiles: one measurement, or each of the hardware class's
``slo.latency_rounds`` rounds under ``latency.rounds`` (a shared-CPU class).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from llmops.evals.evalset import EvalSet, load_evalset
from llmops.evals.latency import measure_latency_rounds
from llmops.evals.scoring import ItemResult, category_scores, results_as_rows, score_items
from llmops.evals.stats import ScoreEstimate
from llmops.io import openai_client, tracking
from llmops.jobs.common import optional_env, setup_logging, write_result

log = setup_logging("llmops.jobs.evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evalset", type=Path, required=True, help="eval set YAML description")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--base-url", default=None,
                        help="OpenAI-compatible base URL (default http://127.0.0.1:$VLLM_PORT/v1)")
    parser.add_argument("--experiment", default="llmops-evals", help="MLflow experiment")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--limit-per-category", type=int, default=0, help="0 = every item")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--latency-requests", type=int, default=0,
                        help="also stream this many requests and record TTFT/TPOT percentiles (latency gate)")
    parser.add_argument("--latency-concurrency", type=int, default=4)
    parser.add_argument("--latency-rounds", type=_positive_int, default=None,
                        help="measure latency this many times and report each round's percentiles (default: "
                             "slo.latency_rounds of the hardware class in LLMOPS_HARDWARE_CLASS, set by the pod "
                             "job; 1 without one): a shared-CPU class is judged on the median of its rounds")
    parser.add_argument("--latency-round-pause-s", type=float, default=1.0,
                        help="pause between latency rounds, so one burst of a neighbour rarely spans several")
    parser.add_argument("--min-overall", type=float, default=None,
                        help="fail the job (exit 3) when the overall score is below this")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="MLflow run tag (repeatable)")
    return parser.parse_args(argv)


EXIT_SERVER_UNAVAILABLE = 1
"""The server went away during the eval: a retryable failure, never a verdict on the model."""


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; exit 0 with a result, 3 below ``--min-overall``, 1 when the server
    was unreachable for any request (nothing written: the retry evaluates again)."""
    args = parse_args(argv)
    base_url = args.base_url or f"http://127.0.0.1:{optional_env('VLLM_PORT')}/v1"
    evalset = load_evalset(args.evalset)
    if args.limit_per_category:
        evalset = evalset.limited(args.limit_per_category)
    waited = openai_client.wait_healthy(base_url)
    log.info("server %s healthy after %.1fs; %d items from %s@%s", base_url, waited,
             len(evalset.items), evalset.name, evalset.revision)

    started = time.monotonic()
    completions = openai_client.chat_many(base_url, args.model, [i.messages for i in evalset.items],
                                   concurrency=args.concurrency, max_tokens=args.max_tokens)
    duration = time.monotonic() - started
    unreachable = [c for c in completions if c.unreachable]
    if unreachable:
        # An outage is not an answer: scoring it would make the gate judge a crash as a regression.
        log.error("%d of %d requests never reached a working server (first: %s); no result and no "
                  "MLflow run are written: the pod fails and its retry evaluates again",
                  len(unreachable), len(completions), unreachable[0].error)
        return EXIT_SERVER_UNAVAILABLE
    results = score_items(evalset.items, completions)
    latency: dict[str, Any] = {}
    if args.latency_requests:
        prompts = [evalset.items[i % len(evalset.items)].messages for i in range(args.latency_requests)]
        rounds = latency_rounds(args.latency_rounds, optional_env("LLMOPS_HARDWARE_CLASS"))
        latency = measure_latency_rounds(base_url, args.model, prompts, rounds=rounds,
                                         concurrency=args.latency_concurrency, pause_s=args.latency_round_pause_s)
        for index, one in enumerate(latency.get("rounds", [latency]), start=1):
            log.info("latency round %d of %d over %d streamed requests: %s", index, rounds,
                     args.latency_requests, {k: round(v, 2) for k, v in one.items()})
    scores = category_scores(results)
    errors = sum(1 for r in results if r.error)
    for category, est in scores.items():
        log.info("%-12s %.3f [%.3f, %.3f] n=%d", category, est.mean, est.ci_low, est.ci_high, est.n)

    tags = dict(t.split("=", 1) for t in args.tag)
    run_id, experiment_id = _log_to_mlflow(args, evalset, scores, results, tags, duration, errors, latency)
    result = {
        "mlflow_run_id": run_id,
        "mlflow_experiment_id": experiment_id,
        "evalset": evalset.name,
        "evalset_revision": evalset.revision,
        "model": args.model,
        "hardware_class": optional_env("LLMOPS_HARDWARE_CLASS"),
        "role": tags.get("role"),
        "tags": tags,
        "items": len(results),
        "errors": errors,
        "duration_s": round(duration, 3),
        "scores": {c: {"mean": e.mean, "ci_low": e.ci_low, "ci_high": e.ci_high, "n": e.n}
                   for c, e in scores.items()},
        "latency": latency,
    }
    write_result(result)
    if args.min_overall is not None and scores["overall"].mean < args.min_overall:
        log.error("overall score %.3f is below --min-overall %.3f", scores["overall"].mean, args.min_overall)
        return 3
    return 0


def _log_to_mlflow(args: argparse.Namespace, evalset: EvalSet, scores: dict[str, ScoreEstimate],
                   results: list[ItemResult], tags: dict[str, str], duration: float,
                   errors: int, latency: dict[str, Any]) -> tuple[str | None, str | None]:
    tracking_uri = optional_env("MLFLOW_TRACKING_URI")
    if tracking_uri is None:
        log.warning("MLFLOW_TRACKING_URI is not set: results are not recorded in MLflow")
        return None, None
    import mlflow

    experiment_id = tracking.configure(tracking_uri, args.experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=args.run_name) as run:
        mlflow.set_tags({"llmops.job": "evaluate", "evalset": evalset.name,
                         "evalset_revision": evalset.revision, "model": args.model, **tags})
        mlflow.log_params({"evalset": evalset.name, "evalset_revision": evalset.revision,
                           "items": len(results), "limit_per_category": args.limit_per_category,
                           "max_tokens": args.max_tokens})
        mlflow.log_metrics({**tracking.eval_metrics(scores), "eval/errors": float(errors),
                            "eval/duration_s": duration,
                            **{f"latency/{k}": v for k, v in latency.items() if k != "rounds"}})
        for step, one in enumerate(latency.get("rounds", [])):
            # Each round's percentiles as one series per metric (step = round index) in the MLflow UI.
            mlflow.log_metrics({f"latency/round/{k}": v for k, v in one.items()}, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "eval_results.json"
            path.write_text(json.dumps(results_as_rows(results), indent=1))
            mlflow.log_artifact(str(path), artifact_path="eval")
        log.info("MLflow run %s in experiment %s", run.info.run_id, args.experiment)
        return run.info.run_id, experiment_id


def latency_rounds(requested: int | None, hardware_class: str | None) -> int:
    """``--latency-rounds``, else the hardware class's ``slo.latency_rounds`` (the gate refuses
    another count), else 1: a single measurement."""
    if requested is not None:
        return requested
    if not hardware_class:
        return 1
    from llmops.config.settings import load as load_settings
    from llmops.core.hardware import load_hardware_class

    return load_hardware_class(hardware_class, load_settings().hardware_configs_dir).slo.latency_rounds


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return number


if __name__ == "__main__":
    raise SystemExit(main())
