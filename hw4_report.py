"""hw4's report: REPORT.md, claims.png and the run's metrics.json summary, every sentence computed from a run's
Results; and the `hw4.py report OUT` command, which rewrites a finished run's reports from its metrics.json files
alone. Statistics first, then one table each for the exercise's questions (QUESTIONS), Q5's remedies (REMEDIES)
and the original report's claims (CLAIMS).

Loaded by `hw4.py` only when a run's reports are written; it imports hw4 for the run's typed Results.
"""
from __future__ import annotations

import bisect
import contextlib
import dataclasses
import enum
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

import hw4
from hw4 import (ACCURACY, BEST_EPOCH, BEST_TRAIN, BEST_VAL, DEAD_UNIT_IMAGES, DEFAULT_NETS, DatasetFacts,
                  FINAL_TRAIN_CLEAN_ACC, FINAL_TRAIN_LOSS, GAP, METRICS_FORMAT, MIN_IMAGE_SIZE, Measure,
                  OneLineErrorParser, POINTS, Results, SPLITS, SubsetTensors, Unit, WINDOW_STEPS,
                  check_folder_creatable, is_chain_layer, is_seed_folder, load_finished_run, mean_std, net_label,
                  net_outline, new_figure, path_argument, pct, run_lock, seed_list_text, seeds_text,
                  write_bytes_atomic, write_json_atomic, write_net_figures, write_run_figures)

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


PICTURE_TESTS = ("mcnemar", "proportions")  # PictureTest.kind: the tests within one training seed


@dataclass(frozen=True)
class PictureTest:
    """b - a within one training seed, over pictures: what a one-seed run can test. "mcnemar": two nets judged
    on the same val pictures (exact McNemar test on the pictures only one of them got right; its interval is the
    exact one conditional on how many those are). "proportions": two independent sets of pictures (a net's train
    accuracy against its val accuracy: a gap), Agresti–Caffo interval and the z-test of the same standard error.
    kind "" with a note: no picture-level test (what it would need is not recorded). The variation it covers is
    the pictures' only: another training seed would add its own."""

    kind: str
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p_value: float = 1.0
    pictures: str = ""  # the test and what it counted: "exact McNemar over the 2,500 val pictures"
    note: str = ""      # kind "": why there is no test

    @property
    def scope(self) -> str:
        return f"over {'train and val' if self.kind == 'proportions' else 'val'} pictures, one training seed"


def mcnemar_test(a_right: np.ndarray, b_right: np.ndarray) -> PictureTest:
    """b's accuracy - a's on the same val pictures: exact McNemar on the discordant pictures."""
    only_b, only_a, n = int((b_right & ~a_right).sum()), int((a_right & ~b_right).sum()), len(a_right)
    discordant = only_a + only_b
    if not discordant:
        return PictureTest("", note=f"the two nets got the same {n:,} val pictures right")
    result = scipy_stats().binomtest(only_b, discordant)
    ci = result.proportion_ci(0.95, method="exact")  # of the share of discordant pictures that favour b
    scale = discordant / n
    return PictureTest("mcnemar", (only_b - only_a) / n, scale * (2 * ci.low - 1), scale * (2 * ci.high - 1),
                       float(result.pvalue), f"exact McNemar over the {n:,} val pictures")


def proportions_test(k1: int, n1: int, k2: int, n2: int, offset: float = 0.0) -> PictureTest:
    """k1/n1 - k2/n2 - offset over two independent sets of pictures: Agresti–Caffo's interval (one success
    and one failure added to each set, which keeps it honest near 0% and 100%) and the z-test on its standard
    error, so that the interval excludes a value exactly when the test rejects it."""
    p1, p2 = (k1 + 1) / (n1 + 2), (k2 + 1) / (n2 + 2)
    se = math.sqrt(p1 * (1 - p1) / (n1 + 2) + p2 * (1 - p2) / (n2 + 2))
    centre, half = p1 - p2 - offset, float(scipy_stats().norm.ppf(0.975)) * se
    return PictureTest("proportions", k1 / n1 - k2 / n2 - offset, centre - half, centre + half,
                       float(2 * scipy_stats().norm.sf(abs(centre) / se)),
                       f"two-proportion over {n1:,} train and {n2:,} val pictures")


@dataclass(frozen=True)
class Comparison:
    """b - a over paired seeds: the mean difference, its spread and, per seed, the difference and whether
    each net learned. Both nets learned in every seed: a paired t-test and its 95% interval. A seed with a
    net at chance makes the differences a mixture of two regimes, for which a normal interval is wrong:
    then an exact sign test, McNemar's test on the regimes, and the t-interval over the seeds in which both
    learned. No test for one seed, or when every seed gives the same difference (a zero-width interval
    would claim certainty)."""

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
        return self.seeds > 1 and self.sd == 0

    @property
    def test(self) -> str:
        """'t' (paired t-test), 'sign' (exact sign test over two regimes), at one seed a PictureTest's kind
        ('mcnemar', 'proportions'), or '' (none can be made)."""
        if self.seeds < 2:
            return self.pictures.kind if self.pictures else ""
        if self.two_regimes:
            return "sign" if self.wins + self.losses else ""
        return "" if self.degenerate else "t"

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.diffs)

    @property
    def losses(self) -> int:
        return sum(d < 0 for d in self.diffs)

    @property
    def median(self) -> float:
        return float(np.median(self.diffs)) if self.diffs else math.nan

    @property
    def centre(self) -> float:
        """What the test is about: the median difference over two regimes, else the mean."""
        return self.median if self.test == "sign" else self.diff

    @property
    def positive(self) -> bool:
        """b - a leans positive by the test's own reading: more wins than losses over two regimes, else the mean."""
        return self.wins > self.losses if self.test == "sign" else self.diff > 0

    @property
    def ci95(self) -> tuple[float, float] | None:
        if self.test in PICTURE_TESTS:
            return self.pictures.low, self.pictures.high
        if self.test != "t":
            return None
        half = t_quantile_975(self.seeds - 1) * self.sd / math.sqrt(self.seeds)
        return self.diff - half, self.diff + half

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the test's own 95% interval (or, over two regimes, its sign test at 5%) excludes 0."""
        if self.test == "sign":
            return self.p_value <= ALPHA
        return None if self.ci95 is None else bool(self.ci95[0] > 0 or self.ci95[1] < 0)

    @property
    def p_value(self) -> float:
        """Two-sided p of the paired t-test, of the sign test over two regimes, or of the picture-level test of
        one seed (1 without a test)."""
        if self.test in PICTURE_TESTS:
            return self.pictures.p_value
        if self.test == "sign":
            return sign_test(self.wins, self.losses)
        if self.test != "t":
            return 1.0
        t, df = self.diff / (self.sd / math.sqrt(self.seeds)), self.seeds - 1
        return float(2 * scipy_stats().t.sf(abs(t), df))

    @property
    def both_learned(self) -> "Comparison":
        """The comparison over the seeds in which both nets learned."""
        kept = [d for d, (la, lb) in zip(self.diffs, self.learned) if la and lb]
        return paired_difference([0.0] * len(kept), kept, learned=[(True, True)] * len(kept))

    @property
    def regime_counts(self) -> tuple[int, int]:
        """(seeds in which only a learned, seeds in which only b learned)."""
        return (sum(la and not lb for la, lb in self.learned), sum(lb and not la for la, lb in self.learned))

    @property
    def regime_p(self) -> float:
        """McNemar's exact test on the regimes: do the seeds in which only one net learned favour one net?"""
        return sign_test(*reversed(self.regime_counts))

    def seeds_for_power(self, point: float, power: float = POWER) -> int | None:
        """About how many paired seeds exclude `point` with this power, if the true difference and spread
        are this comparison's (the two-sided paired t-test's power, from the noncentral t); None beyond 1000."""
        distance = abs(self.diff - point)
        if distance == 0 or self.sd == 0 or not math.isfinite(distance + self.sd):
            return None
        ns = np.arange(2, 1001)
        df, shift = ns - 1, distance * np.sqrt(ns) / self.sd
        crit = scipy_stats().t.ppf(0.975, df)
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


def p_text(p: float) -> str:
    """A p-value at two significant digits, three near the 5% line."""
    return f"{p:.3g}" if abs(p - ALPHA) < 0.006 else f"{p:.2g}"


def pm(values: Sequence[float], scale: float = 100.0, digits: int = 1, unit: str = "%") -> str:
    """'mean ± std' over seeds, or the one value."""
    mean, std = (float(v) for v in mean_std(values))
    return f"{scale * mean:.{digits}f}" + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "") + unit


def regime_pm(exp: "Experiment", name: str, measure: "Measure", scale: float = 100.0, digits: int = 1,
              unit: str = "%") -> str:
    """pm over the seeds; for a net with two regimes, over each regime apart (a mean over both is a value no
    seed has)."""
    if not exp.two_regimes(name):
        return pm(exp.values(name, measure), scale, digits, unit)
    learned, chance = exp.by_regime(name, measure)
    return (f"{pm(learned, scale, digits, unit)} ({len(learned)} learned), "
            f"{pm(chance, scale, digits, unit)} ({len(chance)} at chance)")


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


def difference_text(cmp: Comparison, unit: Unit = POINTS, shown_seeds: int = 0) -> str:
    """'+1.2 points (95% CI [-0.3, +2.7], 3 paired seeds)' (without the count when it is shown_seeds, which a
    table states once), '+1.2 points (one seed)', or one seed's picture-level interval, labelled as such; seeds
    whose two nets ran on different machines are left out, and said to be."""
    left_out = unpaired_text(cmp)
    if cmp.seeds == 0:
        return f"not paired ({left_out})"
    note = f"; {left_out}" if left_out else ""
    if cmp.two_regimes and cmp.seeds > 1:
        return regimes_difference_text(cmp, unit, note)
    scale, digits, suffix = unit.scale, unit.digits, unit.suffix
    value = f"{scale * cmp.diff:+.{digits}f}{suffix}"
    if cmp.degenerate:
        return f"{value} in every one of {cmp.seeds} paired seeds (no spread, so no interval{note})"
    if cmp.ci95 is None:
        return f"{value} (one seed{note})"
    low, high = (interval_end(scale * v, digits) for v in cmp.ci95)
    if cmp.test in PICTURE_TESTS:
        return f"{value} (95% CI [{low}, {high}], {cmp.pictures.pictures}, one training seed{note})"
    seeds = "" if cmp.seeds == shown_seeds else f", {cmp.seeds} paired seeds"
    return f"{value} (95% CI [{low}, {high}]{seeds}{note})"


def regimes_difference_text(cmp: Comparison, unit: Unit, note: str = "") -> str:
    """A difference over two regimes: its median, the sign test, and the t-interval over the seeds in which
    both nets learned; never a mean or an interval over both regimes."""
    scale, digits, suffix = unit.scale, unit.digits, unit.suffix
    ties = cmp.seeds - cmp.wins - cmp.losses
    both = cmp.both_learned
    sign, count = ("negative", cmp.losses) if cmp.losses > cmp.wins else ("positive", cmp.wins)
    text = (f"median {scale * cmp.median:+.{digits}f}{suffix}, {sign} in {count} of {cmp.seeds} paired seeds"
            + (f", {ties} tied" if ties else "") + f" (exact sign test p = {p_text(cmp.p_value)}{note})")
    only_a, only_b = cmp.regime_counts
    if only_a + only_b:
        text += (f"; only the net left of − learned in {only_b} seed{'s' * (only_b != 1)}, only the one right of it "
                 f"in {only_a} (exact McNemar p = {p_text(cmp.regime_p)})")
    if both.seeds:
        text += f"; over the {seeds_text(both.seeds)} in which both learned: {difference_text(both, unit, both.seeds)}"
    return text


def barely_text(cmp: Comparison, unit: Unit = POINTS) -> str:
    """'' unless the interval excludes 0 by less than the report's precision; then which end, and how near."""
    if cmp.ci95 is None or not cmp.excludes_zero:
        return ""
    scale, digits, unit = unit.scale, unit.digits, unit.suffix
    side, end = ("lower", cmp.ci95[0]) if cmp.ci95[0] > 0 else ("upper", cmp.ci95[1])
    if round(scale * end, digits) != 0:
        return ""
    return f"barely: the interval's {side} end is {interval_end(scale * end, digits)}{unit}"


def nets_picture_test(a: Results, b: Results, what: Measure) -> PictureTest | None:
    """b - a in a val accuracy within one seed, over the same val pictures (McNemar); None for a measure that
    no picture-level test reads (a loss, a train accuracy, an epoch)."""
    if what.kind not in ("best", "final") or what.split != "val" or what.metric is not ACCURACY:
        return None
    a_right, b_right = a.val_correct(what.kind), b.val_correct(what.kind)
    if a_right is None or b_right is None:
        return PictureTest("", note=f"per-picture {what.kind}-epoch val predictions not recorded")
    return mcnemar_test(a_right, b_right)


def gap_picture_test(r: Results, offset: float) -> PictureTest:
    """A net's final train (eval mode) - val accuracy gap, less `offset`, over its train and val pictures."""
    train, val = r.final("train", ACCURACY, clean=True), r.final("val", ACCURACY)
    if not (math.isfinite(train + val) and r.n_train and r.n_val):
        return PictureTest("", note="its final accuracies are not finite")
    return proportions_test(round(train * r.n_train), r.n_train, round(val * r.n_val), r.n_val, offset)


@dataclass
class Experiment:
    """What the report reads: Results per net and per training seed (seeds paired across nets)."""

    runs: dict[str, list[Results]]
    dataset: DatasetFacts | None  # None for a run saved before hw4 saved it

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
    def claims_family(self) -> dict[PairTest, float]:
        """The Holm-adjusted p of each test of the claims table (claims_family)."""
        return claims_family(self)

    def base_pairs(self) -> list[tuple[str, str]]:
        """(base, net) for every net of the run whose base is in the run too."""
        return [(hw4.NETS[n].base, n) for n in self.nets if hw4.NETS[n].base in self.runs]


def changed_fields(name: str) -> set[str]:
    """The spec fields in which a net differs from its base, descriptive fields aside."""
    spec, base = hw4.NETS[name].trained(), hw4.NETS[hw4.NETS[name].base].trained()
    return {k for k in spec if spec[k] != base[k]}


def nets_arg(names: Iterable[str]) -> str:
    """`--nets ...` naming these nets (they exist: they come from the table) after their bases."""
    names = list(names)
    return "`--nets " + " ".join(dict.fromkeys([*(hw4.NETS[n].base for n in names if hw4.NETS[n].base), *names])) + "`"


def best_epoch_text(exp: Experiment, name: str) -> str:
    """Mean ± std of the best epoch over the seeds in which the net learned: at chance, every epoch ties at
    the same val accuracy and the 'best' one is only the tie-break's first."""
    learned = exp.learned(name)
    if not learned:
        return "— (at chance)"
    text = pm([r.best_epoch for r in learned], 1, int(len(learned) > 1), "")
    return text + (f" (the {seeds_text(len(learned))} that learned)" if len(learned) < exp.seeds else "")


def train_measure(exp: Experiment) -> str:
    """How the train accuracy of gaps and diagnoses was measured in this run: in eval mode after the
    epoch, or (a run saved before hw4 measured that) the running mean recorded while training."""
    return "eval mode" if all(r.clean_train_recorded for runs in exp.runs.values() for r in runs) else "running"


def report_table(exp: Experiment) -> list[str]:
    finals = [(split, m) for split in SPLITS for m in hw4.METRICS]
    measure = train_measure(exp)
    lines = [("Train values are the original's running means over each epoch (augmentation, dropout and batch "
              "statistics active); the final train acc (eval mode) column measures the training images like val, "
              "after the last epoch, and is the one the gaps and diagnoses use." if measure == "eval mode" else
              "Train values are the original's running means over each epoch; this run predates hw4's eval-mode "
              "measurement, so the gaps and diagnoses use them too (for the variants with augmentation, dropout or "
              "BatchNorm they understate the train accuracy)."), "",
             "| net | best val acc | best epoch | " + " | ".join(f"final {s} {m.short}" for s, m in finals)
             + f" | final train acc ({measure}) | params | training time | diagnosis |",
             "|---" * (7 + len(finals)) + "|"]
    if exp.seeds == 1:
        lines[:1] = [lines[0] + f" With one seed, a val accuracy's bracket is its 95% Clopper–Pearson interval over the "
                     f"{exp.first.n_val:,} val pictures: the pictures' variation, not that between training seeds."]
    for name, runs in exp.runs.items():
        cells = [regime_pm(exp, name, Measure("final", s, m), *(() if m.percent else (1, 3, "")))
                 + val_interval_text(exp, name, Measure("final", s, m))
                 if exp.recorded(name, Measure("final", s, m)) else "not recorded" for s, m in finals]
        lines.append(f"| {net_label(name)} | {regime_pm(exp, name, BEST_VAL)}{val_interval_text(exp, name, BEST_VAL)} | "
                     f"{best_epoch_text(exp, name)} | "
                     f"{' | '.join(cells)} | {regime_pm(exp, name, FINAL_TRAIN_CLEAN_ACC)} | "
                     f"{runs[0].params:,} | {pm([r.train_time_s for r in runs], 1, 0, ' s')} | "
                     f"{diagnosis(exp, name)} |")
    return lines


def val_interval_text(exp: Experiment, name: str, measure: Measure) -> str:
    """' [58.6, 62.4]': a one-seed run's val accuracy's Clopper–Pearson interval over its val pictures ('' else)."""
    r = exp.runs[name][0]
    value = measure.of(r)
    if exp.seeds > 1 or measure.split != "val" or measure.metric is not ACCURACY or not math.isfinite(value):
        return ""
    low, high = clopper_pearson(round(value * r.n_val), r.n_val)
    return f" [{100 * low:.1f}, {100 * high:.1f}]"


def describe_difference(exp: Experiment, a: str, b: str, what: Measure = BEST_VAL) -> str:
    """'Net2 − Net1: +0.4 points of best val accuracy (95% CI ...), and the seeds (do not) resolve it' by the
    comparison's own test; when the claims table tests it too, after the table's Holm correction, which decides."""
    cmp = exp.compare(a, b, what)
    if cmp.seeds == 0:
        return f"{net_label(b)} − {net_label(a)}: not compared; {not_paired_reason(cmp)}."
    text = f"{net_label(b)} − {net_label(a)}: {difference_text(cmp)} of {what.words}"
    if cmp.seeds == 1 and cmp.test not in PICTURE_TESTS:
        missing = f" ({cmp.pictures.note})" if cmp.pictures and cmp.pictures.note else ""
        return text + (f"; the run-to-run noise is unknown{missing}, so rerun with `--seeds 3` or more before reading "
                       "anything into it.")
    if cmp.degenerate:
        return text + "; every seed gives the same difference, so there is no spread to build an interval on."
    family = exp.claims_family
    adjusted = family.get(PairTest(a, b, what), family.get(PairTest(b, a, what)))
    held = (f", but not after Holm's correction over the claims table's {len(family)} tests (adjusted p = "
            f"{p_text(adjusted)})" if adjusted is not None and cmp.excludes_zero and adjusted > ALPHA else "")
    resolves = "resolves a difference" if cmp.excludes_zero and not held else "does not resolve a difference"
    if cmp.test in PICTURE_TESTS:
        return text + (f"; over these pictures the test {resolves}{held}, but one training seed says nothing of the "
                       "variation between seeds (`--seeds 3` or more measures it).")
    if cmp.test == "sign":
        return text + f"; a net is at chance in some seeds, so the sign test decides: it {resolves}{held}."
    barely = ", barely (its end nearer 0 is under 0.05 points from it)" if barely_text(cmp) else ""
    if held:
        return text + f"; the interval excludes 0 on its own{barely}{held}, so the seeds do not resolve a difference."
    return text + (f"; the interval excludes 0, so the seeds resolve a difference{barely}." if cmp.excludes_zero else
                   "; the interval includes 0, so the seeds do not resolve a difference.")


def answer_padding(exp: Experiment) -> list[str]:
    pairs = [(a, b) for a, b in exp.base_pairs() if changed_fields(b) == {"padding"}]
    if not pairs:
        padded = [n for n, s in hw4.NETS.items() if s.base and changed_fields(n) == {"padding"}]
        return [f"Not measured: this run trained no net that differs from its base only in padding "
                f"({nets_arg(padded)} measures it)."]
    return [f"- {describe_difference(exp, a, b, what)}" for a, b in pairs for what in (BEST_TRAIN, BEST_VAL)]


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
            return "vanishing, then dead" if self.dead else "vanishing, then recovers" if self.recovered else "vanishing"
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


def ratio_range(values: Sequence[float]) -> str:
    """A few values listed, more as 'median m (a to b)'."""
    def text(v: float) -> str:
        return f"{v:.3g}" if v == 0 or 0.01 <= abs(v) < 1000 else f"{v:.1e}"

    values = [float(v) for v in values]
    if len(values) <= 4:
        return ", ".join(map(text, values))
    return f"median {text(float(np.median(values)))} ({text(min(values))} to {text(max(values))})"


def unit_facts(r: Results) -> list[str]:
    """Q2's table cells for one net and seed: which layers died first and when (and whether they came back),
    which are dead at the end, when the gradient reaching conv1 became exactly 0, and that gradient relative to
    fc1's."""
    zero_from = first_epoch_from([g == 0 for g in r.grad_norms["conv1"]])
    return [f"{gradient_ratio(r):.2g}", f"{gradient_ratio(r, 1):.2g}", first_dead_text(r),
            dead_at_end_text(r) or "none", str(zero_from or "never")]


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


def where_dead_text(variant: list[Results], base: list[Results], base_label: str) -> str:
    """Per seed in which the variant ends dead: what died, beside what died in its base net in that seed, so a
    reader sees whether a remedy lost the very layers its base lost."""
    def what(r: Results) -> str:
        return dead_at_end_text(r) or ("conv1's gradient exactly 0" if ends_dead(r) else "nothing")
    return "; ".join(f"seed {d.train_seed}: {what(d)} ({base_label}: {what(b)})"
                     for d, b in zip(variant, base) if ends_dead(d))


def answer_vanishing(exp: Experiment) -> list[str]:
    deep = [n for n in exp.nets if hw4.NETS[n].extra_convs]
    if not deep:
        chained = [n for n, s in hw4.NETS.items() if s.base and changed_fields(n) == {"extra_convs"}]
        return [f"Not measured: this run trained no net with the extra conv chain ({nets_arg(chained)} measures it)."]
    lines = [f"The gradient ratio is conv1's gradient norm over fc1's: what reaches the first layer, relative to "
             f"what the classifier gets. The gradient **vanishes** when that ratio, over the first "
             f"{WINDOW_STEPS} iterations (from the untrained weights), is over {VANISH_FACTOR}× below the base "
             f"net's in the same seed; it **recovers** when a later epoch's ratio is back within {VANISH_FACTOR}× of the "
             f"base net's in that epoch. A net is **dead** when the measured gradient says so: conv1's gradient is "
             f"exactly 0 over the last epoch, or fc1 is dead with the train loss flat at ln(classes). The dead-unit "
             f"probe (every unit outputs 0 on the first {DEAD_UNIT_IMAGES} val images, after each epoch) supports "
             "it but does not prove it: a layer dead on the probe can still pass gradient and recover "
             "(`grad_norms.png`, `dead_units.png`).", "",
             f"| net | seed | gradient ratio, first {WINDOW_STEPS} iterations | gradient ratio, epoch 1 | first dead "
             "on the probe (after epoch) | dead on the probe at the end | conv1 gradient exactly 0 from epoch | "
             "reading |",
             "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys([n for b, n in exp.base_pairs() if n in deep or b in deep] + deep):
        base = hw4.NETS[name].base
        same = exp.same_machine(name, base) if base in exp.runs else []
        for k, r in enumerate(exp.runs[name]):
            story = "" if base not in exp.runs else (gradient_story(r, exp.runs[base][k]).text if same[k] else
                                                    f"not paired: {net_label(base)} ran on another machine")
            lines.append(f"| {r.label} | {r.train_seed} | {' | '.join(unit_facts(r))} | {story} |")
    lines.append("")
    for base, name in exp.base_pairs():
        pairs = exp.paired_runs(name, base)
        stories = [gradient_story(d, b) for d, b in pairs]
        lb, ld, n = net_label(base), net_label(name), seeds_text(exp.seeds)
        if changed_fields(name) == {"extra_convs"} and not pairs:
            lines.append(f"{ld} against {lb}: not paired, the two ran on different machines in every seed.")
        elif changed_fields(name) == {"extra_convs"}:
            if len(pairs) < exp.seeds:
                n = f"{seeds_text(len(pairs))} in which both ran on one machine"
            counts = ", ".join(f"{story.text} in {stories.count(story)}" for story in dict.fromkeys(stories))
            lines.append(f"{ld} against {lb}, over {n}: {counts}. Gradient ratio over the first {WINDOW_STEPS} "
                         f"iterations: {ld} {ratio_range([gradient_ratio(r) for r in exp.runs[name]])}, {lb} "
                         f"{ratio_range([gradient_ratio(r) for r in exp.runs[base]])}. Final training loss "
                         f"{regime_pm(exp, name, FINAL_TRAIN_LOSS, 1, 3, '')} against "
                         f"{regime_pm(exp, base, FINAL_TRAIN_LOSS, 1, 3, '')}.")
        elif hw4.NETS[base].extra_convs and hw4.NETS[name].extra_convs:
            dead = sum(ends_dead(r) for r in exp.runs[name])
            sentence = (f"{ld} {'keeps its units alive' if not dead else 'still loses whole layers'}: a dead layer "
                        f"at the end in {dead} of {n} ({lb}: {sum(ends_dead(r) for r in exp.runs[base])})")
            if dead:
                sentence += f". Dead at the end in {where_dead_text(exp.runs[name], exp.runs[base], lb)}"
            lines.append(sentence + ".")
    return lines


def answer_ranking(exp: Experiment) -> list[str]:
    order = sorted(exp.nets, key=lambda n: -np.median(exp.values(n, BEST_VAL)))  # robust to two regimes
    lines = [f"By best val accuracy: {' > '.join(f'{net_label(n)} ({regime_pm(exp, n, BEST_VAL)})' for n in order)}."]
    if len(order) > 1:
        lines += [f"- {net_label(b)} − {net_label(a)}: in Q1." if changed_fields(b) == {"padding"} else
                  f"- {describe_difference(exp, a, b)}" for a, b in exp.base_pairs()]
    for name, runs in exp.runs.items():
        stuck, learned = [r for r in runs if r.at_chance], exp.learned(name)
        if stuck and exp.seeds > 1:
            low, high = clopper_pearson(len(learned), len(runs))
            lines.append(f"- {net_label(name)}: learned in {len(learned)} of {seeds_text(len(runs))} (95% Clopper–Pearson "
                         f"interval of the rate at which a seed learns: {pct(low)} to {pct(high)}); "
                         f"{len(stuck)} stayed at chance (best val "
                         f"{pm([BEST_VAL.of(r) for r in stuck])}, seeds "
                         f"{', '.join(str(r.train_seed) for r in stuck)})"
                         + (f"; the {len(learned)} that learned reached {pm([BEST_VAL.of(r) for r in learned])}, so "
                            "its mean hides two regimes." if learned else "."))
    return lines + [ranking_verdict(exp, order)]


def resolved_positive(cmp: Comparison, p: float) -> bool:
    """b - a is resolved above 0 by its test at (Holm-adjusted) p."""
    return bool(cmp.test) and p <= ALPHA and cmp.positive


def ranking_verdict(exp: Experiment, order: list[str]) -> str:
    """A best net only when its paired interval against every other net excludes 0; else the nets that tie
    with the top one within the seeds' noise."""
    if len(order) < 2:
        return f"Only {net_label(order[0])} was trained, so there is nothing to rank."
    if exp.seeds < 2:
        return "One seed cannot rank the nets: rerun with `--seeds 3` or more."
    top, others = order[0], order[1:]
    cmps = [exp.compare(n, top) for n in others]
    # Holm over the ranking's tests, and never looser than the claims table's correction of the same test
    family = exp.claims_family
    adjusted = [max(p, family.get(PairTest(n, top, BEST_VAL), 0.0))
                for n, p in zip(others, holm_adjusted([c.p_value for c in cmps]))]
    ties = [n for n, c, p in zip(others, cmps, adjusted) if not resolved_positive(c, p)]
    tests = (f"paired tests of best val accuracy, Holm-corrected over the {len(others)} of the ranking"
             + (f" and the claims table's {len(family)}" if family else ""))
    if not ties:
        return f"Best in this run: {net_label(top)}, resolved against every other net ({tests})."
    return (f"No single best net: {', '.join(net_label(n) for n in [top, *ties])} are not resolved apart ({tests}; "
            f"{net_label(top)} against " + ", ".join(f"{net_label(n)} p = {p_text(p)}" for n, p in zip(others, adjusted)
                                                     if n in ties) + ").")


def confused_pairs(matrix: np.ndarray, classes: Sequence[str]) -> list[tuple[str, str, int]]:
    """Class pairs with errors by their symmetric off-diagonal count, most confused first."""
    sym = matrix + matrix.T
    pairs = [(classes[i], classes[j], int(sym[i, j])) for i in range(len(classes)) for j in range(i + 1, len(classes))]
    return sorted((p for p in pairs if p[2] > 0), key=lambda p: -p[2])


def answer_hardest(exp: Experiment) -> list[str]:
    lines, pairs = [], []
    for name, runs in exp.runs.items():
        learned = exp.learned(name)
        left_out = (f" (its {seeds_text(len(runs) - len(learned))} at chance left out)"
                    if 0 < len(learned) < len(runs) else "")
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
        recall = np.diag(matrix) / np.maximum(1, matrix.sum(1))
        pairs.append((a, b))
        shown, figure = learned[0], exp.figure(learned[0], "hardest_{net}.png")
        lines.append(f"- {net_label(name)}{left_out}: most confused pair **{a} / {b}** ({n} images, "
                     f"{100 * n / errors:.0f}% "
                     f"of its {errors} val errors); lowest recall: {shown.classes[int(np.argmin(recall))]} "
                     f"({pct(float(recall.min()))}). Its hardest val images ([`{figure}`]({figure})): "
                     f"{sum(bool(h.also_shows) for h in shown.hardest)} of the {len(shown.hardest)} shown "
                     + ("also sit in another class's folder (a picture can lack its labelled object and still sit in "
                        "one folder only: look at them)." if exp.dataset and exp.dataset.source == "image_folders"
                        else "are annotated with another class too."))
    lines.append("Confusions are the symmetric off-diagonal sums of the best-epoch val confusion matrices, summed over "
                 "the seeds in which a net learned.")
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
                     f"({a_b} labelled {a}, {b_a} labelled {b}); each carries only one label, so part of this "
                     "confusion is label noise that no net can resolve.")
    if facts.shared:
        pairs_text = ", ".join(f"{p} {n}" for p, n in list(facts.shared["class_pairs"].items())[:4])
        lines.append(f"Over both splits, {facts.shared['in_two_classes']} pictures sit in two class folders "
                     f"({pairs_text}{', ...' if len(facts.shared['class_pairs']) > 4 else ''}) and "
                     f"{facts.shared['in_both_splits']} in both splits; the run "
                     f"{'kept them, as the folders give them' if facts.shared['kept'] else 'left them out (--exclusive)'}.")
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


OURS = " (hw4's addition)"  # how the report marks a remedy the original does not propose
REMEDIES = (
    Remedy("residual", "residual connections for Net3", "depth"),
    Remedy("batchnorm", "batch normalisation for Net3", "depth"),
    Remedy("xavier", "Xavier initialisation for the weights of each layer", "depth"),
    Remedy("he", f"He's initialisation of the convs, the one for ReLU{OURS}", "depth", ours=True),
    Remedy("resolution", "a higher resolution than 64×64", "underfitting",
           "its nets measure lower resolutions only, from the same pictures, and with them a smaller fc1: no picture "
           "of this dataset is larger than 64×64, so a higher one needs a dataset built at another `--image-size` "
           "from full-size COCO pictures"),
    Remedy("data", "more training images per class", "overfitting"),
    Remedy("noise", "noise on the samples", "overfitting"),
    Remedy("augment", f"random flips and crops{OURS}", "overfitting", ours=True),
    Remedy("dropout", "dropout", "overfitting"),
    Remedy("fc", "more fully connected layers", "underfitting"),
)


def remedy_nets(treats: str, base: str) -> list[str]:
    """The nets of the table that measure, on `base`, a remedy against `treats`."""
    keys = {r.key for r in REMEDIES if r.treats == treats}
    return [n for n, s in hw4.NETS.items() if s.remedy in keys and s.base == base]


def both_at_chance(exp: Experiment, a: str, b: str) -> bool:
    return exp.stuck(a) == exp.stuck(b) == exp.seeds


def effect_text(cmp: Comparison, adjusted: float | None = None, family: int = 1) -> str:
    """A variant's effect on best val accuracy against its base, in words that follow its test, Holm-adjusted
    over the remedies' family (`adjusted`, of `family` tests)."""
    size = f"{'median ' if cmp.test == 'sign' else ''}{100 * cmp.centre:+.1f} points"
    if cmp.seeds == 0:
        return verdict_text(Judgement(Verdict.NOT_TESTABLE, (not_paired_reason(cmp),), colon=True))
    if cmp.seeds == 1 and not cmp.test:
        return verdict_text(Judgement(Verdict.NOT_RESOLVED, (size, "the noise is unknown, so use `--seeds 3` or more"),
                                      "at one seed"))
    p = cmp.p_value if adjusted is None else adjusted
    if cmp.test and p <= ALPHA:
        scope = cmp.pictures.scope if cmp.test in PICTURE_TESTS else f"at {seeds_text(cmp.seeds)}"
        return (f"{'helps' if cmp.positive else 'hurts'}: {size}, resolved {scope}"
                + (f" after Holm's correction over {family}" if family > 1 else ""))
    judged = claim_verdict(cmp, threshold=True, adjusted=adjusted, family=family)
    return verdict_text(judged.leading(size))


def remedy_verdict(exp: Experiment, name: str, adjusted: float | None = None, family: int = 1) -> str:
    spec, cmp = hw4.NETS[name], exp.compare(hw4.NETS[name].base, name)
    if both_at_chance(exp, spec.base, name):
        return verdict_text(Judgement(Verdict.NOT_TESTABLE, (f"both at chance in {exp.seeds} of "
                                                             f"{seeds_text(exp.seeds)}",), colon=True))
    effect = effect_text(cmp, adjusted, family)
    if spec.train_fraction < 1:
        return (f"training on {pct(spec.train_fraction)} of the images: {effect}. More images than the "
                "dataset has is not measured here; only a larger dataset can show it")
    stuck = exp.stuck(spec.base), exp.stuck(name)
    return (f"at chance in {stuck[1]} of {seeds_text(exp.seeds)} against {stuck[0]} for {net_label(spec.base)}; "
            if stuck[0] != stuck[1] else "") + effect


def remedy_rows(exp: Experiment) -> list[tuple[Remedy, str]]:
    """(remedy, net) for every remedy net of the run whose base is in the run too."""
    return [(remedy, n) for remedy in REMEDIES for n in hw4.NETS if hw4.NETS[n].remedy == remedy.key
            and n in exp.runs and hw4.NETS[n].base in exp.runs]


def remedies_family(exp: Experiment) -> dict[str, float]:
    """Per remedy net with a test, its Holm-adjusted p over Q5's family of tests."""
    tested = [n for _, n in remedy_rows(exp) if exp.compare(hw4.NETS[n].base, n).test
              and not both_at_chance(exp, hw4.NETS[n].base, n)]
    return dict(zip(tested, holm_adjusted([exp.compare(hw4.NETS[n].base, n).p_value for n in tested])))


def remedy_table(exp: Experiment) -> list[str]:
    """One row per remedy and net; each verdict reads its test Holm-adjusted over the rows' tests."""
    rows, family = remedy_rows(exp), remedies_family(exp)
    lines = [f"| remedy the original proposes (or hw4 adds) | net (vs its base) | best val acc | final train "
             f"({train_measure(exp)}) − val gap | seeds at chance | Δ best val acc | p (Holm-adjusted) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for remedy in REMEDIES:
        nets = [n for n, s in hw4.NETS.items() if s.remedy == remedy.key]
        if not any(r is remedy for r, _ in rows):
            lines.append(f"| {remedy.words} | {', '.join(nets) or '—'} | | | | | | not measured in this run; "
                         + (f"{nets_arg(nets)} measures it" if nets else "no net of the table measures it")
                         + (f" ({remedy.caveat})" if remedy.caveat else "") + " |")
        for r, n in rows:
            if r is not remedy:
                continue
            b, cmp = hw4.NETS[n].base, exp.compare(hw4.NETS[n].base, n)
            delta = (f"both at chance in {exp.seeds} of {seeds_text(exp.seeds)}" if both_at_chance(exp, b, n)
                     else difference_text(cmp, shown_seeds=exp.seeds))
            p_cell = f"{p_text(cmp.p_value)} ({p_text(family[n])})" if n in family else "—"
            lines.append(f"| {remedy.words} | {net_label(n)} (vs {net_label(b)}) | {regime_pm(exp, n, BEST_VAL)} vs "
                         f"{regime_pm(exp, b, BEST_VAL)} | {100 * typical(exp, n, GAP):.1f} vs "
                         f"{100 * typical(exp, b, GAP):.1f} points | {exp.stuck(n)} vs {exp.stuck(b)} of "
                         f"{exp.seeds} | {delta} | {p_cell} | "
                         f"{remedy_verdict(exp, n, family.get(n), len(family))} |")
    if family:
        tests = ("an exact McNemar test over the val pictures of the one training seed" if exp.seeds == 1 else
                 "a paired t-test where both nets learned in every seed, else an exact sign test")
        lines += ["", f"Each verdict reads its test after Holm's step-down correction over the {len(family)} tests of "
                  f"this table, which keeps the chance of any false difference at 5%: {tests}. The p column gives the "
                  "unadjusted p and, in brackets, the adjusted one."
                  + (" Gaps are means over the seeds in which the net learned." if exp.seeds > 1 else "")]
    measured = list(dict.fromkeys(r for r, _ in rows))
    lines += [f"{remedy.words[0].upper()}{remedy.words[1:]}: {remedy.caveat}." for remedy in measured if remedy.caveat]
    return lines + ["", proposal(exp, family)]


def proposal(exp: Experiment, family: dict[str, float]) -> str:
    """The one thing the homework asks to propose, taken from what the run measured."""
    rows = remedy_rows(exp)
    if not rows:
        return ("**Proposal:** this run measured no remedy; `python hw4.py --nets all` (with `--seeds 3` or more) "
                "trains each of them beside its base, and this section then names the one that helps most.")
    gains = {n: exp.compare(hw4.NETS[n].base, n) for n in family}
    resolved = {n: c for n, c in gains.items() if resolved_positive(c, family[n])}
    if not resolved:
        return ("**Proposal:** no remedy's gain is resolved in this run (Holm-adjusted over "
                f"{len(family)} tests); more seeds would tell them apart.")
    best = max(resolved, key=lambda n: resolved[n].centre)
    remedy = next(r for r in REMEDIES if r.key == hw4.NETS[best].remedy)
    whose = ("; it is hw4's addition, not a remedy the original proposes" if remedy.ours else "")
    return (f"**Proposal:** {remedy.words.removesuffix(OURS)}, as {net_label(best)} measures it: the largest resolved gain over its base "
            f"({difference_text(resolved[best])} of best val accuracy){whose}.")


def diagnosis(exp: Experiment, name: str) -> str:
    """One net's fit in a few words (the results table's last column): diverged, at chance, overfits,
    underfits, or neither; with advice that names only nets of the table."""
    runs, gap = exp.runs[name], typical(exp, name, GAP)
    diverged = [r.diverged_epoch for r in runs if r.diverged_epoch]
    if diverged:
        return f"diverged in epoch {min(diverged)}: lower `--lr`"
    stuck = exp.stuck(name)
    mixed = (f"at chance in {stuck} of {seeds_text(len(runs))}; over the {len(runs) - stuck} that learned, "
             if 0 < stuck < len(runs) else "")
    if gap > OVERFIT_GAP:
        helpers = [n for n in remedy_nets("overfitting", name) if n not in exp.runs]
        return (mixed + f"overfits: train accuracy ({train_measure(exp)}) ends {100 * gap:.1f} points above val, "
                f"val peaks at epoch "
                f"{typical(exp, name, BEST_EPOCH):.0f}" + (f" ({nets_arg(helpers)} measures remedies)"
                                                                     if helpers else ""))
    if stuck == len(runs):
        return f"at chance ({pct(1 / len(exp.first.classes))}): it does not learn (Q2)"
    train = typical(exp, name, FINAL_TRAIN_CLEAN_ACC)
    if train < UNDERFIT_ACC:
        base = hw4.NETS[name].base
        if base in exp.runs and typical(exp, name, BEST_VAL) > typical(exp, base, BEST_VAL):
            # a remedy that regularises lowers train accuracy on purpose: below the rule but better on val
            return mixed + (f"neither: its final train accuracy ({train_measure(exp)}, {pct(train)}) is under the "
                            f"{pct(UNDERFIT_ACC)} underfitting rule, but its val accuracy is above "
                            f"{net_label(base)}'s, so the low train accuracy is its regularisation's")
        return mixed + (f"underfits: its final train accuracy ({train_measure(exp)}, {pct(train)}) stays below "
                        f"{pct(UNDERFIT_ACC)}" + (f" and its val accuracy is not above {net_label(base)}'s"
                                                  if base in exp.runs else ""))
    return mixed + "neither over- nor underfits"


def answer_improvement(exp: Experiment) -> list[str]:
    lines = ["The results table's last column diagnoses each net's fit."]
    for base, name in exp.base_pairs():
        fixes = remedy_nets("depth", name)
        if (changed_fields(name) == {"extra_convs"} and fixes and not any(n in exp.runs for n in fixes)
                and np.median(exp.values(name, BEST_VAL)) < np.median(exp.values(base, BEST_VAL))):
            lines.append(f"{net_label(name)} does worse than {net_label(base)} despite its depth: batch normalisation, "
                         "residual connections or a better initialisation could let the extra layers train (not "
                         f"measured in this run; {nets_arg(fixes)} measures them).")
    stale = [n for n, runs in exp.runs.items() if any(r.spec_changed for r in runs)]
    if stale:
        one = len(stale) == 1
        lines.append(f"{', '.join(map(net_label, stale))} of this run trained under an earlier row of the net table than "
                     f"today's, so {'its row' if one else 'their rows'} below measure{'s' if one else ''} that earlier "
                     f"version, not the remedy {'its' if one else 'their'} first cell names; `--resume` with the run's "
                     f"command retrains {'it' if one else 'them'}.")
    paired = f"paired by seed, over the {exp.seeds} seeds unless stated" if exp.seeds > 1 else "in the one seed"
    return lines + ["", "Each remedy the original report proposes, measured against the net it modifies (values: "
                    f"variant vs base; Δ: variant − base, {paired}):", "", *remedy_table(exp)]


@dataclass(frozen=True)
class Question:
    heading: str
    answer: Callable[[Experiment], list[str]]


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
    """A verdict with its reasons kept apart from it; only verdict_text turns the two into words, and no
    code reads those words back: every decision reads `verdict`."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    scope: str = ""      # 'at 5 seeds', 'at one seed'
    colon: bool = False  # a failed precondition: 'not testable here: why' rather than 'verdict (why)'

    def adding(self, reason: str) -> "Judgement":
        return dataclasses.replace(self, reasons=(*self.reasons, reason))

    def leading(self, reason: str) -> "Judgement":
        return dataclasses.replace(self, reasons=(reason, *self.reasons))


NET1, NET2, NET3 = DEFAULT_NETS  # the nets the original report's claims are about


def signed(value: float, unit: Unit) -> str:
    return f"{unit.scale * value:+.{unit.digits}f}{unit.suffix}"


def not_paired_reason(cmp: Comparison) -> str:
    return f"the two nets ran on different machines in every seed ({seed_list_text(cmp.unpaired)}), so none pairs them"


def claim_verdict(cmp: Comparison, claimed: float | None = None, unit: Unit = POINTS, threshold: bool = False,
                  adjusted: float | None = None, family: int = 1) -> Judgement:
    """verdict_rule, and for a one-seed run's picture-level test the scope it holds in ('over val pictures,
    one training seed'), whatever the verdict: it says nothing of how another seed would train."""
    judged = verdict_rule(cmp, claimed, unit, threshold, adjusted, family)
    return dataclasses.replace(judged, scope=cmp.pictures.scope) if cmp.test in PICTURE_TESTS else judged


def verdict_rule(cmp: Comparison, claimed: float | None = None, unit: Unit = POINTS, threshold: bool = False,
                 adjusted: float | None = None, family: int = 1) -> Judgement:
    """The rule for a claimed positive difference b - a (its size, or None for a direction only). The test
    against 0 is the comparison's own (paired t; exact sign test over two regimes; over one seed's pictures,
    McNemar or two proportions), Holm-adjusted over its family (`adjusted`, of `family` tests; the unadjusted p
    when alone):
    reproduced: significant on the claimed side, and the 95% interval does not exclude the claimed size;
    partly reproduced: the direction holds but the interval excludes the claimed size (or, over two
    regimes, the size cannot be tested);
    not reproduced: significant on the other side, or the interval excludes the claimed size and holds 0;
    not resolved: otherwise; with about how many seeds would detect the claimed size with 80% power at the
    measured seed-to-seed spread. threshold: the difference has no claimed sign of its own (a measure minus a
    threshold, or a remedy's effect), so no reason calls its sign opposite."""
    n = cmp.seeds
    if n == 0:
        return Judgement(Verdict.NOT_TESTABLE, (not_paired_reason(cmp),), colon=True)
    if not cmp.test:
        if cmp.seeds > 1:
            return Judgement(Verdict.NOT_RESOLVED, (f"the difference is {signed(cmp.diff, unit).strip()} in every "
                                                    "seed, so a test has no spread to stand on",), f"at {seeds_text(n)}")
        missing = f" ({cmp.pictures.note}, so no picture-level test)" if cmp.pictures and cmp.pictures.note else ""
        return Judgement(Verdict.NOT_RESOLVED, (f"one seed has no interval{missing}; rerun with `--seeds 3` or more",),
                         "at one seed")
    p = cmp.p_value if adjusted is None else adjusted
    positive = cmp.positive  # the test's own direction: the sign test's majority over two regimes
    opposite = [] if threshold or positive else ["the measured sign is opposite to the claim"]
    claim_text = f"claimed {signed(claimed, unit).strip()}" if claimed is not None else "claimed direction"
    if p <= ALPHA and positive:
        if cmp.test == "sign":
            return Judgement(Verdict.REPRODUCED if claimed is None else Verdict.PARTLY, () if claimed is None else (
                f"the direction holds; the {claim_text} is not tested, as a net is at chance in some seeds",))
        low, high = cmp.ci95
        barely = barely_text(cmp, unit)  # an interval that clears 0 by less than the report shows
        if claimed is None or low <= claimed <= high:
            return Judgement(Verdict.REPRODUCED, (barely,) if barely else ())
        return Judgement(Verdict.PARTLY, (f"the direction holds{', ' + barely if barely else ''}, but the interval "
                                          f"excludes the {claim_text}: the effect is "
                                          f"{'smaller' if high < claimed else 'larger'}",))
    if p <= ALPHA:
        barely = barely_text(cmp, unit) if claimed is None else ""
        return Judgement(Verdict.NOT_REPRODUCED, tuple(([barely] if barely else []) + opposite))
    reasons = list(opposite)
    if cmp.excludes_zero:
        reasons.append(f"its own {'sign test' if cmp.test == 'sign' else 'interval'} excludes 0 (p = "
                       f"{p_text(cmp.p_value)}), but not after Holm's correction over the {family} tests of its family "
                       f"(adjusted p = {p_text(p)})")
    if cmp.ci95 is not None and claimed is not None and not cmp.ci95[0] <= claimed <= cmp.ci95[1]:
        if not cmp.excludes_zero:
            return Judgement(Verdict.NOT_REPRODUCED, (f"the interval excludes the {claim_text} and holds 0",
                                                      *opposite))
        reasons.append(f"the interval excludes the {claim_text}")
    if not reasons:
        reasons.append("its interval holds 0" if cmp.ci95 is not None else "its sign test does not exclude 0")
    spread = cmp.sd if cmp.test == "t" else cmp.both_learned.sd
    needed = Comparison(claimed, spread, n).seeds_for_power(0.0) if claimed else None
    if needed:
        reasons.append(f"about {needed} seeds would detect the {claim_text} with {100 * POWER:.0f}% power at the "
                       f"measured seed-to-seed spread ({signed(spread, unit).strip().lstrip('+')})")
    return Judgement(Verdict.NOT_RESOLVED, tuple(reasons), f"at {seeds_text(n)}")


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


def judge_test(exp: Experiment, test: PairTest, claimed: float | None = None, unit: Unit = POINTS,
               threshold: bool = False) -> Judgement:
    """claim_verdict for one test of the claims table, Holm-adjusted over the table's family of tests."""
    family = exp.claims_family
    return claim_verdict(exp.run_test(test), claimed, unit, threshold, family.get(test), len(family))


@dataclass(frozen=True)
class DifferenceCheck:
    """A claim that each (a, b) pair has b > a in `what` (by `claimed`, in its unit, or in direction only)."""

    pairs: tuple[tuple[str, str], ...]
    what: Measure
    claimed: float | None = None

    @property
    def tests(self) -> tuple[PairTest, ...]:
        return tuple(PairTest(a, b, self.what) for a, b in self.pairs)

    def __call__(self, exp: Experiment) -> ClaimResult:
        what, cmps = self.what, [exp.run_test(t) for t in self.tests]
        judged = [judge_test(exp, t, self.claimed, what.unit) for t in self.tests]
        return ClaimResult(
            f"{what.words}: " + "; ".join(f"{net_label(b)} − {net_label(a)} {difference_text(c, what.unit, exp.seeds)}"
                                          for (a, b), c in zip(self.pairs, cmps)),
            combined_verdict(judged),
            tuple(ClaimInterval(f"{net_label(b)} − {net_label(a)}, {what.split}", c, self.claimed, what.unit, j.verdict)
                  for (a, b), c, j in zip(self.pairs, cmps, judged)))


def check_differences(pairs: list[tuple[str, str]], what: Measure, claimed: float | None = None) -> DifferenceCheck:
    return DifferenceCheck(tuple(pairs), what, claimed)


BARE_NATS = Unit("nats", 1.0, 3, "")  # Q2's loss difference, printed as a bare number (as the reports always had it)


def check_vanishing(exp: Experiment) -> ClaimResult:
    """Read in two phases against Net1 of the same seed: does the early gradient ratio vanish, and does it
    then recover (the loss falls, slowly) or die (the loss stays flat)? The claim, a loss that decreases slowly
    because the gradient is small, holds for seeds that vanish and recover."""
    loss = exp.compare(NET1, NET3, FINAL_TRAIN_LOSS)
    pairs = exp.paired_runs(NET3, NET1)
    if not pairs:
        return ClaimResult("—", Judgement(Verdict.NOT_TESTABLE, (not_paired_reason(loss),), colon=True))
    stories = [gradient_story(d, b) for d, b in pairs]
    n, vanishing = len(pairs), sum(s.vanishing for s in stories)
    recovered = [(d, b) for (d, b), s in zip(pairs, stories) if s.vanishing and s.recovered]
    dead = sum(s.vanishing and s.dead for s in stories)
    l3, l1 = net_label(NET3), net_label(NET1)
    epochs = [recovery_epoch(d, b) for d, b in recovered]
    measured = (f"conv1/fc1 gradient ratio over the first {WINDOW_STEPS} iterations: {l3} "
                f"{ratio_range([gradient_ratio(r) for r in exp.runs[NET3]])}, {l1} "
                f"{ratio_range([gradient_ratio(r) for r in exp.runs[NET1]])}; in epoch 1: {l3} "
                f"{ratio_range([gradient_ratio(r, 1) for r in exp.runs[NET3]])}, {l1} "
                f"{ratio_range([gradient_ratio(r, 1) for r in exp.runs[NET1]])}. Vanishing (over {VANISH_FACTOR}× "
                f"below {l1}'s) in {vanishing} of {seeds_text(n)}; then recovering (back within {VANISH_FACTOR}× of "
                f"{l1}'s) in {len(recovered)}" + (f", by epoch {max(epochs)}" if epochs else "") +
                f", and dead (fc1 dead with the loss flat at ln {len(exp.first.classes)}, or conv1's gradient exactly "
                f"0) in {dead}; final train loss {l3} − {l1}: {difference_text(loss, BARE_NATS, exp.seeds)}.")
    if vanishing == 0:
        return ClaimResult(measured, Judgement(Verdict.NOT_REPRODUCED, ("no seed shows a vanishing gradient",)))
    reasons = [f"the gradient vanishes early in {'every seed' if vanishing == n else f'{vanishing} of {seeds_text(n)}'}"]
    if recovered:
        slopes = [loss_slope(d) for d, _ in recovered], [loss_slope(b) for _, b in recovered]
        late = [gradient_ratio(d, d.epochs) / gradient_ratio(b, b.epochs) for d, b in recovered]
        reasons.append(f"in the {len(recovered)} that recover, the train loss then falls slowly ({pm(slopes[0], 1, 3, '')} "
                       f"nats per epoch from epoch 2, against {pm(slopes[1], 1, 3, '')} for {l1} in those seeds), but "
                       f"with its gradient ratio back at {ratio_range(late)}× {l1}'s in the last epoch: the slow fall "
                       "does not come with a small gradient")
    if dead:
        dying = [(first_dead(d) or (0, []))[1] for (d, _), s in zip(pairs, stories) if s.vanishing and s.dead]
        kinds = [", ".join(f) + " first" if 0 < len(f) <= 2 else f"{len(f)} layers at once" if f else "none first"
                 for f in dying]
        firsts = ", ".join(f"{kind} in {kinds.count(kind)}" for kind in dict.fromkeys(kinds))
        reasons.append(f"in {dead}, the loss stays at ln {len(exp.first.classes)} and whole layers die (on the "
                       f"probe: {firsts or 'none before the gradient reached 0'})")
    if vanishing == n and len(recovered) == n:
        return ClaimResult(measured, Judgement(Verdict.REPRODUCED, tuple(reasons[1:])))
    return ClaimResult(measured, Judgement(Verdict.PARTLY, tuple(reasons)))


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
        parts.append(f"{net_label(name)}: {'/'.join(top[0][:2]) if top else 'none'} (cat/dog first in {per_seed} of "
                     f"{seeds_text(len(learned))} in which it learned)")
        verdicts.append(Judgement(Verdict.REPRODUCED if top and set(top[0][:2]) == {"cat", "dog"}
                                  else Verdict.NOT_REPRODUCED))
    verdict = combined_verdict(verdicts)
    testable = [net_label(n) for n, v in zip((NET1, NET2, NET3), verdicts) if v.verdict is not Verdict.NOT_TESTABLE]
    if (verdict.verdict is Verdict.NOT_TESTABLE and testable
            and all(v.verdict in (Verdict.NOT_TESTABLE, Verdict.REPRODUCED) for v in verdicts)):
        verdict = verdict.adding(f"reproduced for {' and '.join(testable)}")
    return ClaimResult("most confused val pair: " + "; ".join(parts), verdict)


def pair_share(exp: Experiment, name: str, pair: set[str]) -> tuple[float, int] | None:
    """The share of a net's val errors (seed-summed over the seeds in which it learned) that fall on one class
    pair, and the pair's rank among its confused pairs; None when it never learned."""
    learned = exp.learned(name)
    if not learned:
        return None
    matrix = sum(r.val_confusion for r in learned)
    ranked = confused_pairs(matrix, exp.first.classes)
    errors = max(1, int(matrix.sum() - np.trace(matrix)))
    hit = next(((k, p) for k, p in enumerate(ranked, 1) if {p[0], p[1]} == pair), None)
    return (hit[1][2] / errors, hit[0]) if hit else (0.0, 0)


def check_net3_airplane_bus(exp: Experiment) -> ClaimResult:
    """The original: Net3 'has some difficulties to differentiate airplane and bus but it is not as worse as the
    dog and cat problems'. Reproduced when airplane/bus takes a share of Net3's val errors that is under cat/dog's
    and at least an even share over the class pairs; the other nets' shares say whether it is Net3's own."""
    if not exp.learned(NET3):
        return ClaimResult(f"{net_label(NET3)} stayed at chance in every seed, predicting about one class, so it has "
                           "no confusion pattern to compare", never_learned(exp, NET3))
    ab, cd = pair_share(exp, NET3, {"airplane", "bus"}), pair_share(exp, NET3, {"cat", "dog"})
    classes = len(exp.first.classes)
    even = 2 / (classes * (classes - 1))
    others = [(n, pair_share(exp, n, {"airplane", "bus"})) for n in (NET1, NET2) if n in exp.runs]
    measured = (f"airplane/bus: {100 * ab[0]:.1f}% of {net_label(NET3)}'s val errors"
                + (f" (#{ab[1]} of its pairs)" if ab[1] else "") + f", cat/dog {100 * cd[0]:.1f}%, over the "
                f"{seeds_text(len(exp.learned(NET3)))} in which it learned; airplane/bus for "
                + ", ".join(f"{net_label(n)} {100 * v[0]:.1f}%" + (f" (#{v[1]})" if v[1] else "")
                            for n, v in others if v) + f"; an even share over the {classes * (classes - 1) // 2} pairs "
                f"is {100 * even:.0f}%")
    holds = even <= ab[0] < cd[0]
    common = [net_label(n) for n, v in others if v and v[0] >= even]
    return ClaimResult(measured, Judgement(Verdict.REPRODUCED if holds else Verdict.NOT_REPRODUCED, tuple(
        [f"the confusion is not Net3's own: {' and '.join(common)} {'gives' if len(common) == 1 else 'give'} airplane/bus an above-even share too"]
        if holds and common else [])))


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

    @property
    def tests(self) -> tuple[PairTest, ...]:
        return tuple(PairTest(None, name, GAP, OVERFIT_GAP) for name in self.nets)

    def __call__(self, exp: Experiment) -> ClaimResult:
        gaps = {t.b: exp.run_test(t) for t in self.tests}
        judged = [judge_test(exp, t, threshold=True) for t in self.tests]
        return ClaimResult(
            f"final train ({train_measure(exp)}) − val accuracy gap (claimed: large, taken as over "
            f"{100 * OVERFIT_GAP:.0f} points): "
            + "; ".join(f"{net_label(n)} {difference_text(shifted(g, OVERFIT_GAP), shown_seeds=exp.seeds)}"
                        for n, g in gaps.items()),
            combined_verdict(judged),
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
        texts.append(f"{what.split} {100 * sd:.2f} points against the original's {100 * effect:+.1f}, Net2 not above "
                     f"Net1 in {against} of {seeds_text(len(cmp.diffs))}")
    return "std of one seed's Net2 − Net1: " + "; ".join(texts), larger


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
        ranked = sorted(nets, key=lambda n: -BEST_VAL.of(exp.runs[n][k]))
        orders.setdefault(" > ".join(map(net_label, ranked)), []).append(exp.runs[NET1][k].train_seed)
    values = {n: exp.by_regime(n, BEST_VAL)[0] if exp.two_regimes(n) else exp.values(n, BEST_VAL) for n in nets}
    spread = {n: (float(mean_std(v)[1]), *std_bounds(v)) if len(v) > 1 else None for n, v in values.items()}

    def spread_text(n: str) -> str:
        where = f" over the {len(values[n])} seeds that learned" if exp.two_regimes(n) else ""
        if spread[n] is None:
            return f"{net_label(n)}: no spread{where}"
        return f"{net_label(n)} {100 * spread[n][0]:.1f} ({100 * spread[n][2]:.1f}) points{where}"

    def judged(n: str) -> Verdict:
        if exp.two_regimes(n) or (spread[n] and spread[n][1] > SEED_SPREAD):
            return Verdict.NOT_REPRODUCED
        return Verdict.REPRODUCED if spread[n] and spread[n][2] < SEED_SPREAD else Verdict.NOT_RESOLVED

    never = [n for n in nets if exp.stuck(n) == exp.seeds]  # always at chance: nothing to vary, left out
    verdicts = {n: judged(n) for n in nets if n not in never}
    if not verdicts:
        return ClaimResult("every net stayed at chance in every seed", never_learned(exp, NET1))
    measured = ("std of best val accuracy over the seeds (one-sided 95% upper bound): "
                + ", ".join(map(spread_text, nets))
                + f" (claimed: insignificant, taken as under {100 * SEED_SPREAD:.0f} points); order by best val "
                "accuracy: " + "; ".join(f"{o} (seed{'s' * (len(s) > 1)} {', '.join(map(str, s))})"
                                         for o, s in orders.items()) + ".")
    conclusion = seed_effect_on_padding(exp)
    if conclusion:
        measured += f" {conclusion[0][0].upper()}{conclusion[0][1:]}."

    def reason(n: str) -> str:
        if exp.two_regimes(n):
            return f"{net_label(n)} learns in {len(exp.learned(n))} of {seeds_text(exp.seeds)}"
        if verdicts[n] is Verdict.NOT_REPRODUCED:
            return f"{net_label(n)}'s std is over {100 * SEED_SPREAD:.0f} points even at its lower bound"
        if verdicts[n] is Verdict.NOT_RESOLVED:
            return f"{net_label(n)}'s upper bound reaches {100 * SEED_SPREAD:.0f} points"
        return ""

    parts = []
    for v in (Verdict.REPRODUCED, Verdict.NOT_RESOLVED, Verdict.NOT_REPRODUCED):
        names = [n for n in verdicts if verdicts[n] is v]
        reasons = [reason(n) for n in names if reason(n)]
        if names:
            parts.append(f"{v.word} for {' and '.join(map(net_label, names))}"
                         + (f" ({'; '.join(reasons)})" if reasons else ""))
    left_out = [f"{' and '.join(map(net_label, never))} stayed at chance in every seed, so "
                f"{'it is' if len(never) == 1 else 'they are'} left out"] if never else []
    if conclusion and conclusion[1]:  # the seed moves one run's Net2 - Net1 by more than the effect it reports
        parts.append("not reproduced for the original's conclusions (one seed's Net2 − Net1 varies by more than the "
                     "padding effect it reports, so the seed can reverse its Q1 and Q3 findings)")
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

    @property
    def tests(self) -> tuple[PairTest, ...]:
        """The paired tests its verdict rests on: they join the claims table's Holm family."""
        return getattr(self.check, "tests", ())

    def missing(self, exp: Experiment) -> list[str]:
        """The nets or classes the claim is about that the run lacks."""
        return [n for n in self.nets if n not in exp.runs] or [c for c in self.classes if c not in exp.first.classes]


CLAIMS = (
    Claim("Q1", "Padding increased train accuracy by 0.8 points (Net2 over Net1).",
          check_differences([(NET1, NET2)], BEST_TRAIN, PADDING_EFFECT[BEST_TRAIN]), (NET1, NET2)),
    Claim("Q1", "Padding increased val accuracy by 0.4 points (Net2 over Net1).",
          check_differences([(NET1, NET2)], BEST_VAL, PADDING_EFFECT[BEST_VAL]), (NET1, NET2)),
    Claim("Q2", "Net3 shows vanishing gradients: its loss decreases slowly because the gradients get very small.",
          check_vanishing, (NET1, NET3)),
    Claim("Q3", "Net2 is the best performer: Net2 > Net1 > Net3 on train.",
          check_differences([(NET1, NET2), (NET3, NET1)], BEST_TRAIN)),
    Claim("Q3", "Net2 is the best performer: Net2 > Net1 > Net3 on val.",
          check_differences([(NET1, NET2), (NET3, NET1)], BEST_VAL)),
    Claim("Q4", "Cat/dog is the hardest pair for all three nets.", check_cat_dog, classes=("cat", "dog")),
    Claim("Q4", "“Net3 has some difficulties to differentiate airplane and bus but it is not as worse as the dog and "
          "cat problems.”", check_net3_airplane_bus, (NET3,),
          ("airplane", "bus")),
    Claim("Discussion", "Net1 and Net2 overfit, with a large gap between train and val accuracy.",
          GapCheck((NET1, NET2)), (NET1, NET2)),
    Claim("Discussion", "The run-to-run randomness (no seed fixed) will not change the performance significantly.",
          check_randomness),
)


def claim_row(exp: Experiment, claim: Claim) -> ClaimResult:
    """The claim's check, or not testable when the run lacks a net or a class the claim is about."""
    missing = claim.missing(exp)
    if missing:
        return ClaimResult("—", Judgement(Verdict.NOT_TESTABLE, (f"this run has no {', '.join(missing)}",)))
    return claim.check(exp)


def claims_family(exp: Experiment) -> dict[PairTest, float]:
    """The Holm-adjusted p of every distinct test the claims table makes: a test that two claims cite (Q1's
    and Q3's Net2 - Net1) counts once."""
    cmps = {t: exp.run_test(t) for claim in CLAIMS if not claim.missing(exp) for t in claim.tests}
    tested = [t for t, cmp in cmps.items() if cmp.test]
    return dict(zip(tested, holm_adjusted([cmps[t].p_value for t in tested])))


def tests_p_text(exp: Experiment, claim: Claim) -> str:
    """The claim's tests' p-values, unadjusted with Holm's adjusted p beside: '0.0497 (Holm 0.25)'."""
    family = exp.claims_family
    texts = [f"{p_text(exp.run_test(t).p_value)} (Holm {p_text(family[t])})"
             for t in claim.tests if not claim.missing(exp) and t in family]
    return "; ".join(texts) or "—"


def per_class_text(counts: dict[str, int]) -> str:
    """'1500' when every class has that many, else the counts by class."""
    values = set(counts.values())
    return str(values.pop()) if len(values) == 1 else "/".join(map(str, counts.values()))


def data_text(facts: DatasetFacts | None, conf: dict) -> str:
    """Where the pictures came from and how many per class and split."""
    if facts is None:  # a run saved before the dataset facts were
        return (f"{conf['train_per_class']} train and {conf['val_per_class']} val images per class at "
                f"{conf['image_size']}×{conf['image_size']} (subset seed {conf['subset_seed']})")
    source = (f"the class folders of `{conf['image_folders']}`, taken as given" if facts.source == "image_folders"
              else f"a subset of COCO drawn with subset seed {conf['subset_seed']}")
    return (f"{per_class_text(facts.counts['train'])} train and {per_class_text(facts.counts['val'])} val images per "
            f"class at {conf['image_size']}×{conf['image_size']} from {source}")


def commit_text(commit: str | None) -> str:
    """A commit as 12 hex digits, '-dirty' kept: hw4.py differed from it."""
    return "unknown" if not commit else commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def machine_text(infra: dict[str, Any]) -> str:
    """One machine as the infrastructure line shows it, the hw4 commit aside."""
    where = f"{infra['gpu']} (CUDA)" if infra.get("gpu") else f"CPU {infra['cpu']} ({infra['cpus']} cores)"
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
    machines: dict[str, dict[str, dict[int, list[str]]]] = {}  # machine -> commit -> seed -> nets
    for name, r in runs:
        key = machine_text(r.infrastructure) if r.infrastructure else "not recorded"
        commit = commit_text(r.infrastructure.get("hw4_commit"))
        machines.setdefault(key, {}).setdefault(commit, {}).setdefault(r.train_seed, []).append(name)
    texts = []
    for key, commits in machines.items():
        if key == "not recorded":
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
        measure = net_outline(name, MIN_IMAGE_SIZE, "ab").conv_output_size
        first, last = (bisect.bisect_left(sizes, size, key=measure), bisect.bisect_right(sizes, size, key=measure))
        fits[name] = list(sizes[first:last])
    return fits


def fc1_caveat(image_size: int) -> str:
    """The original's printed fc1 sizes, and the only input sizes they fit (computed from the nets)."""
    fits = original_fc1_fits()
    if all(image_size in found for found in fits.values()):
        return ""
    each = "; ".join(f"{net_label(n)}'s {ORIGINAL_FC1_IN[n]:,} fits only {found[0]}×{found[0]} to {found[-1]}×{found[-1]}"
                     if found else f"{net_label(n)}'s {ORIGINAL_FC1_IN[n]:,} fits no square picture"
                     for n, found in fits.items())
    return (f"The original's code prints fc1's input size for {' and '.join(map(net_label, ORIGINAL_FC1_IN))}: "
            f"{each}. So that code cannot have produced its numbers at {image_size}×{image_size} as printed; the "
            "claims below compare against its numbers as reported.")


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
    rows = []
    for k, claim in enumerate(CLAIMS, 1):
        result = claim_row(exp, claim)
        parts = [part for part in result.intervals if part.cmp.test]
        rows += [ClaimRow(f"#{k} {claim.question}", part, result.judgement.verdict if j == 0 else None)
                 for j, part in enumerate(parts)]
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
    each seed's difference as a dot, and the median), the claimed value or threshold as a marker, 0 as a line,
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
                ax.plot(unit.scale * (cmp.median + shift), y, "|", color="black", markersize=14, label="median")
            if row.part.claimed is not None:
                ax.plot(unit.scale * row.part.claimed, y, "D", color="tab:red", markersize=6, label="claimed value")
            if shift:
                ax.plot(unit.scale * shift, y, "s", color="tab:orange", markersize=6, label="threshold taken")
            if row.verdict is not None:
                ax.annotate(row.verdict.word, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(panel)), [f"{row.claim}: {row.part.label}" for row in reversed(panel)], fontsize=8)
        ax.set_xlabel(f"difference in {unit.name} (95% {interval_scope(exp)}; ● measured)")
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
        if handles:
            ax.legend(handles.values(), handles.keys(), fontsize=7, loc="best")
    fig.suptitle(f"The original report's claims against this run ({seeds_text(exp.seeds)}; row numbers as in the "
                 "claims table)", fontsize=10)
    return fig


def claims_section(exp: Experiment) -> list[str]:
    """The claims table with its rule, its scope and, when any claim has an interval, a link to claims.png."""
    results = [claim_row(exp, c) for c in CLAIMS]
    how = ("over the paired seeds: a paired t-test when both nets learned in every seed, else (a net at chance in some "
           "seeds makes two regimes, which no normal interval fits) an exact sign test, with McNemar's test on the "
           "regimes and the t-interval over the seeds in which both learned" if exp.seeds > 1 else
           "within the one training seed, over pictures: two nets' val accuracies by an exact McNemar test on the val "
           "pictures that only one of them got right, a net's train − val gap by a two-proportion test over its "
           "train and val pictures")
    lines = ["## Does this reproduce the original report?", "",
             "The original report is a student's submission for this homework (spring 2023), with its code; each of "
             "its findings (its Q1–Q4 answers and discussion) is checked against this run. A claimed difference is "
             f"tested against 0 {how}. The tests "
             "of the table are one family: each verdict reads its test after Holm's correction over them (a test "
             "that two claims cite counts once), and the p column gives the unadjusted p with the adjusted one "
             "beside it. A claim is **reproduced** when its test is significant on the claimed side and the 95% "
             "interval does not exclude the claimed size; **partly reproduced** when the direction holds but the "
             "size does not, or the symptom holds with a further mechanism; **not reproduced** when the test is "
             "significant on the other side, or the interval excludes the claimed size and holds 0; **not "
             "resolved** otherwise; **not testable here** when a precondition fails.",
             "", scope_text(exp) + " Best val accuracy is picked on the val set itself (there is no test split), so "
             "it is optimistic; the final val accuracy beside it in the results table is not picked."]
    caveat = fc1_caveat(exp.first.config["image_size"])
    lines += ["", caveat] if caveat else []
    if claim_intervals(exp):
        what = "paired intervals" if exp.seeds > 1 else "intervals over the pictures (one training seed)"
        lines += ["", f"![the original's claims: 95% {what} against the claimed values](claims.png)"]
    over = f" (over the {exp.seeds} paired seeds unless stated)" if exp.seeds > 1 else ""
    lines += ["", f"| # | question | the original's claim | measured in this run{over} | p (Holm) | verdict |",
              "|---|---|---|---|---|---|",
              *(f"| {k} | {c.question} | {c.words} | {r.measured} | {tests_p_text(exp, c)} | {verdict_text(r.judgement)} |"
                for k, (c, r) in enumerate(zip(CLAIMS, results), 1))]
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
    text = (f"The intervals cover the variation over {seeds_text(exp.seeds)} of training only, on one fixed dataset "
            "and val split: another draw of the pictures would add variation of its own")
    if recorded:
        return text + f"; {picture_spread_text(exp)}."
    which = "this run's metrics predate" if len(lacking) == exp.seeds else f"{seed_list_text(lacking)} predate"
    return text + f"; the pictures' own spread within a seed is not recorded ({which} hw4's per-picture val predictions)."


def picture_spread_text(exp: Experiment) -> str:
    """The pictures' own spread within one seed, median over the seeds: of a best val accuracy (Clopper–Pearson)
    and, where the run has both, of Net2 - Net1 (exact McNemar)."""
    halves = []
    for runs in exp.runs.values():
        for r in runs:
            k = int(np.sum(r.val_correct("best")))
            low, high = clopper_pearson(k, r.n_val)
            halves.append((high - low) / 2)
    text = (f"within one seed, the {exp.first.n_val:,} val pictures alone give a best val accuracy a 95% interval of "
            f"about ±{100 * float(np.median(halves)):.1f} points")
    if NET1 in exp.runs and NET2 in exp.runs:
        tests = [mcnemar_test(a.val_correct("best"), b.val_correct("best")) for a, b in exp.paired_runs(NET1, NET2)]
        widths = [(t.high - t.low) / 2 for t in tests if t.kind]
        if widths:
            text += (f", and {net_label(NET2)} − {net_label(NET1)} one of about ±{100 * float(np.median(widths)):.1f} "
                     "(exact McNemar; medians over the seeds)")
    return text


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
    per_net = [p for p in hw4.FIGURES if p.per_net]
    lines = [
        "# hw4 report", "",
        f"Classes: {', '.join(exp.first.classes)}; {data_text(exp.dataset, conf)}; batch size "
        f"{conf['batch_size']}, {conf['epochs']} epochs, Adam(lr={conf['lr']}, betas={tuple(conf['betas'])}); "
        f"{seed_text}.", "", infrastructure_text(exp), "",
        "Every number and verdict below is computed from this run's metrics.", "",
        "## Results", "", *report_table(exp), "",
        *claims_section(exp), "",
        "## Figures", "", *(f"![{p.caption}]({p.file})\n" for p in hw4.FIGURES if not p.per_net),
        *([" ".join(f"![{net_label(n)} {p.caption}]({p.file.format(net=n)})" for p in per_net) + "\n" for n in exp.nets]
          if exp.seeds == 1 else [f"Per-net figures ({', '.join(p.caption for p in per_net)}) of each seed are in "
                                  "`seed_<s>/`.\n"]),
    ]
    for question in QUESTIONS:
        lines += [f"## {question.heading}", "", *question.answer(exp), ""]
    if claim_intervals(exp):
        hw4.savefig_atomic(draw_claims(exp), out / "claims.png")
    write_bytes_atomic(out / "REPORT.md", "\n".join(lines).encode())


def write_seeds_summary(out: Path, exp: Experiment) -> None:
    """The top-level metrics.json of a --seeds run: per net the numbers per seed with mean and std, the
    paired comparisons with 95% t-intervals, the seeds at chance, and the claims table."""
    nets = {}
    for name, runs in exp.runs.items():
        nets[name] = {"seeds": [r.train_seed for r in runs], "train_time_s": [r.train_time_s for r in runs],
                      "seeds_at_chance": [r.train_seed for r in runs if r.at_chance],
                      "dead_units": {k: mean_std([r.dead_units[k] for r in runs])[0].tolist()
                                     for k in runs[0].dead_units}}
        finals = [Measure("final", split, m) for split in SPLITS for m in hw4.METRICS]
        for what in (BEST_VAL, BEST_TRAIN, BEST_EPOCH, GAP, *(f for f in finals if exp.recorded(name, f))):
            values = exp.values(name, what)
            nets[name][what.name] = values
            nets[name][f"{what.name}_mean"], nets[name][f"{what.name}_std"] = (float(v) for v in mean_std(values))
    pairs = {f"{b}-{a}": {**dataclasses.asdict(c := exp.compare(a, b)), "test": c.test, "ci95": c.ci95,
                          "p_value": c.p_value, "excludes_zero": c.excludes_zero}
             for a, b in exp.base_pairs()}
    claims = [{"question": c.question, "claim": c.words, "measured": (r := claim_row(exp, c)).measured,
               "verdict": verdict_text(r.judgement)} for c in CLAIMS]
    infra = list({json.dumps(r.infrastructure, sort_keys=True): r.infrastructure
                  for runs in exp.runs.values() for r in runs}.values())
    write_json_atomic(out / "metrics.json", {
        "format": METRICS_FORMAT, "kind": "seeds summary", "config": exp.first.config, "seeds": exp.seeds,
        "infrastructure": infra, "dataset": exp.dataset and dataclasses.asdict(exp.dataset), "nets": nets,
        "comparisons": pairs, "claims": claims})


def write_run_reports(out: Path, seed_outs: list[Path], runs_by_seed: list[dict[str, Results]],
                      facts: DatasetFacts | None, data: SubsetTensors | None) -> None:
    """Each seed's figures and REPORT.md, then, for several seeds, the run's figures, metrics.json and
    REPORT.md over all of them. data None (`hw4.py report`): the figures that show pictures stay as they are."""
    for seed_out, runs in zip(seed_outs, runs_by_seed):
        one = {name: [r] for name, r in runs.items()}
        write_run_figures(seed_out, one, data)
        if data is None:  # the per-net figures a finished net wrote, redrawn where they need no pictures
            for r in runs.values():
                write_net_figures(seed_out, r, data)
        write_report(seed_out, Experiment(one, facts))
    if len(runs_by_seed) > 1:
        runs_by_net = {name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}
        write_run_figures(out, runs_by_net, data)
        experiment = Experiment(runs_by_net, facts)
        write_seeds_summary(out, experiment)
        write_report(out, experiment)


def report_main(argv: Sequence[str]) -> int:
    parser = OneLineErrorParser(prog="hw4.py report", description="Rewrite a finished run's REPORT.md files, "
                                "its run metrics.json and its figures from its metrics.json files alone: no "
                                "training, no dataset, no checkpoints. Figures that show pictures stay as they are.")
    parser.add_argument("out", type=path_argument, help="the --out folder of a finished run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    seed_outs, runs_by_seed, facts = load_finished_run(out)  # every check, before anything is written or locked
    for folder in dict.fromkeys([out, *seed_outs]):  # a read-only run is one line, before anything is rewritten
        check_folder_creatable(folder, "report: the run folder")
    with contextlib.ExitStack() as held:
        # the lock a training run holds on its --out (for a seed folder, on the run around it too)
        for folder in [*([out.parent] if is_seed_folder(out) else []), out]:
            held.enter_context(run_lock(folder, "report:"))
        seed_outs, runs_by_seed, facts = load_finished_run(out)  # again, now that no run writes them
        write_run_reports(out, seed_outs, runs_by_seed, facts, None)
    print(f"rewrote {out / 'REPORT.md'}" + (f" and those of {len(seed_outs)} seeds" if len(seed_outs) > 1 else ""))
    return 0


