"""The report's statistics for nets with two regimes (seeds that learn and seeds at chance): no normal interval
over a mixture but its two parts, Holm over a family in which a shared test counts once, one verdict per
comparison."""
from __future__ import annotations

import json
import math

import pytest

import hw4_records
import hw4_report
from conftest import ROOT, claim, hw4

EXERCISE = ROOT / "results" / "exercise"


def exercise() -> hw4_report.Experiment:
    _, runs_by_seed, facts = hw4_records.load_finished_run(EXERCISE)
    return hw4_report.Experiment({name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}, facts)


def test_a_mixture_is_two_parts_and_never_one_interval_or_median():
    # Net1 learns in 10 seeds, Net3 in 4: the regimes (6 of 6 discordant seeds favour Net1) and the 4 seeds in
    # which both learned are tested apart
    learned = [(True, k < 4) for k in range(10)]
    diffs = [0.03, 0.02, 0.05, 0.01] + [0.40] * 6
    cmp = hw4_report.paired_difference([0.0] * 10, diffs, learned=learned)
    regimes, both = cmp.parts
    assert cmp.two_regimes and cmp.ci95 is None
    assert regimes.test is hw4_report.Test.REGIMES and regimes.p == pytest.approx(2 * 0.5 ** 6)
    assert regimes.min_p == pytest.approx(2 * 0.5 ** 6) and regimes.diff == -6  # b (Net3) learns in 6 fewer
    assert both.test is hw4_report.Test.T and both.conditional and both.n == 4 and both.diff == pytest.approx(0.0275)
    text = hw4_report.difference_text(cmp)
    assert "median" not in text and text.startswith("only the net left of − learned in 0 seeds, only the one right of "
                                                    "it in 6 (exact McNemar p = 0.031)")
    named = hw4_report.difference_text(cmp, names=("Net3", "Net1"))
    assert named.startswith("only Net3 learned in 0 seeds, only Net1 in 6"), "the nets by name where they are known"
    assert "over the 4 seeds in which both learned: +2.8 points (95% CI" in text


def test_holm_adjusted_p_values_match_a_hand_calculation():
    # sorted 0.01, 0.03, 0.04 over 3 tests: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert hw4_report.holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert hw4_report.holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_one_comparison_has_one_verdict_wherever_the_report_cites_it():
    exp = exercise()
    shared = hw4_report.PairTest(hw4_report.NET1, hw4_report.NET2, hw4.BEST_VAL)
    cited = [k for claim in hw4_report.CLAIMS for k in claim.comparisons(exp)]
    assert cited.count(shared) == 2, "Q1 and Q3 cite Net2 - Net1 on val"
    tested = exp.tested[shared]
    family = [t for t in exp.tested.values() if t.family_name == "the claims table"]
    raw = [p.p for t in family for p, adj in zip(t.cmp.parts, t.adjusted) if adj is not None]
    assert tested.family == len(raw) and sorted(hw4_report.holm_adjusted(raw)) == pytest.approx(
        sorted(a for t in family for a in t.adjusted if a is not None)), "Holm over the attainable parts, once each"
    # Q3's bullet of the same pair, and the pair turned around, read the claims table's decision
    turned = exp.decision(hw4_report.PairTest(hw4_report.NET2, hw4_report.NET1, hw4.BEST_VAL), threshold=True)
    assert turned.side == -exp.decision(shared, threshold=True).side
    assert turned.tested.adjusted == tested.adjusted
    # the p the rule prints for claims row 2 is the two-sided paired t-test's, recomputed from the per-seed values
    diffs = [hw4.BEST_VAL.of(b) - hw4.BEST_VAL.of(a) for a, b in exp.paired_runs(hw4_report.NET1, hw4_report.NET2)]
    two_sided = float(hw4_report.scipy_stats().ttest_1samp(diffs, 0.0).pvalue)
    assert tested.cmp.parts[0].p == pytest.approx(two_sided)
    assert hw4_report.p_cell(tested).startswith(f"{hw4_report.p_text(two_sided)} (Holm ")


def test_no_mean_or_interval_over_two_regimes_in_the_report(tmp_path):
    exp = exercise()
    assert exp.two_regimes(hw4_report.NET3)
    row = next(line for line in hw4_report.report_table(exp) if line.startswith("| Net3 |"))
    learned = [hw4.BEST_VAL.of(r) for r in exp.learned(hw4_report.NET3)]
    assert row.startswith(f"| Net3 | {len(learned)} of {exp.seeds} (") and f"| {hw4_report.pm(learned)} |" in row
    assert hw4_report.pm(exp.values(hw4_report.NET3, hw4.BEST_VAL)) not in row, "no mean over both regimes"
    randomness = hw4_report.claim_row(exp, claim("The run-to-run randomness"))
    assert randomness.judgement.verdict is hw4_report.Verdict.PARTLY
    assert "reproduced for Net1 and Net2" in randomness.judgement.reasons[0]
    assert f"{len(learned)} learned seeds" in randomness.measured


def test_the_seed_estimate_is_for_the_claimed_effect_at_holms_alpha():
    # a claimed +0.4 points at a seed-to-seed spread of 0.9 points, at the alpha Holm gives the test (0.025)
    part = hw4_report.t_part([0.0066 + 0.009 * z for z in (-1.5, -1, -0.5, 0, 0, 0, 0, 0.5, 1, 1.5)])
    text = hw4_report.power_text(0.004, part, 0.025, hw4_records.POINTS)
    needed = hw4_report.seeds_for_power(0.004, part.sd, 0.025)
    low, high = hw4_report.std_interval(part.sd, part.n)
    assert text.startswith(f"about {needed} seeds ({hw4_report.seeds_for_power(0.004, low, 0.025)}–"
                           f"{hw4_report.seeds_for_power(0.004, high, 0.025)}) give 80% power")
    assert "at α 0.025, where Holm's step-down stopped" in text and needed > hw4_report.seeds_for_power(0.004, part.sd, 0.05)
    assert needed != hw4_report.seeds_for_power(part.diff, part.sd, 0.025) and not math.isnan(needed)


def test_zero_updates_count_the_seeds_whose_conv1_update_ends_at_0_by_regime():
    """Q2's association of a conv1 update of 0 with staying at chance, recounted from the raw metrics.json files
    of exercise-all, and Fisher's exact test of its table."""
    run = ROOT / "results" / "exercise-all"
    _, runs_by_seed, _ = hw4_records.load_finished_run(run)
    for net in ("net3", "net3xavier", "net3bn"):
        raw = [json.loads((run / f"seed_{r.train_seed}" / "metrics.json").read_text())["nets"][net]
               for r in (seed[net] for seed in runs_by_seed)]
        raw = [e for e in raw if e.get("update_sizes")]
        stuck = [max(e["epoch"]["train_class_acc"]) <= 1.5 / 5 for e in raw]
        ends_zero = [e["update_sizes"]["conv1"][-1] <= 1e-12 for e in raw]  # a run that stays 0 to the end
        z = hw4_report.zero_updates([seed[net] for seed in runs_by_seed], net)
        assert (z.at_chance, z.learned) == (sum(stuck), len(raw) - sum(stuck))
        assert (z.zero_at_chance, z.zero_learned) == (sum(a and b for a, b in zip(stuck, ends_zero)),
                                                      sum(b and not a for a, b in zip(stuck, ends_zero)))
        if z.at_chance and z.learned:
            table = [[z.zero_at_chance, z.at_chance - z.zero_at_chance], [z.zero_learned, z.learned - z.zero_learned]]
            assert z.p_value == pytest.approx(hw4_report.scipy_stats().fisher_exact(table).pvalue)


def test_adam_keeps_updates_near_net1s_only_when_the_update_falls_resolvably_less_than_the_gradient():
    """Q2's Adam test: paired over seeds, log10 of Net3's early update over Net1's against its gradient ratio's."""
    gradient = (-4.1, -3.6, -3.9, -4.4, -3.3)
    update = (-0.2, -0.3, -0.25, -0.1, -0.4)
    kept = hw4_report.AdamKeepsUpdates(update=update, gradient=gradient)
    assert kept.decision.side == 1 and kept.decision.tested.cmp.diff == pytest.approx((sum(update) - sum(gradient)) / 5)
    assert kept.median_update == pytest.approx(10 ** -0.25) and kept.median_gradient == pytest.approx(10 ** -3.9)
    assert hw4_report.adam_text(kept).startswith("Net3's early update is 0.56× Net1's (median), its gradient ratio "
                                                 "0.00013×, 3.6 decades closer (paired t-test, 5 seeds: p = ")
    followed = hw4_report.AdamKeepsUpdates(update=tuple(g + d for g, d in zip(gradient, (0.1, -0.1, 0.2, -0.2, 0))),
                                           gradient=gradient)  # the update falls as far as the gradient
    assert followed.decision.side == 0
    assert "does not resolve as falling less than the gradient" in hw4_report.adam_text(followed)
