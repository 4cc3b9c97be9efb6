"""hw4's report: REPORT.md, claims.png and the run's metrics.json summary, every sentence computed from a run's
Results; and the `hw4.py report OUT` command, which rewrites a finished run's reports from its metrics.json files
alone. Statistics first, then one table each for the exercise's questions (QUESTIONS), Q5's remedies (REMEDIES)
and the original report's claims (CLAIMS).

Loaded by `hw4.py` only when a run's reports are written. It sees a run only through hw4_records (its typed
Results) and never imports hw4: the net table and the figure writers reach it as an Exercise that hw4.py's CLI
hands over (use).
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import enum
import functools
import io
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from hw4_records import (ACCURACY, BEST_EPOCH, BEST_TRAIN, BEST_VAL, CHANCE_FACTOR, DEAD_UNIT_IMAGES, DEFAULT_NETS,
                         DatasetFacts, Exercise, FINAL_TRAIN_CLEAN_ACC, FINAL_TRAIN_LOSS, GAP, METRICS, METRICS_FORMAT,
                         MIN_IMAGE_SIZE, Measure, NATS, NetSpec, OneLineErrorParser, POINTS, Results, SPLITS, Unit,
                         UserError, WINDOW_STEPS, check_folder_creatable, cpu_type_text, is_chain_layer, is_seed_folder,
                         learned_in, mean_std, new_figure, path_argument, pct, read_metrics_json, run_lock,
                         savefig_atomic, scaled_side, seed_list_text, seeds_text, shown_metrics, spec_conv_output_size,
                         write_bytes_atomic, write_json_atomic)
from hw4_records import load_finished_run as load_run

# =============================================================================
# The exercise, as hw4.py's CLI hands it over: the net table, the figures and their writers
# =============================================================================

_handed: list[Exercise] = []  # set by use(): hw4.py's CLI calls it before any report is written


def use(exercise: Exercise) -> None:
    """Take the exercise (hw4.exercise()) that every report from now on reads its net table and figures from."""
    _handed[:] = [exercise]


def exercise() -> Exercise:
    if not _handed:
        raise RuntimeError("hw4_report.use(hw4.exercise()) must run first: the report reads the net table from it")
    return _handed[0]


def net_table() -> Mapping[str, NetSpec]:
    """The net table: each net that a run read so far recorded, as it trained (Results.spec), over the handed-over
    table's rows, which name the nets a run can add (`--nets ...` advice)."""
    return exercise().nets


def net_label(name: str) -> str:
    return exercise().label(name)


def load_finished_run(out: Path) -> tuple[list[Path], list[dict[str, Results]], DatasetFacts | None]:
    """hw4_records.load_finished_run, whose nets then name and pair by the specs they recorded: the report reads a
    run whole from its metrics.json, whatever today's table holds. A run read later (a linked one) names a net it
    shares by its own record; the committed runs agree on every net they share."""
    seed_outs, runs_by_seed, facts = load_run(out)
    specs = {}
    for runs in runs_by_seed:
        for name, r in runs.items():
            specs.setdefault(name, r.net_spec)
            if r.net_spec.trained() != specs[name].trained():
                raise UserError(f"{out}: {name} trained under two different specs in its seeds; rerun the training "
                                "command with --resume")
    use(dataclasses.replace(exercise(), nets={**exercise().nets, **specs}))
    return seed_outs, runs_by_seed, facts

# =============================================================================
# Report: REPORT.md, every sentence computed from the run's Results. Statistics first, then one table
# each for the exercise's questions (QUESTIONS), Q5's remedies (REMEDIES) and the original's claims (CLAIMS).
# =============================================================================

OVERFIT_GAP = 0.10  # a final train - val accuracy gap above 10 points is "large": the net overfits
UNDERFIT_ACC = 0.8  # a final train accuracy (eval mode) under 80% is "underfits"
SEED_SPREAD = 0.02  # a seed-to-seed std of best val accuracy under 2 points is "no significant change"


POWER = 0.8  # the power a seed estimate is computed for


@dataclass(frozen=True)
class PairTest:
    """One paired test of the report: b - a in a measure, or b's measure minus a threshold (a is None)."""

    a: str | None
    b: str
    measure: Measure
    offset: float = 0.0


@functools.cache
def scipy_stats():
    """scipy.stats, imported on first use: only the report needs it, and it takes about a second."""
    from scipy import stats

    return stats


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the half-width factor of a two-sided 95% t-interval."""
    return float(scipy_stats().t.ppf(0.975, df))


def chi2_quantile(df: int, upper: bool) -> float:
    """The 95% (upper) or 5% (lower) quantile of chi-square with df degrees of freedom."""
    return float(scipy_stats().chi2.ppf(0.95 if upper else 0.05, df))


def std_bounds(values: Sequence[float]) -> tuple[float, float]:
    """One-sided 95% lower and upper confidence bounds of the true standard deviation (chi-square)."""
    n, s = len(values), float(np.std(values, ddof=1))
    return s * math.sqrt((n - 1) / chi2_quantile(n - 1, True)), s * math.sqrt((n - 1) / chi2_quantile(n - 1, False))


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """The exact 95% interval of a rate seen k times in n."""
    ci = scipy_stats().binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


ALPHA = 0.05  # the family-wise error rate of every family of tests (Holm)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: a test is significant at family-wise level alpha when its adjusted
    p is at most alpha."""
    order, adjusted, running = sorted(range(len(p_values)), key=lambda k: p_values[k]), [1.0] * len(p_values), 0.0
    for rank, k in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[k]))
        adjusted[k] = running
    return adjusted


def sign_test(wins: int, losses: int) -> float:
    """The exact two-sided sign test of wins against losses (ties dropped); 1 without either."""
    return float(scipy_stats().binomtest(wins, wins + losses).pvalue) if wins + losses else 1.0


class Test(enum.Enum):
    """How one part of a comparison is tested (the words name it in the report)."""

    T = "paired t-test"
    REGIMES = "exact McNemar test on the regimes"
    MCNEMAR = "exact McNemar test over the val pictures"
    PROPORTIONS = "two-proportion test over the train and val pictures"


@dataclass(frozen=True)
class Part:
    """One tested part of a comparison b - a. For REGIMES, diff is how many more seeds b learned in than a (the
    seeds in which only one of them learned decide it); else the difference, with its 95% interval. p is two-sided
    (RULE says why); min_p is the smallest p the test can reach with this data, whatever the values."""

    test: Test
    diff: float
    p: float
    min_p: float = 0.0
    ci95: tuple[float, float] | None = None
    n: int = 0
    sd: float = math.nan
    conditional: bool = False  # over the seeds in which both nets learned

    @property
    def sign(self) -> int:
        return (self.diff > 0) - (self.diff < 0)


def t_part(diffs: Sequence[float]) -> Part:
    """The paired t-test of seed-by-seed differences and its 95% interval (two or more seeds, some spread)."""
    n, mean, sd = len(diffs), float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half, t = t_quantile_975(n - 1) * sd / math.sqrt(n), mean / (sd / math.sqrt(n))
    return Part(Test.T, mean, float(2 * scipy_stats().t.sf(abs(t), n - 1)), 0.0, (mean - half, mean + half), n, sd)


def sign_min_p(n: int) -> float:
    """The smallest two-sided p of an exact sign (or McNemar) test over n discordant cases."""
    return min(1.0, 2 * 0.5 ** n)


def regimes_part(only_a: int, only_b: int) -> Part:
    """McNemar's exact test on the regimes: do the seeds in which only one net learned favour one net?"""
    n = only_a + only_b
    return Part(Test.REGIMES, float(only_b - only_a), sign_test(only_b, only_a), sign_min_p(n), n=n)


@dataclass(frozen=True)
class PictureTest:
    """b - a within one training seed, over pictures: what a one-seed run can test. MCNEMAR: two nets judged on
    the same val pictures (exact McNemar test on the pictures only one of them got right; its interval is the
    exact one conditional on how many those are). PROPORTIONS: two independent sets of pictures (a net's train
    accuracy against its val accuracy: a gap), Agresti–Caffo interval and the z-test of the same standard error.
    test None with a note: no picture-level test (what it would need is not recorded). The variation it covers is
    the pictures' only: another training seed would add its own."""

    test: Test | None
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p_value: float = 1.0
    pictures: str = ""  # the test and what it counted: "exact McNemar over the 2,500 val pictures"
    note: str = ""      # test None: why there is no test
    min_p: float = 0.0

    @property
    def scope(self) -> str:
        return f"over {'train and val' if self.test is Test.PROPORTIONS else 'val'} pictures, one training seed"

    @property
    def part(self) -> Part:
        return Part(self.test, self.diff, self.p_value, self.min_p, (self.low, self.high))


def mcnemar_test(a_right: np.ndarray, b_right: np.ndarray) -> PictureTest:
    """b's accuracy - a's on the same val pictures: exact McNemar on the discordant pictures."""
    only_b, only_a, n = int((b_right & ~a_right).sum()), int((a_right & ~b_right).sum()), len(a_right)
    discordant = only_a + only_b
    if not discordant:
        return PictureTest(None, note=f"the two nets got the same {n:,} val pictures right")
    result = scipy_stats().binomtest(only_b, discordant)
    ci = result.proportion_ci(0.95, method="exact")  # of the share of discordant pictures that favour b
    scale = discordant / n
    return PictureTest(Test.MCNEMAR, (only_b - only_a) / n, scale * (2 * ci.low - 1), scale * (2 * ci.high - 1),
                       float(result.pvalue), f"exact McNemar over the {n:,} val pictures", min_p=sign_min_p(discordant))


def proportions_test(k1: int, n1: int, k2: int, n2: int, offset: float = 0.0) -> PictureTest:
    """k1/n1 - k2/n2 - offset over two independent sets of pictures: Agresti–Caffo's interval (one success
    and one failure added to each set, which keeps it honest near 0% and 100%) and the z-test on its standard
    error, so that the interval excludes a value exactly when the test rejects it."""
    p1, p2 = (k1 + 1) / (n1 + 2), (k2 + 1) / (n2 + 2)
    se = math.sqrt(p1 * (1 - p1) / (n1 + 2) + p2 * (1 - p2) / (n2 + 2))
    centre, half = p1 - p2 - offset, float(scipy_stats().norm.ppf(0.975)) * se
    return PictureTest(Test.PROPORTIONS, k1 / n1 - k2 / n2 - offset, centre - half, centre + half,
                       float(2 * scipy_stats().norm.sf(abs(centre) / se)),
                       f"two-proportion over {n1:,} train and {n2:,} val pictures")


@dataclass(frozen=True)
class Comparison:
    """b - a over paired seeds: per seed the difference and whether each net learned. Its tested parts: a
    paired t-test when both nets learned in every seed; over two regimes (a net at chance in some seeds), the
    regimes by McNemar's exact test and, apart, the t-test over the seeds in which both learned, never one test
    over the mixture; at one seed, the picture-level test. No t-test when every seed gives the same difference
    (a zero-width interval would claim certainty)."""

    diff: float
    sd: float
    seeds: int
    unpaired: tuple[int, ...] = ()  # the seeds left out: their two nets ran on different machines
    diffs: tuple[float, ...] = ()
    learned: tuple[tuple[bool, bool], ...] = ()  # per paired seed: (a learned, b learned)
    pictures: PictureTest | None = None  # one paired seed: the test over its pictures, if one can be made

    @property
    def two_regimes(self) -> bool:
        """Some paired seed has a net at chance while some net learned: the differences are a mixture."""
        return any(not (la and lb) for la, lb in self.learned) and any(la or lb for la, lb in self.learned)

    @property
    def degenerate(self) -> bool:
        """Every seed gives the same difference (a shifted one's stored spread may keep a rounding crumb)."""
        return self.seeds > 1 and (self.sd == 0 or len(set(self.diffs)) == 1)

    @functools.cached_property
    def parts(self) -> tuple[Part, ...]:
        if self.seeds < 2:
            return (self.pictures.part,) if self.pictures and self.pictures.test else ()
        if not self.two_regimes:
            return () if self.degenerate else (t_part(self.diffs),)
        regimes = (regimes_part(*self.regime_counts),) if any(self.regime_counts) else ()
        both = self.both_learned
        return regimes + tuple(dataclasses.replace(p, conditional=True) for p in both.parts)

    @property
    def ci95(self) -> tuple[float, float] | None:
        """The interval of the one part that has one over every paired seed (None over two regimes)."""
        return next((p.ci95 for p in self.parts if p.ci95 and not p.conditional), None)

    @property
    def both_learned(self) -> "Comparison":
        """The comparison over the seeds in which both nets learned."""
        kept = [d for d, (la, lb) in zip(self.diffs, self.learned) if la and lb]
        return paired_difference([0.0] * len(kept), kept, learned=[(True, True)] * len(kept))

    @property
    def regime_counts(self) -> tuple[int, int]:
        """(seeds in which only a learned, seeds in which only b learned)."""
        return (sum(la and not lb for la, lb in self.learned), sum(lb and not la for la, lb in self.learned))


def seeds_for_power(distance: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """About how many paired seeds the two-sided paired t-test at `alpha` needs to resolve a true difference of
    `distance` with this power, at seed-to-seed spread sd (from the noncentral t); None beyond 1000."""
    distance = abs(distance)
    if distance == 0 or sd == 0 or not math.isfinite(distance + sd):
        return None
    ns = np.arange(2, 1001)
    df, shift = ns - 1, distance * np.sqrt(ns) / sd
    crit = scipy_stats().t.ppf(1 - alpha / 2, df)
    nct = scipy_stats().nct
    reached = np.flatnonzero(nct.sf(crit, df, shift) + nct.cdf(-crit, df, shift) >= power)
    return int(ns[reached[0]]) if len(reached) else None


def paired_difference(a: Sequence[float], b: Sequence[float], unpaired: Sequence[int] = (),
                      learned: Sequence[tuple[bool, bool]] = ()) -> Comparison:
    """b - a, seed by seed (no seeds: no difference); learned: per seed, whether a and b learned (both, when
    not given)."""
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    learned = tuple(learned) or ((True, True),) * len(diffs)
    if not len(diffs):
        return Comparison(math.nan, 0.0, 0, tuple(unpaired))
    return Comparison(float(diffs.mean()), float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0, len(diffs),
                      tuple(unpaired), tuple(map(float, diffs)), learned)


# --- The decision procedure: every verdict of the report and of `compare` comes from decide().

RULE = ("Every test is two-sided, a directional claim's too, and a claim is reproduced only by a rejection on its "
        "side: a false 'reproduced' is at most 2.5% likely for one test.")


def attainable(min_ps: Sequence[float]) -> tuple[list[int], float]:
    """Tarone's rule: which tests join the Holm family, so that a test that could never reach its threshold (a
    7-seed sign test's p is never under 2/128) does not cost the others. The smallest K for which at most K tests
    can reach ALPHA / K: those are the family, and ALPHA / K is what a test left out could not reach."""
    for k in range(1, len(min_ps) + 1):
        kept = [i for i, m in enumerate(min_ps) if m <= ALPHA / k]
        if len(kept) <= k:
            return kept, ALPHA / k
    return [], ALPHA


@dataclass(frozen=True)
class Tested:
    """A comparison as its family tested it: per part, the Holm-adjusted p and the threshold Holm set its raw p
    against (both None: the part cannot reach ALPHA with this data, so it stayed out of the family)."""

    cmp: Comparison
    adjusted: tuple[float | None, ...]
    alphas: tuple[float | None, ...]
    family: int
    family_name: str
    threshold: float = ALPHA  # Tarone's ALPHA / K: what a part left out of the family could not reach


def test_family(comparisons: dict[Any, Comparison], name: str) -> dict[Any, Tested]:
    """Each comparison's parts, tested as one family: the attainable parts, Holm-adjusted over them."""
    flat = [(key, part) for key, cmp in comparisons.items() for part in cmp.parts]
    kept, threshold = attainable([part.min_p for _, part in flat])
    adjusted = dict(zip(kept, holm_adjusted([flat[i][1].p for i in kept])))
    order = sorted(kept, key=lambda i: flat[i][1].p)
    # Holm's step-down: rank r (from 0) is set against ALPHA / (K - r) until the first p above its threshold; every
    # test from there on stays unrejected, at the threshold where the step-down stopped (what power needs to beat)
    stop = next((rank for rank, i in enumerate(order) if flat[i][1].p > ALPHA / (len(kept) - rank)), len(kept))
    alphas = {i: ALPHA / (len(kept) - min(rank, stop)) for rank, i in enumerate(order)}
    out, i = {}, 0
    for key, cmp in comparisons.items():
        span = range(i, i + len(cmp.parts))
        out[key] = Tested(cmp, tuple(adjusted.get(j) for j in span), tuple(alphas.get(j) for j in span), len(kept),
                          name, threshold)
        i += len(cmp.parts)
    return out


def decided(verdict: Verdict, side: int, tested: Tested, reasons: tuple[str, ...] = (), scope: str = "",
            **flags: bool) -> Judgement:
    """decide()'s verdict of a tested comparison: the side it resolved and the test, with the reasons."""
    return Judgement(verdict, reasons, scope, side=side, tested=tested, **flags)


def decide(tested: Tested, claimed: float | None = None, unit: Unit = POINTS, threshold: bool = False) -> Judgement:
    """The rule for a claimed positive difference b - a (its size, or None for a direction only; threshold: no
    sign of its own, as a measure minus a threshold or a remedy's effect):
    reproduced: a part resolved on the claimed side (after Holm), none on the other, and a t-interval that
    resolved it does not exclude the claimed size; partly reproduced: the direction holds but not the size (or
    only the learn rate shows it); not reproduced: resolved on the other side, or the interval excludes the
    claimed size and holds 0; not resolved: otherwise, with what it would take."""
    cmp = tested.cmp
    if cmp.seeds == 0:
        return decided(Verdict.NOT_TESTABLE, 0, tested, (not_paired_reason(cmp),), colon=True)
    on_pictures = bool(cmp.pictures) and cmp.seeds == 1
    scope = cmp.pictures.scope if on_pictures else f"at {seeds_text(cmp.seeds)}"
    if not cmp.parts:
        if cmp.two_regimes:
            return decided(Verdict.NOT_RESOLVED, 0, tested, (f"neither part can be tested: {cmp.both_learned.seeds} "
                                                              "seed(s) in which both learned, none in which only one "
                                                              "did",), scope, on_pictures=on_pictures)
        if cmp.seeds > 1:
            return decided(Verdict.NOT_RESOLVED, 0, tested, (f"the difference is {signed(cmp.diff, unit)} in every "
                                                              "seed, so a test has no spread to stand on",), scope,
                            on_pictures=on_pictures)
        missing = f" ({cmp.pictures.note}, so no picture-level test)" if cmp.pictures and cmp.pictures.note else ""
        return decided(Verdict.NOT_RESOLVED, 0, tested, (f"one seed has no interval{missing}; rerun with `--seeds 3` "
                                                          "or more",), "at one seed")
    parts = list(zip(cmp.parts, tested.adjusted, tested.alphas))
    sides = {part.sign for part, p, _ in parts if p is not None and p <= ALPHA}
    side = sides.pop() if len(sides) == 1 else 0
    claim_text = f"claimed {signed(claimed, unit)}" if claimed is not None else "claimed direction"
    resolved = [part for part, p, _ in parts if p is not None and p <= ALPHA]
    conditional = bool(side and resolved and all(part.conditional for part in resolved))
    if conditional:  # the seeds it rests on, not the run's
        scope = f"over the {seeds_text(resolved[0].n)} in which both learned"
    if side > 0:
        reasons = [text for text in (part_scope(part, cmp) for part in resolved if not part.conditional) if text]
        t = next((part for part in resolved if part.ci95), None)
        if t is None:
            return decided(Verdict.REPRODUCED if claimed is None else Verdict.PARTLY, 1, tested, tuple(
                reasons + ([f"the {claim_text} is not tested"] if claimed is not None else [])), scope,
                on_pictures=on_pictures, conditional=conditional)
        barely = barely_text(t, unit)
        reasons += [barely] if barely else []
        if claimed is None or t.ci95[0] <= claimed <= t.ci95[1]:
            return decided(Verdict.REPRODUCED, 1, tested, tuple(reasons), scope, on_pictures=on_pictures,
                            conditional=conditional)
        return decided(Verdict.PARTLY, 1, tested, (*reasons, f"the direction holds, but the interval excludes the "
                        f"{claim_text}: the effect is {'smaller' if t.ci95[1] < claimed else 'larger'}"), scope,
                        on_pictures=on_pictures, conditional=conditional)
    if side < 0:
        return decided(Verdict.NOT_REPRODUCED, -1, tested, tuple(
            [part_scope(part, cmp) for part in resolved if not part.conditional]
            + [barely_text(part, unit) for part in resolved[:1]]), scope, on_pictures=on_pictures,
            opposite=not threshold, conditional=conditional)
    reasons = ["its parts are resolved on opposite sides"] if sides else []
    for part, p, alpha in parts:
        reasons += unresolved_reasons(part, p, alpha, tested, claimed, unit)
    whole = cmp.ci95
    if claimed is not None and whole and not whole[0] <= claimed <= whole[1] and whole[0] <= 0 <= whole[1]:
        return decided(Verdict.NOT_REPRODUCED, 0, tested, (f"the interval excludes the {claim_text} and holds 0",),
                        scope, on_pictures=on_pictures)
    return decided(Verdict.NOT_RESOLVED, 0, tested, tuple(reasons), scope, on_pictures=on_pictures)


def part_scope(part: Part, cmp: Comparison) -> str:
    """Where a part's evidence comes from, when that is not every paired seed."""
    if part.test is Test.REGIMES:
        only_a, only_b = cmp.regime_counts
        return f"in the learn rate: only the net left of − learned in {only_b} seeds, only the other in {only_a}"
    return f"over the {seeds_text(part.n)} in which both learned" if part.conditional else ""


def unresolved_reasons(part: Part, p: float | None, alpha: float | None, tested: Tested, claimed: float | None,
                       unit: Unit) -> list[str]:
    """Why one part did not resolve, and what it would take."""
    where = " over the seeds in which both learned" if part.conditional else ""
    if p is None:
        needed = math.ceil(math.log2(2 / tested.threshold))
        return [f"the {part.test.value} cannot reach {p_text(tested.threshold)} (Tarone) with {part.n} "
                f"seed{'s' * (part.n != 1)} in which only one net learned; it needs {needed}"]
    if part.p <= ALPHA:
        reasons = [f"the {part.test.value}{where} gives p = {p_text(part.p)} alone, {p_text(p)} after Holm"]
    else:
        reasons = [f"the {part.test.value}{where} does not exclude 0 (p = {p_text(part.p)})"]
    if claimed and part.test is Test.T:
        reasons.append(power_text(claimed, part, alpha, unit))
    return reasons


def power_text(claimed: float, part: Part, alpha: float, unit: Unit) -> str:
    """About how many seeds the claimed size needs at the alpha where Holm's step-down stopped (what an unrejected
    test must beat), with the range that the spread's own 95% interval allows."""
    low, high = std_interval(part.sd, part.n)
    counts = [seeds_for_power(claimed, sd, alpha) for sd in (part.sd, low, high)]
    if counts[0] is None:
        return f"over 1000 seeds would be needed to detect the claimed {signed(claimed, unit)}"
    return (f"about {counts[0]} seeds ({counts[1]}–{counts[2] or 'over 1000'}) give {100 * POWER:.0f}% power for "
            f"the claimed {signed(claimed, unit)} at α {alpha:.3g}, where Holm's step-down stopped (spread "
            f"{signed(part.sd, unit).lstrip('+')})")


def std_interval(sd: float, n: int) -> tuple[float, float]:
    """The two-sided 95% confidence interval of a standard deviation measured as sd over n values (chi-square)."""
    chi2 = scipy_stats().chi2
    return sd * math.sqrt((n - 1) / chi2.ppf(0.975, n - 1)), sd * math.sqrt((n - 1) / chi2.ppf(0.025, n - 1))


def p_text(p: float) -> str:
    """A p-value at two significant digits, three near the 5% line."""
    return f"{p:.3g}" if abs(p - ALPHA) < 0.006 else f"{p:.2g}"


def pm(values: Sequence[float], scale: float = 100.0, digits: int = 1, unit: str = "%") -> str:
    """'mean ± std' over seeds, or the one value."""
    mean, std = (float(v) for v in mean_std(values))
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "") + unit


def typical(exp: "Experiment", name: str, measure: "Measure") -> float:
    """The mean over the seeds in which the net learned (over every seed when it learned in none): what a
    diagnosis reads, which a collapsed seed would drag towards chance."""
    return float(np.mean(exp.by_regime(name, measure)[0] or exp.values(name, measure)))


def interval_end(value: float, digits: int) -> str:
    """An interval's end at `digits` decimals, or at as many more as it takes to show its sign: an end that
    printed as +0.0 would hide whether the interval excludes 0."""
    shown = f"{value:+.{digits}f}"
    if value == 0 or float(shown) != 0 or not math.isfinite(value):
        return shown
    return f"{value:+.{1 - math.floor(math.log10(abs(value)))}f}"


def unpaired_text(cmp: Comparison) -> str:
    """Why seeds are missing from a paired comparison ('' when none is)."""
    if not cmp.unpaired:
        return ""
    return (f"{seed_list_text(cmp.unpaired)} left out: {'its' if len(cmp.unpaired) == 1 else 'their'} two nets ran "
            "on different machines")


def difference_text(cmp: Comparison, unit: Unit = POINTS, shown_seeds: int = 0,
                    names: tuple[str, str] = ("the net left of −", "the one right of it")) -> str:
    """'+1.2 points (95% CI [-0.3, +2.7], 3 paired seeds)' (without the count when it is shown_seeds, which a
    table states once), '+1.2 points (one seed)', or one seed's picture-level interval, labelled as such; seeds
    whose two nets ran on different machines are left out, and said to be."""
    left_out = unpaired_text(cmp)
    if cmp.seeds == 0:
        return f"not paired ({left_out})"
    note = f"; {left_out}" if left_out else ""
    if cmp.two_regimes and cmp.seeds > 1:
        return regimes_difference_text(cmp, unit, note, names)
    value = signed(cmp.diff, unit)
    if cmp.degenerate:
        return f"{value} in every one of {cmp.seeds} paired seeds (no spread, so no interval{note})"
    if cmp.ci95 is None:
        return f"{value} (one seed{note})"
    low, high = (interval_end(unit.scale * v, unit.digits) for v in cmp.ci95)
    if cmp.seeds == 1:
        return f"{value} (95% CI [{low}, {high}], {cmp.pictures.pictures}, one training seed{note})"
    seeds = "" if cmp.seeds == shown_seeds else f", {cmp.seeds} paired seeds"
    return f"{value} (95% CI [{low}, {high}]{seeds}{note})"


def regimes_difference_text(cmp: Comparison, unit: Unit, note: str = "",
                            names: tuple[str, str] = ("the net left of −", "the one right of it")) -> str:
    """A difference over two regimes, as its two parts: the regimes (McNemar) and the difference over the seeds in
    which both nets learned; never a mean, a median or an interval over both regimes."""
    only_a, only_b = cmp.regime_counts
    text = (f"only {names[0]} learned in {only_b} seed{'s' * (only_b != 1)}, only {names[1]} in "
            f"{only_a}" + (f" (exact McNemar p = {p_text(regimes_part(only_a, only_b).p)})"
                                    if only_a + only_b else "") + note)
    both = cmp.both_learned
    if both.seeds:
        text += f"; over the {seeds_text(both.seeds)} in which both learned: {difference_text(both, unit, both.seeds)}"
    return text


def barely_text(part: Part, unit: Unit = POINTS) -> str:
    """'' unless the interval excludes 0 by less than the report's precision; then which end, and how near."""
    if part.ci95 is None or part.ci95[0] <= 0 <= part.ci95[1]:
        return ""
    side, end = ("lower", part.ci95[0]) if part.ci95[0] > 0 else ("upper", part.ci95[1])
    if round(unit.scale * end, unit.digits) != 0:
        return ""
    return f"barely: the interval's {side} end is {interval_end(unit.scale * end, unit.digits)}{unit.suffix}"


def nets_picture_test(a: Results, b: Results, what: Measure) -> PictureTest | None:
    """b - a in a val accuracy within one seed, over the same val pictures (McNemar); None for a measure that
    no picture-level test reads (a loss, a train accuracy, an epoch)."""
    if what.kind not in ("best", "final") or what.split != "val" or what.metric is not ACCURACY:
        return None
    a_right, b_right = a.val_correct(what.kind), b.val_correct(what.kind)
    if a_right is None or b_right is None:
        return PictureTest(None, note=f"per-picture {what.kind}-epoch val predictions not recorded")
    return mcnemar_test(a_right, b_right)


def gap_picture_test(r: Results, offset: float) -> PictureTest:
    """A net's final train (eval mode) - val accuracy gap, less `offset`, over its train and val pictures."""
    train, val = r.final("train", ACCURACY, clean=True), r.final("val", ACCURACY)
    if not (math.isfinite(train + val) and r.n_train and r.n_val):
        return PictureTest(None, note="its final accuracies are not finite")
    return proportions_test(round(train * r.n_train), r.n_train, round(val * r.n_val), r.n_val, offset)


@dataclass
class Experiment:
    """What the report reads: Results per net and per training seed (seeds paired across nets)."""

    runs: dict[str, list[Results]]
    dataset: DatasetFacts | None  # None for a run saved before hw4 saved it
    rates: "RateStudy | None" = None  # the learn rates a short run beside it measured, which Q5 cites

    @property
    def nets(self) -> list[str]:
        return list(self.runs)

    @property
    def seeds(self) -> int:
        return len(next(iter(self.runs.values())))

    @property
    def first(self) -> Results:
        return next(iter(self.runs.values()))[0]

    def values(self, name: str, measure: Measure) -> list[float]:
        """One measure of one net, seed by seed."""
        return [measure.of(r) for r in self.runs[name]]

    def recorded(self, name: str, measure: Measure) -> bool:
        """Whether every seed of the net recorded what the measure reads (a run trained before a metric
        existed did not)."""
        return all(measure.recorded(r) for r in self.runs[name])

    def same_machine(self, a: str, b: str) -> list[bool]:
        """Per seed, whether nets a and b ran on one machine type (machine_of), so that their difference is
        the nets' and not the machines'. A run that did not record it is taken as one machine."""
        return [None in (ra.machine, rb.machine) or ra.machine == rb.machine
                for ra, rb in zip(self.runs[a], self.runs[b])]

    def paired_runs(self, a: str, b: str) -> list[tuple[Results, Results]]:
        """(a's, b's) Results of every seed in which both ran on one machine type."""
        return [pair for pair, same in zip(zip(self.runs[a], self.runs[b]), self.same_machine(a, b)) if same]

    def compare(self, a: str, b: str, what: Measure = BEST_VAL) -> Comparison:
        """b - a over the seeds in which both ran on one machine type; the others are named, never paired."""
        same = self.same_machine(a, b)
        kept = lambda name: [v for v, s in zip(self.values(name, what), same) if s]  # noqa: E731
        pairs = self.paired_runs(a, b)
        learned = [(not ra.at_chance, not rb.at_chance) for ra, rb in pairs]
        cmp = paired_difference(kept(a), kept(b), [r.train_seed for r, s in zip(self.runs[a], same) if not s],
                                learned)
        return dataclasses.replace(cmp, pictures=nets_picture_test(*pairs[0], what)) if len(pairs) == 1 else cmp

    def run_test(self, test: "PairTest") -> Comparison:
        """A test of the claims: b - a, or b's measure minus a fixed threshold (a is None)."""
        if test.a is not None:
            return self.compare(test.a, test.b, test.measure)
        runs = self.runs[test.b]
        cmp = paired_difference([test.offset] * len(runs), self.values(test.b, test.measure),
                                learned=[(True, not r.at_chance) for r in runs])
        one = len(runs) == 1 and test.measure == GAP
        return dataclasses.replace(cmp, pictures=gap_picture_test(runs[0], test.offset)) if one else cmp

    def by_regime(self, name: str, measure: Measure) -> tuple[list[float], list[float]]:
        """One measure of one net, split into (the seeds that learned, the seeds at chance)."""
        pairs = list(zip(self.values(name, measure), self.runs[name]))
        return [v for v, r in pairs if not r.at_chance], [v for v, r in pairs if r.at_chance]

    def two_regimes(self, name: str) -> bool:
        """The net learned in some seeds and stayed at chance in others."""
        return 0 < self.stuck(name) < self.seeds

    def stuck(self, name: str) -> int:
        """In how many seeds a net stayed at chance."""
        return sum(r.at_chance for r in self.runs[name])

    def learned(self, name: str) -> list[Results]:
        return [r for r in self.runs[name] if not r.at_chance]

    def figure(self, r: Results, file: str) -> str:
        """Where a per-net figure of one seed lies, relative to REPORT.md."""
        return (f"seed_{r.train_seed}/" if self.seeds > 1 else "") + file.format(net=r.net)

    @functools.cached_property
    def tested(self) -> dict[Any, Tested]:
        """Every comparison the report decides, tested once, in the first family that asks for it (the claims
        table's, Q5's, then Q3's): one comparison has one verdict wherever the report cites it."""
        found: dict[Any, Tested] = {}
        for name, comparisons in report_families(self):
            found.update(test_family({k: c for k, c in comparisons.items() if k not in found
                                      and flipped(k) not in found}, name))
        return found

    def decision(self, key: Any, claimed: float | None = None, unit: Unit = POINTS,
                 threshold: bool = False) -> Judgement:
        """decide() on a comparison as its family tested it; a PairTest tested the other way round is turned."""
        if key not in self.tested and flipped(key) in self.tested:
            turned = self.tested[flipped(key)]
            return decide(dataclasses.replace(turned, cmp=turned_around(turned.cmp)), claimed, unit, threshold)
        if key not in self.tested:  # a comparison no family asks for: tested alone
            return decide(test_family({key: self.run_test(key)}, "its own")[key], claimed, unit, threshold)
        return decide(self.tested[key], claimed, unit, threshold)

    def base_pairs(self) -> list[tuple[str, str]]:
        """(base, net) for every net of the run whose base is in the run too."""
        return [(net_table()[n].base, n) for n in self.nets if net_table()[n].base in self.runs]


def changed_fields(name: str) -> set[str]:
    """The spec fields in which a net differs from its base, descriptive fields aside."""
    spec, base = net_table()[name].trained(), net_table()[net_table()[name].base].trained()
    return {k for k in spec if spec[k] != base[k]}


def nets_arg(names: Iterable[str]) -> str:
    """`--nets ...` naming these nets (they exist: they come from the table) after their bases."""
    names = list(names)
    bases = [net_table()[n].base for n in names if net_table()[n].base]
    return "`--nets " + " ".join(dict.fromkeys([*bases, *names])) + "`"


def best_epoch_text(exp: Experiment, name: str) -> str:
    """Mean ± std of the best epoch over the seeds in which the net learned: at chance, every epoch ties at
    the same val accuracy and the 'best' one is only the tie-break's first."""
    learned = exp.learned(name)
    if not learned:
        return "— (at chance)"
    return pm([r.best_epoch for r in learned], 1, int(len(learned) > 1), "")


def eval_mode_train(exp: Experiment) -> bool:
    """Whether the train accuracy of gaps and diagnoses was measured in eval mode after each epoch; False for a run
    saved before hw4 measured that, whose train accuracy is the running mean recorded while training."""
    return all(r.clean_train_recorded for runs in exp.runs.values() for r in runs)


def train_measure(exp: Experiment) -> str:
    """How the train accuracy of gaps and diagnoses was measured, in words."""
    return "eval mode" if eval_mode_train(exp) else "running"


def report_table(exp: Experiment) -> list[str]:
    # the train split as the original records it (running means while training) is in the curves and pickles; the
    # table's train column is the eval-mode one, measured like val, which gaps and diagnoses read
    finals = [("val", m) for m in shown_metrics(exp.runs)]
    mixed = any(0 < exp.stuck(n) < len(runs) for n, runs in exp.runs.items())
    lines = [("Train acc: eval mode, after the last epoch, like val (the original's running means are in the "
              "curves)." if eval_mode_train(exp)
              else
              "Train values are the original's running means over each epoch; this run predates hw4's eval-mode "
              "measurement, so the gaps and diagnoses use them too (for the variants with augmentation, dropout or "
              "BatchNorm they understate the train accuracy).")
             + (" A net at chance in some seeds shows the seeds it learned in, with its learn rate's 95% "
                "Clopper–Pearson interval." if mixed else ""), "",
             "| net | learned in | best val acc | best epoch | " + " | ".join(f"final {s} {m.short}" for s, m in finals)
             + f" | final train acc ({train_measure(exp)}) | params | training time | diagnosis |",
             "|---" * (8 + len(finals)) + "|"]
    if exp.seeds == 1:
        lines[:1] = [lines[0] + " With one seed, a val accuracy's bracket is its 95% Clopper–Pearson interval over the "
                     f"{exp.first.n_val:,} val pictures: the pictures' variation, not that between training seeds."]
    for name, runs in exp.runs.items():
        def shown(measure: Measure, *fmt: Any) -> str:
            values = exp.by_regime(name, measure)[0] if 0 < exp.stuck(name) < len(runs) else exp.values(name, measure)
            return pm(values, *fmt) + val_interval_text(exp, name, measure)

        cells = [shown(Measure("final", s, m), *(() if m.percent else (1, 3, "")))
                 if exp.recorded(name, Measure("final", s, m)) else "not recorded" for s, m in finals]
        lines.append(f"| {net_label(name)} | {learned_in_text(exp, name)} | {shown(BEST_VAL)} | "
                     f"{best_epoch_text(exp, name)} | "
                     f"{' | '.join(cells)} | {shown(FINAL_TRAIN_CLEAN_ACC)} | "
                     f"{runs[0].params:,} | {pm([r.train_time_s for r in runs], 1, 0, ' s')} | "
                     f"{diagnosis(exp, name)} |")
    return lines


def learned_in_text(exp: Experiment, name: str) -> str:
    """'20 of 20', or for a net at chance in some seeds its learn rate's 95% Clopper–Pearson interval too."""
    learned, seeds = len(exp.learned(name)), len(exp.runs[name])
    if learned in (0, seeds) or seeds < 2:
        return f"{learned} of {seeds}"
    low, high = clopper_pearson(learned, seeds)
    return f"{learned} of {seeds} ({100 * low:.0f}–{100 * high:.0f}%)"


def val_interval_text(exp: Experiment, name: str, measure: Measure) -> str:
    """' [58.6, 62.4]': a one-seed run's val accuracy's Clopper–Pearson interval over its val pictures ('' else)."""
    r = exp.runs[name][0]
    value = measure.of(r)
    if exp.seeds > 1 or measure.split != "val" or measure.metric is not ACCURACY or not math.isfinite(value):
        return ""
    low, high = clopper_pearson(round(value * r.n_val), r.n_val)
    return f" [{100 * low:.1f}, {100 * high:.1f}]"


def flipped(key: Any) -> Any:
    """The same PairTest the other way round (any other key: itself)."""
    return PairTest(key.b, key.a, key.measure, key.offset) if isinstance(key, PairTest) and key.a else key


def turned_around(cmp: Comparison) -> Comparison:
    """a - b for the comparison b - a: the same tests, on the other side."""
    pictures = cmp.pictures and dataclasses.replace(cmp.pictures, diff=-cmp.pictures.diff, low=-cmp.pictures.high,
                                                    high=-cmp.pictures.low)
    return dataclasses.replace(cmp, diff=-cmp.diff, diffs=tuple(-d for d in cmp.diffs), pictures=pictures,
                               learned=tuple((lb, la) for la, lb in cmp.learned))


def report_families(exp: "Experiment") -> list[tuple[str, dict[Any, Comparison]]]:
    """The report's families of tests, each Holm-corrected on its own: the claims table's, Q5's remedies against
    their bases, and Q3's (the best net against each other, and each net against its base)."""
    claims = {k: c for claim in CLAIMS if not claim.missing(exp) for k, c in claim.comparisons(exp).items()}
    remedies = {PairTest(net_table()[n].base, n, BEST_VAL): exp.compare(net_table()[n].base, n)
                for _, n in remedy_rows(exp) if not both_at_chance(exp, net_table()[n].base, n)}
    top = ranking_order(exp)[0]
    ranking = {PairTest(n, top, BEST_VAL): exp.compare(n, top) for n in exp.nets if n != top and exp.seeds > 1}
    ranking |= {PairTest(a, b, BEST_VAL): exp.compare(a, b) for a, b in exp.base_pairs()}
    return [("the claims table", claims), ("Q5's table", remedies), ("Q3", ranking)]


def describe_difference(exp: Experiment, a: str, b: str, what: Measure = BEST_VAL) -> str:
    """'Net2 − Net1: +0.4 points of best val accuracy (95% CI ...); resolved above 0 (...)' by the decision the
    report makes of that comparison wherever it cites it."""
    cmp = exp.compare(a, b, what)
    if cmp.seeds == 0:
        return f"{net_label(b)} − {net_label(a)}: not compared; {not_paired_reason(cmp)}."
    names = (net_label(b), net_label(a))
    text = f"{names[0]} − {names[1]}: {difference_text(cmp, names=names)} of {what.words}"
    if cmp.seeds == 1 and not cmp.parts:
        missing = f" ({cmp.pictures.note})" if cmp.pictures and cmp.pictures.note else ""
        return text + (f"; the run-to-run noise is unknown{missing}, so rerun with `--seeds 3` or more before reading "
                       "anything into it.")
    text += f"; {resolution_text(exp.decision(PairTest(a, b, what), threshold=True))}"
    if cmp.seeds == 1:
        return text + "; one training seed says nothing of the variation between seeds (`--seeds 3` or more)."
    return text + "."


def resolution_text(d: Judgement) -> str:
    """'resolved above 0 at 10 seeds (Holm-adjusted p = ... over the 6 tests of the claims table)', or the
    verdict's own words: the one way a decision reads outside the claims table."""
    if not d.side:
        return verdict_text(d.shown)
    adjusted = min(p for p in d.tested.adjusted if p is not None and p <= ALPHA)
    where = "".join(f"; {r}" for r in d.reasons if r)
    return (f"resolved {'above' if d.side > 0 else 'below'} 0 {d.scope} (Holm-adjusted p = {p_text(adjusted)} over "
            f"the {d.tested.family} tests of {d.tested.family_name}{where})")


def answer_padding(exp: Experiment) -> list[str]:
    pairs = [(a, b) for a, b in exp.base_pairs() if changed_fields(b) == {"padding"}]
    if not pairs:
        padded = [n for n, s in net_table().items() if s.base and changed_fields(n) == {"padding"}]
        return [f"Not measured: this run trained no net that differs from its base only in padding "
                f"({nets_arg(padded)} measures it)."]
    lines = []
    for a, b in pairs:
        for what in (BEST_TRAIN, BEST_VAL):
            rows = claim_rows(exp, PairTest(a, b, what))
            if not rows:  # a pair the claims above do not decide
                lines.append(f"- {describe_difference(exp, a, b, what)}")
    return lines


def claim_rows(exp: Experiment, key: Any) -> list[int]:
    """The claims table's rows (from 1) that cite the comparison."""
    return [k for k, claim in enumerate(CLAIMS, 1) if not claim.missing(exp)
            and {key, flipped(key)} & set(claim.comparisons(exp))]


def dead_layers(r: Results, epoch: int) -> list[str]:
    """ReLU layers all of whose units output 0 on the dead-unit images after `epoch` (1-based)."""
    return [layer for layer, v in r.dead_units.items() if v[epoch - 1] >= 1.0]


def first_epoch_from(flags: Sequence[bool]) -> int | None:
    """The first epoch (1-based) from which every later epoch has the flag, or None."""
    start = None
    for k, flag in enumerate(flags, 1):
        start = (start or k) if flag else None
    return start


VANISH_FACTOR = 10  # conv1's gradient relative to fc1's, over 10x below the base net's: vanishing


def gradient_ratio(r: Results, epoch: int | None = None) -> float:
    """conv1's gradient norm over fc1's: what reaches the first layer, relative to what the classifier gets.
    Over the first 100 iterations (from the untrained weights, before a dead layer can be counted) when
    the run recorded them, else over epoch 1; or over one given epoch."""
    def ratio(conv1: float, fc1: float) -> float:
        return conv1 / fc1 if fc1 > 0 else math.nan

    if epoch is not None:
        return ratio(r.grad_norms["conv1"][epoch - 1], r.grad_norms["fc1"][epoch - 1])
    windows = r.grad_norms_steps100
    if windows.get("conv1"):
        return ratio(windows["conv1"][0], windows["fc1"][0])
    return ratio(r.grad_norms["conv1"][0], r.grad_norms["fc1"][0])


FLAT_LOSS = 0.01  # a final train loss within 0.01 nats of ln(classes) is flat: the net predicts uniformly


def ends_dead(r: Results) -> bool:
    """Dead, from the measured gradient: the gradient reaching conv1 is exactly 0 over the last epoch, or fc1 is
    dead with the train loss flat at ln(classes). The dead-unit probe (256 val images) alone is not proof: a
    layer dead on it can still pass gradient and recover."""
    flat = abs(FINAL_TRAIN_LOSS.of(r) - math.log(len(r.classes))) < FLAT_LOSS
    return r.grad_norms["conv1"][-1] == 0 or ("fc1" in dead_layers(r, r.epochs) and flat)


@dataclass(frozen=True)
class GradientStory:
    """What happened to a deep net's gradient in one seed, against its base net in the same seed, in two
    phases: vanishing when its ratio over the first iterations is over VANISH_FACTOR below the base's; then
    recovered when a later epoch's ratio is back within that factor of the base's in the same epoch, or dead
    (ends_dead)."""

    vanishing: bool
    dead: bool
    recovered: bool = False

    @property
    def text(self) -> str:
        if self.vanishing:
            return "vanishing, then " + ("dead" if self.dead else "recovers") if self.dead or self.recovered \
                else "vanishing"
        return "dead" if self.dead else "healthy"


def recovery_epoch(deep: Results, base: Results) -> int | None:
    """The first epoch whose gradient ratio is within VANISH_FACTOR of the base net's in that epoch."""
    for epoch in range(1, deep.epochs + 1):
        if gradient_ratio(deep, epoch) >= gradient_ratio(base, epoch) / VANISH_FACTOR:
            return epoch
    return None


def gradient_story(deep: Results, base: Results) -> GradientStory:
    dead = ends_dead(deep)
    return GradientStory(gradient_ratio(deep) < gradient_ratio(base) / VANISH_FACTOR, dead,
                         not dead and recovery_epoch(deep, base) is not None)


def ratio_median(values: Sequence[float]) -> str:
    """The median of ratios, written as ratio_range writes one value."""
    return ratio_range([float(np.median([float(v) for v in values]))])


def ratio_range(values: Sequence[float]) -> str:
    """A few values listed, more as 'median m (a to b)'."""
    def text(v: float) -> str:
        return f"{v:.3g}" if v == 0 or 0.01 <= abs(v) < 1000 else f"{v:.1e}"

    values = [float(v) for v in values]
    if len(values) <= 4:
        return ", ".join(map(text, values))
    return f"median {text(float(np.median(values)))} ({text(min(values))} to {text(max(values))})"


def shallow_base(name: str) -> str:
    """The net without the chain that a deep net descends from (Net1 for Net3 and its remedies): the base every
    Q2 reading is judged against, so that a remedy is not called healthy against Net3's own vanishing gradient."""
    while net_table()[name].extra_convs and net_table()[name].base:
        name = net_table()[name].base
    return name


def update_text(value: float) -> str:
    return f"{value:.2g}" if math.isfinite(value) else "not recorded"


def unit_facts(r: Results) -> list[str]:
    """Q2's table cells for one net and seed: the gradient ratio early and in epoch 1, conv1's update size early
    and in the last epoch, which layers died first and when (and whether they came back), which are dead at the
    end, and when the gradient reaching conv1 became exactly 0."""
    zero_from = first_epoch_from([g == 0 for g in r.grad_norms["conv1"]])
    return [f"{gradient_ratio(r):.2g}", f"{gradient_ratio(r, 1):.2g}", update_text(early_update(r)),
            update_text(last_update(r)), first_dead_text(r), dead_at_end_text(r) or "none", str(zero_from or "never")]


def first_dead_text(r: Results) -> str:
    """The layers the probe first finds dead, and after which epoch ('chain10 (epoch 1)'), with those that came
    back by the end; 'none' when no layer ever died."""
    found = first_dead(r)
    if found is None:
        return "none"
    epoch, layers = found
    back = [layer for layer in layers if layer not in dead_layers(r, r.epochs)]
    return f"{', '.join(layers)} (epoch {epoch})" + (f"; {', '.join(back)} came back" if back else "")


def dead_at_end_text(r: Results) -> str:
    """The layers dead after the last epoch, by name ('chain10, fc1'), or with the chain layers counted when more
    than two of them died ('5 of 10 chain layers, fc1'); '' for none."""
    dead = dead_layers(r, r.epochs)
    chain = [d for d in dead if is_chain_layer(d)]
    counted = [f"{len(chain)} of {sum(map(is_chain_layer, r.dead_units))} chain layers"] if len(chain) > 2 else chain
    return ", ".join(counted + [d for d in dead if not is_chain_layer(d)])


def vanishing_terms() -> str:
    """What Q2's words mean, for the Method section."""
    l1, l3 = net_label(NET1), net_label(NET3)
    return (f"Gradient ratio: conv1's gradient norm over fc1's; update size: conv1's ‖Δw‖/‖w‖ per step. Early: the "
            f"first {WINDOW_STEPS} iterations; late: the last epoch, over the seeds in which {l3} learned, as is the "
            f"loss drop per epoch from epoch 2. Differences are log10 {l1} / {l3} (a loss drop: {l1}'s less {l3}'s), "
            f"so above 0 is the original's claim. **Vanishing**: an early ratio over {VANISH_FACTOR}× below {l1}'s; "
            f"**recovers**: back within {VANISH_FACTOR}× later. **Dead**: conv1's gradient 0 over the last epoch, or "
            f"fc1 dead with the loss flat at ln(classes); the probe (units all 0 on {DEAD_UNIT_IMAGES} val images) "
            "only supports it.")


def vanishing_table(exp: Experiment) -> list[str]:
    """Q2's per-seed table, for the appendix: every deep net and its shallow base, seed by seed."""
    deep = [n for n in exp.nets if net_table()[n].extra_convs]
    if not deep:
        return []
    lines = ["Q2's gradients and updates, seed by seed:", "",
             f"| net | seed | gradient ratio, first {WINDOW_STEPS} iterations | gradient ratio, epoch 1 | conv1 "
             f"update size, first {WINDOW_STEPS} iterations | conv1 update size, last epoch | first dead on the probe "
             "(after epoch) | dead on the probe at the end | conv1 gradient exactly 0 from epoch | reading |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys([shallow_base(n) for n in deep if shallow_base(n) in exp.runs] + deep):
        base = shallow_base(name)
        same = exp.same_machine(name, base) if base in exp.runs and base != name else []
        for k, r in enumerate(exp.runs[name]):
            story = "" if not same else (gradient_story(r, exp.runs[base][k]).text if same[k] else
                                         f"not paired: {net_label(base)} ran on another machine")
            lines.append(f"| {r.label} | {r.train_seed} | {' | '.join(unit_facts(r))} | {story} |")
    return lines


def answer_vanishing(exp: Experiment) -> list[str]:
    deep = [n for n in exp.nets if net_table()[n].extra_convs]
    if not deep:
        chained = [n for n, s in net_table().items() if s.base and changed_fields(n) == {"extra_convs"}]
        return [f"Not measured: this run trained no net with the extra conv chain ({nets_arg(chained)} measures it)."]
    lines = [*q2_answers(exp), "", "Each deep net against its shallow base (each seed: Appendix):"]
    for name in deep:
        base = shallow_base(name)
        if base == name or base not in exp.runs:
            continue
        pairs = exp.paired_runs(name, base)
        stories = [gradient_story(d, b) for d, b in pairs]
        lb, ld = net_label(base), net_label(name)
        if not pairs:
            lines.append(f"- {ld} against {lb}: not paired, the two ran on different machines in every seed.")
            continue
        n = seeds_text(len(pairs)) + (" in which both ran on one machine" if len(pairs) < exp.seeds else "")
        counts = "; ".join(f"{story.text} in {stories.count(story)}" for story in dict.fromkeys(stories))
        sentence = f"{ld} against {lb}, over {n}: {counts}" + ("" if name == NET3 else (
            f"; early gradient ratio {ratio_median([gradient_ratio(d) for d, _ in pairs])}"
            + (" (median)" if len(pairs) > 1 else "")))
        lines.append(f"- {sentence}.")
    return lines


UPDATE_FLOOR = 1e-12  # a conv1 update size at or below it is 0: Adam moved no weight that epoch


def zero_update_from(r: Results) -> int | None:
    """The first epoch from which conv1's update size stays at 0 (UPDATE_FLOOR) to the end; None if it never does or
    the run did not record it."""
    sizes = r.update_sizes.get("conv1") if r.update_sizes else None
    return first_epoch_from([v <= UPDATE_FLOOR for v in sizes]) if sizes else None


@dataclass(frozen=True)
class ZeroUpdates:
    """Over one net's seeds that recorded update sizes: how many reach a conv1 update of 0 from some epoch on,
    among the seeds at chance and among those that learned, and Fisher's exact test (two-sided) of the 2x2 table."""

    net: str
    zero_at_chance: int
    at_chance: int
    zero_learned: int
    learned: int

    @property
    def seeds(self) -> int:
        return self.at_chance + self.learned

    @property
    def p_value(self) -> float:
        table = [[self.zero_at_chance, self.at_chance - self.zero_at_chance],
                 [self.zero_learned, self.learned - self.zero_learned]]
        return float(scipy_stats().fisher_exact(table).pvalue)


def update_outcome(r: Results) -> tuple[bool, bool] | None:
    """(ended at chance, conv1's update at 0 from some epoch on) of a seed that recorded update sizes, else None."""
    return (r.at_chance, zero_update_from(r) is not None) if r.update_sizes.get("conv1") else None


def zero_table(net: str, outcomes: Iterable[tuple[bool, bool]]) -> ZeroUpdates | None:
    """ZeroUpdates over (at chance, zero) outcomes, one per seed; None without any."""
    outcomes = list(outcomes)
    if not outcomes:
        return None
    stuck = [zero for at_chance, zero in outcomes if at_chance]
    learned = [zero for at_chance, zero in outcomes if not at_chance]
    return ZeroUpdates(net, sum(stuck), len(stuck), sum(learned), len(learned))


def zero_updates(runs: Sequence[Results], net: str) -> ZeroUpdates | None:
    """The table of ZeroUpdates for one net's seeds; None when no seed recorded update sizes."""
    return zero_table(net, (o for o in map(update_outcome, runs) if o is not None))


def zero_updates_table(rows: Sequence[tuple[str, ZeroUpdates]]) -> list[str]:
    """Per (seeds, net): in how many seeds at chance, and in how many that learned, conv1's update is 0 from some
    epoch to the end, and Fisher's exact test of the two (none when the net has one regime only)."""
    lines = ["| seeds | net | at chance, update 0 | learned, update 0 | Fisher's exact p |",
             "|---|---|---|---|---|"]
    for where, z in rows:
        p = p_text(z.p_value) if z.at_chance and z.learned else "no test: one regime"
        lines.append(f"| {where} | {net_label(z.net)} | {z.zero_at_chance} of {z.at_chance} | {z.zero_learned} of "
                     f"{z.learned} | {p} |")
    return lines


def pooled_zero_rows(study: RateStudy) -> list[tuple[str, ZeroUpdates]]:
    """The zero-update tables pooled over the study's runs (each training seed once, a full-length run's outcome
    first; a short seed's outcome is its state after its last epoch)."""
    return [("pooled", z) for z in study.zero_updates()]


Q2_PARTS = {"early gradient": "gradient vanishes early", "loss slope": "loss falls slowly",
            "late gradient": "gradient small late", "early update": "updates small early",
            "late update": "updates approach 0"}


def q2_part_values(values: tuple[list[float], list[float]], key: str) -> tuple[str, str]:
    """(Net3's, Net1's) medians over the seeds of one Q2 part."""
    if key == "loss slope":
        return tuple(f"{float(np.median(side)):.3f} nats" for side in values)
    return tuple(ratio_median([10 ** v if 10 ** v > RATIO_FLOOR else 0.0 for v in side]) for side in values)


def q2_table(exp: Experiment) -> list[str]:
    """Q2's parts, each against Net1 of the same seed, decided in the claims table's family: what each net
    measured, the paired difference (log10 of Net1's over Net3's, a loss drop's Net1 − Net3 in nats; above 0 is
    what the original claims) with its interval, and the answer."""
    values = VanishingCheck().values(exp)
    l3, l1 = net_label(NET3), net_label(NET1)
    lines = [f"| part | {l3}, median | {l1}, median | {l1} vs {l3} [95% CI] | p (Holm) | seeds | "
             "answer |",
             "|---|---|---|---|---|---|---|"]
    for key, question in Q2_PARTS.items():
        tested = exp.tested.get(("Q2", key))
        if tested is None or tested.cmp.seeds < 2:
            lines.append(f"| {question} | | | | | {len(values[key][0])} | not tested: "
                         + ("no seed recorded it |" if tested is None else "a test needs two seeds |"))
            continue
        d = exp.decision(("Q2", key), unit=DECADES)
        effect, p, seeds = effect_cell(tested, NATS if key == "loss slope" else DECADES)
        answer = {1: "yes", -1: "no, reversed"}.get(d.side) or verdict_text(d.shown)
        lines.append(f"| {question} | {' | '.join(q2_part_values(values[key], key))} | {effect} | {p} | {seeds} | "
                     f"{answer} |")
    return lines


def q2_answers(exp: Experiment) -> list[str]:
    """Q2's parts as one table (the claims table's row decides them), then what hw4 adds: whether Adam keeps the
    updates up, and whether they reach 0 where a net dies."""
    if NET1 not in exp.runs or NET3 not in exp.runs:
        return []
    deep = [n for n in exp.nets if net_table()[n].extra_convs]
    zeros = [("this run", z) for z in (zero_updates(exp.runs[n], n) for n in deep) if z]
    pooled = [(w, z) for w, z in pooled_zero_rows(exp.rates) if z.net in exp.runs] if exp.rates else []
    zeros += pooled
    adam = adam_keeps_updates(exp)
    updates = ("" if ("Q2", "late update") in exp.tested else
               " Update sizes are not recorded in seeds trained before hw4 measured them.")
    return [*q2_table(exp), "",
            (f"- hw4's Adam test: {adam_text(adam)}, as Adam scales each step by the gradient's "
             "running RMS." if adam else
             "- Adam divides each weight's step by its gradient's running RMS, so a small gradient need not make a "
             "small update.") + updates,
            *(["", f"Where a net dies, do its updates reach 0 (≤ {UPDATE_FLOOR:g})? hw4's test, "
               "each row alone"
               + (f"; pooled: every seed of {', '.join(f'`{r}`' for r in exp.rates.update_runs)} that recorded "
                  "them" if pooled else "") + ":", "", *zero_updates_table(zeros)] if zeros else [])]


def ranking_order(exp: Experiment) -> list[str]:
    """The nets by how often they learned first, then by mean best val accuracy over the seeds in which each
    learned: a net that collapses in more seeds ranks below one that collapses in fewer, whatever its learned mean."""
    return sorted(exp.nets, key=lambda n: (-len(exp.learned(n)) / len(exp.runs[n]), -typical(exp, n, BEST_VAL)))


def answer_ranking(exp: Experiment) -> list[str]:
    order = ranking_order(exp)
    mixed = any(len(exp.learned(n)) < len(exp.runs[n]) for n in order)

    def shown(n: str) -> str:
        learned = exp.learned(n)
        rate = f", learned in {len(learned)} of {len(exp.runs[n])}" if len(learned) < len(exp.runs[n]) else ""
        return f"{net_label(n)} ({pm([BEST_VAL.of(r) for r in learned or exp.runs[n]])}{rate})"

    lines = [("By learn rate, then " if mixed else "By ") + "best val accuracy where each learned: "
             + " > ".join(map(shown, order)) + "."]
    # a pair the claims or Q5's table decide is said there, once; only the others get a bullet here
    families = {}
    for a, b in exp.base_pairs() if len(order) > 1 else ():
        key = PairTest(a, b, BEST_VAL)
        tested = exp.tested.get(key) or exp.tested.get(flipped(key))
        families[(a, b)] = tested.family_name if tested else None
    lines += [f"- {describe_difference(exp, a, b)}" for (a, b), family in families.items()
              if family not in ("the claims table", "Q5's table")]
    lines += ["- Each remedy against its base: Q5's table."] if "Q5's table" in families.values() else []
    return lines + [ranking_verdict(exp, order)]


def ranking_verdict(exp: Experiment, order: list[str]) -> str:
    """A best net only when the report's decision puts it above every other net; else the nets not resolved
    apart from it."""
    if len(order) < 2:
        return f"Only {net_label(order[0])} was trained, so there is nothing to rank."
    if exp.seeds < 2:
        return "One seed cannot rank the nets: rerun with `--seeds 3` or more."
    top, others = order[0], order[1:]
    decisions = {n: exp.decision(PairTest(n, top, BEST_VAL), threshold=True) for n in others}
    ties = [n for n in others if decisions[n].side != 1]
    if not ties:
        return f"Best in this run: {net_label(top)}, resolved above every other net."
    return (f"No single best net: {net_label(top)} is not resolved above "
            + ", ".join(f"{net_label(n)} ({short_reason(decisions[n])})" for n in ties)
            + "; the tests are two-sided, Holm-corrected over Q3's family unless the claims table or Q5 tests the "
            "pair.")


def short_reason(d: Judgement) -> str:
    """Why a comparison is not resolved above 0, in a few words: its smallest Holm-adjusted p, or that no part
    of it can be decided at this seed count."""
    if d.side < 0:
        return "resolved the other way"
    adjusted = [p for p in d.tested.adjusted if p is not None] if d.tested else []
    if adjusted:
        return f"adjusted p = {p_text(min(adjusted))}"
    return f"cannot be decided {d.scope}" if d.tested and d.tested.cmp.parts else d.verdict.word


def confused_pairs(matrix: np.ndarray, classes: Sequence[str]) -> list[tuple[str, str, int]]:
    """Class pairs with errors by their symmetric off-diagonal count, most confused first."""
    sym = matrix + matrix.T
    pairs = [(classes[i], classes[j], int(sym[i, j])) for i in range(len(classes)) for j in range(i + 1, len(classes))]
    return sorted((p for p in pairs if p[2] > 0), key=lambda p: -p[2])


def answer_hardest(exp: Experiment) -> list[str]:
    lines, pairs, rows = [], [], []
    two = ("in two folders" if exp.dataset and exp.dataset.source == "image_folders" else "annotated with two classes")
    for name, runs in exp.runs.items():
        learned = exp.learned(name)
        matrix = sum(r.val_confusion for r in learned) if learned else None
        if matrix is None or len(np.flatnonzero(matrix.sum(0))) == 1:
            lines.append(f"- {net_label(name)} {'stayed at chance' if not learned else 'predicts one class'}"
                         f"{' in every seed' if exp.seeds > 1 and not learned else ''}: it has not learned to tell the "
                         "classes apart, so its confusions say nothing about which classes are hard.")
            continue
        ranked = confused_pairs(matrix, learned[0].classes)
        if not ranked:
            lines.append(f"- {net_label(name)}: no val errors.")
            continue
        (a, b, n), errors = ranked[0], int(matrix.sum() - np.trace(matrix))
        recall = recalls(matrix)
        pairs.append((a, b))
        shown, figure = learned[0], exp.figure(learned[0], "hardest_{net}.png")
        rows.append(f"| {net_label(name)} | **{a} / {b}** | {100 * n / errors:.0f}% "
                    f"| {shown.classes[int(np.argmin(recall))]} ({pct(float(recall.min()))}) | [`{figure}`]({figure}) "
                    f"| {sum(bool(h.also_shows) for h in shown.hardest)} of {len(shown.hardest)} |")
    if rows:
        lines[:0] = ["Best-epoch val confusions, over the seeds in which each net learned:", "",
                     "| net | most confused pair | share of val errors | lowest recall | hardest val "
                     f"images | of them {two} |", "|---|---|---|---|---|---|", *rows, ""]
    facts = exp.dataset
    if facts is None:
        return lines + ["This run did not save which val images show two classes (it predates hw4 saving it)."]
    where = "in both class folders" if facts.source == "image_folders" else "both in COCO's annotations"
    verb = ("sits", "sit") if facts.source == "image_folders" else ("shows", "show")
    for a, b in dict.fromkeys(pairs):  # label noise that no net can resolve
        a_b, b_a = facts.val_also_shows[a][b], facts.val_also_shows[b][a]
        n_val = facts.counts["val"][a] + facts.counts["val"][b]
        lines.append(f"No val image of {a} or {b} shows the other class, so their confusion comes from how alike they "
                     "look at this resolution, not from label noise." if a_b + b_a == 0 else
                     f"{a_b + b_a} of the {n_val} val images of {a} and {b} {verb[a_b + b_a > 1]} {where} "
                     f"({a_b} labelled {a}, {b_a} {b}), each with one label: part of this confusion is label noise.")
    if facts.shared:
        pairs_text = ", ".join(f"{p} {n}" for p, n in list(facts.shared["class_pairs"].items())[:4])
        lines.append(f"Over both splits, {facts.shared['in_two_classes']} pictures sit in two class folders "
                     f"({pairs_text}{', ...' if len(facts.shared['class_pairs']) > 4 else ''}) and "
                     f"{facts.shared['in_both_splits']} in both splits; the run "
                     + ("keeps them." if facts.shared['kept'] else "left them out (--exclusive)."))
    return lines


@dataclass(frozen=True)
class Remedy:
    """A remedy of Q5; the nets that measure it name it in NetSpec.remedy. `ours` marks one that hw4 adds to the
    original's list, so that the report never credits the original with it."""

    key: str
    words: str      # as the original proposes it, or what hw4 adds
    treats: str     # "overfitting", "depth" (Net3's failure) or "underfitting": the advice that names it
    caveat: str = ""  # what the table's nets cannot measure of it, said with its rows
    ours: bool = False
    testable: bool = True  # False: this dataset cannot measure it at all, and the caveat says why


OURS = " (hw4's addition)"  # how the report marks a remedy the original does not propose
REMEDIES = (
    Remedy("residual", "residual connections for Net3", "depth"),
    Remedy("batchnorm", "batch normalisation for Net3", "depth"),
    Remedy("xavier", "Xavier initialisation for the weights of each layer", "depth"),
    Remedy("he", f"He's initialisation of the convs, the one for ReLU{OURS}", "depth", ours=True),
    Remedy("higher resolution", "a higher resolution than 64×64", "underfitting",
           "no picture of this dataset is larger (build one at another `--image-size` from full-size COCO)",
           testable=False),
    Remedy("resolution", "lower resolutions, 32 and 48 px of the same pictures (hw4's measurement)", "underfitting",
           "with a lower resolution comes a smaller fc1", ours=True),
    Remedy("data", "more training images per class", "overfitting"),
    Remedy("noise", "noise on the samples", "overfitting"),
    Remedy("augment", f"random flips and crops{OURS}", "overfitting", ours=True),
    Remedy("dropout", "dropout", "overfitting"),
    Remedy("fc", "more fully connected layers", "underfitting"),
)


def remedy_nets(treats: str, base: str) -> list[str]:
    """The nets of the table that measure, on `base`, a remedy against `treats`."""
    keys = {r.key for r in REMEDIES if r.treats == treats}
    return [n for n, s in net_table().items() if s.remedy in keys and s.base == base]


def both_at_chance(exp: Experiment, a: str, b: str) -> bool:
    return exp.stuck(a) == exp.stuck(b) == exp.seeds


def effect_text(d: Judgement) -> str:
    """A remedy's effect in words that follow its decision: helps or hurts with the seeds it rests on (the p column
    beside it gives Holm's p), or the verdict and why."""
    if not d.side and (d.verdict is not Verdict.NOT_RESOLVED or not d.tested or not d.tested.cmp.parts):
        return verdict_text(d.shown)
    head = f"{'helps' if d.side > 0 else 'hurts'} {d.scope}" if d.side else f"not resolved {d.scope}"
    # the p column gives each part's p; what it cannot show is a part that no seed count here could decide
    undecidable = [part for part, adj in zip(d.tested.cmp.parts, d.tested.adjusted)
                   if adj is None and part.test is Test.REGIMES]
    return head + "".join(f" (the regimes cannot be decided: {part.n} seeds in which only one learned)"
                          for part in undecidable)


def study_verdict(study: RateStudy, net: str) -> str:
    """The rate study's decision of a remedy's learn rate against its base, worded the one way every report and
    table cites it: 'helps (Holm p = 2.2e-09)'. Only a claim of the original is 'reproduced': the original
    proposes these remedies but claims nothing of how often a net learns."""
    adjusted = study.tested[net].adjusted[0]
    return study_word(study, net) + (f" (Holm p = {p_text(adjusted)})" if adjusted is not None else
                                     " (cannot reach Holm's threshold)")


def study_word(study: RateStudy, net: str) -> str:
    """'helps', 'hurts' or 'not resolved': the study's decision of the net's learn rate against its base."""
    return {1: "helps", -1: "hurts"}.get(rate_decision(study, net).side, "not resolved")


def study_cell(study: RateStudy | None, net: str) -> str:
    """The Q5 table's study column: the study's verdict on the net's learn rate, blank for a net it did not study."""
    if study is None:
        return ""
    based = net in study.remedies and net_table()[net].base == study.base
    return f" | {study_verdict(study, net) if based else ''}"


def remedy_verdict(exp: Experiment, name: str) -> str:
    spec = net_table()[name]
    if both_at_chance(exp, spec.base, name):
        return verdict_text(Judgement(Verdict.NOT_TESTABLE, (f"both at chance in {exp.seeds} of "
                                                             f"{seeds_text(exp.seeds)}",), colon=True))
    effect = effect_text(exp.decision(PairTest(spec.base, name, BEST_VAL), threshold=True))
    if spec.train_fraction < 1:
        return (f"training on {pct(spec.train_fraction)} of the images: {effect}. More images than this dataset has "
                "are not measured here")
    return effect


def remedy_rows(exp: Experiment) -> list[tuple[Remedy, str]]:
    """(remedy, net) for every remedy net of the run whose base is in the run too."""
    return [(remedy, n) for remedy in REMEDIES for n in net_table() if net_table()[n].remedy == remedy.key
            and n in exp.runs and net_table()[n].base in exp.runs]


def p_cell(tested: Tested | None) -> str:
    """A comparison's p-values, one per tested part, with Holm's adjusted p beside, or why a part stayed out of
    its family: '0.064 (Holm 0.13)', '0.031 (cannot reach 0.0045)', the threshold Tarone's rule set."""
    if tested is None or not tested.cmp.parts:
        return "—"
    return ", ".join(f"{p_text(part.p)} " + (f"(Holm {p_text(adj)})" if adj is not None else
                                             f"(cannot reach {p_text(tested.threshold)})")
                     for part, adj in zip(tested.cmp.parts, tested.adjusted))


def remedy_table(exp: Experiment) -> list[str]:
    """One row per remedy and net; each verdict is the report's decision of the net against its base."""
    rows = remedy_rows(exp)
    study = exp.rates if exp.rates and exp.rates.valid else None
    studied = f" | learn rate at {study.rate(study.base)[1]} seeds (`{study.run}`)" if study else ""
    lines = [f"| remedy | net (vs its base) | learned in | best val acc | train "
             f"({train_measure(exp)}) − val gap, points | Δ best val acc [95% CI] | p (Holm) | verdict{studied} |",
             "|---" * (8 + bool(study)) + "|"]
    for remedy in REMEDIES:
        if not remedy.testable:
            lines.append(f"| {remedy.words} | — | | | | | | not testable here: {remedy.caveat}{' |' * bool(study)} |")
        for k, n in enumerate(n for r, n in rows if r is remedy):
            b = net_table()[n].base
            tested = exp.tested.get(PairTest(b, n, BEST_VAL))
            lines.append(f"| {'' if k else remedy.words} | {net_label(n)} (vs {net_label(b)}) | "
                         f"{len(exp.learned(n))} vs {len(exp.learned(b))} of {exp.seeds} | "
                         f"{100 * typical(exp, n, BEST_VAL):.1f} vs {pct(typical(exp, b, BEST_VAL))} | "
                         f"{100 * typical(exp, n, GAP):.1f} vs {100 * typical(exp, b, GAP):.1f} | "
                         f"{delta_cell(exp, b, n, tested)} | {p_cell(tested)} | "
                         f"{remedy_verdict(exp, n)}{study_cell(study, n)} |")
    measured = list(dict.fromkeys(r for r, _ in rows))
    lines += [f"{remedy.words[0].upper()}{remedy.words[1:]}: {remedy.caveat}." for remedy in measured if remedy.caveat]
    lines += ["", unmeasured_text(exp)] if unmeasured_text(exp) else []
    return lines + resolution_slope(exp, rows) + (rates_citation(exp.rates) if exp.rates else []) + ["", proposal(exp)]


def delta_cell(exp: Experiment, base: str, name: str, tested: Tested | None) -> str:
    """A remedy's paired difference in best val accuracy with its 95% interval: over the seeds in which both
    learned (and how many) when the two have two regimes; '—' when both stayed at chance."""
    if both_at_chance(exp, base, name) or tested is None:
        return "—"
    t = next((part for part in tested.cmp.parts if part.ci95), None)
    if t is None or tested.cmp.seeds == 1:  # one seed: the pictures' interval, said as such
        return difference_text(tested.cmp, shown_seeds=exp.seeds, names=(net_label(name), net_label(base)))
    low, high = (interval_end(100 * v, 1) for v in t.ci95)
    return f"{signed(t.diff, POINTS)} [{low}, {high}]" + (f" over {t.n} both learned" if t.conditional else "")


def unmeasured_text(exp: Experiment) -> str:
    """The testable remedies this run trained no net of, in one sentence with the command that measures them."""
    measured = {r.key for r, _ in remedy_rows(exp)}
    missing = [r for r in REMEDIES if r.testable and r.key not in measured]
    nets = [n for r in missing for n, s in net_table().items() if s.remedy == r.key]
    if not missing:
        return ""
    if not measured:
        return (f"This run measured none of the {len(missing)} testable remedies; `--nets all --seeds 3` trains each "
                "beside its base.")
    return (f"Not measured in this run: {'; '.join(r.words for r in missing)}; {nets_arg(nets)} measures "
            f"{'it' if len(missing) == 1 else 'them'}.")


def resolution_slope(exp: Experiment, rows: list[tuple[Remedy, str]]) -> list[str]:
    """The resolution row's slope: best val accuracy against the side each net sees (the base at full size), a
    least-squares line through the means over the seeds, per 16 pixels of side; what it does not show, said."""
    nets = [n for r, n in rows if r.key == "resolution"]
    if not nets:
        return []
    size = exp.first.config["image_size"]
    base = net_table()[nets[0]].base
    sides = [size] + [scaled_side(size, net_table()[n].input_scale) or size for n in nets]
    means = [typical(exp, n, BEST_VAL) for n in [base, *nets]]
    slope = float(np.polyfit(sides, means, 1)[0]) * 16
    return ["Resolution, measured downward from the same pictures: best val accuracy "
            + ", ".join(f"{pct(m)} at {s}×{s}" for s, m in sorted(zip(sides, means))) + f", a slope of "
            f"{100 * slope:+.1f} points per 16 pixels of side. It says how much the side matters below {size}×{size}, "
            "not what a side above it would give."]


def proposal(exp: Experiment) -> str:
    """The one thing the homework asks to propose, taken from what the run measured."""
    rows = remedy_rows(exp)
    if not rows:
        return ("**Proposal:** this run measured no remedy; `python hw4.py --nets all` (with `--seeds 3` or more) "
                "trains each of them beside its base, and this section then names the one that helps most.")
    keys = {n: PairTest(net_table()[n].base, n, BEST_VAL) for _, n in rows if PairTest(net_table()[n].base, n, BEST_VAL)
            in exp.tested}
    resolved = {n: k for n, k in keys.items() if exp.decision(k, threshold=True).side > 0}
    if not resolved:
        return ("**Proposal:** no remedy's gain is resolved in this run (two-sided tests, Holm-corrected over Q5's "
                "table); more seeds would tell them apart.")

    def gain(n: str) -> float:
        cmp = exp.tested[resolved[n]].cmp
        return cmp.both_learned.diff if cmp.two_regimes else cmp.diff

    best = max(resolved, key=gain)
    remedy = next(r for r in REMEDIES if r.key == net_table()[best].remedy)
    whose = "; it is hw4's addition, not a remedy the original proposes" if remedy.ours else ""
    return (f"**Proposal:** {remedy.words.removesuffix(OURS)}, as {net_label(best)} measures it: the largest resolved "
            f"gain over its base ({difference_text(exp.tested[resolved[best]].cmp)} of best val accuracy){whose}.")


def diagnosis(exp: Experiment, name: str) -> str:
    """One net's fit in a few words (the results table's last column), read from its measured fit over the seeds in
    which it learned, never from what the variant is: diverged, at chance, overfits, regularised (train fit below
    its base's while val holds or rises), underfits, or neither."""
    runs, gap = exp.runs[name], typical(exp, name, GAP)
    diverged = [r.diverged_epoch for r in runs if r.diverged_epoch]
    if diverged:
        return f"diverged in epoch {min(diverged)}: lower `--lr`"
    if gap > OVERFIT_GAP:
        return f"overfits: a {100 * gap:.1f}-point gap, val peaks at epoch {typical(exp, name, BEST_EPOCH):.0f}"
    if exp.stuck(name) == len(runs):
        return f"at chance ({pct(1 / len(exp.first.classes))}): it does not learn (Q2)"
    train, base = typical(exp, name, FINAL_TRAIN_CLEAN_ACC), net_table()[name].base
    if train >= UNDERFIT_ACC:
        return "neither over- nor underfits"
    if (base in exp.runs and typical(exp, base, FINAL_TRAIN_CLEAN_ACC) >= UNDERFIT_ACC
            and train < typical(exp, base, FINAL_TRAIN_CLEAN_ACC)
            and typical(exp, name, BEST_VAL) >= typical(exp, base, BEST_VAL)):
        return f"regularised: train {pct(train)}, below {net_label(base)}'s, while val holds"
    return f"underfits: train {pct(train)} < {pct(UNDERFIT_ACC)}, loss {typical(exp, name, FINAL_TRAIN_LOSS):.2f} nats"


PERMUTATIONS = 10_000  # shuffles of the co-death test; its seed is fixed, so a report is the same on every rewrite


@dataclass(frozen=True)
class CoDeaths:
    """Deaths (a seed at chance) of Net3 and its remedies over the seeds they share, and whether the remedies'
    deaths fall together more than independent deaths would: a permutation test that shuffles each net's deaths
    over the seeds apart (keeping how often each dies). `together` counts the pairs of remedies that die in one seed;
    `with_base`, the remedies' deaths that fall in a seed where the base dies too."""

    base: str
    remedies: tuple[str, ...]
    seeds: tuple[int, ...]
    dead: dict[str, tuple[bool, ...]]  # net -> per seed of `seeds`, whether it stayed at chance

    def statistics(self, dead: dict[str, np.ndarray]) -> tuple[int, int]:
        remedies = np.array([dead[n] for n in self.remedies], dtype=int)
        per_seed = remedies.sum(0)
        return int((per_seed * (per_seed - 1) // 2).sum()), int((remedies * dead[self.base]).sum())

    @functools.cached_property
    def observed(self) -> tuple[int, int]:
        return self.statistics({n: np.array(v) for n, v in self.dead.items()})

    @functools.cached_property
    def p_values(self) -> tuple[float, float]:
        """One-sided: the share of shuffles at least as clustered as the seeds are, (1 + k) / (1 + PERMUTATIONS)."""
        rng, hits = np.random.default_rng(0), np.zeros(2)
        vectors = {n: np.array(v) for n, v in self.dead.items()}
        for _ in range(PERMUTATIONS):
            hits += np.array(self.statistics({n: rng.permutation(v) for n, v in vectors.items()})) >= self.observed
        return tuple(float((1 + h) / (1 + PERMUTATIONS)) for h in hits)

    @property
    def shared_deaths(self) -> list[tuple[int, list[str]]]:
        """The seeds in which two or more remedies die, with the nets that die there (the base too, if it does)."""
        out = []
        for k, seed in enumerate(self.seeds):
            dying = [n for n in self.remedies if self.dead[n][k]]
            if len(dying) > 1:
                out.append((seed, dying + ([self.base] if self.dead[self.base][k] else [])))
        return out


def co_deaths(regimes: dict[str, dict[int, bool]], base: str) -> CoDeaths | None:
    """CoDeaths from learned-or-not per net and seed, over the seeds every net has; None without two remedies that
    die, or fewer than three shared seeds."""
    remedies = tuple(n for n in regimes if n != base and net_table()[n].extra_convs)
    if base not in regimes or not remedies:
        return None
    seeds = tuple(sorted(set.intersection(*(set(regimes[n]) for n in (base, *remedies)))))
    dead = {n: tuple(not regimes[n][s] for s in seeds) for n in (base, *remedies)}
    if len(seeds) < 3 or sum(any(dead[n]) for n in remedies) < 2:
        return None
    return CoDeaths(base, remedies, seeds, dead)


def co_deaths_text(c: CoDeaths) -> str:
    """The seeds in which remedies die together, and the two permutation tests, in one paragraph."""
    shared = "; ".join(f"seed {s}: {', '.join(map(net_label, nets))}" for s, nets in c.shared_deaths)
    together, with_base = c.observed
    p_together, p_base = c.p_values
    deaths = sum(sum(c.dead[n]) for n in c.remedies)
    return (f"**Deaths that co-occur** (hw4's test, one-sided, each alone; {PERMUTATIONS:,} shuffles of each net's "
            f"seeds): of the {seeds_text(len(c.seeds))} that {net_label(c.base)} and its remedies share, two or more "
            "remedies stay at chance together in "
            + (f"{seeds_text(len(c.shared_deaths))} ({shared})" if shared else "no seed")
            + f", {together} pair{'s' * (together != 1)} in all (p = {p_text(p_together)}); {with_base} of the "
            f"remedies' {deaths} deaths fall in a seed in which {net_label(c.base)} dies too (p = {p_text(p_base)}).")


def deaths_without_vanishing(exp: Experiment, c: CoDeaths) -> str:
    """Of the remedies that die together, those whose gradient did not vanish first (their early conv1/fc1 ratio
    within VANISH_FACTOR of Net1's in the same seed): a death of another kind than the one the original names."""
    found = []
    for seed, nets in c.shared_deaths:
        base = next((r for r in exp.runs.get(NET1, []) if r.train_seed == seed), None)
        for n in nets:
            r = next(r for r in exp.runs[n] if r.train_seed == seed)
            if base is not None and r.machine == base.machine and not gradient_story(r, base).vanishing:
                found.append(f"{net_label(n)} in seed {seed}")
    if not found:
        return ""
    return (" Dead without a vanishing gradient, a failure of another kind than the one the original names: "
            + ", ".join(found) + ".")


def answer_improvement(exp: Experiment) -> list[str]:
    lines = []
    for base, name in exp.base_pairs():
        fixes = remedy_nets("depth", name)
        if (changed_fields(name) == {"extra_convs"} and fixes and not any(n in exp.runs for n in fixes)
                and typical(exp, name, BEST_VAL) < typical(exp, base, BEST_VAL)):
            lines.append(f"{net_label(name)} does worse than {net_label(base)} despite its depth; batch normalisation, "
                         "residual connections or another initialisation may fix it"
                         + (f" ({nets_arg(fixes)})." if remedy_rows(exp) else "."))
    stale = [n for n, runs in exp.runs.items() if any(exercise().spec_changed(r) for r in runs)]
    if stale:
        one = len(stale) == 1
        lines.append(f"{', '.join(map(net_label, stale))} of this run trained under an earlier row of the net table "
                     f"than today's, so {'its row' if one else 'their rows'} below measure{'s' if one else ''} that "
                     f"earlier version, not the remedy {'its' if one else 'their'} first cell names; `--resume` with "
                     f"the run's command retrains {'it' if one else 'them'}.")
    paired = f"paired by seed, over the {exp.seeds} seeds unless stated" if exp.seeds > 1 else "in the one seed"
    together = co_deaths({n: {r.train_seed: not r.at_chance for r in exp.runs[n]} for n in exp.nets}, NET3)
    if not remedy_rows(exp):
        untestable = [f"{r.words}: not testable here; {r.caveat}" for r in REMEDIES if not r.testable]
        return [unmeasured_text(exp), *lines, *(f"{t[0].upper()}{t[1:]}." for t in untestable)]
    return lines + ["", "Each remedy the original report proposes (or hw4 adds) against the net it modifies: variant "
                    f"vs base, means over the seeds in which each learned; Δ is variant − base, {paired}.", "",
                    *remedy_table(exp),
                    *(["", co_deaths_text(together) + deaths_without_vanishing(exp, together)] if together else [])]


@dataclass(frozen=True)
class Question:
    heading: str
    answer: Callable[[Experiment], list[str]]

    @property
    def key(self) -> str:
        """'Q1': the question of CLAIMS that this answers."""
        return self.heading.split(".")[0]


QUESTIONS = (
    Question("Q1. Does padding make a difference?", answer_padding),
    Question("Q2. Does Net3 show vanishing gradients?", answer_vanishing),
    Question("Q3. Which net is best?", answer_ranking),
    Question("Q4. Which classes are hardest, and why?", answer_hardest),
    Question("Q5. What would improve the results?", answer_improvement),
)

# --- The original report's claims, checked: one row each, with the function that measures it.

class Verdict(enum.IntEnum):
    """A claim's verdict, in order of precedence: a claim of several parts takes the lowest of its parts'
    (one part not reproduced makes the claim not reproduced; all reproduced, reproduced)."""

    NOT_REPRODUCED = 0
    NOT_TESTABLE = 1
    NOT_RESOLVED = 2
    PARTLY = 3
    REPRODUCED = 4

    @property
    def word(self) -> str:
        return {Verdict.NOT_REPRODUCED: "not reproduced", Verdict.NOT_TESTABLE: "not testable here",
                Verdict.NOT_RESOLVED: "not resolved", Verdict.PARTLY: "partly reproduced",
                Verdict.REPRODUCED: "reproduced"}[self]


@dataclass(frozen=True)
class Judgement:
    """The one verdict type: a verdict with its reasons kept apart from it (only verdict_text turns the two into
    words, and no code reads those words back: every decision reads `verdict` and `side`). What decide()
    concludes of a comparison carries the side it resolved (+1: b above a, -1: below, 0: neither) and the test."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    scope: str = ""      # 'at 5 seeds', 'at one seed'
    colon: bool = False  # a failed precondition: 'not testable here: why' rather than 'verdict (why)'
    side: int = 0
    tested: Tested | None = None
    on_pictures: bool = False  # it rests on one seed's pictures (a PictureTest), not on seeds
    opposite: bool = False  # resolved on the side opposite to a claim's (a threshold or a remedy has no side)
    conditional: bool = False  # resolved over the seeds in which both nets learned only (its scope says how many)

    @property
    def shown(self) -> "Judgement":
        """The verdict as a table shows it: its scope said when it is not resolved, rests on one seed's pictures
        or on the seeds in which both learned; a resolution on the side opposite to the claim said as a reason."""
        scope = self.scope if self.verdict is Verdict.NOT_RESOLVED or self.on_pictures or self.conditional else ""
        reasons = tuple(r for r in self.reasons if r) + (("resolved on the side opposite to the claim",)
                                                         if self.opposite else ())
        return dataclasses.replace(self, reasons=reasons, scope=scope, opposite=False)

    def adding(self, reason: str) -> "Judgement":
        return dataclasses.replace(self, reasons=(*self.reasons, reason))

    def leading(self, reason: str) -> "Judgement":
        return dataclasses.replace(self, reasons=(reason, *self.reasons))

    def citing(self, reason: str) -> "Judgement":
        """The same verdict whose reasons an earlier row already gives, pointed to instead of said twice."""
        return dataclasses.replace(self, reasons=(reason,)) if self.reasons else self


NET1, NET2, NET3 = DEFAULT_NETS  # the nets the original report's claims are about


def signed(value: float, unit: Unit) -> str:
    return f"{unit.scale * value:+.{unit.digits}f}{unit.suffix}"


def not_paired_reason(cmp: Comparison) -> str:
    return f"the two nets ran on different machines in every seed ({seed_list_text(cmp.unpaired)}), so none pairs them"


def combined_verdict(parts: Sequence[Judgement]) -> Judgement:
    """A claim of several parts: the first part with the lowest verdict (Verdict's order of precedence)."""
    return min(parts, key=lambda j: j.verdict)


@dataclass(frozen=True)
class ClaimInterval:
    """One part of a claim that claims.png draws: b - a over the paired seeds (less `offset`, a threshold
    that the figure adds back), the claimed value (None for a direction), the unit both are in, and the
    part's own verdict."""

    label: str
    cmp: Comparison
    claimed: float | None
    unit: Unit = POINTS
    verdict: Verdict = Verdict.NOT_RESOLVED
    offset: float = 0.0


@dataclass(frozen=True)
class ClaimResult:
    """What a claim's check measured, its judgement, and the intervals it rests on."""

    measured: str
    judgement: Judgement
    intervals: tuple[ClaimInterval, ...] = ()


@dataclass(frozen=True)
class DifferenceCheck:
    """A claim that each (a, b) pair has b > a in `what` (by `claimed`, in its unit, or in direction only)."""

    pairs: tuple[tuple[str, str], ...]
    what: Measure
    claimed: float | None = None

    def comparisons(self, exp: Experiment) -> dict[Any, Comparison]:
        return {PairTest(a, b, self.what): exp.compare(a, b, self.what) for a, b in self.pairs}

    def __call__(self, exp: Experiment) -> ClaimResult:
        what, keys = self.what, list(self.comparisons(exp))
        judged = [exp.decision(k, self.claimed, what.unit) for k in keys]
        cmps = [exp.tested[k].cmp for k in keys]
        # a comparison an earlier row already shows (Q3's order re-uses Q1's Net2 - Net1) is cited by its row
        own = next(row for row, claim in enumerate(CLAIMS, 1) if claim.check is self)
        earlier = [next((row for row in claim_rows(exp, k) if row < own), None) for k in keys]
        return ClaimResult(
            f"{what.words}: " + "; ".join(f"{net_label(b)} − {net_label(a)}"
                                          + (": " if c.two_regimes and not row else " ")
                                          + (f"as in claim {row}" if row else self.shown(exp, own, a, b, c))
                                          for (a, b), c, row in zip(self.pairs, cmps, earlier)),
            combined_verdict([d.shown.citing(f"{net_label(b)} − {net_label(a)} as tested in claim {row}")
                              if row else d.shown for (a, b), d, row in zip(self.pairs, judged, earlier)]),
            tuple(ClaimInterval(f"{net_label(b)} − {net_label(a)}, {what.split}", c, self.claimed, what.unit,
                                d.verdict) for (a, b), c, d in zip(self.pairs, cmps, judged)))

    def said_by_effect(self, exp: Experiment) -> bool:
        """Whether the Answers' effect says all this claim measured: one pair, every seed paired."""
        return len(self.pairs) == 1 and not any(c.unpaired for c in self.comparisons(exp).values())

    def shown(self, exp: Experiment, own: int, a: str, b: str, cmp: Comparison) -> str:
        """One pair's difference; over two regimes whose split an earlier claim already shows (the same two nets in
        another measure), that claim's number and the part over the seeds in which both learned."""
        names = (net_label(b), net_label(a))
        # the regimes are the same whatever the measure: an earlier claim on the same two nets already split them
        same = next((row for row in range(1, own) for key in CLAIMS[row - 1].comparisons(exp)
                     if isinstance(key, PairTest) and {key.a, key.b} == {a, b}), None) if cmp.two_regimes else None
        if not (same and cmp.both_learned.seeds):
            return difference_text(cmp, self.what.unit, exp.seeds, names)
        both = cmp.both_learned
        return (f"regimes as in claim {same}; over the {seeds_text(both.seeds)} in which both learned: "
                f"{difference_text(both, self.what.unit, both.seeds)}")


def check_differences(pairs: list[tuple[str, str]], what: Measure, claimed: float | None = None) -> DifferenceCheck:
    return DifferenceCheck(tuple(pairs), what, claimed)


DECADES = Unit("decades", 1.0, 2, " decades")  # a difference of log10 values: Q2's gradient ratios and update sizes




RATIO_FLOOR = 1e-12  # a gradient ratio or update size of exactly 0, logged: below any measured one, not dropped


def log10_or_nan(value: float) -> float:
    return math.log10(max(value, RATIO_FLOOR)) if value >= 0 and math.isfinite(value) else math.nan


def last_update(r: Results) -> float:
    """conv1's update size ||Δw|| / ||w|| per step over the last epoch (nan when the run did not record it)."""
    sizes = r.update_sizes.get("conv1") if r.update_sizes else None
    return sizes[-1] if sizes else math.nan


def early_update(r: Results) -> float:
    """conv1's update size per step over the first iterations of epoch 1 (nan when not recorded)."""
    sizes = r.update_sizes_steps100.get("conv1") if r.update_sizes_steps100 else None
    return sizes[0] if sizes else math.nan


class VanishingCheck:
    """Q2's claim, in its parts, each against Net1 of the same seed: the gradient reaching conv1 vanishes early
    (its conv1/fc1 ratio over the first iterations); the train loss then falls slowly (its drop per epoch from
    epoch 2, over the seeds in which Net3 learned); and the claimed cause, a small gradient and updates that
    approach 0 (the last epoch's ratio and conv1's update size, over the same seeds). Each part is a paired
    t-test on log10 values or slopes, decided in the claims table's family."""

    KEYS = ("early gradient", "loss slope", "late gradient", "early update", "late update")  # the parts decided

    def values(self, exp: Experiment) -> dict[str, tuple[list[float], list[float]]]:
        """Per part, (Net3's values, Net1's values) over the paired seeds the part reads, Net1's side the one the
        claim says is larger."""
        pairs = exp.paired_runs(NET3, NET1)
        learned = [(d, b) for d, b in pairs if not d.at_chance]
        measured = {
            "early gradient": [(log10_or_nan(gradient_ratio(d)), log10_or_nan(gradient_ratio(b))) for d, b in pairs],
            "loss slope": [(loss_slope(d), loss_slope(b)) for d, b in learned],
            "late gradient": [(log10_or_nan(gradient_ratio(d, d.epochs)), log10_or_nan(gradient_ratio(b, b.epochs)))
                              for d, b in learned],
            "early update": [(log10_or_nan(early_update(d)), log10_or_nan(early_update(b))) for d, b in pairs],
            "late update": [(log10_or_nan(last_update(d)), log10_or_nan(last_update(b))) for d, b in learned]}
        return {k: ([x for x, y in v if math.isfinite(x + y)], [y for x, y in v if math.isfinite(x + y)])
                for k, v in measured.items()}

    def comparisons(self, exp: Experiment) -> dict[Any, Comparison]:
        return {("Q2", k): paired_difference(*v) for k, v in self.values(exp).items() if v[0] and k in self.KEYS}

    def __call__(self, exp: Experiment) -> ClaimResult:
        pairs = exp.paired_runs(NET3, NET1)
        if not pairs:
            loss = exp.compare(NET1, NET3, FINAL_TRAIN_LOSS)
            return ClaimResult("", Judgement(Verdict.NOT_TESTABLE, (not_paired_reason(loss),), colon=True))
        values = self.values(exp)
        d = {k: exp.decision(("Q2", k), unit=DECADES) for k in self.KEYS if ("Q2", k) in exp.tested}
        measured = ("" if values["early update"][0] else
                    "update sizes not recorded (the seeds trained before hw4 measured them).")
        return ClaimResult(measured, vanishing_judgement(d))


@dataclass(frozen=True)
class AdamKeepsUpdates:
    """hw4's test of why a vanishing gradient need not slow the weights: over the first iterations, by how many
    decades Net3's conv1 update (against Net1's, same seed) falls less than its gradient ratio does. Above 0:
    Adam, which divides each step by the gradient's running RMS, keeps the update nearer Net1's than the
    gradient is. One paired t-test on log10 values, a family of its own (outside the claims table's)."""

    update: tuple[float, ...]  # log10 of Net3's early update over Net1's, per paired seed
    gradient: tuple[float, ...]  # log10 of Net3's early gradient ratio over Net1's, the same seeds

    @functools.cached_property
    def decision(self) -> Judgement:
        cmp = paired_difference(self.gradient, self.update)
        return decide(test_family({"adam": cmp}, "hw4's update test")["adam"], unit=DECADES)

    @property
    def median_update(self) -> float:
        return 10 ** float(np.median(self.update))

    @property
    def median_gradient(self) -> float:
        return 10 ** float(np.median(self.gradient))


def adam_keeps_updates(exp: Experiment) -> AdamKeepsUpdates | None:
    """The early update and gradient ratios of Net3 over Net1, over the paired seeds that recorded both; None
    below two such seeds."""
    pairs = [(log10_or_nan(early_update(d)) - log10_or_nan(early_update(b)),
              log10_or_nan(gradient_ratio(d)) - log10_or_nan(gradient_ratio(b)))
             for d, b in exp.paired_runs(NET3, NET1)]
    pairs = [(u, g) for u, g in pairs if math.isfinite(u + g)]
    return AdamKeepsUpdates(*map(tuple, zip(*pairs))) if len(pairs) >= 2 else None


def adam_text(a: AdamKeepsUpdates) -> str:
    """'Net3's early update is 0.56× Net1's (median), its gradient ratio 0.00013×, 3.6 decades closer (paired
    t-test, 9 seeds: p = 1e-06)', or that the update does not resolve as falling less than the gradient."""
    d = a.decision
    cmp = d.tested.cmp
    test = f"paired t-test, {seeds_text(cmp.seeds)}: p = {p_text(cmp.parts[0].p)}" if cmp.parts else \
        f"no test: {seeds_text(cmp.seeds)}"
    sizes = (f"Net3's early update is {a.median_update:.2g}× Net1's (median), its gradient ratio "
             f"{a.median_gradient:.2g}×")
    if d.side > 0:
        return f"{sizes}, {cmp.diff:.1f} decades closer ({test})"
    return f"{sizes}; the update does not resolve as falling less than the gradient ({test})"


def vanishing_judgement(d: dict[str, Judgement]) -> Judgement:
    """Reproduced when every part resolves on the claimed side; partly when the symptom (an early vanishing
    gradient, a slow fall) holds but the claimed cause is resolved the other way; else the parts' lowest verdict.
    The reasons name the parts only: their sizes and p are in the row's other cells and in Q2."""
    held_words = {"early gradient": "early gradient vanishes", "loss slope": "loss falls more slowly",
                  "late gradient": "late gradient small", "early update": "early updates smaller",
                  "late update": "late updates near 0"}
    against_words = {"early gradient": "early gradient", "loss slope": "loss drop", "late gradient": "late gradient",
                     "early update": "early updates", "late update": "late updates"}
    held = [k for k, x in d.items() if x.side > 0]
    against = [k for k, x in d.items() if x.side < 0]
    reasons = [f"holds: {', '.join(held_words[k] for k in held)}"] if held else []
    reasons += [f"against it: {' and '.join(against_words[k] for k in against)} larger than Net1's"] if against else []
    required = {"early gradient", "loss slope", "late gradient"} | ({"late update"} & set(d))
    if required <= set(held) and not against:
        return Judgement(Verdict.REPRODUCED, tuple(reasons))
    if {"early gradient", "loss slope"} & set(held):
        missing = ["no seed in which Net3 learned, so no slow fall to measure"] if "loss slope" not in d else []
        return Judgement(Verdict.PARTLY, tuple(reasons + missing))
    worst = combined_verdict([x.shown for x in d.values()]) if d else Judgement(Verdict.NOT_RESOLVED)
    return dataclasses.replace(worst, reasons=tuple(reasons) + worst.reasons)


def loss_slope(r: Results) -> float:
    """How fast the train loss falls once training is under way: its drop per epoch from epoch 2 to the last, in
    nats (the mean over each epoch's steps, as the original records it)."""
    loss = r.series("train", FINAL_TRAIN_LOSS.metric)
    return (loss[1] - loss[-1]) / (len(loss) - 2) if len(loss) > 2 else math.nan


def first_dead(r: Results) -> tuple[int, list[str]] | None:
    """The earliest epoch after which the dead-unit probe finds a whole layer dead, and those layers; None if never."""
    return next(((epoch, layers) for epoch in range(1, r.epochs + 1) if (layers := dead_layers(r, epoch))), None)


def never_learned(exp: Experiment, name: str) -> Judgement:
    """The not-testable judgement for a net that stayed at chance in every seed."""
    low, high = clopper_pearson(0, exp.seeds)
    return Judgement(Verdict.NOT_TESTABLE, (
        f"{net_label(name)} never learned (at chance in {exp.seeds} of {seeds_text(exp.seeds)}; a seed in which it "
        f"learns is at most {100 * high:.0f}% likely, 95% Clopper–Pearson), while the original's {net_label(name)} "
        "did learn",), colon=True)


def check_cat_dog(exp: Experiment) -> ClaimResult:
    parts, verdicts = [], []
    for name in (NET1, NET2, NET3):
        learned = exp.learned(name)
        if not learned:
            parts.append(f"{net_label(name)} stayed at chance in every seed (no confusion pattern)")
            verdicts.append(never_learned(exp, name))
            continue
        top = confused_pairs(sum(r.val_confusion for r in learned), exp.first.classes)[:1]
        per_seed = sum({p[0], p[1]} == {"cat", "dog"}
                       for r in learned for p in confused_pairs(r.val_confusion, r.classes)[:1])
        parts.append(f"{net_label(name)} {'/'.join(top[0][:2]) if top else 'none'} ({per_seed} of {len(learned)})")
        verdicts.append(Judgement(Verdict.REPRODUCED if top and set(top[0][:2]) == {"cat", "dog"}
                                  else Verdict.NOT_REPRODUCED))
    verdict = combined_verdict(verdicts)
    testable = [net_label(n) for n, v in zip((NET1, NET2, NET3), verdicts) if v.verdict is not Verdict.NOT_TESTABLE]
    if (verdict.verdict is Verdict.NOT_TESTABLE and testable
            and all(v.verdict in (Verdict.NOT_TESTABLE, Verdict.REPRODUCED) for v in verdicts)):
        verdict = verdict.adding(f"reproduced for {' and '.join(testable)}")
    return ClaimResult("most confused val pair (seeds with cat/dog first): " + ", ".join(parts), verdict)


def pair_share(matrix: np.ndarray, classes: Sequence[str], pair: set[str]) -> tuple[float, int]:
    """The share of a confusion matrix's errors that fall on one class pair (either way round), and the pair's rank
    among the confused pairs (0 when it has no error); `compare` reads it too."""
    ranked = confused_pairs(matrix, classes)
    errors = max(1, sum(n for *_, n in ranked))
    hit = next(((k, p) for k, p in enumerate(ranked, 1) if {p[0], p[1]} == pair), None)
    return (hit[1][2] / errors, hit[0]) if hit else (0.0, 0)


def recalls(matrix: np.ndarray) -> np.ndarray:
    """Each class's recall from a confusion matrix (rows: true class); 0 for a class with no picture."""
    return np.diag(matrix) / np.maximum(1, matrix.sum(1))


def pair_shares(r: Results, pair: set[str]) -> tuple[float, int]:
    return pair_share(r.val_confusion, r.classes, pair)


AIRPLANE_BUS, CAT_DOG = {"airplane", "bus"}, {"cat", "dog"}


class AirplaneBusCheck:
    """The original: Net3 'has some difficulties to differentiate airplane and bus but it is not as worse as the
    dog and cat problems'. Tested seed by seed over the seeds in which Net3 learned (one seed's errors are on
    the same pictures, so the seeds, not the summed errors, are the independent units): airplane/bus's share of
    the val errors above an even share over the class pairs, and below cat/dog's. Net1's and Net2's ranks of the
    pair say whether it is Net3's own."""

    def shares(self, exp: Experiment) -> tuple[list[float], list[float], float]:
        learned = exp.learned(NET3)
        classes = len(exp.first.classes)
        return ([pair_shares(r, AIRPLANE_BUS)[0] for r in learned], [pair_shares(r, CAT_DOG)[0] for r in learned],
                2 / (classes * (classes - 1)))

    def comparisons(self, exp: Experiment) -> dict[Any, Comparison]:
        ab, cd, even = self.shares(exp)
        return {("Q4", "above even"): paired_difference([even] * len(ab), ab),
                ("Q4", "below cat/dog"): paired_difference(ab, cd)} if ab else {}

    def __call__(self, exp: Experiment) -> ClaimResult:
        if not exp.learned(NET3):
            return ClaimResult(f"{net_label(NET3)} stayed at chance in every seed, predicting about one class, so it "
                               "has no confusion pattern to compare", never_learned(exp, NET3))
        ab, cd, even = self.shares(exp)
        ranks = {n: [pair_shares(r, AIRPLANE_BUS)[1] for r in exp.learned(n)] for n in (NET1, NET2, NET3)
                 if n in exp.runs and exp.learned(n)}
        ranked = [(a, b) for a, b, _ in confused_pairs(sum(r.val_confusion for r in exp.learned(NET3)),
                                                       exp.first.classes)]
        rank = next((k for k, pair in enumerate(ranked) if set(pair) == AIRPLANE_BUS), len(ranked))
        above = [f"{a}/{b}" for a, b in ranked[:rank]]
        measured = (f"share of {net_label(NET3)}'s val errors, per seed it learned in ({len(ab)}): airplane/bus "
                    f"{pm(ab)}, cat/dog {pm(cd)}, an even share {100 * even:.0f}%. Median rank "
                    "of airplane/bus: "
                    + ", ".join(f"{net_label(n)} #{np.median(v):g}" for n, v in ranks.items())
                    + (f"; above it for {net_label(NET3)}: {', '.join(above)}" if above else ""))
        decided = {k: exp.decision(k) for k in self.comparisons(exp) if k in exp.tested}
        if len(decided) < 2:
            return ClaimResult(measured, combined_verdict([x.shown for x in decided.values()])
                               if decided else Judgement(Verdict.NOT_RESOLVED, ("one seed",), "at one seed"))
        even_d, cd_d = decided[("Q4", "above even")], decided[("Q4", "below cat/dog")]
        same = [net_label(n) for n in (NET1, NET2) if n in ranks and np.median(ranks[n]) <= np.median(ranks[NET3])]
        own = ([f"not Net3's own: {' and '.join(same)} rank{'s' * (len(same) == 1)} it as high"] if same else [])
        if even_d.side > 0 and cd_d.side > 0:
            return ClaimResult(measured, Judgement(Verdict.REPRODUCED, tuple(own)))
        if cd_d.side > 0:
            return ClaimResult(measured, Judgement(Verdict.PARTLY, (
                "below cat/dog holds; above an even share: "
                + ("resolved below it" if even_d.side < 0 else f"not resolved {even_d.scope}"), *own)))
        return ClaimResult(measured, combined_verdict([cd_d.shown, even_d.shown]))


def shifted(cmp: Comparison, by: float) -> Comparison:
    """The comparison with `by` added to every difference (a gap minus its threshold, back to the gap)."""
    pictures = cmp.pictures and dataclasses.replace(cmp.pictures, diff=cmp.pictures.diff + by,
                                                    low=cmp.pictures.low + by, high=cmp.pictures.high + by)
    return dataclasses.replace(cmp, diff=cmp.diff + by, diffs=tuple(d + by for d in cmp.diffs), pictures=pictures)


@dataclass(frozen=True)
class GapCheck:
    """A claim that the nets overfit: each one's final train accuracy (eval mode) minus final val accuracy is
    over OVERFIT_GAP."""

    nets: tuple[str, ...]

    def comparisons(self, exp: Experiment) -> dict[Any, Comparison]:
        return {t: exp.run_test(t) for t in (PairTest(None, name, GAP, OVERFIT_GAP) for name in self.nets)}

    def __call__(self, exp: Experiment) -> ClaimResult:
        tests = self.comparisons(exp)
        gaps = {t.b: c for t, c in tests.items()}
        judged = [exp.decision(t, threshold=True) for t in tests]
        return ClaimResult(
            f"final train ({train_measure(exp)}) − val accuracy gap (large taken as over {100 * OVERFIT_GAP:.0f} "
            "points): "
            + "; ".join(f"{net_label(n)} {difference_text(shifted(g, OVERFIT_GAP), shown_seeds=exp.seeds)}"
                        for n, g in gaps.items()),
            combined_verdict([j.shown for j in judged]),
            tuple(ClaimInterval(f"{net_label(n)} train − val gap", g, None, POINTS, j.verdict, OVERFIT_GAP)
                  for (n, g), j in zip(gaps.items(), judged)))


PADDING_EFFECT = {BEST_TRAIN: 0.008, BEST_VAL: 0.004}  # Net2 - Net1 as the original reports it (Q1)


def seed_effect_on_padding(exp: Experiment) -> tuple[str, bool] | None:
    """What the seed does to the original's own conclusion of Q1 and Q3 (Net2 above Net1): per measure, the spread
    of one seed's Net2 - Net1 difference against the effect the original reports, and the seeds whose order is the
    other way. (words, whether one seed's spread is larger than the effect it would be judged by); None when the
    run cannot pair two learned Net1 and Net2 seeds."""
    if NET1 not in exp.runs or NET2 not in exp.runs:
        return None
    texts, larger = [], False
    for what, effect in PADDING_EFFECT.items():
        cmp = exp.compare(NET1, NET2, what)
        if cmp.two_regimes or len(cmp.diffs) < 2:
            return None
        sd, against = float(np.std(cmp.diffs, ddof=1)), sum(d <= 0 for d in cmp.diffs)
        larger |= sd > abs(effect)
        texts.append(f"{what.split} {100 * sd:.2f} (the original's effect {100 * effect:+.1f}; Net2 not above "
                     f"Net1 in {against} of {len(cmp.diffs)})" if not texts else
                     f"{what.split} {100 * sd:.2f} ({100 * effect:+.1f}; {against} of {len(cmp.diffs)})")
    return "std of one seed's Net2 − Net1: " + ", ".join(texts), larger


def ranked_text(values: dict[str, float]) -> str:
    """'Net2 > Net1 > Net3', highest first, with '=' between equal values (a tie is shown as a tie)."""
    ranked = sorted(values, key=lambda n: -values[n])
    return ranked[0] + "".join(f" {'=' if values[b] == values[a] else '>'} {b}" for a, b in zip(ranked, ranked[1:]))


def check_randomness(exp: Experiment) -> ClaimResult:
    """The original allows the order of the nets to vary with the seed and claims only that performance
    will not change significantly (taken as a seed-to-seed std of best val accuracy under SEED_SPREAD).
    Judged per net: reproduced when its one-sided 95% upper bound of that std is under SEED_SPREAD; not
    reproduced when its lower bound is over it, or it learns in some seeds only (then its std is over the
    seeds that learned); not resolved otherwise. The claim takes the lowest of its nets' verdicts."""
    nets = [NET1, NET2, NET3]
    if exp.seeds < 2:
        return ClaimResult("one seed", Judgement(Verdict.NOT_RESOLVED, ("the seed-to-seed spread needs `--seeds 3` or "
                                                                        "more",), "at one seed"))
    orders: dict[str, list[int]] = {}
    for k in range(exp.seeds):
        orders.setdefault(ranked_text({net_label(n): BEST_VAL.of(exp.runs[n][k]) for n in nets}),
                          []).append(exp.runs[NET1][k].train_seed)
    values = {n: exp.by_regime(n, BEST_VAL)[0] if exp.two_regimes(n) else exp.values(n, BEST_VAL) for n in nets}
    spread = {n: (float(mean_std(v)[1]), *std_bounds(v)) if len(v) > 1 else None for n, v in values.items()}

    def spread_text(n: str) -> str:
        where = f", {len(values[n])} learned seeds" if exp.two_regimes(n) else ""
        if spread[n] is None:
            return f"{net_label(n)}: no spread{where}"
        return f"{net_label(n)} {100 * spread[n][0]:.1f} ({100 * spread[n][2]:.1f}{where})"

    def judged(n: str) -> Verdict:
        if exp.two_regimes(n) or (spread[n] and spread[n][1] > SEED_SPREAD):
            return Verdict.NOT_REPRODUCED
        return Verdict.REPRODUCED if spread[n] and spread[n][2] < SEED_SPREAD else Verdict.NOT_RESOLVED

    never = [n for n in nets if exp.stuck(n) == exp.seeds]  # always at chance: nothing to vary, left out
    verdicts = {n: judged(n) for n in nets if n not in never}
    if not verdicts:
        return ClaimResult("every net stayed at chance in every seed", never_learned(exp, NET1))
    counts = [f"{o} in {len(s)}" for o, s in orders.items()]
    measured = (f"std of best val accuracy, points (one-sided 95% upper bound; insignificant taken as under "
                f"{100 * SEED_SPREAD:.0f}): " + ", ".join(map(spread_text, nets)) + ". Order: "
                + ", ".join(counts) + f" of {seeds_text(exp.seeds)}.")
    conclusion = seed_effect_on_padding(exp)
    if conclusion:
        measured += f" {conclusion[0][0].upper()}{conclusion[0][1:]}."

    def reason(n: str) -> str:
        if exp.two_regimes(n):
            return f"it learns in {len(exp.learned(n))} of {seeds_text(exp.seeds)}"
        if verdicts[n] is Verdict.NOT_REPRODUCED:
            return f"{net_label(n)}'s std is over {100 * SEED_SPREAD:.0f} points even at its lower bound"
        if verdicts[n] is Verdict.NOT_RESOLVED:
            return f"{net_label(n)}'s upper bound reaches {100 * SEED_SPREAD:.0f} points"
        return ""

    parts, said = [], set()  # after 'reproduced for Net1', 'not for Net3' says the rest
    for v in (Verdict.REPRODUCED, Verdict.NOT_RESOLVED, Verdict.NOT_REPRODUCED):
        names = [n for n in verdicts if verdicts[n] is v]
        reasons = [reason(n) for n in names if reason(n)]
        if names:
            word = "not" if v is Verdict.NOT_REPRODUCED and Verdict.REPRODUCED in said else v.word
            said.add(v)
            parts.append(f"{word} for {' and '.join(map(net_label, names))}"
                         + (f" ({'; '.join(reasons)})" if reasons else ""))
    left_out = [f"{' and '.join(map(net_label, never))} stayed at chance in every seed, so "
                f"{'it is' if len(never) == 1 else 'they are'} left out"] if never else []
    if conclusion and conclusion[1]:  # the seed moves one run's Net2 - Net1 by more than the effect it reports
        parts.append(f"{'not' if Verdict.REPRODUCED in said else 'not reproduced'} for its Q1 and Q3 findings (a seed "
                     "can reverse them)")
        verdicts["conclusions"] = Verdict.NOT_REPRODUCED
    kinds = set(verdicts.values())
    if len(kinds) == 1:
        only = kinds.pop()
        return ClaimResult(measured, Judgement(only, tuple(r for r in map(reason, verdicts) if r) + tuple(left_out),
                                               f"at {seeds_text(exp.seeds)}" if only is Verdict.NOT_RESOLVED else ""))
    overall = Verdict.PARTLY if Verdict.REPRODUCED in kinds else min(kinds)
    return ClaimResult(measured, Judgement(overall, ("; ".join(parts), *left_out)))


@dataclass(frozen=True)
class Claim:
    """A finding of the original report: its words, the nets and classes it is about, and the check that
    turns this run's numbers into (what was measured, a judgement)."""

    question: str
    words: str
    check: Callable[[Experiment], ClaimResult]
    nets: tuple[str, ...] = (NET1, NET2, NET3)
    classes: tuple[str, ...] = ()
    short: str = ""  # the claim in a few words, for the answers that open the report

    def comparisons(self, exp: Experiment) -> dict[Any, Comparison]:
        """The comparisons its verdict rests on, by key: they join the claims table's Holm family."""
        return self.check.comparisons(exp) if hasattr(self.check, "comparisons") else {}

    def missing(self, exp: Experiment) -> list[str]:
        """The nets or classes the claim is about that the run lacks."""
        return [n for n in self.nets if n not in exp.runs] or [c for c in self.classes if c not in exp.first.classes]


CLAIMS = (
    Claim("Q1", "Padding increased train accuracy by 0.8 points (Net2 over Net1).",
          check_differences([(NET1, NET2)], BEST_TRAIN, PADDING_EFFECT[BEST_TRAIN]), (NET1, NET2),
          short="padding adds 0.8 points of train accuracy"),
    Claim("Q1", "Padding increased val accuracy by 0.4 points (Net2 over Net1).",
          check_differences([(NET1, NET2)], BEST_VAL, PADDING_EFFECT[BEST_VAL]), (NET1, NET2),
          short="padding adds 0.4 points of val accuracy"),
    Claim("Q2", "Net3 shows vanishing gradients: its loss decreases slowly because the gradients get very small.",
          VanishingCheck(), (NET1, NET3), short="Net3's gradients vanish, so its loss falls slowly"),
    Claim("Q3", "Net2 is the best performer: Net2 > Net1 > Net3 on train.",
          check_differences([(NET1, NET2), (NET3, NET1)], BEST_TRAIN), short="Net2 > Net1 > Net3 on train"),
    Claim("Q3", "Net2 is the best performer: Net2 > Net1 > Net3 on val.",
          check_differences([(NET1, NET2), (NET3, NET1)], BEST_VAL), short="Net2 > Net1 > Net3 on val"),
    Claim("Q4", "Cat/dog is the hardest pair for all three nets.", check_cat_dog, classes=("cat", "dog"),
          short="cat/dog is the hardest pair"),
    Claim("Q4", "“Net3 has some difficulties to differentiate airplane and bus but it is not as worse as the dog and "
          "cat problems.”", AirplaneBusCheck(), (NET3,),
          ("airplane", "bus"), short="Net3 confuses airplane/bus, less than cat/dog"),
    Claim("Discussion", "Net1 and Net2 overfit, with a large gap between train and val accuracy.",
          GapCheck((NET1, NET2)), (NET1, NET2), short="Net1 and Net2 overfit"),
    Claim("Discussion", "The run-to-run randomness (no seed fixed) will not change the performance significantly.",
          check_randomness, short="the seed changes little"),
)


def claim_row(exp: Experiment, claim: Claim) -> ClaimResult:
    """The claim's check, or not testable when the run lacks a net or a class the claim is about."""
    missing = claim.missing(exp)
    if missing:
        return ClaimResult("", Judgement(Verdict.NOT_TESTABLE, (f"this run has no {', '.join(missing)}",)))
    return claim.check(exp)


def per_class_text(counts: dict[str, int]) -> str:
    """'1500' when every class has that many, else the counts by class."""
    values = set(counts.values())
    return str(values.pop()) if len(values) == 1 else "/".join(map(str, counts.values()))


def shown_folder(path: str) -> str:
    """A folder as the report names it: as given when it lies below the folder hw4 ran in; else its last two
    parts after '…/', so that a committed report names no folder of the machine that trained it."""
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts:
        return "…/" + "/".join(p for p in parts[-2:] if p not in ("..", "/"))
    return path


def data_text(facts: DatasetFacts | None, conf: dict) -> str:
    """Where the pictures came from and how many per class and split."""
    if facts is None:  # a run saved before the dataset facts were
        return (f"{conf['train_per_class']} train and {conf['val_per_class']} val images per class at "
                f"{conf['image_size']}×{conf['image_size']} (subset seed {conf['subset_seed']})")
    source = (f"the class folders of `{shown_folder(conf['image_folders'])}`, taken as given"
              if facts.source == "image_folders"
              else f"a subset of COCO drawn with subset seed {conf['subset_seed']}")
    return (f"{per_class_text(facts.counts['train'])} train and {per_class_text(facts.counts['val'])} val images per "
            f"class at {conf['image_size']}×{conf['image_size']} from {source}")


def commit_text(commit: str | None) -> str:
    """A commit as 12 hex digits, '-dirty' kept: hw4.py differed from it."""
    return "unknown" if not commit else commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def machine_text(infra: dict[str, Any]) -> str:
    """One machine as the infrastructure line shows it, the hw4 commit aside."""
    cores = f"{infra['cpus']} cores"
    where = f"{infra['gpu']} (CUDA)" if infra.get("gpu") else f"CPU {cpu_type_text(infra, cores)}"
    return (f"{where}, {infra['threads']} torch thread{'s' * (infra['threads'] != 1)} per net, torch "
            f"{infra['torch']}, Python {infra['python']}, {infra['os']}")


def made_text(nets_by_seed: dict[int, list[str]], exp: Experiment) -> str:
    """Which seeds, and which nets of them when not all, a commit or machine made: 'seeds 5–7', or
    'Net1, Net2 of seeds 5–7'."""
    by_nets: dict[tuple[str, ...], list[int]] = {}
    for seed, nets in nets_by_seed.items():
        by_nets.setdefault(tuple(nets), []).append(seed)
    parts = [seed_list_text(seeds) if list(nets) == exp.nets else
             f"{', '.join(map(net_label, nets))} of {seed_list_text(seeds)}" for nets, seeds in by_nets.items()]
    return "; ".join(parts)


def infrastructure_text(exp: Experiment) -> str:
    """The machines the nets trained on, as saved at training ('not recorded' for older runs): each machine
    once, with the hw4 commits that trained on it and the seeds (and nets) each made."""
    runs = [(name, r) for name, rs in exp.runs.items() for r in rs]
    if all(not r.infrastructure for _, r in runs):
        return "Infrastructure: not recorded (a run saved before hw4 recorded it)."
    machines: dict[str | None, dict[str, dict[int, list[str]]]] = {}  # machine (None: unrecorded) -> commit -> seed
    for name, r in runs:
        key = machine_text(r.infrastructure) if r.infrastructure else None
        commit = commit_text(r.infrastructure.get("hw4_commit"))
        machines.setdefault(key, {}).setdefault(commit, {}).setdefault(r.train_seed, []).append(name)
    texts = []
    for key, commits in machines.items():
        if key is None:
            texts.append(f"not recorded for {made_text(next(iter(commits.values())), exp)}")
            continue
        made = [f"{c} ({made_text(seeds, exp)})" if len(commits) > 1 or exp.seeds > 1 or len(machines) > 1 else c
                for c, seeds in commits.items()]
        texts.append(f"{key}; hw4 commit{'s' * (len(made) > 1)} " + (", ".join(made[:-1]) + " and " + made[-1]
                                                                        if len(made) > 1 else made[0]))
    if len(texts) == 1:
        return f"Infrastructure: {texts[0]}."
    return (f"Infrastructure, {len(texts)} machines: " + ". ".join(texts) + ". A seed's two nets are compared only "
            "when both ran on one machine type (the same CPU model and torch build, or GPU model, CUDA and cuDNN); "
            "the others are left out of each paired comparison, and named.")


ORIGINAL_FC1_IN = {NET1: 5408, NET2: 7200}  # fc1's input size as the original report's code prints it


@functools.cache
def original_fc1_fits() -> dict[str, list[int]]:
    """The square input sizes up to 128 at which Net1 and Net2 have the original's printed fc1 sizes, once a
    process. fc1's input never shrinks as the picture grows, so two bisections over the sizes find them."""
    fits, sizes = {}, range(MIN_IMAGE_SIZE, 129)
    for name, size in ORIGINAL_FC1_IN.items():
        measure = functools.partial(spec_conv_output_size, net_table()[name])
        first, last = (bisect.bisect_left(sizes, size, key=measure), bisect.bisect_right(sizes, size, key=measure))
        fits[name] = list(sizes[first:last])
    return fits


def fc1_caveat(image_size: int) -> str:
    """The original's printed fc1 sizes, and the only input sizes they fit (computed from the nets)."""
    fits = original_fc1_fits()
    if all(image_size in found for found in fits.values()):
        return ""
    each = "; ".join(f"{net_label(n)}'s {ORIGINAL_FC1_IN[n]:,}: {found[0]}–{found[-1]} px"
                     if found else f"{net_label(n)}'s {ORIGINAL_FC1_IN[n]:,} fits no square picture"
                     for n, found in fits.items())
    return (f"The original's printed fc1 input sizes fit no {image_size}×{image_size} picture ({each}), so the claims "
            "are checked against its numbers as reported.")


@dataclass(frozen=True)
class ClaimRow:
    """One drawn row of claims.png: a claim part with a test, the claim's number in the table, and the verdict the
    table gives the claim (shown once, beside the claim's first part: a row of the table has one verdict)."""

    claim: str
    part: ClaimInterval
    verdict: Verdict | None = None


def claim_intervals(exp: Experiment) -> list[ClaimRow]:
    """Every claim part with a test (a t-interval, or per-seed differences over two regimes), in the order of
    CLAIMS, labelled with the claim's row number in the claims table."""
    rows: list[ClaimRow] = []
    for k, claim in enumerate(CLAIMS, 1):
        result = claim_row(exp, claim)
        parts = [part for part in result.intervals if part.cmp.parts]
        for j, part in enumerate(parts):
            same = next((i for i, row in enumerate(rows) if row.part.cmp is part.cmp), None)
            if same is None:
                rows.append(ClaimRow(f"#{k} {claim.question}", part, result.judgement.verdict if j == 0 else None))
            else:  # a comparison two claims cite is drawn once, labelled with both rows
                rows[same] = dataclasses.replace(rows[same], claim=f"{rows[same].claim}, #{k} {claim.question}")
    return rows


SMALL_SPAN = 0.1  # claim parts whose drawn values all lie within ±10 points get their own panel, to stay readable


def claim_panels(rows: list[ClaimRow]) -> list[tuple[Unit, list[ClaimRow]]]:
    """The panels of claims.png: one per unit, accuracy points split into small and large differences."""
    def extent(row: ClaimRow) -> float:
        cmp = row.part.cmp
        values = list(cmp.ci95) if cmp.ci95 else list(cmp.diffs)
        return max(abs(v + row.part.offset) for v in values)

    panels = []
    for unit in dict.fromkeys(row.part.unit for row in rows):
        of_unit = [row for row in rows if row.part.unit == unit]
        small = [row for row in of_unit if unit is POINTS and extent(row) <= SMALL_SPAN]
        panels += [(unit, group) for group in (small, [row for row in of_unit if row not in small]) if group]
    return panels


def interval_scope(exp: Experiment) -> str:
    return "paired interval over the seeds" if exp.seeds > 1 else "interval over the pictures, one training seed"


def draw_claims(exp: Experiment):
    """A forest plot: per claim part, the 95% paired interval and the measured difference (over two regimes,
    each seed's difference as a dot and the interval over the seeds in which both learned), the claimed value or
    threshold as a marker, 0 as a line,
    and beside each claim's first part the verdict the claims table gives it; one panel per unit, accuracy points
    split so that ±1-point intervals read."""
    panels = claim_panels(claim_intervals(exp))
    fig = new_figure(figsize=(9, 0.45 * sum(len(p) for _, p in panels) + 1.3 + 0.7 * (len(panels) - 1)),
                     layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": [len(p) for _, p in panels]})[:, 0]
    for ax, (unit, panel) in zip(axes, panels):
        for y, row in enumerate(reversed(panel)):
            cmp, shift = row.part.cmp, row.part.offset
            if cmp.ci95:
                low, high = (unit.scale * (v + shift) for v in cmp.ci95)
                ax.plot([low, high], [y, y], color="black", linewidth=2)
                ax.plot(unit.scale * (cmp.diff + shift), y, "o", color="black")
            else:
                ax.plot([unit.scale * (d + shift) for d in cmp.diffs], [y] * len(cmp.diffs), "o", color="tab:blue",
                        alpha=0.6, markersize=4, label="one seed (two regimes)")
                both = cmp.both_learned.ci95
                if both:
                    ax.plot([unit.scale * (v + shift) for v in both], [y - 0.2] * 2, color="tab:blue", linewidth=2,
                            label="seeds in which both learned")
            if row.part.claimed is not None:
                ax.plot(unit.scale * row.part.claimed, y, "D", color="tab:red", markersize=6, label="claimed value")
            if shift:
                ax.plot(unit.scale * shift, y, "s", color="tab:orange", markersize=6, label="threshold taken")
            if row.verdict is not None:
                ax.annotate(row.verdict.word, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(panel)), [f"{row.claim}: {row.part.label}" for row in reversed(panel)], fontsize=8)
        ax.set_xlabel(f"difference in {unit.name} (95% {interval_scope(exp)}; ● measured)")
    # one legend for the figure, under it: inside a panel it covers some row's interval
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    if handles:
        fig.legend(handles.values(), handles.keys(), fontsize=7, loc="outside lower center", ncol=len(handles))
    fig.suptitle(f"The original report's claims against this run ({seeds_text(exp.seeds)}; row numbers as in the "
                 "claims table)", fontsize=10)
    return fig


def effect_cell(tested: Tested, unit: Unit, offset: float = 0.0) -> tuple[str, str, str]:
    """(effect with its 95% interval, Holm p, the seeds it rests on) of one tested comparison: its t-part where it
    has one (conditional on learning when it is), else the regimes."""
    cmp = tested.cmp
    parts = list(zip(cmp.parts, tested.adjusted))
    holm = [adj for _, adj in parts if adj is not None]
    p = p_text(min(holm)) if holm else "—"
    t = next((part for part, _ in parts if part.ci95), None)
    if t is not None:
        low, high = (signed(offset + v, unit).split()[0] for v in t.ci95)
        return (f"{signed(offset + t.diff, unit)} [{low}, {high}]", p,
                f"{t.n}" + (" (both learned)" if t.conditional else ""))
    if parts:
        only_a, only_b = cmp.regime_counts
        return f"only one learned: {only_a} vs {only_b} seeds", p, f"{cmp.seeds}"
    return "—", p, f"{cmp.seeds}"


def lead_comparison(exp: Experiment, claim: Claim, result: ClaimResult) -> tuple[str, Tested, Unit, float] | None:
    """The comparison a claim's answer line cites: its first tested one, with its label, unit and offset."""
    keys = [k for k in claim.comparisons(exp) if k in exp.tested and exp.tested[k].cmp.parts]
    if not keys:
        return None
    drawn = [i for i in result.intervals if i.cmp.parts]
    if drawn:
        return drawn[0].label, exp.tested[keys[0]], drawn[0].unit, drawn[0].offset
    key = keys[0]
    if isinstance(key, PairTest):
        return net_label(key.b), exp.tested[key], key.measure.metric.unit, key.offset
    if key[0] == "Q2":  # log10 of Net1's value over Net3's (the loss slope: Net1's drop less Net3's, in nats)
        return (f"{key[1]}, Net1 − Net3", exp.tested[key], NATS, 0.0) if key[1] == "loss slope" else \
            (f"{key[1]}, log10 Net1 / Net3", exp.tested[key], DECADES, 0.0)
    return key[1], exp.tested[key], POINTS, 0.0


def answers_section(exp: Experiment) -> list[str]:
    """The verdicts first: one row per claim of the original, with the comparison that leads it, its 95%
    interval, the Holm-adjusted p and the seeds it rests on; then Q5's remedies in one line."""
    lines = ["## Answers: the original's claims, checked", "",
             "| # (Q) | the original's claim | verdict | effect [95% CI] | p (Holm) | seeds |",
             "|---|---|---|---|---|---|"]
    for k, claim in enumerate(CLAIMS, 1):
        result = claim_row(exp, claim)
        lead = lead_comparison(exp, claim, result) if not claim.missing(exp) else None
        effect, p, seeds = ("—", "—", str(exp.seeds)) if lead is None else effect_cell(*lead[1:])
        effect = f"{lead[0]}: {effect}" if lead and effect != "—" else effect
        lines.append(f"| {k} ({claim.question}) | {claim.short or claim.words} | {result.judgement.verdict.word} | "
                     f"{effect} | {p} | {seeds} |")
    q5 = remedies_answer(exp)
    return lines + [f"| (Q5) | remedies | {q5} | | | {exp.seeds} |"]


def remedies_answer(exp: Experiment) -> str:
    """Q5 in one cell: the remedies that help, that hurt, and how many are not resolved, by the report's decision
    of each remedy net against its base."""
    rows = remedy_rows(exp)
    if not rows:
        return "not measured in this run"
    sides = {n: exp.decision(PairTest(net_table()[n].base, n, BEST_VAL), threshold=True).side for _, n in rows}
    helps = [n for n, side in sides.items() if side > 0]
    hurts = [n for n, side in sides.items() if side < 0]
    rest = len(sides) - len(helps) - len(hurts)
    text = "; ".join(part for part in (f"help: {names_text(helps)}" if helps else "",
                                       f"hurt: {names_text(hurts)}" if hurts else "",
                                       f"{rest} not resolved" if rest else "") if part)
    return text + " (best val accuracy against the base net)"


def claims_figure(exp: Experiment) -> list[str]:
    """The fc1 caveat on the original's numbers and, when any claim has an interval, the link to claims.png."""
    caveat = fc1_caveat(exp.first.config["image_size"])
    lines = ["", caveat] if caveat else []
    if claim_intervals(exp):
        what = "paired intervals" if exp.seeds > 1 else "intervals over the pictures (one training seed)"
        lines += ["", f"![the original's claims: 95% {what} against the claimed values](claims.png)"]
    return lines


def claim_details(exp: Experiment, question: str) -> list[str]:
    """The claims of one question (or of the discussion) in detail, one bullet each under the number the Answers
    table gives it: the original's words, what was measured beyond the Answers' effect, and the verdict with its
    reasons."""
    lines = []
    for k, claim in enumerate(CLAIMS, 1):
        if claim.question != question:
            continue
        result = claim_row(exp, claim)
        shown = ("" if isinstance(claim.check, DifferenceCheck) and not claim.missing(exp)
                 and claim.check.said_by_effect(exp) else result.measured)
        shown += "" if not shown or shown.endswith(".") else "."
        lines.append(f"- **Claim {k}**, *{claim.words}*" + (f" Measured: {shown}" if shown else "")
                     + f" **Verdict:** {verdict_text(result.judgement)}.")
    return lines + [""] if lines else []


def claims_method(exp: Experiment) -> str:
    """How a difference is tested and what each verdict word means: stated once, in the Method section."""
    how = ("by a paired t-test over the seeds; where a net is at chance in some seeds (two regimes, which no normal "
           "interval fits), in two parts: McNemar's exact test on how often each learns, and a paired t-test over "
           "the seeds in which both learned"
           if exp.seeds > 1 else
           "within the one training seed, over pictures: two nets' val accuracies by an exact McNemar test on the val "
           "pictures that only one of them got right, a net's train − val gap by a two-proportion test over its "
           "train and val pictures")
    return (f"**Tests.** A difference is tested against 0 {how}. {RULE}\n\n"
            "**Families.** The claims, Q5's table and Q3's comparisons are each one family, Holm-corrected; by "
            "Tarone's rule a test whose smallest attainable p is above α/K stays out of its family of K. Power (80%) "
            "is computed at the α where Holm's step-down stopped.\n\n"
            "**Verdicts.** **Reproduced**: resolved on the claimed side (none on the other), the claimed size inside "
            "the 95% interval. **Partly reproduced**: the direction holds but not the size, or the symptom but not "
            "its claimed cause. **Not reproduced**: resolved on the other side, or the interval excludes the claimed "
            "size and holds 0. **Not resolved**: otherwise. **Not testable here**: a precondition fails. hw4's "
            "additions **help** or **do not help**.")


def method_section(exp: Experiment) -> list[str]:
    """## Method: the tests, sidedness, Holm and Tarone, the regimes, what the intervals cover, Q2's terms and the
    pictures' label noise, each said once for the whole report."""
    lines = ["## Method", "", claims_method(exp), "",
             "**Intervals** (95%). " + scope_text(exp) + " Best val accuracy is picked on val, so it is optimistic."]
    if any(net_table()[n].extra_convs for n in exp.nets):
        lines += ["", "**Q2's terms.** " + vanishing_terms()]
    return lines


def scope_text(exp: Experiment) -> str:
    """What the claims table's intervals cover: training seeds (and, beside them, the pictures' own spread), or,
    at one seed, the pictures only."""
    lacking = sorted({r.train_seed for runs in exp.runs.values() for r in runs if not r.val_predictions})
    recorded = not lacking
    if exp.seeds == 1:
        return ("With one training seed, the intervals cover the variation over the pictures only, not that between "
                "training seeds, which `--seeds 3` or more measures; claims about a train accuracy alone, a loss or "
                "the spread between seeds get no picture-level test."
                + ("" if recorded else " This run did not record each val picture's prediction (it trained before "
                   "hw4 saved them), so two nets' val accuracies are not tested either."))
    text = f"They cover {seeds_text(exp.seeds)} of training on one fixed dataset and val split"
    if recorded:
        return text + f"; {picture_spread_text(exp)}."
    which = "this run's metrics predate" if len(lacking) == exp.seeds else f"{seed_list_text(lacking)} predate"
    return (text + f"; the pictures' own spread within a seed is not recorded ({which} hw4's per-picture val "
            "predictions).")


def picture_spread_text(exp: Experiment) -> str:
    """The pictures' own spread within one seed, median over the seeds: of a best val accuracy (Clopper–Pearson)
    and, where the run has both, of Net2 - Net1 (exact McNemar)."""
    halves = []
    for runs in exp.runs.values():
        for r in runs:
            k = int(np.sum(r.val_correct("best")))
            low, high = clopper_pearson(k, r.n_val)
            halves.append((high - low) / 2)
    text = (f"within a seed, the {exp.first.n_val:,} val pictures alone give ±"
            f"{100 * float(np.median(halves)):.1f} points")
    if NET1 in exp.runs and NET2 in exp.runs:
        tests = [mcnemar_test(a.val_correct("best"), b.val_correct("best")) for a, b in exp.paired_runs(NET1, NET2)]
        widths = [(t.high - t.low) / 2 for t in tests if t.test]
        if widths:
            text += (f" ({net_label(NET2)} − {net_label(NET1)}: ±{100 * float(np.median(widths)):.1f}, exact "
                     "McNemar; medians)")
    return text


# --- Learn rates (net3-rates): how often each net learns, from short runs whose early call is checked against
# full-length runs, pooled with those runs' seeds of the same machine type.

def learned_within(r: Results, epochs: int) -> bool:
    """The early call: the train accuracy passed 1.5x chance within the first `epochs` epochs (Results.at_chance
    over that much of the history)."""
    return learned_in((r.series("train", ACCURACY) or [])[:epochs], len(r.classes))


@dataclass(frozen=True)
class CallCheck:
    """One full-length seed's outcome against the early call on its first epochs."""

    run: str
    net: str
    seed: int
    call: bool
    outcome: bool


class RegimeComparison(Comparison):
    """Runs of different lengths: only which net learned in each seed compares, by McNemar's exact test."""

    @functools.cached_property
    def parts(self) -> tuple[Part, ...]:
        return (regimes_part(*self.regime_counts),)


@dataclass(frozen=True)
class RateStudy:
    """A short run's learn rates: every full-length seed of its nets checks its early call, and the full-length
    seeds of the short run's machine type pool with its own (no two runs of one seed on two machines)."""

    run: str
    epochs: int
    machine: str | None
    checks: tuple[CallCheck, ...]
    regimes: dict[str, dict[int, bool]]  # net -> training seed -> learned, over the pooled seeds
    pooled: tuple[str, ...]  # the full-length runs whose seeds count
    full_epochs: int
    # net -> training seed -> (ended at chance, conv1's update 0 from some epoch on), over every seed of the study's
    # runs that recorded update sizes, each seed once (a full-length run's outcome before the short run's)
    updates: dict[str, dict[int, tuple[bool, bool]]] = field(default_factory=dict)
    update_runs: tuple[str, ...] = ()  # the runs those seeds come from
    early: dict[str, dict[int, float]] = field(default_factory=dict)  # net -> seed -> log10 early gradient ratio
    from_full: dict[str, frozenset[int]] = field(default_factory=dict)  # net -> the seeds pooled in from full runs

    def sources(self, net: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """((learned, seeds) of the short run's own seeds, (learned, seeds) of those pooled in)."""
        full = self.from_full.get(net, frozenset())
        own = [v for s, v in self.regimes[net].items() if s not in full]
        pooled = [v for s, v in self.regimes[net].items() if s in full]
        return (sum(own), len(own)), (sum(pooled), len(pooled))

    @functools.cached_property
    def homogeneity(self) -> dict[str, tuple[float, float]]:
        """Per net with seeds from both sources: Fisher's exact test (two-sided) of the short run's learn rate
        against the pooled full-length seeds', and its Holm-adjusted p over those nets."""
        raw = {}
        for net in self.regimes:
            (a, n), (b, m) = self.sources(net)
            if n and m:
                raw[net] = float(scipy_stats().fisher_exact([[a, n - a], [b, m - b]]).pvalue)
        return dict(zip(raw, zip(raw.values(), holm_adjusted(list(raw.values())))))

    def early_comparison(self, net: str) -> Comparison:
        """net - the base on log10 of the conv1/fc1 gradient ratio over the first iterations, paired by seed."""
        seeds = sorted(set(self.early.get(net, {})) & set(self.early.get(self.base, {})))
        return paired_difference([self.early[self.base][s] for s in seeds], [self.early[net][s] for s in seeds])

    @functools.cached_property
    def early_tested(self) -> dict[str, Tested]:
        return test_family({n: self.early_comparison(n) for n in self.remedies}, "the early gradients' family")

    def zero_updates(self) -> list[ZeroUpdates]:
        """Per net of the study, the pooled table of zero updates against ending at chance."""
        return [z for z in (zero_table(n, self.updates[n].values()) for n in self.regimes if n in self.updates) if z]

    @property
    def misses(self) -> list[CallCheck]:
        return [c for c in self.checks if c.call != c.outcome]

    @property
    def valid(self) -> bool:
        """The call misclassifies no committed full-length seed: only then does a short run count."""
        return bool(self.checks) and not self.misses

    @property
    def base(self) -> str:
        """The net the others remedy (the first net when none names another as its base)."""
        based = [net_table()[n].base for n in self.regimes if net_table()[n].base in self.regimes]
        return based[0] if based else next(iter(self.regimes))

    @property
    def remedies(self) -> list[str]:
        return [n for n in self.regimes if n != self.base]

    def rate(self, net: str) -> tuple[int, int]:
        """(seeds in which the net learned, seeds)."""
        return sum(self.regimes[net].values()), len(self.regimes[net])

    def comparison(self, net: str) -> Comparison:
        """net - the base on the regimes alone, paired by training seed."""
        seeds = sorted(set(self.regimes[net]) & set(self.regimes[self.base]))
        learned = [(self.regimes[self.base][s], self.regimes[net][s]) for s in seeds]
        diffs = [float(b) - float(a) for a, b in learned]
        return RegimeComparison(float(np.mean(diffs)) if diffs else math.nan,
                                float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(seeds), (),
                                tuple(diffs), tuple(learned))

    @functools.cached_property
    def tested(self) -> dict[str, Tested]:
        return test_family({n: self.comparison(n) for n in self.remedies}, "the learn rates' family")


def rate_study(name: str, short: Experiment, full: dict[str, Experiment]) -> RateStudy:
    """The short run `name` against the full-length runs `full` (name -> Experiment). Every seed counted ran on
    the short run's first machine type, so that the seeds pair (a net resumed on another is left out). The runs
    are read in name order, whatever order --with gave them, so that a seed two runs hold is taken from the same one
    on every pass."""
    full = dict(sorted(full.items()))
    epochs = short.first.config["epochs"]
    machine = short.first.machine
    checks, regimes, pooled, early = [], {n: {} for n in short.nets}, [], {n: {} for n in short.nets}
    from_full: dict[str, set[int]] = {}
    for net in short.nets:
        for r in short.runs[net]:
            if r.machine == machine:
                regimes[net][r.train_seed] = learned_within(r, epochs)
                early[net][r.train_seed] = log10_or_nan(gradient_ratio(r))
    for run, exp in full.items():
        for net in (n for n in short.nets if n in exp.runs):
            checks += [CallCheck(run, net, r.train_seed, learned_within(r, epochs), not r.at_chance)
                       for r in exp.runs[net]]
            for r in exp.runs[net]:
                if r.machine == machine and r.train_seed not in regimes[net]:
                    regimes[net][r.train_seed] = not r.at_chance
                    early[net][r.train_seed] = log10_or_nan(gradient_ratio(r))
                    from_full.setdefault(net, set()).add(r.train_seed)
                    pooled.append(run)
    updates, update_runs = {n: {} for n in short.nets}, []
    for run, exp in [*full.items(), (name, short)]:
        for net in (n for n in short.nets if n in exp.runs):
            for r in exp.runs[net]:
                outcome = update_outcome(r)
                if outcome is not None and r.train_seed not in updates[net]:
                    updates[net][r.train_seed] = outcome
                    update_runs.append(run)
    return RateStudy(name, epochs, machine, tuple(checks), regimes, tuple(dict.fromkeys(pooled)),
                     max(e.first.config["epochs"] for e in full.values()), updates, tuple(dict.fromkeys(update_runs)),
                     {n: {s: v for s, v in by_seed.items() if math.isfinite(v)} for n, by_seed in early.items()},
                     {n: frozenset(seeds) for n, seeds in from_full.items()})


def homogeneity_text(study: RateStudy) -> str:
    """The check that comes before pooling: each net's learn rate in the short run's own seeds against the
    full-length seeds pooled in, and what a failed check would mean."""
    if not study.homogeneity:
        return ""
    def one(net: str) -> str:
        (a, n), (b, m) = study.sources(net)
        raw, adjusted = study.homogeneity[net]
        return f"{net_label(net)} {a} of {n} against {b} of {m} (p = {p_text(raw)}, Holm {p_text(adjusted)})"
    failed = [n for n, (_, adjusted) in study.homogeneity.items() if adjusted <= ALPHA]
    verdict = (f"it fails for {names_text(failed)}: there the {study.epochs}-epoch call and the full-length runs "
               "do not give one rate, so the pooled rate mixes two and each source's rate should be read apart"
               if failed else "no net's two sources differ after Holm, so the seeds pool")
    return ("Before pooling, each net's learn rate in this run's own seeds is tested against the full-length seeds "
            "pooled in (Fisher's exact test, two-sided, Holm over the nets): " + "; ".join(map(one, study.homogeneity))
            + f". {verdict[0].upper()}{verdict[1:]}.")


def rate_text(study: RateStudy, net: str) -> str:
    learned, seeds = study.rate(net)
    low, high = clopper_pearson(learned, seeds)
    return f"{learned} of {seeds} ({pct(learned / seeds)}, 95% Clopper–Pearson {pct(low)} to {pct(high)})"


def rate_decision(study: RateStudy, net: str) -> Judgement:
    """The remedy's claim: it makes the base learn in more seeds."""
    return decide(study.tested[net])


def check_lines(study: RateStudy) -> list[str]:
    """The early call against every full-length seed, per run and net, and each miss by name."""
    counts: dict[tuple[str, str], list[int]] = {}
    for c in study.checks:
        counts.setdefault((c.run, c.net), [0, 0])[0] += c.call == c.outcome
        counts[(c.run, c.net)][1] += 1
    lines = [f"A seed is called learned when its train accuracy passes {CHANCE_FACTOR:g}× chance within its "
             f"first {study.epochs} epochs. Against the {study.full_epochs}-epoch outcome of every full-length seed "
             f"of these nets, the call matches **{len(study.checks) - len(study.misses)} of {len(study.checks)}**:", "",
             "| run | net | matched |", "|---|---|---|"]
    lines += [f"| `{run}` | {net_label(net)} | {m} of {n} |" for (run, net), (m, n) in counts.items()]
    if study.misses:
        lines += ["", "Missed: " + ", ".join(f"`{c.run}` {net_label(c.net)} seed {c.seed}" for c in study.misses)
                  + ". A call that misses a full-length seed is not used: rerun with a later `--epochs`."]
    return lines


def rates_table(study: RateStudy) -> list[str]:
    lines = [f"| net | remedy | learned in | seeds in which only it / only {net_label(study.base)} learned | p "
             f"(Holm-adjusted) | learns in more seeds than {net_label(study.base)}? |",
             "|---|---|---|---|---|---|"]
    for net in study.regimes:
        proposed = next((r for r in REMEDIES if r.key == net_table()[net].remedy), None)
        remedy = proposed.words if proposed else "—"
        if net == study.base:
            lines.append(f"| {net_label(net)} | — | {rate_text(study, net)} | | | |")
            continue
        only_base, only_net = study.comparison(net).regime_counts
        decision = rate_decision(study, net)
        verdict = study_word(study, net) if decision.side else verdict_text(decision.shown)
        lines.append(f"| {net_label(net)} | {remedy} | {rate_text(study, net)} | {only_net} / {only_base} | "
                     f"{p_cell(study.tested[net])} | {verdict} |")
    return lines


def rates_meaning(study: RateStudy, lead: bool = True) -> str:
    """What the decisions say of Q2 (is depth's failure a collapse that a remedy prevents?) and of Q5."""
    up = [n for n in study.remedies if rate_decision(study, n).side > 0]
    down = [n for n in study.remedies if rate_decision(study, n).side < 0]
    base, seeds = net_label(study.base), study.rate(study.base)[1]
    text = (f"At {seeds} seeds, {base} itself learns in {pct(study.rate(study.base)[0] / seeds)} of them: its "
            "collapse is a matter of the seed, not of every run. ") if lead else ""
    if up:
        stuck = ", ".join(f"{net_label(n)} in {pct(1 - study.rate(n)[0] / study.rate(n)[1])}" for n in up)
        text += (f"{names_text(up)} learn{'s' * (len(up) == 1)} in more seeds than {base} (resolved after Holm; "
                 f"{base} stays at chance in {pct(1 - study.rate(study.base)[0] / seeds)} of the seeds, {stuck}). "
                 if lead else "")
        text += f"For Q2 and Q5: {failures_text(study, up)}. "
    if down:
        text += f"{names_text(down)} learn{'s' * (len(down) == 1)} in fewer seeds than {base}. "
    rest = [n for n in study.remedies if n not in up + down]
    if rest:
        text += (f"{names_text(rest)}: no difference in the learn rate is resolved at these seeds, so this run "
                 f"cannot say whether {'it changes' if len(rest) == 1 else 'they change'} how often the net collapses.")
    return text.strip()


def failures_text(study: RateStudy, nets: Sequence[str]) -> str:
    """Which of the two failures each remedy that learns more often makes rarer: the collapse (ending at chance),
    always, and the early vanishing gradient where its ratio over the first iterations is resolved above the
    base's, paired by seed and Holm-corrected in a family of its own."""
    def early(net: str) -> str:
        tested = study.early_tested[net]
        adjusted = next((p for p in tested.adjusted if p is not None), None)
        return (f"{net_label(net)} {10 ** float(np.median(tested.cmp.diffs)):.2g}× "
                + (f"(Holm p = {p_text(adjusted)})" if adjusted is not None else "(cannot reach Holm's threshold)"))

    recorded = [n for n in nets if n in study.early_tested and study.early_tested[n].cmp.seeds]
    both = [n for n in recorded if decide(study.early_tested[n], unit=DECADES).side > 0]
    seeds = sorted({study.early_tested[n].cmp.seeds for n in recorded})
    text = f"{names_text(nets)} make{'s' * (len(nets) == 1)} the collapse (ending at chance) rarer"
    if both:
        who = "each" if both == list(nets) else names_text(both)
        text += (f", and {who} also lessens the early vanishing gradient (conv1/fc1 ratio over the first "
                 f"{WINDOW_STEPS} iterations against {net_label(study.base)}'s, median over "
                 f"{seeds_text(seeds[-1]) if len(seeds) == 1 else 'the paired seeds'}: "
                 + ", ".join(map(early, both)) + ")")
    rest = [n for n in recorded if n not in both]
    if rest:
        text += (f"; {names_text(rest)} not resolved as lessening the early vanishing gradient ("
                 + ", ".join(map(early, rest)) + ")")
    return text


def names_text(nets: Sequence[str]) -> str:
    """'Net3-BN', 'Net3-BN and Net3-Res', 'Net3-BN, Net3-Res and Net3-He'."""
    labels = [net_label(n) for n in nets]
    return " and ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)


def draw_rates(study: RateStudy):
    """Each net's learn rate with its 95% Clopper–Pearson interval; the base's rate as a line."""
    nets = list(study.regimes)
    fig = new_figure(figsize=(8, 0.5 * len(nets) + 1.4), layout="constrained")
    ax = fig.subplots()
    for y, net in enumerate(reversed(nets)):
        learned, seeds = study.rate(net)
        low, high = clopper_pearson(learned, seeds)
        ax.plot([100 * low, 100 * high], [y, y], color="black", linewidth=2)
        ax.plot(100 * learned / seeds, y, "o", color="black")
        side = 0 if net == study.base or not study.valid else rate_decision(study, net).side
        beside = {1: f", more than {net_label(study.base)}", -1: f", fewer than {net_label(study.base)}",
                  0: ", not resolved"}.get(side, "") if net != study.base else ""
        ax.annotate(f"{learned}/{seeds}{beside}", (1.01, y), xycoords=("axes fraction", "data"), va="center",
                    fontsize=8)
    ax.axvline(100 * study.rate(study.base)[0] / study.rate(study.base)[1], color="grey", linestyle="--",
               linewidth=1, label=f"{net_label(study.base)}'s rate")
    ax.set_yticks(range(len(nets)), [net_label(n) for n in reversed(nets)])
    ax.set_xlim(0, 102)
    ax.set_xlabel("seeds in which the net learned, % (● measured, line: 95% Clopper–Pearson)")
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"How often each net learns: {study.rate(study.base)[1]} seeds ({study.epochs}-epoch runs "
                 f"pooled with full-length ones; verdicts after Holm)", fontsize=10)
    return fig


def write_rates_report(out: Path, exp: Experiment, study: RateStudy) -> None:
    """REPORT.md of a short run: the early call checked, then the learn rates and their decisions."""
    seeds = sorted(r.train_seed for r in exp.runs[study.base] if r.machine == study.machine)
    lines = ["# hw4 report: how often each net learns", "",
             f"{study.epochs}-epoch runs of {', '.join(net_label(n) for n in exp.nets)} at training seeds {seeds[0]}.."
             f"{seeds[-1]} ({seeds_text(len(seeds))}), pooled with the {study.rate(study.base)[1] - len(seeds)} "
             f"full-length seeds of {', '.join(f'`{r}`' for r in study.pooled) or 'no run'} trained on the same "
             "machine type. "
             f"{data_text(exp.dataset, exp.first.config)}.", "", infrastructure_text(exp), "",
             "Every number and verdict below is computed from these runs' metrics.", "",
             "## The early call, checked", "", *check_lines(study), ""]
    if study.valid:
        family = next(iter(study.tested.values()), None)
        together = co_deaths(study.regimes, study.base)
        homogeneous = homogeneity_text(study)
        lines += ["## Learn rates", "", *([homogeneous, ""] if homogeneous else []), *rates_table(study), "",
                  f"Each remedy against {net_label(study.base)} by McNemar's exact test on the regimes of the same "
                  "seeds (the seeds in which only one of the two learned decide it), Holm's correction over the "
                  f"{family.family if family else 0} that can reach {ALPHA:g} (Tarone). {RULE}", "",
                  rates_meaning(study), "", *([co_deaths_text(together), ""] if together else []),
                  *([f"Do conv1's updates reach 0 (at most {UPDATE_FLOOR:g}) where a net dies (hw4's test, each net "
                     f"alone; pooled: every seed of {', '.join(f'`{r}`' for r in study.update_runs)} that recorded "
                     f"them, a {study.epochs}-epoch seed's outcome its state after epoch {study.epochs})?", "",
                     *zero_updates_table(pooled_zero_rows(study)), ""] if pooled_zero_rows(study) else []),
                  "![learn rates](rates.png)", ""]
        savefig_atomic(draw_rates(study), out / "rates.png")
    write_bytes_atomic(out / "REPORT.md", "\n".join(lines).encode())


def rates_citation(study: RateStudy) -> list[str]:
    """Q5's line on the Net3 rows of a full-length run, from the short run that measured the rates (each row's
    verdict cites the study's decision)."""
    if not study.valid:
        return []

    def rate(net: str) -> str:
        learned, seeds = study.rate(net)
        low, high = clopper_pearson(learned, seeds)
        return f"{net_label(net)} {100 * learned / seeds:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"

    return ["", f"Learn rates at {study.rate(study.base)[1]} seeds (`{study.run}`: {study.epochs}-epoch runs whose "
            f"call matched all {len(study.checks)} full-length seeds, pooled with this machine type's; 95% "
            "Clopper–Pearson): " + ", ".join(map(rate, study.regimes)) + ". " + rates_meaning(study, lead=False)]


# --- Rendering: the one place a verdict becomes words.

def verdict_text(judged: Judgement) -> str:
    """'reproduced', 'not resolved at 5 seeds (reason; reason)', 'not testable here: reason; reason'."""
    head = judged.verdict.word + (f" {judged.scope}" if judged.scope else "")
    if not judged.reasons:
        return head
    return f"{head}: {'; '.join(judged.reasons)}" if judged.colon else f"{head} ({'; '.join(judged.reasons)})"


def write_report(out: Path, exp: Experiment) -> None:
    """REPORT.md: results, the original's claims checked, the figures of FIGURES, and QUESTIONS' answers."""
    conf, seeds = exp.first.config, sorted(r.train_seed for r in next(iter(exp.runs.values())))
    seed_text = (f"training seeds {seeds[0]}..{seeds[-1]}, paired across nets (mean ± std)" if len(seeds) > 1
                 else f"training seed {seeds[0]}")
    per_net = [p for p in exercise().figures if p.per_net]
    lines = [
        "# hw4 report", "",
        f"Classes: {', '.join(exp.first.classes)}; {data_text(exp.dataset, conf)}; batch size "
        f"{conf['batch_size']}, {conf['epochs']} epochs, Adam(lr={conf['lr']}, betas={tuple(conf['betas'])}); "
        f"{seed_text}.", "", infrastructure_text(exp), "",
        *answers_section(exp), *claims_figure(exp), "",
        "## Results", "", *report_table(exp), "",
        "## Figures", "", *(f"![{p.caption}]({p.file})\n" for p in exercise().figures if not p.per_net),
        *([" ".join(f"![{net_label(n)} {p.caption}]({p.file.format(net=n)})" for p in per_net) + "\n" for n in exp.nets]
          if exp.seeds == 1 else [f"Per-net figures ({', '.join(p.caption for p in per_net)}): "
                                  "`seed_<s>/`.\n"]),
    ]
    for question in QUESTIONS:
        lines += [f"## {question.heading}", "", *claim_details(exp, question.key), *question.answer(exp), ""]
    discussion = claim_details(exp, "Discussion")
    lines += ["## The original's discussion", "", *discussion] if discussion else []
    lines += [*method_section(exp), ""]
    appendix = vanishing_table(exp)
    lines += ["## Appendix: per seed", "", *appendix, ""] if appendix else []
    if claim_intervals(exp):
        savefig_atomic(draw_claims(exp), out / "claims.png")
    write_bytes_atomic(out / "REPORT.md", "\n".join(lines).encode())


def write_seeds_summary(out: Path, exp: Experiment, linked: Sequence[str] = (), study: RateStudy | None = None) -> None:
    """The top-level metrics.json of a --seeds run: per net the numbers per seed with mean and std, the
    paired comparisons with 95% t-intervals, the seeds at chance, and the claims table."""
    nets = {}
    for name, runs in exp.runs.items():
        nets[name] = {"seeds": [r.train_seed for r in runs], "train_time_s": [r.train_time_s for r in runs],
                      "seeds_at_chance": [r.train_seed for r in runs if r.at_chance],
                      "dead_units": {k: mean_std([r.dead_units[k] for r in runs])[0].tolist()
                                     for k in runs[0].dead_units}}
        finals = [Measure("final", split, m) for split in SPLITS for m in METRICS]
        for what in (BEST_VAL, BEST_TRAIN, BEST_EPOCH, GAP, *(f for f in finals if exp.recorded(name, f))):
            values = exp.values(name, what)
            nets[name][what.name] = values
            nets[name][f"{what.name}_mean"], nets[name][f"{what.name}_std"] = (float(v) for v in mean_std(values))
    pairs = {f"{b}-{a}": {**dataclasses.asdict(c := exp.compare(a, b)), "ci95": c.ci95,
                          "tests": [{"test": p.test.name, "diff": p.diff, "p_value": p.p, "conditional": p.conditional}
                                    for p in c.parts],
                          "decision": exp.decision(PairTest(a, b, BEST_VAL), threshold=True).side}
             for a, b in exp.base_pairs()}
    claims = [{"question": c.question, "claim": c.words, "measured": (r := claim_row(exp, c)).measured or "—",
               "verdict": verdict_text(r.judgement)} for c in CLAIMS]
    infra = list({json.dumps(r.infrastructure, sort_keys=True): r.infrastructure
                  for runs in exp.runs.values() for r in runs}.values())
    write_json_atomic(out / "metrics.json", {
        "format": METRICS_FORMAT, "kind": "seeds summary", "config": exp.first.config, "seeds": exp.seeds,
        "infrastructure": infra, "dataset": exp.dataset and dataclasses.asdict(exp.dataset), "nets": nets,
        "comparisons": pairs, "claims": claims, **({"with": list(linked)} if linked else {}),
        **({"rates": rates_summary(study)} if study and study.run == out.name else {})})


def rates_summary(study: RateStudy) -> dict:
    """The learn rates as values: the early call's check, and per net its rate and decision against the base."""
    return {"epochs": study.epochs, "checked": len(study.checks), "matched": len(study.checks) - len(study.misses),
            "pooled_runs": list(study.pooled),
            "nets": {n: {"learned": study.rate(n)[0], "seeds": study.rate(n)[1],
                         "ci95": clopper_pearson(*study.rate(n)),
                         **({} if n == study.base or not study.valid else
                            {"p_value": study.tested[n].cmp.parts[0].p, "p_holm": study.tested[n].adjusted[0],
                             "decision": rate_decision(study, n).side})}
                     for n in study.regimes}}


def write_run_reports(out: Path, seed_outs: list[Path], runs_by_seed: list[dict[str, Results]],
                      facts: DatasetFacts | None, data: Any,
                      linked: Sequence[str] | None = None) -> None:
    """Each seed's figures and REPORT.md, then, for several seeds, the run's figures, metrics.json and
    REPORT.md over all of them. data None (`hw4.py report`): the figures that show pictures stay as they are, and
    a seed of a several-seed run gets its own REPORT.md and figures only where it holds a REPORT.md already (a
    committed run keeps them for the seed its report links; `report OUT/seed_<s>` writes any other's). linked: the
    runs beside it that its report draws on (None: those its metrics.json remembers)."""
    runs_by_net = {name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}
    experiment = Experiment(runs_by_net, facts)
    linked = linked_runs(out, linked) if len(runs_by_seed) > 1 else []
    study = load_rate_study(out, experiment, linked)  # every linked run read before anything is written
    for seed_out, runs in zip(seed_outs, runs_by_seed):
        if data is None and len(seed_outs) > 1 and not (seed_out / "REPORT.md").exists():
            continue
        one = {name: [r] for name, r in runs.items()}
        exercise().write_run_figures(seed_out, one, data)
        if data is None:  # the per-net figures a finished net wrote, redrawn where they need no pictures
            for r in runs.values():
                exercise().write_net_figures(seed_out, r, data)
        write_report(seed_out, Experiment(one, facts))
    if len(runs_by_seed) > 1:
        experiment.rates = study
        write_seeds_summary(out, experiment, linked, study)
        if study and study.run == out.name:  # a short run reports its learn rates, with their one figure
            write_rates_report(out, experiment, study)
        else:
            exercise().write_run_figures(out, runs_by_net, data)
            write_report(out, experiment)


def linked_runs(out: Path, given: Sequence[str] | None) -> list[str]:
    """The finished runs beside OUT (in its folder, by name) that its report draws on: those given with --with,
    else those its metrics.json remembers (one no longer beside it is left out, with a note)."""
    remembered = given is None
    if remembered:
        top = read_metrics_json(out / "metrics.json") if (out / "metrics.json").exists() else {}
        given = top.get("with", [])
        if not isinstance(given, list) or not all(isinstance(n, str) for n in given):
            raise UserError(f"{out / 'metrics.json'}: its \"with\" is not a list of run names; rerun "
                                "`report` with --with")
    kept = []
    for name in dict.fromkeys(given):
        beside = out.parent / name / "metrics.json"
        if name not in (".", "..", out.name) and Path(name).name == name and beside.is_file():
            kept.append(name)
        elif remembered:
            print(f"note: {out} links {name!r}, which is no longer beside it; its report leaves that run out")
        else:
            raise UserError(f"--with {name}: not a finished run beside {out} (give the name of a folder in "
                                f"{out.parent} that holds a run's metrics.json)")
    return kept


def experiment_at(folder: Path) -> Experiment:
    _, runs_by_seed, facts = load_finished_run(folder)
    return Experiment({name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}, facts)


def load_rate_study(out: Path, exp: Experiment, linked: Sequence[str]) -> RateStudy | None:
    """The learn rates the linked runs make: a linked run shorter than OUT is a rate study that OUT's Q5 cites
    (with the full-length runs that study links); otherwise OUT is the short run and the linked runs are its
    full-length ones."""
    if not linked:
        return None
    runs = {name: experiment_at(out.parent / name) for name in linked}
    epochs = exp.first.config["epochs"]
    short = next((n for n, e in runs.items() if e.first.config["epochs"] < epochs), None)
    if short is None:
        if any(e.first.config["epochs"] == epochs for e in runs.values()):
            raise UserError(f"--with: {', '.join(linked)} must be longer runs than {out} (whose learn rates "
                                "they check) or one shorter run (whose learn rates its Q5 cites)")
        return rate_study(out.name, exp, runs)
    full = {n: exp if n == out.name else runs.get(n) or experiment_at(out.parent / n)
            for n in linked_runs(out.parent / short, None)}
    return rate_study(short, runs[short], full) if full else None


def report_main(argv: Sequence[str]) -> int:
    parser = OneLineErrorParser(prog="hw4.py report", description="Rewrite a finished run's REPORT.md files, "
                                "its run metrics.json and its figures from its metrics.json files alone: no "
                                "training, no dataset, no checkpoints. Figures that show pictures stay as they are.")
    parser.add_argument("out", type=path_argument, help="the --out folder of a finished run")
    parser.add_argument("--with", dest="linked", nargs="*", metavar="RUN",
                        help="finished runs beside OUT (folder names) that its report draws on: the full-length runs "
                        "that check a short run's early call and pool into its learn rates, or the short run whose "
                        "learn rates Q5 cites. Remembered in OUT's metrics.json; `--with` alone forgets them "
                        "(default: as remembered)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    with contextlib.redirect_stdout(io.StringIO()):  # its notes are printed once, by the load under the lock
        seed_outs, runs_by_seed, facts = load_finished_run(out)  # every check, before anything is written or locked
    for folder in dict.fromkeys([out, *seed_outs]):  # a read-only run is one line, before anything is rewritten
        check_folder_creatable(folder, "report: the run folder")
    with contextlib.ExitStack() as held:
        # the lock a training run holds on its --out (for a seed folder, on the run around it too)
        # (a read-only parent holds no lock to take: no training can write into that run either)
        around = [out.parent] if is_seed_folder(out) and os.access(out.parent, os.W_OK) else []
        for folder in [*around, out]:
            held.enter_context(run_lock(folder, "report:"))
        seed_outs, runs_by_seed, facts = load_finished_run(out)  # again, now that no run writes them
        write_run_reports(out, seed_outs, runs_by_seed, facts, None, args.linked)
    print(f"rewrote {out / 'REPORT.md'}" + (f" and those of {len(seed_outs)} seeds" if len(seed_outs) > 1 else ""))
    return 0


if __name__ == "__main__":  # a module of hw4.py's, not a program of its own
    sys.stderr.write("hw4: error: hw4_report.py is loaded by hw4.py; run `python hw4.py report RUN` instead\n")
    sys.exit(2)
