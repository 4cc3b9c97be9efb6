"""Picture-level statistics: what a one-seed run can test (McNemar on two nets' val pictures, two proportions on
a train - val gap), the per-picture val predictions that metrics.json keeps for it, and runs saved without them."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import hw4_records
import hw4_report
from test_report import confusion_with_cat_dog_errors, fake_results, report
from conftest import ROOT, claim, hw4

WITHOUT_PREDICTIONS = ROOT / "results" / "exercise-all" / "seed_5"  # its Net1-3 predate per-picture predictions


def test_mcnemar_matches_a_hand_calculation():
    # 100 pictures: 60 both right, 8 only b right, 2 only a right, 30 both wrong
    a = np.array([True] * 60 + [False] * 8 + [True] * 2 + [False] * 30)
    b = np.array([True] * 60 + [True] * 8 + [False] * 2 + [False] * 30)
    test = hw4_report.mcnemar_test(a, b)
    assert test.test is hw4_report.Test.MCNEMAR and test.diff == pytest.approx(0.06)
    assert test.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 8 or more of 10 (and 2 or fewer), doubled
    # Clopper-Pearson for 8 of 10 is [0.44390, 0.97479]; the difference is 10/100 x (2 pi - 1)
    assert (test.low, test.high) == pytest.approx((0.1 * (2 * 0.44390 - 1), 0.1 * (2 * 0.97479 - 1)), abs=1e-4)
    assert hw4_report.mcnemar_test(a, a).test is None  # no picture that only one got right: nothing to test


def test_the_two_proportion_interval_covers_and_agrees_with_its_test():
    # coverage of the true gap (95% train accuracy on 1,000 pictures, 60% val on 300), by simulation
    rng = np.random.default_rng(0)
    truth, covered = 0.95 - 0.60, 0
    for k1, k2 in zip(rng.binomial(1000, 0.95, 2000), rng.binomial(300, 0.60, 2000)):
        test = hw4_report.proportions_test(int(k1), 1000, int(k2), 300)
        covered += test.low <= truth <= test.high
    assert 0.93 <= covered / 2000 <= 0.97
    # the interval excludes the threshold exactly when the test rejects it
    for k2 in range(150, 300, 7):
        test = hw4_report.proportions_test(900, 1000, k2, 300, offset=0.1)
        assert (test.low > 0 or test.high < 0) == (test.p_value < 0.05)
    assert hw4_report.proportions_test(1000, 1000, 150, 300).high < 1  # honest at 100%: no zero-width side


def with_predictions(r: hw4.Results, best_right: int, final_right: int, n_val: int = 500) -> hw4.Results:
    """r judged on n_val val pictures, of which the first best_right (final_right) are right at the best (final)
    epoch: the predictions agree with its accuracies."""
    labels = [k % 5 for k in range(n_val)]
    wrong = [(c + 1) % 5 for c in labels]
    return dataclasses.replace(r, n_train=1000, n_val=n_val, val_predictions={
        "labels": labels, "best": labels[:best_right] + wrong[best_right:],
        "final": labels[:final_right] + wrong[final_right:]})


def test_a_one_seed_run_gets_picture_level_verdicts(tmp_path):
    runs = {
        "net1": [with_predictions(fake_results("net1", [0.5, 0.70, 0.68], 0.95, 2.0, confusion_with_cat_dog_errors(6)),
                                  350, 340)],
        "net2": [with_predictions(fake_results("net2", [0.5, 0.62, 0.61], 0.90, 2.0, confusion_with_cat_dog_errors(5)),
                                  310, 305)],
        "net3": [with_predictions(fake_results("net3", [0.2, 0.30, 0.31], 0.35, 0.001, confusion_with_cat_dog_errors(4)),
                                  150, 155)],
    }
    text = report(tmp_path, runs)
    exp = hw4_report.Experiment(runs, None)
    rows = {k: f"{r.measured} | {hw4_report.verdict_text(r.judgement)} |" for k, r in
            enumerate((hw4_report.claim_row(exp, c) for c in hw4_report.CLAIMS), 1)}
    # Q1 val: Net2 is 40 pictures worse, all of them pictures only Net1 got right -> exact McNemar resolves it
    assert "Net2 − Net1 -8.0 points (95% CI [" in rows[2] and "exact McNemar over the 500 val pictures" in rows[2]
    assert rows[2].endswith("| not reproduced over val pictures, one training seed (resolved on the side opposite "
                            "to the claim) |")
    # the overfitting gap of Net1 (95% train, 68% val): two proportions over 1,000 train and 500 val pictures
    assert "two-proportion over 1,000 train and 500 val pictures, one training seed" in rows[8]
    assert rows[8].endswith("| reproduced over train and val pictures, one training seed |")
    assert "| Net1 | 1 of 1 | 70.0% [65.8, 74.0] |" in text  # the binomial interval of one seed's accuracy
    assert "not resolved at one seed" in rows[1]  # a train accuracy has no picture-level test
    assert "the intervals cover the variation over the pictures only" in text


def test_a_run_saved_without_predictions_says_so(tmp_path):
    runs, facts = hw4_records.seed_results(WITHOUT_PREDICTIONS / "metrics.json")
    runs = {name: runs[name] for name in ("net1", "net2", "net3")}  # trained before predictions were saved
    assert all(r.val_predictions == {} for r in runs.values())
    exp = hw4_report.Experiment({name: [r] for name, r in runs.items()}, facts)
    q1_val = hw4_report.claim_row(exp, claim("Padding increased val accuracy"))
    assert q1_val.judgement.verdict is hw4_report.Verdict.NOT_RESOLVED and q1_val.judgement.scope == "at one seed"
    assert "per-picture best-epoch val predictions not recorded, so no picture-level test" in q1_val.judgement.reasons[0]
    # a gap needs only counts, so it is tested over the pictures all the same
    gap = hw4_report.claim_row(exp, claim("Net1 and Net2 overfit"))
    assert gap.judgement.verdict is hw4_report.Verdict.REPRODUCED and gap.judgement.scope.startswith("over train and val")


def test_metrics_json_keeps_each_val_pictures_prediction(reference):
    entry = json.loads((reference / "metrics.json").read_text())["nets"]["net1"]
    preds, n = entry["val_predictions"], entry["n_val"]
    assert set(preds) == {"labels", "best", "final"} and all(len(v) == n for v in preds.values())
    classes = len(entry["classes"])
    confusion = np.zeros((classes, classes), dtype=int)
    np.add.at(confusion, (preds["labels"], preds["best"]), 1)
    assert confusion.tolist() == entry["val_confusion"]  # the best epoch's predictions, as its confusion counts them
    final = np.mean(np.array(preds["final"]) == np.array(preds["labels"]))
    assert final == pytest.approx(entry["epoch"]["val_class_acc"][-1])
    hw4_records.check_results_entry("net1", entry)
    for bad in ([0] * (n - 1), [classes] + preds["best"][1:], [True] + preds["best"][1:]):
        with pytest.raises(hw4.SchemaError, match="val_predictions.best"):
            hw4_records.check_results_entry("net1", {**entry, "val_predictions": {**preds, "best": bad}})


def test_the_reference_runs_remedies_are_tested_over_its_val_pictures(reference):
    """A real one-seed run: each remedy against its base is McNemar's test on the same val pictures."""
    q5 = (reference / "REPORT.md").read_text().split("## Q5")[1]
    n_val = json.loads((reference / "metrics.json").read_text())["nets"]["net1"]["n_val"]
    rows = [line for line in q5.splitlines() if "(vs Net1)" in line]
    assert len(rows) == 3 and all(f"exact McNemar over the {n_val} val pictures, one training seed" in r for r in rows)
    method = (reference / "REPORT.md").read_text().split("## Method")[1]
    assert "two nets' val accuracies by an exact McNemar test on the val pictures" in method


def test_a_multi_seed_run_with_predictions_gives_the_pictures_spread(tmp_path):
    m = confusion_with_cat_dog_errors(3)
    runs = {name: [with_predictions(fake_results(name, [acc + d], 0.9, 1.0, m, seed=s), round(500 * (acc + d)),
                                    round(500 * (acc + d)))
                   for s, d in ((5, 0.0), (6, 0.02), (7, -0.01))]
            for name, acc in (("net1", 0.60), ("net2", 0.62))}
    text = report(tmp_path, runs)
    half = np.median([(lambda lo_hi: (lo_hi[1] - lo_hi[0]) / 2)(hw4_report.clopper_pearson(round(500 * a), 500))
                      for a in (0.60, 0.62, 0.59, 0.62, 0.64, 0.61)])
    assert (f"within a seed, the 500 val pictures alone give ±{100 * half:.1f} points (Net2 − Net1: ±") in text
    assert "not recorded" not in text.split("## Results")[1].split("## Figures")[0]
