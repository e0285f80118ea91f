"""The night's summary: a ratio table per class and workload (like vLLM's nightly comparison
tables), a chart, and the final outcome (which classes regressed, which failed to run).

Pure, except :func:`render_chart`, which writes a PNG with matplotlib (imported there).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Columns of the ratio table: current / baseline of each gated metric, in this order.
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("request_throughput_rps", "req/s"),
    ("output_throughput_tps", "out tok/s"),
    ("goodput_rps", "goodput"),
    ("ttft_p99_ms", "TTFT p99"),
    ("tpot_p99_ms", "TPOT p99"),
    ("itl_p99_ms", "ITL p99"),
    ("e2el_p99_ms", "E2E p99"),
)
CHART_METRICS = ("request_throughput_rps", "goodput_rps", "ttft_p99_ms", "tpot_p99_ms")


@dataclass(frozen=True)
class Row:
    """One (class, model, workload) of the night with its verdict (``Verdict.to_dict()``) or failure."""

    hardware_class: str
    model: str
    workload: str
    status: str
    verdict: Mapping[str, Any] = field(default_factory=dict)
    current: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    mlflow_run_id: str | None = None

    def ratio(self, metric: str) -> float | None:
        """current / baseline of ``metric``, when it was compared."""
        for comparison in self.verdict.get("comparisons", []):
            if comparison["metric"] == metric:
                return comparison.get("ratio")
        return None

    def metric_status(self, metric: str) -> str | None:
        for comparison in self.verdict.get("comparisons", []):
            if comparison["metric"] == metric:
                return comparison.get("status")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"hardware_class": self.hardware_class, "model": self.model, "workload": self.workload,
                "status": self.status, "verdict": dict(self.verdict), "current": dict(self.current),
                "error": self.error, "mlflow_run_id": self.mlflow_run_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        return cls(**{k: data.get(k) for k in ("hardware_class", "model", "workload", "status", "error",
                                                "mlflow_run_id")},
                   verdict=data.get("verdict") or {}, current=data.get("current") or {})


@dataclass(frozen=True)
class Outcome:
    """What the final check decides: failed classes, regressions, and a message naming each."""

    regressions: tuple[str, ...]
    failures: tuple[str, ...]
    new_baselines: tuple[str, ...]
    insufficient: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.regressions and not self.failures

    def message(self) -> str:
        parts = []
        if self.regressions:
            parts.append(f"{len(self.regressions)} regression(s): " + "; ".join(self.regressions))
        if self.failures:
            parts.append(f"{len(self.failures)} failed to run: " + "; ".join(self.failures))
        if self.new_baselines:
            parts.append(f"new baseline: {', '.join(self.new_baselines)}")
        if self.insufficient:
            parts.append(f"insufficient history: {', '.join(self.insufficient)}")
        return " | ".join(parts) or "no benchmark ran"


def outcome(rows: Sequence[Row], failed_targets: Sequence[Mapping[str, str]] = ()) -> Outcome:
    """Regressions and failures of the night; ``failed_targets`` are pods that produced no result."""
    regressions, failures, new, insufficient = [], [], [], []
    for row in rows:
        where = f"{row.hardware_class}/{row.model}/{row.workload}"
        if row.status == "regression":
            regressions.append(f"{where}: " + ", ".join(row.verdict.get("reasons", [])))
        elif row.status == "failed":
            failures.append(f"{where}: {row.error or 'failed'}")
        elif row.status == "new_baseline":
            new.append(where)
        elif row.status == "insufficient_history":
            insufficient.append(where)
    for target in failed_targets:
        failures.append(f"{target['hardware_class']}/{target.get('model_label', target.get('model', '?'))}: "
                        f"{target.get('error') or 'the benchmark pod failed (see its task log)'}")
    return Outcome(tuple(regressions), tuple(failures), tuple(new), tuple(insufficient))


def _fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None or not math.isfinite(ratio) else f"{ratio:.2f}"


def markdown_table(rows: Sequence[Row]) -> str:
    """Ratios current/baseline per class, model and workload (> 1 is better for throughput,
    worse for latency); regressed cells are marked with ``!``."""
    header = ["class", "model", "workload", "status", *(label for _, label in TABLE_METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: (r.hardware_class, r.model, r.workload)):
        cells = [row.hardware_class, row.model, row.workload, row.status.replace("_", " ")]
        for metric, _ in TABLE_METRICS:
            text = _fmt_ratio(row.ratio(metric))
            cells.append(f"**{text}!**" if row.metric_status(metric) == "regression" else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_table(rows: Sequence[Row]) -> str:
    """The same table as HTML (regressions in red, improvements in green), for the MLflow artifact view."""
    header = ["class", "model", "workload", "status", *(label for _, label in TABLE_METRICS)]
    out = ["<table border='1' cellspacing='0' cellpadding='4'>",
           "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    colours = {"regression": "#f8d7da", "improvement": "#d4edda"}
    for row in sorted(rows, key=lambda r: (r.hardware_class, r.model, r.workload)):
        cells = [f"<td>{html.escape(str(v))}</td>" for v in (row.hardware_class, row.model, row.workload,
                                                             row.status.replace("_", " "))]
        for metric, _ in TABLE_METRICS:
            colour = colours.get(row.metric_status(metric) or "", "")
            style = f" style='background:{colour}'" if colour else ""
            cells.append(f"<td{style}>{_fmt_ratio(row.ratio(metric))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out) + "\n"


def render_chart(rows: Sequence[Row], path: str) -> str:
    """A PNG of current/baseline ratios per (class, workload) for the key metrics; returns ``path``.

    Rows without a baseline (new baseline, insufficient history, failed) are drawn as gaps
    and named in the title, so the chart never hides a class that did not compare.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ordered = sorted(rows, key=lambda r: (r.hardware_class, r.model, r.workload))
    labels = [f"{r.hardware_class}\n{r.workload}" for r in ordered] or ["(no runs)"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels)), 4.5))
    width = 0.8 / len(CHART_METRICS)
    handles = []
    for i, metric in enumerate(CHART_METRICS):
        values = [r.ratio(metric) for r in ordered]
        xs = [j + (i - (len(CHART_METRICS) - 1) / 2) * width for j in range(len(ordered))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=metric, color=f"C{i}")
        handles.append(Patch(facecolor=f"C{i}", label=metric))  # the legend without the regression edges
        for bar, r in zip(bars, ordered, strict=True):
            if r.metric_status(metric) == "regression":
                bar.set_edgecolor("red")
                bar.set_linewidth(2.5)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("current / baseline")
    uncompared = [f"{r.hardware_class}/{r.workload}: {r.status.replace('_', ' ')}" for r in ordered
                  if r.status not in ("ok", "regression")]
    title = "Benchmark ratios against each class's rolling baseline (red edge: regression)"
    if uncompared:
        title += "\nnot compared: " + "; ".join(uncompared[:4]) + (" ..." if len(uncompared) > 4 else "")
    ax.set_title(title, fontsize=9)
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
