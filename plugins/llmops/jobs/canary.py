"""Pod job: the canary controller. Shift traffic step by step, analyse, promote or roll back.

Runs the pure state machine of :mod:`llmops.canary.analysis` against a real traffic split
(:mod:`llmops.serving.routers`) and real replayed traffic (:mod:`llmops.canary.traffic`)::

    python -m llmops.jobs.canary --spec '{"steps": [{"weight": 5, "window_s": 300}, ...]}' \\
        --evalset include/evalsets/synthetic_chat_v1.yaml --served-model tiny-chat \\
        --stable-url 'http://127.0.0.1:$(STABLE_PORT)' --canary-url 'http://127.0.0.1:$(CANARY_PORT)' \\
        --router nginx --experiment llmops-canary --tag model_version=3

Each step: route the step's weight to the canary, replay eval-set prompts through the proxy
for the step's window, compare canary with stable (error rate, TTFT p95, quality of sampled
answers) and let :func:`llmops.canary.analysis.next_action` decide. On abort the canary's weight goes
to 0 at once, before anything is logged, and the time from the breach (the end of the first
failing window) to the proxy confirming 0% is measured.

Approval (``require_approval``) belongs to the DAG, which waits without holding a worker:
``--stop-before-last-step`` runs every step but the last and leaves the weight there
(outcome ``awaiting_approval``); ``--from-step K --failures-so-far F`` resumes afterwards.

Exit codes: 0 promoted (final weight 100) or awaiting approval; 4 rolled back (final weight
0); 2 bad arguments. Any other failure after traffic was shifted routes 0% to the canary.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmops.canary.analysis import (
    ActionKind,
    CanaryError,
    CanarySpec,
    CanarySpecError,
    StepVerdict,
    analyze_step,
    breach_time,
    breach_to_rollback_s,
    next_action,
)
from llmops.canary.traffic import CANARY, STABLE, Window, records_as_rows, replay_window
from llmops.evals.evalset import EvalSet, load_evalset
from llmops.io import tracking
from llmops.io.openai_client import wait_healthy
from llmops.jobs.common import optional_env, setup_logging, write_result
from llmops.serving.gateway_router import GatewayHttpRouteRouter
from llmops.serving.nginx_router import NginxRouter
from llmops.serving.routers import TrafficRouter, WeightChange

log = setup_logging("llmops.jobs.canary")

EXIT_ROLLED_BACK = 4
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
AWAITING_APPROVAL = "awaiting_approval"
MAX_LOGGED_RECORDS = 500
"""Per-request records kept per window in the MLflow artifact (the first ones, errors first)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the job."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True,
                        help="CanarySpec as JSON (CanarySpec.to_dict form), or @path to a JSON file")
    parser.add_argument("--evalset", type=Path, required=True, help="eval set YAML: the replayed prompts")
    parser.add_argument("--served-model", required=True,
                        help="model name both servers serve under (the proxy must be transparent)")
    parser.add_argument("--model-stable", default="", help="what stable serves (e.g. name@version), for records")
    parser.add_argument("--model-canary", default="", help="what the canary serves, for records")
    parser.add_argument("--router", choices=("nginx", "gateway"), default="nginx")
    nginx = parser.add_argument_group("nginx router (embedded)")
    nginx.add_argument("--stable-url", help="stable server, http://host:port")
    nginx.add_argument("--canary-url", help="canary server, http://host:port")
    nginx.add_argument("--work-dir", type=Path, default=None, help="nginx config/log folder (default: temporary)")
    nginx.add_argument("--nginx-bin", default=None, help="nginx binary (default: $LLMOPS_NGINX_BIN or PATH)")
    gateway = parser.add_argument_group("gateway router (Kubernetes Gateway API)")
    gateway.add_argument("--route", help="HTTPRoute name")
    gateway.add_argument("--route-namespace", help="HTTPRoute namespace")
    gateway.add_argument("--stable-service", help="Service of the stable server (a backendRef of the route)")
    gateway.add_argument("--canary-service", help="Service of the canary server")
    gateway.add_argument("--gateway-url", help="where clients reach the route, http(s)://...")
    traffic = parser.add_argument_group("replayed traffic")
    traffic.add_argument("--concurrency", type=int, default=4)
    traffic.add_argument("--max-tokens", type=int, default=32)
    traffic.add_argument("--max-requests-per-window", type=int, default=0, help="0 = bounded by time only")
    traffic.add_argument("--quality-sample-rate", type=float, default=1.0,
                         help="fraction of successful answers scored against the eval reference")
    traffic.add_argument("--request-timeout", type=float, default=60.0)
    traffic.add_argument("--health-timeout", type=float, default=300.0,
                         help="seconds to wait for both servers' /health (nginx router)")
    approval = parser.add_argument_group("approval (handled by the DAG)")
    approval.add_argument("--stop-before-last-step", action="store_true",
                          help="run every step but the last, leave the weight there, outcome awaiting_approval")
    approval.add_argument("--from-step", type=int, default=0, help="resume at this step (0-based)")
    approval.add_argument("--failures-so-far", type=int, default=0, help="failures counted before --from-step")
    parser.add_argument("--exit-zero-on-rollback", action="store_true",
                        help="exit 0 after a rollback (the outcome is in return.json): the DAG then fails the run "
                             "from the verdict without retrying, as a rollback is a decision, not an error")
    parser.add_argument("--experiment", default="llmops-canary", help="MLflow experiment")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="MLflow run tag (repeatable)")
    args = parser.parse_args(argv)
    try:
        args.canary_spec = load_spec(args.spec)
        args.run_spec = resume_spec(args.canary_spec, args.from_step, args.failures_so_far,
                                    args.stop_before_last_step)
    except (CanarySpecError, CanaryError, ValueError) as exc:
        parser.error(str(exc))
    if args.router == "nginx" and not (args.stable_url and args.canary_url):
        parser.error("--router nginx needs --stable-url and --canary-url (http://host:port)")
    missing = [f"--{n.replace('_', '-')}" for n in ("route", "route_namespace", "stable_service",
                                                     "canary_service", "gateway_url") if not getattr(args, n)]
    if args.router == "gateway" and missing:
        parser.error(f"--router gateway needs {', '.join(missing)}")
    bad_tags = [t for t in args.tag if "=" not in t]
    if bad_tags:
        parser.error(f"--tag {bad_tags[0]!r}: use KEY=VALUE")
    return args


def load_spec(raw: str) -> CanarySpec:
    """A :class:`CanarySpec` from JSON text or ``@path``; errors name the bad field."""
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--spec: not valid JSON ({exc}); pass CanarySpec.to_dict() as JSON") from exc
    if not isinstance(data, dict):
        raise ValueError("--spec: expected a JSON object with steps, thresholds and failure_limit")
    return CanarySpec.from_dict(data)


def resume_spec(spec: CanarySpec, from_step: int, failures_so_far: int, stop_before_last_step: bool) -> CanarySpec:
    """The spec this run executes: the steps from ``from_step`` on, the failure budget left.

    Approval is the DAG's: the spec's own ``require_approval`` is replaced by
    ``stop_before_last_step``, which makes :func:`next_action` stop before the last step.
    """
    if not 0 <= from_step < len(spec.steps):
        raise ValueError(f"--from-step: {from_step} is not a step index in [0, {len(spec.steps)})")
    if not 0 <= failures_so_far < spec.failure_limit:
        raise ValueError(f"--failures-so-far: {failures_so_far} is not in [0, failure_limit {spec.failure_limit})")
    return replace(spec, steps=spec.steps[from_step:], failure_limit=spec.failure_limit - failures_so_far,
                   require_approval=stop_before_last_step)


@dataclass
class Rollout:
    """What happened so far: verdicts (local step indexes), windows, weight changes."""

    history: list[StepVerdict] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    changes: list[tuple[int, WeightChange]] = field(default_factory=list)  # (window number, change)
    weight: int | None = None
    outcome: str | None = None
    reasons: tuple[str, ...] = ()
    rollback: WeightChange | None = None
    breach_to_rollback_s: float | None = None


def main(argv: list[str] | None = None) -> int:
    """Run the canary; exit 0 (promoted or awaiting approval) or 4 (rolled back)."""
    args = parse_args(argv)
    # A pod is stopped with SIGTERM: turn it into an exception so the finally below routes 0%.
    signal.signal(signal.SIGTERM, _terminate)
    evalset = load_evalset(args.evalset)
    tags = dict(t.split("=", 1) for t in args.tag)
    run = _MlflowRun.start(args, evalset, tags)
    rollout = Rollout()
    router: TrafficRouter | None = None
    try:
        router = _make_router(args)
        log.info("router %s at %s; spec %s (from step %d)", args.router, router.endpoint,
                 json.dumps(args.run_spec.to_dict()), args.from_step)
        _run(args, router, evalset, rollout, run)
    except BaseException:
        run.fail()
        raise
    finally:
        if router is not None:
            if rollout.outcome is None and rollout.weight:
                # Failed half way (exception, SIGTERM): never leave traffic on an unfinished canary.
                log.error("canary controller failed at %s%% canary: routing 0%% to the canary", rollout.weight)
                _safe_set(router, 0)
            router.close()
    assert router is not None  # _make_router raised otherwise
    result = _result(args, evalset, tags, rollout, router, run)
    write_result(result)  # first: the outcome must reach the DAG even if MLflow is down
    run.finish(rollout, result)
    log.info("canary %s: final weight %s%%; %s", rollout.outcome, rollout.weight, "; ".join(rollout.reasons))
    if rollout.outcome == ROLLED_BACK and not args.exit_zero_on_rollback:
        return EXIT_ROLLED_BACK
    return 0


def _run(args: argparse.Namespace, router: TrafficRouter, evalset: EvalSet, rollout: Rollout,
         run: _MlflowRun) -> None:
    spec, offset = args.run_spec, args.from_step
    seq = 0
    while True:
        action = next_action(spec, rollout.history)
        if action.kind is ActionKind.ABORT:
            _rollback(router, rollout, action.reasons)
            return
        if action.kind is ActionKind.COMPLETE:
            _route(router, rollout, 100)
            reasons = action.reasons if not offset else (
                f"steps {offset + 1}-{offset + len(spec.steps)} passed (steps 1-{offset} in an earlier run)",)
            rollout.outcome, rollout.reasons = PROMOTED, reasons
            return
        if action.kind is ActionKind.AWAIT_APPROVAL:
            rollout.outcome, rollout.reasons = AWAITING_APPROVAL, action.reasons
            return
        assert action.step_index is not None and action.window_s is not None
        _route(router, rollout, action.weight)
        window = replay_window(router.endpoint, args.served_model, evalset.items, duration_s=action.window_s,
                               concurrency=args.concurrency, max_requests=args.max_requests_per_window or None,
                               max_tokens=args.max_tokens, quality_sample_rate=args.quality_sample_rate,
                               first_seq=seq, timeout_s=args.request_timeout)
        seq += len(window.records)
        verdict = analyze_step(spec, action.step_index, window.metrics(CANARY), window.metrics(STABLE),
                               action.failures_so_far)
        rollout.history.append(verdict)
        rollout.windows.append(window)
        if verdict.abort:
            # Roll back first; logging the window can wait.
            _rollback(router, rollout, verdict.reasons)
        summary = window.summary()
        log.info("step %d (%d%%) window %.1fs: canary %d req, %d err, ttft p95 %s, quality %s | stable %d req, "
                 "%d err, ttft p95 %s -> %s", action.step_index + offset + 1, action.weight, summary["duration_s"],
                 summary[CANARY]["requests"], summary[CANARY]["errors"], _fmt(summary[CANARY]["ttft_p95_ms"]),
                 _fmt(summary[CANARY]["quality_mean"]), summary[STABLE]["requests"], summary[STABLE]["errors"],
                 _fmt(summary[STABLE]["ttft_p95_ms"]), verdict.outcome.value)
        for reason in verdict.reasons:
            log.info("  %s", reason)
        run.log_window(len(rollout.windows), _global(verdict, args), window, rollout)
        if rollout.outcome is not None:
            return


def _route(router: TrafficRouter, rollout: Rollout, weight: int) -> None:
    if rollout.weight == weight:
        return
    change = router.set_weights(weight)
    rollout.changes.append((len(rollout.windows), change))
    rollout.weight = weight
    log.info("routed %d%% to the canary (confirmed in %.3fs)", weight, change.applied_s)


def _rollback(router: TrafficRouter, rollout: Rollout, reasons: tuple[str, ...]) -> None:
    """Weight 0 at once, then measure from the breach to the proxy's confirmation."""
    change = router.set_weights(0)
    rollout.changes.append((len(rollout.windows), change))
    rollout.weight, rollout.rollback = 0, change
    rollout.outcome, rollout.reasons = ROLLED_BACK, reasons
    # No failing window (aborted after max_holds): measure from the last window's end.
    breach = breach_time(rollout.history)
    if breach is None and rollout.history:
        breach = rollout.history[-1].window_end_s
    if breach is not None:
        rollout.breach_to_rollback_s = breach_to_rollback_s(breach, change.confirmed_at)
    log.warning("ROLLED BACK: 0%% to the canary, confirmed %.3fs after the breach (reload %.3fs): %s",
                rollout.breach_to_rollback_s or -1, change.applied_s, "; ".join(reasons))


def _safe_set(router: TrafficRouter, weight: int) -> None:
    try:
        router.set_weights(weight)
    except Exception:  # already failing: log this one, let the original error propagate
        log.exception("could not route %d%% to the canary", weight)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _make_router(args: argparse.Namespace) -> TrafficRouter:
    if args.router == "gateway":
        return GatewayHttpRouteRouter(route=args.route, namespace=args.route_namespace,
                                      stable_service=args.stable_service, canary_service=args.canary_service,
                                      endpoint=args.gateway_url)
    for url in (args.stable_url, args.canary_url):
        waited = wait_healthy(url, timeout_s=args.health_timeout)
        log.info("%s healthy after %.1fs", url, waited)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="llmops-canary-nginx-"))
    return NginxRouter(args.stable_url, args.canary_url, work_dir, nginx_bin=args.nginx_bin)


def _global(verdict: StepVerdict, args: argparse.Namespace) -> StepVerdict:
    """A verdict with the full spec's step index and failure count (this run may have resumed)."""
    return replace(verdict, step_index=verdict.step_index + args.from_step,
                   failures=verdict.failures + args.failures_so_far, failure_limit=args.canary_spec.failure_limit)


def _result(args: argparse.Namespace, evalset: EvalSet, tags: dict[str, str], rollout: Rollout,
            router: TrafficRouter, run: _MlflowRun) -> dict[str, Any]:
    verdicts = [_global(v, args) for v in rollout.history]
    steps = []
    for verdict, window in zip(verdicts, rollout.windows, strict=True):
        steps.append({**window.summary(), "step_index": verdict.step_index, "weight": verdict.weight,
                      "outcome": verdict.outcome.value, "abort": verdict.abort, "reasons": list(verdict.reasons)})
    next_step = None
    if rollout.outcome == AWAITING_APPROVAL:
        next_step = args.from_step + sum(1 for v in rollout.history if v.outcome.value == "promote_step")
    reloads = [change.applied_s for _, change in rollout.changes]
    return {
        "outcome": rollout.outcome,
        "final_weight": rollout.weight if rollout.weight is not None else 0,
        "reasons": list(rollout.reasons),
        "steps": steps,
        "history": [v.to_dict() for v in verdicts],
        "failures": (verdicts[-1].failures if verdicts else args.failures_so_far),
        "next_step": next_step,
        "breach_to_rollback_s": rollout.breach_to_rollback_s,
        "rollback_reload_s": rollout.rollback.applied_s if rollout.rollback else None,
        "weight_changes": [{"after_window": n, "canary": c.canary, "applied_s": c.applied_s}
                           for n, c in rollout.changes],
        "reload_s_max": max(reloads) if reloads else None,
        "router": args.router,
        "endpoint": router.endpoint,
        "served_model": args.served_model,
        "model_stable": args.model_stable,
        "model_canary": args.model_canary,
        "evalset": evalset.name,
        "evalset_revision": evalset.revision,
        "spec": args.canary_spec.to_dict(),
        "from_step": args.from_step,
        "tags": tags,
        "mlflow_run_id": run.run_id,
        "mlflow_experiment_id": run.experiment_id,
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


class _MlflowRun:
    """The canary's MLflow run: opened at the start, a metric series per step, closed with the verdicts."""

    def __init__(self, run_id: str | None = None, experiment_id: str | None = None) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id

    @classmethod
    def start(cls, args: argparse.Namespace, evalset: EvalSet, tags: dict[str, str]) -> _MlflowRun:
        uri = optional_env("MLFLOW_TRACKING_URI")
        if uri is None:
            log.warning("MLFLOW_TRACKING_URI is not set: the canary is not recorded in MLflow")
            return cls()
        import mlflow

        experiment_id = tracking.configure(uri, args.experiment)
        run = mlflow.start_run(experiment_id=experiment_id, run_name=args.run_name)
        mlflow.set_tags({"llmops.stage": "canary", "llmops.job": "canary", "served_model": args.served_model,
                         "model_stable": args.model_stable, "model_canary": args.model_canary,
                         "router": args.router, "evalset": evalset.name, "evalset_revision": evalset.revision,
                         "outcome": "running", **tags})
        spec = args.canary_spec.to_dict()
        mlflow.log_params({"steps": json.dumps(spec.pop("steps")), **spec, "from_step": args.from_step,
                           "failures_so_far": args.failures_so_far, "concurrency": args.concurrency,
                           "max_tokens": args.max_tokens, "quality_sample_rate": args.quality_sample_rate,
                           "stop_before_last_step": args.stop_before_last_step})
        log.info("MLflow run %s in experiment %s", run.info.run_id, args.experiment)
        return cls(run.info.run_id, experiment_id)

    def log_window(self, number: int, verdict: StepVerdict, window: Window, rollout: Rollout) -> None:
        """The window's measurements as ``canary/step_<i>/...`` metrics (MLflow step = window number)."""
        if self.run_id is None:
            return
        import mlflow

        summary = window.summary()
        base = f"canary/step_{verdict.step_index}"
        values = {"weight": verdict.weight, "failures": verdict.failures,
                  "passed": float(verdict.outcome.value == "promote_step")}
        for side, prefix in ((CANARY, ""), (STABLE, "stable_")):
            for name in ("requests", "errors", "error_rate", "ttft_p50_ms", "ttft_p95_ms", "quality_mean",
                         "quality_samples"):
                values[prefix + name] = summary[side][name]
        reloads = [c.applied_s for n, c in rollout.changes if n == number - 1]
        if reloads:
            values["reload_s"] = reloads[0]
        mlflow.log_metrics({f"{base}/{k}": float(v) for k, v in values.items() if v is not None}, step=number)

    def fail(self) -> None:
        """End the run as FAILED (the controller itself failed; the canary was routed 0%)."""
        if self.run_id is None:
            return
        import mlflow

        mlflow.set_tag("outcome", "error")
        mlflow.end_run(status="FAILED")

    def finish(self, rollout: Rollout, result: dict[str, Any]) -> None:
        """Outcome tag, summary metrics, the verdicts as JSON and Markdown, per-request records."""
        if self.run_id is None:
            return
        import mlflow

        mlflow.set_tags({"outcome": result["outcome"], "final_weight": str(result["final_weight"])})
        metrics = {"final_weight": result["final_weight"], "failures": result["failures"],
                   "windows": len(rollout.windows), "breach_to_rollback_s": result["breach_to_rollback_s"],
                   "rollback_reload_s": result["rollback_reload_s"], "reload_s_max": result["reload_s_max"]}
        mlflow.log_metrics({f"canary/{k}": float(v) for k, v in metrics.items() if v is not None})
        mlflow.log_dict({k: result[k] for k in ("outcome", "final_weight", "reasons", "history", "steps",
                                                "breach_to_rollback_s", "weight_changes", "spec")},
                        "canary/verdicts.json")
        mlflow.log_text(_markdown(result), "canary/verdicts.md")
        rows = []
        for number, window in enumerate(rollout.windows, start=1):
            # Errors first: they are what a reviewer looks for.
            records = sorted(window.records, key=lambda r: (r.ok, r.seq))[:MAX_LOGGED_RECORDS]
            rows += [{"window": number, **row} for row in records_as_rows(records)]
        mlflow.log_text("\n".join(json.dumps(row) for row in rows) + "\n", "canary/requests.jsonl")
        mlflow.end_run()


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# Canary {result['outcome']}: final weight {result['final_weight']}%", ""]
    lines += [f"- {reason}" for reason in result["reasons"]]
    if result["breach_to_rollback_s"] is not None:
        lines += ["", f"Breach to rollback: **{result['breach_to_rollback_s']:.3f} s** "
                      f"(proxy reload {result['rollback_reload_s']:.3f} s)."]
    lines.append("")
    for entry in result["history"]:
        lines.append(StepVerdict.from_dict(entry).to_markdown())
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
