"""The report's statistics for nets with two regimes (seeds that learn and seeds at chance): no normal interval
over a mixture, exact sign and McNemar tests, Holm over a family in which a shared test counts once."""
from __future__ import annotations

import math

import pytest

import hw4_report
from conftest import ROOT, hw4

EXERCISE = ROOT / "results" / "exercise"


def exercise() -> hw4_report.Experiment:
    _, runs_by_seed, facts = hw4.load_finished_run(EXERCISE)
    return hw4_report.Experiment({name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}, facts)


def test_a_mixture_gets_a_sign_test_and_never_a_t_interval():
    # Net1 learns in 10 seeds, Net3 in 4: 10 differences, every one positive
    learned = [(True, k < 4) for k in range(10)]
    diffs = [0.03, 0.02, 0.05, 0.01] + [0.40] * 6
    cmp = hw4_report.paired_difference([0.0] * 10, diffs, learned=learned)
    assert cmp.two_regimes and cmp.test == "sign" and cmp.ci95 is None
    assert cmp.p_value == pytest.approx(2 * 0.5 ** 10)  # 10 of 10 by the exact sign test: 0.00195
    assert cmp.regime_counts == (6, 0) and cmp.regime_p == pytest.approx(2 * 0.5 ** 6)  # McNemar: 6 of 6 discordant
    both = cmp.both_learned
    assert both.seeds == 4 and both.test == "t" and both.diff == pytest.approx(0.0275)
    text = hw4_report.difference_text(cmp)
    assert text.startswith("median +40.0 points, positive in 10 of 10 paired seeds (exact sign test p = 0.002)")
    assert "over the 4 seeds in which both learned: +2.8 points (95% CI" in text
    # ties are dropped by the sign test: 3 wins, 1 loss, 1 tie -> p of 3 of 4 = 0.625
    tied = hw4_report.paired_difference([0.0] * 5, [0.1, 0.1, 0.1, -0.1, 0.0], learned=[(True, False)] * 5)
    assert tied.p_value == pytest.approx(0.625) and "1 tied" in hw4_report.difference_text(tied)


def test_holm_adjusted_p_values_match_a_hand_calculation():
    # sorted 0.01, 0.03, 0.04 over 3 tests: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert hw4_report.holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert hw4_report.holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_the_claims_family_counts_a_shared_test_once_and_its_verdict_follows_holm():
    exp = exercise()
    cited = [t for claim in hw4_report.CLAIMS for t in claim.tests]
    family = exp.claims_family
    shared = hw4_report.PairTest(hw4_report.NET1, hw4_report.NET2, hw4.BEST_VAL)
    assert cited.count(shared) == 2 and len(family) == len(set(cited)) < len(cited)
    raw = {t: exp.run_test(t).p_value for t in family}
    assert family == pytest.approx(dict(zip(raw, hw4_report.holm_adjusted(list(raw.values())))))
    # Net2 - Net1 on val: its own interval excludes 0, Holm does not
    assert exp.run_test(shared).excludes_zero and raw[shared] < 0.05 < family[shared]
    q1_val = hw4_report.claim_row(exp, hw4_report.CLAIMS[1])
    assert q1_val.judgement.verdict is hw4_report.Verdict.NOT_RESOLVED
    assert any("not after Holm's correction" in reason for reason in q1_val.judgement.reasons)
    # Net1 - Net3: two regimes, decided by the sign test, which Holm keeps
    net3 = exp.run_test(hw4_report.PairTest(hw4_report.NET3, hw4_report.NET1, hw4.BEST_VAL))
    assert net3.test == "sign" and net3.ci95 is None and family[hw4_report.PairTest(hw4_report.NET3, hw4_report.NET1, hw4.BEST_VAL)] < 0.05


def test_no_mean_or_interval_over_two_regimes_in_the_report(tmp_path):
    exp = exercise()
    assert exp.two_regimes(hw4_report.NET3)
    cell = hw4_report.regime_pm(exp, hw4_report.NET3, hw4.BEST_VAL)
    learned = [hw4.BEST_VAL.of(r) for r in exp.learned(hw4_report.NET3)]
    assert cell.startswith(hw4_report.pm(learned)) and "(4 learned)" in cell and "(6 at chance)" in cell
    assert hw4_report.pm(exp.values(hw4_report.NET3, hw4.BEST_VAL)) not in cell
    randomness = hw4_report.claim_row(exp, hw4_report.CLAIMS[-1])
    assert randomness.judgement.verdict is hw4_report.Verdict.PARTLY
    assert "reproduced for Net1 and Net2" in randomness.judgement.reasons[0]
    assert "over the 4 seeds that learned" in randomness.measured


def test_the_seed_estimate_is_for_the_claimed_effect():
    # a claimed +0.4 points at a seed-to-seed spread of 0.9 points: the estimate does not use the measured +0.66
    cmp = hw4_report.Comparison(0.0066, 0.009, 10)
    judged = hw4_report.claim_verdict(cmp, 0.004, adjusted=0.1, family=6)
    needed = hw4_report.Comparison(0.004, 0.009, 10).seeds_for_power(0.0)
    assert any(f"about {needed} seeds would detect the claimed +0.4 points" in r for r in judged.reasons)
    assert needed != cmp.seeds_for_power(0.0) and not math.isnan(needed)
