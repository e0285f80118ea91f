"""The qualify stage's decision: eval gate, formatting check and latency gate, as pure functions.

Nothing here does I/O. The qualify task fetches the candidate's and the champion's per-item
scores and benchmark latencies, calls :func:`qualify`, logs the :class:`GateVerdict`
(``to_dict()`` for ``mlflow.log_dict``, ``to_markdown()`` for ``mlflow.log_text`` and the
Airflow UI) and fails the task when ``verdict.passed`` is false. A gate is data: the
thresholds come from the eval set's category config and :class:`GateOptions`.

Decision rules (``EPS`` absorbs float rounding so that a value exactly at a threshold passes):

* **With a champion**, per category: ``delta = mean(candidate - champion)`` over the category's
  items, paired by item id; its interval is a seeded percentile bootstrap that resamples item
  ids jointly for both models. The category FAILS iff ``-delta > max_drop + EPS`` (it dropped
  by more than ``max_drop``) AND ``ci_high < 0`` (the whole interval of the difference is below
  zero, so the drop is not noise). Both models must have been scored on the same eval-set
  revision and the same item ids, else :class:`GateInputError`.
* **Without a champion** (the first model ever), per category: FAILS iff
  ``mean(candidate) < min_score - EPS``; the interval reported is that of the candidate mean.
* A category in the config without any scored item FAILS. A scored category missing from the
  config is gated with the default :class:`CategoryConfig` (nothing is left ungated).
* **Formatting**: with a champion, the tokenizer (chat-template) is flagged as changed when
  its hash differs from the champion's or either hash is unknown. When either is flagged, the
  formatting category (``GateOptions.formatting_category``) must have scored items and pass.
* **Latency**, per metric (TTFT p99, TPOT p99): FAILS iff the candidate's estimate is above the
  hardware class SLO, or (with a champion measured on the same class) above
  ``champion * (1 + latency_tolerance)``. The estimate is the single measurement on a dedicated
  class (``slo.latency_rounds`` 1, every GPU class); on a class whose CPU cores are shared
  (``slo.shared_cpu``) it is the **median of the rounds' p99s**, ``slo.latency_rounds`` rounds
  measured one after another, so one round slowed by a neighbour does not decide the verdict.
  Both models must be measured in as many rounds as the class declares, else
  :class:`GateInputError`. Each row says which estimate it judged.
* The gate passes iff every category row, every latency row and the formatting check pass.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from llmops.evals.evalset import CategoryConfig
from llmops.evals.stats import bootstrap_mean

EPS = 1e-9
"""Tolerance of threshold comparisons: means of many floats are not exact (0.80 - 0.78 > 0.02)."""

_SHOWN_IDS = 5


class GateInputError(ValueError):
    """Inputs the gate refuses to compare (different eval-set revisions or item sets, bad values)."""


class ScoredItem(Protocol):
    """Anything with an item id, a category and a score (``llmops.evals.scoring.ItemResult`` fits)."""

    @property
    def id(self) -> str: ...

    @property
    def category(self) -> str: ...

    @property
    def score(self) -> float: ...


class LatencySlo(Protocol):
    """A hardware class's latency objectives (``HardwareClass.slo`` fits)."""

    @property
    def ttft_p99_ms(self) -> float: ...

    @property
    def tpot_p99_ms(self) -> float: ...

    @property
    def shared_cpu(self) -> bool: ...

    @property
    def latency_rounds(self) -> int: ...


LATENCY_METRICS = ("ttft_p99_ms", "tpot_p99_ms")
SINGLE_MEASUREMENT = "single measurement"


def latency_estimate(slo: LatencySlo) -> str:
    """How the gate estimates a class's latency, in the words of the verdict."""
    rounds = int(slo.latency_rounds)
    if rounds <= 1:
        return SINGLE_MEASUREMENT
    return f"median of {rounds} rounds" + (" on a shared-CPU class" if slo.shared_cpu else "")


@dataclass(frozen=True)
class ItemScore:
    """One item's score, as the gate keeps it."""

    id: str
    category: str
    score: float


@dataclass(frozen=True)
class ModelScores:
    """One model version's per-item scores on one eval-set revision, with its formatting pins.

    ``tokenizer_hash`` and ``chat_template_hash`` are the deployment manifest's pins; ``None``
    means unknown, which the formatting check treats as changed.
    """

    revision: str
    items: tuple[ItemScore, ...]
    tokenizer_hash: str | None = None
    chat_template_hash: str | None = None

    def __post_init__(self) -> None:
        if not self.revision:
            raise GateInputError("ModelScores.revision: the eval-set revision is empty")
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise GateInputError(f"ModelScores.items: item id {item.id!r} appears twice")
            seen.add(item.id)
            if not item.category:
                raise GateInputError(f"ModelScores.items: item {item.id!r} has an empty category")
            if not isinstance(item.score, (int, float)) or not math.isfinite(item.score):
                raise GateInputError(f"ModelScores.items: item {item.id!r} has score {item.score!r}; "
                                     "scores must be finite numbers")

    @classmethod
    def from_items(cls, revision: str, items: Iterable[ScoredItem], *, tokenizer_hash: str | None = None,
                   chat_template_hash: str | None = None) -> ModelScores:
        """Build from per-item results (e.g. ``ItemResult``s of one eval run)."""
        kept = tuple(ItemScore(id=str(i.id), category=str(i.category), score=float(i.score)) for i in items)
        return cls(revision=revision, items=kept, tokenizer_hash=tokenizer_hash,
                   chat_template_hash=chat_template_hash)

    def by_category(self) -> dict[str, dict[str, float]]:
        """Scores grouped by category, then by item id."""
        groups: dict[str, dict[str, float]] = {}
        for item in self.items:
            groups.setdefault(item.category, {})[item.id] = item.score
        return groups


@dataclass(frozen=True)
class LatencyRound:
    """One round's p99 latencies (a shared-CPU class measures several, see the module rules)."""

    ttft_p99_ms: float
    tpot_p99_ms: float

    def __post_init__(self) -> None:
        _check_latencies("LatencyRound", self)


@dataclass(frozen=True)
class LatencyMeasurement:
    """A benchmark's p99 latencies of one model version on one hardware class.

    A single measurement leaves ``rounds`` empty. Measured in rounds (a shared-CPU class),
    ``rounds`` holds each round's p99s and ``ttft_p99_ms``/``tpot_p99_ms`` are their medians,
    the robust estimate the gate judges: build it with :meth:`from_rounds`.
    """

    hardware_class: str
    ttft_p99_ms: float
    tpot_p99_ms: float
    rounds: tuple[LatencyRound, ...] = ()

    def __post_init__(self) -> None:
        _check_latencies("LatencyMeasurement", self)
        object.__setattr__(self, "rounds", tuple(self.rounds))
        for i, one in enumerate(self.rounds):
            if not isinstance(one, LatencyRound):
                raise GateInputError(f"LatencyMeasurement.rounds[{i}]: {one!r} is not a LatencyRound")
        for name in LATENCY_METRICS if self.rounds else ():
            median = statistics.median(getattr(one, name) for one in self.rounds)
            if not math.isclose(getattr(self, name), median, rel_tol=1e-9, abs_tol=1e-9):
                raise GateInputError(f"LatencyMeasurement.{name}: {getattr(self, name)!r} is not the median "
                                     f"{median!r} of its {len(self.rounds)} rounds; build it with from_rounds()")

    @classmethod
    def from_rounds(cls, hardware_class: str,
                    rounds: Iterable[LatencyRound | Mapping[str, float]]) -> LatencyMeasurement:
        """The median of each metric over ``rounds`` (``LatencyRound``s or mappings with both p99s)."""
        kept = []
        for i, one in enumerate(rounds):
            if isinstance(one, LatencyRound):
                kept.append(one)
                continue
            missing = [name for name in LATENCY_METRICS if name not in one]
            if missing:
                raise GateInputError(f"LatencyMeasurement rounds[{i}]: no {', '.join(missing)} in {dict(one)!r}")
            kept.append(LatencyRound(**{name: one[name] for name in LATENCY_METRICS}))
        if not kept:
            raise GateInputError("LatencyMeasurement.rounds: no rounds to take the median of")
        medians = {name: statistics.median(getattr(one, name) for one in kept) for name in LATENCY_METRICS}
        return cls(hardware_class=hardware_class, rounds=tuple(kept), **medians)

    @property
    def round_count(self) -> int:
        """How many rounds were measured (1 for a single measurement)."""
        return len(self.rounds) or 1

    def round_values(self, metric: str) -> tuple[float, ...]:
        """Each round's value of ``metric`` (empty for a single measurement)."""
        return tuple(float(getattr(one, metric)) for one in self.rounds)


@dataclass(frozen=True)
class GateOptions:
    """Knobs of the gate that are not per category."""

    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    formatting_category: str = "json"
    latency_tolerance: float = 0.10

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise GateInputError(f"GateOptions.confidence: {self.confidence} is not in (0, 1)")
        if self.resamples < 1:
            raise GateInputError(f"GateOptions.resamples: {self.resamples} is not >= 1")
        if self.latency_tolerance < 0:
            raise GateInputError(f"GateOptions.latency_tolerance: {self.latency_tolerance} is negative")
        if not self.formatting_category:
            raise GateInputError("GateOptions.formatting_category: empty")


@dataclass(frozen=True)
class CategoryRow:
    """One category's comparison.

    With a champion, ``ci_low``/``ci_high`` bound the paired difference (candidate - champion)
    and ``threshold`` is ``max_drop`` (rule ``"max_drop"``); without one they bound the
    candidate mean and ``threshold`` is ``min_score`` (rule ``"min_score"``).
    """

    category: str
    n: int
    candidate_mean: float | None
    champion_mean: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float
    rule: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class LatencyRow:
    """One latency metric's comparison with the class SLO and the champion.

    ``candidate_ms``/``champion_ms`` are the values judged: the single measurement, or the
    median of the rounds (``estimate`` says which; the rounds' p99s are in ``*_rounds_ms``).
    """

    metric: str
    candidate_ms: float
    champion_ms: float | None
    slo_ms: float
    ratio: float | None
    max_ratio: float
    passed: bool
    reason: str
    estimate: str = SINGLE_MEASUREMENT
    candidate_rounds_ms: tuple[float, ...] = ()
    champion_rounds_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class GateVerdict:
    """The qualify gate's verdict: pass/fail, every row, the formatting flags and the reasons."""

    passed: bool
    eval_set_revision: str
    hardware_class: str
    has_champion: bool
    confidence: float
    formatting_category: str
    tokenizer_changed: bool
    chat_template_changed: bool
    categories: tuple[CategoryRow, ...]
    latency: tuple[LatencyRow, ...]
    reasons: tuple[str, ...] = field(default_factory=tuple)
    latency_estimate: str = SINGLE_MEASUREMENT

    @property
    def failed_categories(self) -> list[str]:
        """Names of the categories that failed."""
        return [row.category for row in self.categories if not row.passed]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (for ``mlflow.log_dict`` and XCom)."""
        data = asdict(self)
        data["categories"] = [asdict(row) for row in self.categories]
        data["latency"] = [asdict(row) for row in self.latency]
        data["reasons"] = list(self.reasons)
        data["failed_categories"] = self.failed_categories
        return data

    def to_markdown(self) -> str:
        """A readable report (for ``mlflow.log_text`` and the Airflow UI)."""
        head = "PASSED" if self.passed else "FAILED"
        baseline = "vs champion (paired bootstrap)" if self.has_champion else "first model: absolute minimums"
        lines = [
            f"## Qualify gate: {head}",
            "",
            f"Eval set revision `{self.eval_set_revision}`, hardware class `{self.hardware_class}`, {baseline}.",
            f"Tokenizer changed: {_yes(self.tokenizer_changed)}; chat template changed: "
            f"{_yes(self.chat_template_changed)}; formatting category: `{self.formatting_category}`.",
            "",
            f"| category | n | candidate | champion | delta | {self.confidence:.0%} CI | rule | result |",
            "|---|---:|---:|---:|---:|---|---|---|",
        ]
        for r in self.categories:
            rule = f"drop <= {r.threshold:.3f}" if r.rule == "max_drop" else f">= {r.threshold:.3f}"
            ci = f"[{_num(r.ci_low)}, {_num(r.ci_high)}]" if r.ci_low is not None else "-"
            lines.append(f"| {r.category} | {r.n} | {_num(r.candidate_mean)} | {_num(r.champion_mean)} | "
                         f"{_num(r.delta, signed=True)} | {ci} | {rule} | {_result(r.passed)} |")
        in_rounds = any(lr.candidate_rounds_ms for lr in self.latency)
        lines += ["", f"Latency: {self.latency_estimate}"
                  + (" (each round's p99 in the last column: candidate / champion)." if in_rounds else "."),
                  "", "| latency | candidate ms | champion ms | SLO ms | ratio | max ratio | result |"
                  + (" rounds ms |" if in_rounds else ""),
                  "|---|---:|---:|---:|---:|---:|---|" + ("---|" if in_rounds else "")]
        for lr in self.latency:
            rounds = ""
            if in_rounds:
                rounds = f" {_ms_list(lr.candidate_rounds_ms)} / {_ms_list(lr.champion_rounds_ms)} |"
            lines.append(f"| {lr.metric} | {lr.candidate_ms:.1f} | {_num(lr.champion_ms, digits=1)} | "
                         f"{lr.slo_ms:.1f} | {_num(lr.ratio)} | {lr.max_ratio:.3f} | {_result(lr.passed)} |"
                         + rounds)
        lines += ["", "**Reasons**", ""] + [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines) + "\n"


def qualify(candidate: ModelScores, champion: ModelScores | None, categories: Mapping[str, CategoryConfig],
            candidate_latency: LatencyMeasurement, champion_latency: LatencyMeasurement | None,
            slo: LatencySlo, options: GateOptions | None = None) -> GateVerdict:
    """The qualify gate: eval gate + formatting check + latency gate, as one verdict.

    ``champion`` is ``None`` for the first model ever; ``champion_latency`` is ``None`` when the
    champion was never benchmarked on this hardware class (the SLO still applies).
    Raises :class:`GateInputError` when the inputs are not comparable.
    """
    options = options or GateOptions()
    rows = eval_gate(candidate, champion, categories, options)
    latency = latency_gate(candidate_latency, champion_latency, slo, tolerance=options.latency_tolerance)
    tokenizer_changed, template_changed = formatting_flags(candidate, champion)
    formatting_ok, formatting_note = _formatting_check(rows, tokenizer_changed, template_changed,
                                                       options.formatting_category)
    reasons = [row.reason for row in rows if not row.passed]
    if formatting_note:
        reasons.append(formatting_note)
    reasons += [row.reason for row in latency if not row.passed]
    passed = formatting_ok and all(r.passed for r in rows) and all(r.passed for r in latency)
    if passed:
        reasons.append(f"passed: {len(rows)} categories and {len(latency)} latency metrics within thresholds")
    return GateVerdict(
        passed=passed, eval_set_revision=candidate.revision, hardware_class=candidate_latency.hardware_class,
        has_champion=champion is not None, confidence=options.confidence,
        formatting_category=options.formatting_category, tokenizer_changed=tokenizer_changed,
        chat_template_changed=template_changed, categories=tuple(rows), latency=tuple(latency),
        reasons=tuple(reasons), latency_estimate=latency_estimate(slo))


def eval_gate(candidate: ModelScores, champion: ModelScores | None, categories: Mapping[str, CategoryConfig],
              options: GateOptions | None = None) -> list[CategoryRow]:
    """One row per category (configured ones first, then unconfigured scored ones), see module rules."""
    options = options or GateOptions()
    if champion is not None:
        check_comparable(candidate, champion)
    cand_groups = candidate.by_category()
    champ_groups = champion.by_category() if champion is not None else None
    names = list(categories) + sorted(set(cand_groups) - set(categories))
    rows = []
    for name in names:
        config = categories.get(name)
        scores = cand_groups.get(name, {})
        if not scores:
            rows.append(_missing_row(name, config or CategoryConfig(), champion is not None))
        elif champ_groups is None:
            rows.append(_absolute_row(name, config, scores, options))
        else:
            rows.append(_paired_row(name, config, scores, champ_groups[name], options))
    return rows


def check_comparable(candidate: ModelScores, champion: ModelScores) -> None:
    """Refuse to compare scores from different eval-set revisions or different item sets."""
    if candidate.revision != champion.revision:
        raise GateInputError(
            f"eval-set revision mismatch: candidate scored on {candidate.revision!r}, champion on "
            f"{champion.revision!r}; score the champion on revision {candidate.revision!r} before gating")
    cand = {i.id: i.category for i in candidate.items}
    champ = {i.id: i.category for i in champion.items}
    only_cand, only_champ = sorted(set(cand) - set(champ)), sorted(set(champ) - set(cand))
    if only_cand or only_champ:
        raise GateInputError(
            f"item set mismatch on eval-set revision {candidate.revision!r}: {len(only_cand)} item(s) only in "
            f"the candidate {_ids(only_cand)}, {len(only_champ)} only in the champion {_ids(only_champ)}; "
            "both must be scored on every item")
    moved = sorted(i for i in cand if cand[i] != champ[i])
    if moved:
        raise GateInputError(f"item category mismatch on eval-set revision {candidate.revision!r}: "
                             f"{len(moved)} item(s) have different categories {_ids(moved)}")


def formatting_flags(candidate: ModelScores, champion: ModelScores | None) -> tuple[bool, bool]:
    """(tokenizer changed, chat template changed) vs the champion; unknown hashes count as changed."""
    if champion is None:
        return False, False
    return (_changed(candidate.tokenizer_hash, champion.tokenizer_hash),
            _changed(candidate.chat_template_hash, champion.chat_template_hash))


def latency_gate(candidate: LatencyMeasurement, champion: LatencyMeasurement | None, slo: LatencySlo, *,
                 tolerance: float = 0.10) -> list[LatencyRow]:
    """One row per metric (TTFT p99, TPOT p99): SLO always, relative regression when a champion exists.

    Judges the class's estimate (:func:`latency_estimate`): the single measurement, or the median
    of ``slo.latency_rounds`` rounds; both models must be measured in that many rounds.
    """
    if champion is not None and champion.hardware_class != candidate.hardware_class:
        raise GateInputError(f"hardware class mismatch: candidate benchmarked on {candidate.hardware_class!r}, "
                             f"champion on {champion.hardware_class!r}; latencies compare on the same class only")
    rounds = int(slo.latency_rounds)
    estimate = latency_estimate(slo)
    for role, measured in (("candidate", candidate), ("champion", champion)):
        if measured is not None and measured.round_count != rounds:
            raise GateInputError(
                f"{role} latency on {measured.hardware_class!r} was measured in {measured.round_count} round(s), "
                f"but the class declares slo.latency_rounds {rounds} ({estimate}); measure it in {rounds} "
                f"round(s) (the eval job's --latency-rounds)")
    return [_latency_row(metric, candidate, champion, float(getattr(slo, metric)), tolerance, estimate)
            for metric in LATENCY_METRICS]


def _paired_row(name: str, config: CategoryConfig | None, cand: dict[str, float], champ: dict[str, float],
                options: GateOptions) -> CategoryRow:
    # Paired: resampling the per-item differences resamples item ids jointly for both models.
    config_used = config or CategoryConfig()
    ids = sorted(cand)  # a fixed order, so a seeded bootstrap does not depend on input order
    diffs = [cand[i] - champ[i] for i in ids]
    est = bootstrap_mean(diffs, resamples=options.resamples, confidence=options.confidence, seed=options.seed)
    cand_mean, champ_mean = _mean(cand.values()), _mean(champ.values())
    drop = -est.mean
    exceeds = drop > config_used.max_drop + EPS
    significant = est.ci_high < 0
    passed = not (exceeds and significant)
    ci = f"{options.confidence:.0%} CI [{est.ci_low:+.4f}, {est.ci_high:+.4f}]"
    moves = f"({champ_mean:.4f} -> {cand_mean:.4f}, n={len(ids)})"
    if not passed:
        reason = (f"category {name!r} dropped by {drop:.4f} {moves}, more than max_drop {config_used.max_drop:.4f}, "
                  f"and the {ci} of the difference excludes 0")
    elif exceeds:
        reason = (f"category {name!r} dropped by {drop:.4f} {moves}, more than max_drop "
                  f"{config_used.max_drop:.4f}, but the {ci} includes 0: not significant")
    elif drop > 0:
        reason = f"category {name!r} dropped by {drop:.4f} {moves}, within max_drop {config_used.max_drop:.4f}"
    else:
        reason = f"category {name!r} changed by {est.mean:+.4f} {moves}, no drop"
    return CategoryRow(category=name, n=len(ids), candidate_mean=cand_mean, champion_mean=champ_mean,
                       delta=est.mean, ci_low=est.ci_low, ci_high=est.ci_high, threshold=config_used.max_drop,
                       rule="max_drop", passed=passed, reason=reason + _unconfigured(config))


def _absolute_row(name: str, config: CategoryConfig | None, cand: dict[str, float],
                  options: GateOptions) -> CategoryRow:
    config_used = config or CategoryConfig()
    values = [cand[i] for i in sorted(cand)]
    est = bootstrap_mean(values, resamples=options.resamples, confidence=options.confidence, seed=options.seed)
    passed = est.mean >= config_used.min_score - EPS
    relation = "at or above" if passed else "below"
    reason = (f"category {name!r} scored {est.mean:.4f} (n={len(values)}), {relation} min_score "
              f"{config_used.min_score:.4f}" + ("" if passed else f" by {config_used.min_score - est.mean:.4f}")
              + " (first model: absolute minimum)")
    return CategoryRow(category=name, n=len(values), candidate_mean=est.mean, champion_mean=None, delta=None,
                       ci_low=est.ci_low, ci_high=est.ci_high, threshold=config_used.min_score, rule="min_score",
                       passed=passed, reason=reason + _unconfigured(config))


def _missing_row(name: str, config: CategoryConfig, has_champion: bool) -> CategoryRow:
    return CategoryRow(category=name, n=0, candidate_mean=None, champion_mean=None, delta=None, ci_low=None,
                       ci_high=None, threshold=config.max_drop if has_champion else config.min_score,
                       rule="max_drop" if has_champion else "min_score", passed=False,
                       reason=f"category {name!r} is in the gate config but has no scored items")


def _formatting_check(rows: list[CategoryRow], tokenizer_changed: bool, template_changed: bool,
                      category: str) -> tuple[bool, str | None]:
    """(passes, note): a changed tokenizer or chat template requires the formatting category to pass."""
    if not (tokenizer_changed or template_changed):
        return True, None
    what = " and ".join(n for n, flag in (("tokenizer", tokenizer_changed), ("chat template", template_changed))
                        if flag)
    row = next((r for r in rows if r.category == category), None)
    if row is None or row.n == 0:
        return False, (f"{what} changed vs the champion: the formatting category {category!r} must be scored "
                       "and pass, but it has no scored items")
    if not row.passed:
        return False, f"{what} changed vs the champion: the formatting category {category!r} must pass and failed"
    return True, f"{what} changed vs the champion: the formatting category {category!r} passed"


def _latency_row(metric: str, candidate: LatencyMeasurement, champion: LatencyMeasurement | None, slo_ms: float,
                 tolerance: float, estimate: str) -> LatencyRow:
    cand = float(getattr(candidate, metric))
    champ = float(getattr(champion, metric)) if champion is not None else None
    cand_rounds = candidate.round_values(metric)
    max_ratio = 1.0 + tolerance
    ratio = cand / champ if champ else None
    problems = []
    if cand > slo_ms * (1 + EPS):
        problems.append(f"breaks the SLO {slo_ms:.1f} ms by {cand - slo_ms:.1f} ms")
    if ratio is not None and ratio > max_ratio + EPS:
        problems.append(f"is {ratio - 1:.1%} worse than the champion's {champ:.1f} ms (limit {tolerance:.0%})")
    if cand_rounds:
        over = sum(1 for value in cand_rounds if value > slo_ms * (1 + EPS))
        how = f"({estimate}: {_ms_list(cand_rounds)} ms; {over} of {len(cand_rounds)} above the SLO)"
    else:
        how = f"({estimate})"
    if problems:
        reason = f"latency {metric} {cand:.1f} ms {how} " + " and ".join(problems)
    elif ratio is None:
        reason = f"latency {metric} {cand:.1f} ms {how} within the SLO {slo_ms:.1f} ms (no champion measurement)"
    else:
        reason = f"latency {metric} {cand:.1f} ms {how} within the SLO and {ratio:.3f}x the champion"
    return LatencyRow(metric=metric, candidate_ms=cand, champion_ms=champ, slo_ms=slo_ms, ratio=ratio,
                      max_ratio=max_ratio, passed=not problems, reason=reason, estimate=estimate,
                      candidate_rounds_ms=cand_rounds,
                      champion_rounds_ms=champion.round_values(metric) if champion is not None else ())


def _changed(candidate_hash: str | None, champion_hash: str | None) -> bool:
    # Unknown is treated as changed: the gate cannot prove the formatting is the same.
    return candidate_hash is None or champion_hash is None or candidate_hash != champion_hash


def _unconfigured(config: CategoryConfig | None) -> str:
    return "" if config is not None else " [not in the eval-set config: default thresholds]"


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    return f"[{shown}{', ...' if len(ids) > _SHOWN_IDS else ''}]"


def _ms_list(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) if values else "-"


def _check_latencies(owner: str, latencies: Any) -> None:
    for name in LATENCY_METRICS:
        value = getattr(latencies, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise GateInputError(f"{owner}.{name}: {value!r} is not a positive number of ms")


def _num(value: float | None, *, signed: bool = False, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _yes(flag: bool) -> str:
    return "**yes**" if flag else "no"


def _result(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"
