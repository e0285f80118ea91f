"""The drift report: Markdown summary, HTML page with charts (rendered in headless Chromium), metric names."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from llmops.drift.analysis import DriftOptions, build_report
from llmops.drift.failures import newly_failing, worst_failing
from llmops.drift.report import SeriesFailures, render_html, render_markdown, report_metrics
from tests.unit.test_drift_analysis import analyse, passing, weekly

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
EVALSETS = [{"name": "set", "revision": "rev-a", "items": 160, "categories": {"reverse": 40, "copy": 40},
             "warnings": []}]


def _drifting_week():
    """Four weeks of a champion whose reverse category collapses this week, and its previous version."""
    weeks = ("2026-W44", "2026-W45", "2026-W46")
    history = [weekly(w, {"reverse": passing(40, 39), "copy": passing(40, 38)}) for w in weeks]
    now = weekly("2026-W47", {"reverse": passing(40, 3), "copy": passing(40, 38)}, version="2")
    previous = weekly("2026-W47", {"reverse": passing(40, 39), "copy": passing(40, 38)}, alias="previous")
    champ = analyse(now, history, previous=previous)
    prev = analyse(previous)
    report = build_report("tiny-chat", "2026-W47", [champ, prev], DriftOptions(weeks=4),
                          notes=["champion v2 on set: no qualification run <recorded>"])
    failures = {("champion", "set"): SeriesFailures(worst=worst_failing(now.items, history[-1].items),
                                                    new=newly_failing(now.items, history[-1].items))}
    return report, failures


def test_markdown_names_what_drifted_by_how_much_and_since_when() -> None:
    report, failures = _drifting_week()
    text = render_markdown(report, failures, EVALSETS)
    head = text.split("\n## ", 2)
    assert head[0].startswith("# Weekly eval drift: tiny-chat, 2026-W47: DRIFT ALERT")
    drifted = head[1]
    assert "set/reverse" in drifted and "-0.900" in drifted and "since 2026-W47" in drifted
    assert "copy" not in drifted
    assert "Version changed since 2026-W46: v1 -> v2." in text
    assert "Newly failing since 2026-W46 (36):" in text
    assert "| reverse-0003 | reverse | `reverse question 3` | `ref3` | `wrong` | `ref3` |" in text
    assert "| reverse-0027 |" in text and "| reverse-0028 |" not in text  # 25 listed
    assert "... and 11 more (all in drift/failure_cases.json)" in text
    assert "| set | `rev-a` | 160 | copy 40, reverse 40 | ok |" in text


def test_markdown_without_drift_says_so() -> None:
    quiet = build_report("m", "2026-W47", [analyse(weekly("2026-W47", {"a": [1.0]}))], DriftOptions())
    text = render_markdown(quiet)
    assert "no drift alert" in text and "nothing beyond the threshold" in text


def test_failure_cases_keep_every_case() -> None:
    from llmops.drift.report import failure_cases

    _, failures = _drifting_week()
    rows = failure_cases(failures)
    assert len([r for r in rows if r["list"] == "newly_failing"]) == 36
    assert {r["alias"] for r in rows} == {"champion"} and rows[0]["prompt"].startswith("reverse question")


def test_metrics_have_stable_names() -> None:
    report, _ = _drifting_week()
    metrics = report_metrics(report)
    assert metrics["drift/alerts"] == 1.0
    assert metrics["drift/set/reverse/delta_week"] == pytest.approx(-0.9)
    assert metrics["drift/set/reverse/drifted"] == 1.0 and metrics["drift/set/copy/drifted"] == 0.0
    assert metrics["drift/set/reverse/vs_previous"] == pytest.approx(-0.9)
    assert metrics["drift/set/reverse/score"] == pytest.approx(3 / 40)
    assert "drift/set/reverse/delta_baseline" not in metrics  # no baseline: no number invented
    assert "drift_previous/set/reverse/score" in metrics


def test_html_is_self_contained_escaped_and_has_one_chart_per_series() -> None:
    report, failures = _drifting_week()
    page = render_html(report, failures, EVALSETS)
    assert page.count("<svg") == 2 and "<?xml" not in page
    assert "<script" not in page and "<link" not in page
    assert not any(f'{attr}="http' in page or f"{attr}='http" in page for attr in ("src", "href"))
    assert "&lt;recorded&gt;" in page and "<recorded>" not in page
    assert "DRIFT ALERT" in page and "reverse (drift)" in page and "class='drift'" in page
    assert render_html(report, failures, EVALSETS) == page  # deterministic: same input, same bytes


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot_in_chromium(html_file: Path, png: Path, window: str = "1280,2200") -> Path:
    """Render ``html_file`` in headless Chromium to ``png``; assert the picture is not blank."""
    browser = _chromium()
    if browser is None:
        pytest.fail("chromium is not installed: run `make system-deps` (Debian package 'chromium')")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={window}",
             html_file.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": profile})
    assert png.exists(), f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    from PIL import Image, ImageStat

    with Image.open(png) as image:
        stat = ImageStat.Stat(image.convert("L"))
        # A blank page is one colour: variance ~0. Text, tables and charts give thousands.
        assert stat.var[0] > 100, f"{png} looks blank (pixel variance {stat.var[0]:.1f})"
        assert image.size == tuple(int(v) for v in window.split(","))
    return png


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    report, failures = _drifting_week()
    page = tmp_path / "report.html"
    page.write_text(render_html(report, failures, EVALSETS))
    shot = screenshot_in_chromium(page, ARTIFACTS / "drift_report_unit.png")
    print(f"report screenshot: {shot}")
