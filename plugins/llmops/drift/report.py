"""The weekly drift report: a Markdown summary and a self-contained HTML page with charts.

Pure rendering of a :class:`llmops.drift.analysis.DriftReport`, its failure-case lists and the
eval sets' hygiene summary; the job logs both files to MLflow. Charts are inline SVG drawn
with matplotlib (Agg backend, deterministic ids): per series, each category's weekly score
with its bootstrap interval as a band, drifted categories marked at the current week.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops.drift.analysis import (
    CHANGED,
    DRIFT,
    INCONCLUSIVE,
    CategoryDrift,
    Comparison,
    DriftReport,
    SeriesDrift,
)
from llmops.drift.failures import FailureCase
from llmops.drift.series import week_index

_SHORT = 60  # characters of a prompt or answer shown in a table cell
MAX_LISTED = 25  # newly failing items listed per series; every case is in drift/failure_cases.json


@dataclass(frozen=True)
class SeriesFailures:
    """The failure-case review lists of one series: worst failing and newly failing, by category."""

    worst: Mapping[str, Sequence[FailureCase]] = field(default_factory=dict)
    new: Mapping[str, Sequence[FailureCase]] = field(default_factory=dict)


FailuresBySeries = Mapping[tuple[str, str], SeriesFailures]
"""Keyed by (alias, eval set)."""


def series_key(series: SeriesDrift) -> tuple[str, str]:
    return series.alias, series.evalset


# -- Markdown --------------------------------------------------------------------------------

def render_markdown(report: DriftReport, failures: FailuresBySeries | None = None,
                    evalsets: Sequence[Mapping[str, Any]] = ()) -> str:
    """The summary a person reads in the weekly failure-case review."""
    failures = failures or {}
    opts = report.options
    head = "DRIFT ALERT" if report.drift_detected else "no drift alert"
    lines = [f"# Weekly eval drift: {report.model}, {report.week}: {head}", "",
             f"Drift = |delta| > {opts.threshold:.3f} and the paired-bootstrap {opts.confidence:.0%} interval "
             f"excludes 0; alerts on `{opts.fail_on}` of {', '.join(opts.alert_aliases)}; trend over "
             f"{opts.weeks} weeks.", ""]
    alerts = report.alerts
    lines += ["## What drifted", ""]
    lines += [f"- **{a.describe()}**" for a in alerts] or ["- nothing beyond the threshold and its interval"]
    other = [(s, c) for s in report.series for c in s.categories
             if c.drifted and not any(a.alias == s.alias and a.evalset == s.evalset and a.category == c.category
                                      for a in alerts)]
    lines += [f"- (no alert) {s.alias} v{s.version} {s.evalset}/{c.category}: "
              + "; ".join(f"{d.delta:+.3f} vs {d.reference_label}" for d in c.drifts()) for s, c in other]
    for evalset, old, new in report.changed_evalsets:
        lines.append(f"- eval set `{evalset}` **changed** ({old} -> {new}): a new series starts; not drift")
    lines.append("")
    for s in report.series:
        lines += _series_markdown(s, failures.get(series_key(s)))
    if evalsets:
        lines += ["## Eval sets", "", "| eval set | revision | items | per category | checks |",
                  "|---|---|---:|---|---|"]
        for e in evalsets:
            per_cat = ", ".join(f"{k} {v}" for k, v in sorted((e.get("categories") or {}).items()))
            lines.append(f"| {e['name']} | `{e['revision']}` | {e['items']} | {per_cat} | "
                         f"{'; '.join(e.get('warnings') or []) or 'ok'} |")
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines) + "\n"


def _series_markdown(s: SeriesDrift, failures: SeriesFailures | None) -> list[str]:
    lines = [f"## {s.alias} v{s.version} on {s.evalset} (revision `{s.evalset_revision}`)", ""]
    if s.version_changed:
        lines += [f"Version changed since {s.last_week}: v{s.last_week_version} -> v{s.version}.", ""]
    lines += ["| category | score | 95% CI | vs last week | vs baseline | vs previous | trend/week | since |",
              "|---|---:|---|---|---|---|---:|---|"]
    for c in s.categories:
        slope = f"{c.trend.slope_per_week:+.3f}" if c.trend.slope_per_week is not None else "-"
        lines.append(f"| {c.category} | {c.current.mean:.3f} | [{c.current.ci_low:.3f}, {c.current.ci_high:.3f}] | "
                     f"{_cmp_md(c.week)} | {_cmp_md(c.baseline)} | {_cmp_md(c.vs_previous)} | {slope} | "
                     f"{c.since or '-'} |")
    lines.append("")
    if failures is not None and (failures.new or failures.worst):
        new = [case for cases in failures.new.values() for case in cases]
        if new:
            lines += [f"Newly failing since {s.last_week} ({len(new)}):", "",
                      "| id | category | prompt | reference | now | last week |", "|---|---|---|---|---|---|"]
            lines += [f"| {c.id} | {c.category} | {_md(c.prompt)} | {_md(c.reference)} | {_md(c.prediction)} | "
                      f"{_md(c.last_week_prediction or '')} |" for c in new[:MAX_LISTED]]
            lines += ["", _more(len(new)), ""] if len(new) > MAX_LISTED else [""]
        worst = [case for cases in failures.worst.values() for case in cases]
        if worst:
            lines += ["Worst failing examples per category:", "",
                      "| id | category | score | prompt | reference | answer |", "|---|---|---:|---|---|---|"]
            lines += [f"| {c.id}{' (new)' if c.newly_failing else ''} | {c.category} | {c.score:.2f} | "
                      f"{_md(c.prompt)} | {_md(c.reference)} | {_md(c.error or c.prediction)} |" for c in worst]
            lines.append("")
    return lines


def _more(count: int) -> str:
    if count <= MAX_LISTED:
        return ""
    return f"... and {count - MAX_LISTED} more (all in drift/failure_cases.json)"


def failure_cases(failures: FailuresBySeries) -> list[dict[str, Any]]:
    """Every failure case of every series, JSON-able (the ``drift/failure_cases.json`` artifact)."""
    from dataclasses import asdict

    rows = []
    for (alias, evalset), lists in sorted(failures.items()):
        for kind, groups in (("newly_failing", lists.new), ("worst_failing", lists.worst)):
            rows += [{"alias": alias, "evalset": evalset, "list": kind, **asdict(case)}
                     for cases in groups.values() for case in cases]
    return rows


def _cmp_md(c: Comparison | None) -> str:
    if c is None:
        return "-"
    if c.delta is None:
        return c.verdict.replace("_", " ")
    mark = f"**{c.verdict} {c.direction}**" if c.verdict == DRIFT else c.verdict
    return f"{c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] {mark}"


def _md(text: str) -> str:
    short = text if len(text) <= _SHORT else text[:_SHORT - 1] + "…"
    return "`" + short.replace("|", "\\|").replace("`", "'").replace("\n", " ") + "`" if short else "(empty)"


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2330;max-width:1200px}
h1{font-size:22px;margin:0 0 6px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde}
h3{font-size:15px;margin:16px 0 6px}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.alert{background:#fde8e8;color:#9b1c1c;border:1px solid #f5b5b5}
.ok{background:#e6f6ec;color:#14532d;border:1px solid #a6dcb8}
table{border-collapse:collapse;margin:6px 0 14px;font-size:13px}
th,td{border:1px solid #d6d9e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.drift{background:#fde8e8;font-weight:600} .changed{background:#fff4d6} .inconclusive{color:#6b5b00}
code{font-size:12px;background:#f4f5f7;padding:1px 3px;border-radius:3px} .muted{color:#667}
.chart svg{max-width:100%;height:auto}
"""


def render_html(report: DriftReport, failures: FailuresBySeries | None = None,
                evalsets: Sequence[Mapping[str, Any]] = (), *, charts: bool = True) -> str:
    """A self-contained HTML page (inline CSS and SVG charts, no scripts, no external requests)."""
    failures = failures or {}
    e = html.escape
    opts = report.options
    alerts = report.alerts
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Eval drift {e(report.model)} "
             f"{e(report.week)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Weekly eval drift: {e(report.model)}, {e(report.week)}</h1>",
             f"<p class='muted'>Drift = |delta| &gt; {opts.threshold:.3f} and the paired-bootstrap "
             f"{opts.confidence:.0%} interval excludes 0. Alerts on <b>{e(opts.fail_on)}</b> of "
             f"{e(', '.join(opts.alert_aliases))}. Trend over {opts.weeks} weeks.</p>"]
    if alerts:
        parts.append(f"<div class='banner alert'>DRIFT ALERT: {len(alerts)} category drift(s)</div><ul>")
        parts += [f"<li>{e(a.describe())}</li>" for a in alerts]
        parts.append("</ul>")
    else:
        parts.append("<div class='banner ok'>No drift alert this week</div>")
    changed = report.changed_evalsets
    if changed:
        parts.append("<ul>" + "".join(f"<li class='changed'>eval set <code>{e(n)}</code> changed "
                                      f"(<code>{e(o)}</code> &rarr; <code>{e(r)}</code>): a new series starts; "
                                      "reported as changed, not drift</li>" for n, o, r in changed) + "</ul>")
    for s in report.series:
        parts.append(_series_html(s, failures.get(series_key(s)), charts))
    if evalsets:
        parts.append("<h2>Eval sets</h2><table><tr><th>eval set</th><th>revision</th><th>items</th>"
                     "<th>per category</th><th>checks</th></tr>")
        for ev in evalsets:
            per_cat = ", ".join(f"{k} {v}" for k, v in sorted((ev.get("categories") or {}).items()))
            parts.append(f"<tr><td>{e(ev['name'])}</td><td><code>{e(ev['revision'])}</code></td>"
                         f"<td class='num'>{ev['items']}</td><td>{e(per_cat)}</td>"
                         f"<td>{e('; '.join(ev.get('warnings') or []) or 'ok')}</td></tr>")
        parts.append("</table>")
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _series_html(s: SeriesDrift, failures: SeriesFailures | None, charts: bool) -> str:
    e = html.escape
    out = [f"<h2>{e(s.alias)} v{e(s.version)} on {e(s.evalset)} <span class='muted'>(revision "
           f"<code>{e(s.evalset_revision)}</code>)</span></h2>"]
    if s.version_changed:
        out.append(f"<p>Version changed since {e(s.last_week or '')}: v{e(s.last_week_version or '')} &rarr; "
                   f"v{e(s.version)}.</p>")
    if charts:
        out.append(f"<div class='chart'>{chart_svg(s)}</div>")
    out.append("<table><tr><th>category</th><th>score</th><th>95% CI</th><th>vs last week</th><th>vs baseline</th>"
               "<th>vs previous</th><th>trend / week</th><th>since</th></tr>")
    for c in s.categories:
        slope = f"{c.trend.slope_per_week:+.3f}" if c.trend.slope_per_week is not None else "-"
        row_css = " class='drift'" if c.drifted else ""
        out.append(f"<tr{row_css}><td>{e(c.category)}</td>"
                   f"<td class='num'>{c.current.mean:.3f}</td>"
                   f"<td>[{c.current.ci_low:.3f}, {c.current.ci_high:.3f}]</td>{_cmp_html(c.week)}"
                   f"{_cmp_html(c.baseline)}{_cmp_html(c.vs_previous)}<td class='num'>{slope}</td>"
                   f"<td>{e(c.since or '-')}</td></tr>")
    out.append("</table>")
    reasons = [(c.category, comp.reason) for c in s.categories for comp in (c.week, c.baseline)
               if comp.verdict != "stable"]
    if reasons:
        out.append("<details><summary>Reasons</summary><ul>" + "".join(
            f"<li><b>{e(cat)}</b>: {e(reason)}</li>" for cat, reason in reasons) + "</ul></details>")
    if failures is not None:
        new = [case for cases in failures.new.values() for case in cases]
        out.append(f"<h3>Newly failing since {e(s.last_week or 'last week')} ({len(new)})</h3>")
        if new:
            out.append("<table><tr><th>id</th><th>category</th><th>prompt</th><th>reference</th><th>answer now</th>"
                       "<th>answer last week</th></tr>")
            out += [f"<tr><td>{e(c.id)}</td><td>{e(c.category)}</td><td><code>{e(c.prompt)}</code></td>"
                    f"<td><code>{e(c.reference)}</code></td><td><code>{e(c.error or c.prediction)}</code></td>"
                    f"<td><code>{e(c.last_week_prediction or '')}</code></td></tr>" for c in new[:MAX_LISTED]]
            out.append(f"</table><p class='muted'>{e(_more(len(new)))}</p>")
        else:
            out.append("<p class='muted'>none</p>")
        out.append("<h3>Worst failing examples per category</h3>")
        worst = [case for cases in failures.worst.values() for case in cases]
        if worst:
            out.append("<table><tr><th>id</th><th>category</th><th>score</th><th>prompt</th><th>reference</th>"
                       "<th>answer</th></tr>")
            out += [f"<tr><td>{e(c.id)}{' <b>(new)</b>' if c.newly_failing else ''}</td><td>{e(c.category)}</td>"
                    f"<td class='num'>{c.score:.2f}</td><td><code>{e(c.prompt)}</code></td>"
                    f"<td><code>{e(c.reference)}</code></td><td><code>{e(c.error or c.prediction)}</code></td></tr>"
                    for c in worst]
            out.append("</table>")
        else:
            out.append("<p class='muted'>none</p>")
    return "\n".join(out)


def _cmp_html(c: Comparison | None) -> str:
    e = html.escape
    if c is None:
        return "<td class='muted'>-</td>"
    css = {DRIFT: "drift", CHANGED: "changed", INCONCLUSIVE: "inconclusive"}.get(c.verdict, "")
    if c.delta is None:
        return f"<td class='{css}' title='{e(c.reason)}'>{e(c.verdict.replace('_', ' '))}</td>"
    word = f"{c.verdict} {c.direction}" if c.verdict == DRIFT else c.verdict
    return (f"<td class='{css}' title='{e(c.reason)}'>{c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}] "
            f"{e(word)}</td>")


def chart_svg(s: SeriesDrift) -> str:
    """Score per category over the series' weeks, interval bands, drifted categories marked (inline SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = sorted({p.week for c in s.categories for p in c.points}, key=week_index)
    x_of = {w: i for i, w in enumerate(weeks)}
    with matplotlib.rc_context({"svg.hashsalt": "llmops-drift", "svg.fonttype": "none", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=100)
        try:
            for index, c in enumerate(s.categories):
                color = f"C{index % 10}"
                xs = [x_of[p.week] for p in c.points]
                ax.fill_between(xs, [p.ci_low for p in c.points], [p.ci_high for p in c.points], color=color,
                                alpha=0.15, linewidth=0)
                ax.plot(xs, [p.mean for p in c.points], marker="o", color=color, label=_legend(c))
                if c.drifted and c.points:
                    ax.scatter([xs[-1]], [c.points[-1].mean], s=140, facecolors="none", edgecolors="red",
                               linewidths=2, zorder=5)
            ax.set_xticks(range(len(weeks)), weeks)
            ax.set_xlim(-0.5, max(len(weeks) - 0.5, 0.5))
            ax.set_ylim(-0.05, 1.05)
            ax.set_ylabel("score")
            ax.set_title(f"{s.alias} v{s.version} on {s.evalset} ({s.evalset_revision})")
            ax.grid(alpha=0.3)
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
            fig.tight_layout()
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the page is HTML


def _legend(c: CategoryDrift) -> str:
    return f"{c.category} (drift)" if c.drifted else c.category


# -- MLflow metrics --------------------------------------------------------------------------

def metric_prefix(alias: str) -> str:
    """``drift`` for the champion (the production model's chart), ``drift_<alias>`` for other aliases."""
    return "drift" if alias == "champion" else f"drift_{alias}"


def report_metrics(report: DriftReport) -> dict[str, float]:
    """Metrics under stable names, so the MLflow UI charts the same series week after week.

    ``drift/<evalset>/<category>/score`` (+ ``_ci_low``/``_ci_high``), ``.../delta_week``,
    ``.../delta_baseline``, ``.../vs_previous`` (when measured), ``.../drifted`` (0/1), and
    ``drift/alerts`` (the number of alerts); other aliases under ``drift_<alias>/``.
    """
    metrics: dict[str, float] = {"drift/alerts": float(len(report.alerts))}
    for s in report.series:
        for c in s.categories:
            base = f"{metric_prefix(s.alias)}/{s.evalset}/{c.category}"
            metrics[f"{base}/score"] = c.current.mean
            metrics[f"{base}/score_ci_low"] = c.current.ci_low
            metrics[f"{base}/score_ci_high"] = c.current.ci_high
            metrics[f"{base}/drifted"] = float(c.drifted)
            for name, comp in (("delta_week", c.week), ("delta_baseline", c.baseline), ("vs_previous", c.vs_previous)):
                if comp is not None and comp.delta is not None:
                    metrics[f"{base}/{name}"] = comp.delta
            if c.trend.slope_per_week is not None:
                metrics[f"{base}/trend_per_week"] = c.trend.slope_per_week
    return metrics
