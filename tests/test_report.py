"""REPORT.md answers from the numbers, the claims table's verdicts, --seeds statistics, and predict."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hw4
import hw4_records
import hw4_report
from conftest import (COMMITTED, CPU, ROOT, assert_one_line_exit_2, claim, cli, files_under, reference_args,
                      run_copy, skip_rendering)

CLASSES = ["airplane", "bus", "cat", "dog", "pizza"]


def fake_results(name: str, val_accs: list[float], train_acc: float, grad_conv1: float,
                 val_confusion: np.ndarray, seed: int = 5, dead: float = 0.25) -> hw4.Results:
    """Hand-made Results: train accuracy flat at train_acc, val accuracy as given, conv1's gradient."""
    epochs = len(val_accs)
    chain = [f"chain{k}" for k in range(1, 11)] if hw4.NETS[name].extra_convs else []
    return hw4.Results(
        net=name, label=hw4.NETS[name].label, classes=CLASSES,
        config={"train_per_class": 10, "val_per_class": 10, "image_size": 64, "batch_size": 4, "epochs": epochs,
                "lr": 0.001, "betas": [0.9, 0.99], "subset_seed": 5, "train_seed": seed},
        steps100={k: [] for k in hw4.metric_keys()},
        epoch={"train_cross_entropy": [1.0] * (epochs - 1) + [1.0 - train_acc], "train_class_acc": [train_acc] * epochs,
               "val_cross_entropy": [1.0] * epochs, "val_class_acc": list(val_accs)},
        train_clean={"train_clean_cross_entropy": [1.0 - train_acc] * epochs,
                     "train_clean_class_acc": [train_acc] * epochs},
        train_confusion=np.eye(5, dtype=np.int64) * 10, val_confusion=val_confusion,
        best_epoch=int(np.argmax(val_accs)) + 1,
        grad_norms={"conv1": [grad_conv1] * epochs, "last_conv": [1.0] * epochs, "fc1": [1.0] * epochs},
        grad_norms_steps100={"conv1": [grad_conv1], "last_conv": [1.0], "fc1": [1.0]},
        dead_units={layer: [dead] * epochs for layer in ("conv1", "conv2", *chain, "fc1")},
        fc1_in_features=100, params=hw4.spec_parameter_count(hw4.NETS[name], 64, 5), n_train=50, n_val=50,
        hardest=[hw4.HardImage("cat", "dog", 3.0, 7, "val_data/cat_7.jpg", ["dog"], 0)], train_time_s=1.0,
        spec=dataclasses.asdict(hw4.NETS[name]))


def confusion_with_cat_dog_errors(n: int) -> np.ndarray:
    m = np.eye(5, dtype=np.int64) * 10
    m[2, 3], m[3, 2], m[0, 1] = n, n - 1, 1
    return m


def facts(val_entries=()) -> hw4.DatasetFacts:
    """Dataset facts of 10 + 10 images per class whose val images (class, also_shows) are as given."""
    manifest = {"classes": CLASSES, "counts": {split: {c: 10 for c in CLASSES} for split in ("train", "val")},
                "config": {"exclusive": False}, "entries": [{"split": "val", "class": c, "also_shows": also}
                                                            for c, also in val_entries]}
    return hw4.DatasetFacts.from_manifest(manifest)


def report(tmp_path, runs, dataset=None) -> str:
    hw4_report.write_report(tmp_path, hw4_report.Experiment(runs, dataset or facts()))
    return (tmp_path / "REPORT.md").read_text()


def test_report_follows_the_numbers(tmp_path):
    """Net1 beats Net2 here and Net3's first layer starves: the report must say exactly that."""
    runs = {
        "net1": [fake_results("net1", [0.5, 0.70, 0.68], 0.95, 2.0, confusion_with_cat_dog_errors(6))],
        "net2": [fake_results("net2", [0.5, 0.62, 0.61], 0.90, 2.0, confusion_with_cat_dog_errors(5))],
        "net3": [fake_results("net3", [0.2, 0.30, 0.31], 0.35, 0.001, confusion_with_cat_dog_errors(4))],
    }
    val = [("cat", ["dog"]), ("cat", []), ("dog", ["cat"]), ("dog", ["cat", "pizza"]), ("pizza", ["dog"])]
    text = report(tmp_path, runs, facts(val))
    assert "3 of the 20 val images of cat and dog show both in COCO's annotations (1 labelled cat, 2 dog)" in text
    padding = hw4_report.claim_row(hw4_report.Experiment(runs, facts(val)), hw4_report.CLAIMS[1]).judgement
    assert padding.verdict is hw4_report.Verdict.NOT_RESOLVED and padding.scope == "at one seed"
    assert "per-picture best-epoch val predictions not recorded" in padding.reasons[0]
    assert "where each learned: Net1 (70.0%) > Net2 (62.0%) > Net3 (31.0%)." in text
    assert "One seed cannot rank the nets" in text and "Best in this run" not in text
    assert "| Net3 | 5 | 0.001 | 0.001 | not recorded | not recorded | none | none | never | vanishing |" in text
    assert "Net3 against Net1, over 1 seed: vanishing in 1." in text
    assert "| Net1 | **cat / dog** | 92% |" in text  # 11 of its 12 val errors
    assert "| Net1 | 1 of 1 | 70.0% [55.4, 82.1] | 2 |" in text  # one seed: the val pictures' Clopper-Pearson interval
    assert "overfits: a 27.0-point gap, val peaks at epoch 2" in text
    assert "| Net3 | 1 of 1 | 31.0% [19.5, 46.7] | 3 |" in text
    assert "underfits" in text.split("| Net3 | 1 of 1 | 31.0%")[1].split("\n")[0]
    assert "revives" not in text and "not small: none" not in text


def test_a_net_at_chance_gets_one_plain_sentence(tmp_path):
    """A net at chance in every seed (here predicting one class per seed, as Net3 does on real COCO) has
    no confusion analysis: summing two constant predictors would invent a 'most confused pair'."""
    one_class = [np.zeros((5, 5), dtype=np.int64) for _ in range(2)]
    one_class[0][:, 4], one_class[1][:, 2] = 10, 10
    runs = {"net1": [fake_results("net1", [0.6], 0.9, 1.0, confusion_with_cat_dog_errors(2), seed=s) for s in (5, 6)],
            "net3": [fake_results("net3", [0.2], 0.2, 0.0, m, seed=s) for m, s in zip(one_class, (5, 6))]}
    q4 = report(tmp_path, runs).split("## Q4")[1].split("## Q5")[0]
    assert "- Net3 stayed at chance in every seed: it has not learned to tell the classes apart" in q4
    assert q4.count("most confused pair") == 1 and "lowest recall: pizza" not in q4
    assert "No val image of cat or dog shows the other class" in q4
    assert "seed_5/hardest_net1.png" in q4


def test_report_with_seeds_says_whether_differences_exceed_the_spread(tmp_path):
    m = confusion_with_cat_dog_errors(3)
    runs = {"net1": [fake_results("net1", [0.60], 0.7, 1, m), fake_results("net1", [0.64], 0.7, 1, m, seed=6)],
            "net2": [fake_results("net2", [0.61], 0.7, 1, m), fake_results("net2", [0.63], 0.7, 1, m, seed=6)],
            "net3": [fake_results("net3", [0.40], 0.5, 1, m), fake_results("net3", [0.41], 0.5, 1, m, seed=6)]}
    text = report(tmp_path, runs)
    exp = hw4_report.Experiment(runs, facts())
    padding = exp.decision(hw4_report.PairTest("net1", "net2", hw4.BEST_VAL), threshold=True)
    assert padding.side == 0 and padding.verdict is hw4_report.Verdict.NOT_RESOLVED
    assert padding.tested.cmp.ci95 == pytest.approx((-0.127062, 0.127062), abs=1e-6)
    deep = exp.decision(hw4_report.PairTest("net1", "net3", hw4.BEST_VAL), threshold=True)
    assert deep.tested.cmp.ci95[1] < 0 and deep.tested.family_name == "the claims table"
    assert "| Net1 | 2 of 2 | 62.0 ± 2.8% |" in text and "training seeds 5..6, paired across nets" in text
    assert "- Net3 − Net1: " not in text, "decided once, in the claims, not again as a Q3 bullet"
    row = next(k for k, c in enumerate(hw4_report.CLAIMS) if c.words.endswith("> Net3 on val."))
    assert hw4_report.claim_row(exp, hw4_report.CLAIMS[row]).judgement.verdict is not hw4_report.Verdict.REPRODUCED


def single(cmp: hw4_report.Comparison) -> hw4_report.Tested:
    """A comparison tested alone (a family of one)."""
    return hw4_report.test_family({0: cmp}, "a family of one")[0]


def verdict(cmp: hw4_report.Comparison, claimed: float | None, threshold: bool = False) -> str:
    return hw4_report.verdict_text(hw4_report.decide(single(cmp), claimed, threshold=threshold).shown)


def test_paired_interval_matches_a_hand_calculation():
    # diffs 0.02, 0.04, 0.03: mean 0.03, sd 0.01, se 0.01/sqrt(3), t(0.975, 2) = 4.302653
    cmp = hw4_report.paired_difference([0.50, 0.60, 0.70], [0.52, 0.64, 0.73])
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert cmp.diff == pytest.approx(0.03) and cmp.ci95 == pytest.approx([0.03 - half, 0.03 + half])
    assert hw4_report.decide(single(cmp), threshold=True).side == 1
    wide = hw4_report.paired_difference([0.5, 0.5], [0.6, 0.4])
    assert wide.ci95 == pytest.approx([-0.1 * 12.706205, 0.1 * 12.706205])
    assert hw4_report.decide(single(wide), threshold=True).side == 0
    one = hw4_report.paired_difference([0.5], [0.6])
    assert one.ci95 is None and one.seeds == 1 and not one.parts
    assert hw4_report.t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert hw4_report.t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)
    assert hw4_report.t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    # +3 points, sd 2: the seeds that exclude 0 with 80% power, checked against a simulation of paired seeds
    n = hw4_report.seeds_for_power(0.03, 0.02)
    rng = np.random.default_rng(0)

    def resolved_share(seeds: int) -> float:
        d = rng.normal(0.03, 0.02, (20_000, seeds))
        half = hw4_report.t_quantile_975(seeds - 1) * d.std(axis=1, ddof=1) / np.sqrt(seeds)
        return float(np.mean(d.mean(axis=1) - half > 0))
    assert resolved_share(n) >= 0.78 and resolved_share(n - 1) < 0.8
    assert hw4_report.seeds_for_power(0.0, 0.02) is None
    flat = hw4_report.paired_difference([0.5] * 3, [0.5] * 3)
    assert flat.ci95 is None and flat.degenerate


def interval(low: float, high: float, seeds: int = 3) -> hw4_report.Comparison:
    """A Comparison whose paired 95% interval is [low, high] at this many seeds."""
    z = np.linspace(-1, 1, seeds)
    sd = (high - low) / 2 * np.sqrt(seeds) / hw4_report.t_quantile_975(seeds - 1)
    diffs = (low + high) / 2 + z / np.std(z, ddof=1) * sd
    return hw4_report.paired_difference(np.zeros(seeds), diffs)


def test_the_claims_verdict_rule():
    """One vocabulary: a claimed +0.8 point gain against intervals that decide each verdict. The verdict is a
    typed value; its words come from verdict_text alone."""
    V = hw4_report.Verdict
    assert verdict(interval(0.001, 0.020), 0.008) == "reproduced"
    decided = {k: hw4_report.decide(single(interval(*k)), 0.008).verdict
               for k in [(0.001, 0.005), (-0.012, 0.011), (-0.030, -0.010), (-0.010, 0.002)]}
    assert decided == {(0.001, 0.005): V.PARTLY, (-0.012, 0.011): V.NOT_RESOLVED, (-0.030, -0.010): V.NOT_REPRODUCED,
                       (-0.010, 0.002): V.NOT_REPRODUCED}, "the last: the interval excludes the claimed value"
    assert verdict(interval(0.001, 0.005), 0.008).startswith(
        "partly reproduced (the direction holds, but the interval excludes the claimed +0.8 points: the effect is "
        "smaller)")
    assert verdict(interval(0.001, 0.005), None) == "reproduced", "a direction only: 0 is excluded"
    assert verdict(interval(-0.030, -0.010), 0.008) == "not reproduced (resolved on the side opposite to the claim)"
    unresolved = verdict(interval(-0.012, 0.011), 0.008)
    assert unresolved.startswith("not resolved at 3 seeds (the paired t-test does not exclude 0"), unresolved
    assert "opposite" not in unresolved, "an unresolved sign is no sign"
    # the seed estimate is for the claimed effect at the measured spread, not for the measured difference
    spread = interval(-0.012, 0.011).sd
    needed = hw4_report.seeds_for_power(0.008, spread)
    assert f"about {needed} seeds (" in unresolved and "give 80% power for the claimed +0.8 points" in unresolved
    assert needed != hw4_report.seeds_for_power(interval(-0.012, 0.011).diff, spread)
    flat = hw4_report.paired_difference([0.5] * 3, [0.5] * 3)
    assert verdict(flat, None).startswith("not resolved at 3 seeds (the difference is +0.0 points in every seed")
    assert verdict(hw4_report.paired_difference([0.5], [0.51]), 0.004).startswith("not resolved at one seed")
    J = hw4_report.Judgement
    x = J(V.NOT_RESOLVED, ("x",), "at 3 seeds")
    assert hw4_report.combined_verdict([J(V.REPRODUCED), x]) is x and hw4_report.verdict_text(x) == "not resolved at 3 seeds (x)"
    assert hw4_report.combined_verdict([J(V.REPRODUCED), J(V.NOT_REPRODUCED)]).verdict is V.NOT_REPRODUCED
    assert hw4_report.combined_verdict([J(V.REPRODUCED), J(V.PARTLY, ("y",))]) == J(V.PARTLY, ("y",))
    first = J(V.NOT_TESTABLE, ("z",), colon=True)
    assert hw4_report.combined_verdict([first, J(V.NOT_TESTABLE, ("w",))]) is first, "ties: the first part"
    assert hw4_report.verdict_text(first.adding("reproduced for Net1")) == "not testable here: z; reproduced for Net1"
    # a reason that reads like another verdict changes nothing: no code reads the words back
    odd = J(V.REPRODUCED, ("not reproduced elsewhere",))
    assert hw4_report.combined_verdict([odd, J(V.PARTLY)]).verdict is V.PARTLY


def test_an_interval_that_clears_0_by_less_than_the_report_shows_says_so():
    """The exercise's 10 seeds: Net2 − Net1 has a lower end of +0.0011 points, which would print as +0.0."""
    thin = interval(0.000011, 0.0132, seeds=10)
    assert "(95% CI [+0.0011, +1.3], 10 paired seeds)" in hw4_report.difference_text(thin)
    assert verdict(thin, 0.004) == "reproduced (barely: the interval's lower end is +0.0011 points)"
    assert verdict(interval(-0.02, -0.000004), None, threshold=True) == \
        "not reproduced (barely: the interval's upper end is -0.00040 points)"
    assert verdict(interval(0.0006, 0.0132), 0.004) == "reproduced", "+0.06 prints as +0.1: no note"
    assert "[-0.2, +1.3]" in hw4_report.difference_text(interval(-0.002, 0.0132)), "ends away from 0 keep one decimal"


def test_statistics_helpers_match_published_values():
    assert hw4_report.clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert hw4_report.clopper_pearson(3, 10) == pytest.approx((0.0667, 0.6525), abs=1e-4)
    assert hw4_report.chi2_quantile(40, True) == pytest.approx(55.758, abs=0.02)
    low, high = hw4_report.std_bounds([0.60, 0.61, 0.59])  # s = 0.01, 2 degrees of freedom
    assert high == pytest.approx(0.01 * np.sqrt(2 / 0.102587), rel=1e-5) and low == pytest.approx(0.01 * np.sqrt(2 / 5.991465))
    # diffs 0.02, 0.04, 0.03: t = 0.03 / (0.01 / sqrt 3); at 2 degrees of freedom p = 1 - t / sqrt(2 + t^2)
    t = 0.03 / (0.01 / np.sqrt(3))
    p = hw4_report.t_part([0.02, 0.04, 0.03]).p
    assert p == pytest.approx(1 - t / np.sqrt(2 + t * t), rel=1e-6)
    assert [p <= 0.05 for p in hw4_report.holm_adjusted([0.01, 0.04, 0.03])] == [True, False, False]
    assert [p <= 0.05 for p in hw4_report.holm_adjusted([0.001, 0.01, 0.04])] == [True] * 3
    assert hw4_report.attainable([0.0, 0.25, 0.0156, 0.0]) == ([0, 2, 3], 0.05 / 3), "0.25 never reaches 0.05 / 3"


def claims(runs) -> dict[str, tuple[str, str]]:
    """The claims of a run, as typed records worded once: claim words -> (measured, verdict)."""
    exp = hw4_report.Experiment(runs, facts())
    return {c.words: (r.measured or "—", hw4_report.verdict_text(r.judgement))
            for c, r in ((c, hw4_report.claim_row(exp, c)) for c in hw4_report.CLAIMS)}


def test_claims_table_on_three_seeds(tmp_path):
    m = confusion_with_cat_dog_errors(5)
    runs = {"net1": [fake_results("net1", [0.60 + d], 0.95, 2.0, m, seed=5 + k) for k, d in enumerate((0, .01, .02))],
            "net2": [fake_results("net2", [0.61 + d], 0.95, 2.0, m, seed=5 + k) for k, d in enumerate((0, -.02, .03))],
            "net3": [fake_results("net3", [0.2], 0.2, 0.0, np.eye(5, dtype=np.int64), seed=5 + k, dead=1.0)
                     for k in range(3)]}
    rows = claims(runs)
    assert len(rows) == len(hw4_report.CLAIMS)
    q1_val = rows["Padding increased val accuracy by 0.4 points (Net2 over Net1)."]
    assert q1_val[1].startswith("not resolved at 3 seeds") and "Net2 − Net1 +0.3 points (95% CI" in q1_val[0]
    q2 = rows["Net3 shows vanishing gradients: its loss decreases slowly because the gradients get very small."]
    assert q2[1].startswith("not resolved at 3 seeds"), q2[1]
    assert "no spread to stand on" in q2[1], "the same ratio in every seed of fake data: no t-test"
    assert "rather than" not in q2[1], "dead units and a small gradient are not set against each other"
    assert "| gradient vanishes early | 0 | 2 |" in report(tmp_path, runs), "Q2's table: the medians, per part"
    assert rows["Net2 is the best performer: Net2 > Net1 > Net3 on val."][1].startswith("not resolved")
    cat_dog = rows["Cat/dog is the hardest pair for all three nets."][1]
    assert cat_dog.startswith("not testable here: Net3 never learned (at chance in 3 of 3 seeds; a seed in which it "
                              "learns is at most 71% likely") and cat_dog.endswith("reproduced for Net1 and Net2"), cat_dog
    assert rows[claim("“Net3 has some difficulties").words][1].startswith(
        "not testable here: Net3 never learned")
    assert rows["Net1 and Net2 overfit, with a large gap between train and val accuracy."][1] == "reproduced"
    randomness = "The run-to-run randomness (no seed fixed) will not change the performance significantly."
    conclusions = "not reproduced for its Q1 and Q3 findings (a seed can reverse them)"
    assert rows[randomness][1] == ("not reproduced (not resolved for Net1 and Net2 (Net1's upper bound reaches 2 points; "
                                   f"Net2's upper bound reaches 2 points); {conclusions}; Net3 stayed at chance in every "
                                   "seed, so it is left out)")
    assert ("train 0.00 (the original's effect +0.8; Net2 not above Net1 in 3 of 3), val 2.08 (+0.4; 1 of 3)"
            in rows[randomness][0]), "the seed's effect on the original's own Net2 - Net1 conclusion"
    assert "Net2 2.5 (11.1)" in rows[randomness][0], "Net2 varies by 2.5 points, at most 11.1 (95% upper bound)"
    calm = {name: [fake_results(name, [v], 0.95, 2.0, m, seed=5 + k) for k, v in enumerate(values)]
            for name, values in (("net1", (0.600, 0.602, 0.604)), ("net2", (0.603, 0.601, 0.609)))}
    calm["net3"] = runs["net3"]
    verdict = claims(calm)[randomness]
    assert verdict[1] == "reproduced (Net3 stayed at chance in every seed, so it is left out)" and \
        "Order: Net2 > Net1 > Net3 in 2, Net1 > Net2 > Net3 in 1 of 3 seeds." in verdict[0], \
        "the order may change within the noise: the original allows it, and claims only no significant change"
    wild = dict(calm, net2=[fake_results("net2", [v], 0.95, 2.0, m, seed=5 + k) for k, v in enumerate((0.5, 0.6, 0.7))])
    assert claims(wild)[randomness][1] == (
        "partly reproduced (reproduced for Net1; not for Net2 (Net2's std is over 2 points even at its lower "
        "bound); not for its Q1 and Q3 findings (a seed can reverse them); Net3 stayed at chance in every seed, so it "
        "is left out)"), "judged per net"
    only_net1 = claims({"net1": runs["net1"]})
    assert only_net1["Cat/dog is the hardest pair for all three nets."] == ("—", "not testable here (this run has no net2, "
                                                                             "net3)")
    assert (tmp_path / "claims.png").is_file() and "(claims.png)" in report(tmp_path, runs)
    assert "Net1's 5,408: 58–61 px" in report(tmp_path, runs), "the original's fc1 sizes do not fit 64×64"


def test_nets_at_chance_get_no_zero_width_intervals_or_tie_break_epochs(tmp_path):
    m = np.eye(5, dtype=np.int64) * 2
    chance = {name: [fake_results(name, [0.2, 0.2, 0.2], 0.2, 0.0, m, seed=5 + k) for k in range(3)]
              for name in ("net3", "net3xavier")}
    text = report(tmp_path, chance)
    assert "[+0.0, +0.0]" not in text
    assert ("| Xavier initialisation for the weights of each layer | Net3-Xavier (vs Net3) | 0 vs 0 of 3 | 20.0 vs 20.0% | "
            "0.0 vs 0.0 | — | — | not testable here: both at chance in 3 of 3 seeds |") in text
    assert "| Net3 | 0 of 3 | 20.0 ± 0.0% | — (at chance) |" in text


def test_q5_measures_every_remedy_and_advises_only_nets_that_exist(tmp_path):
    m = confusion_with_cat_dog_errors(3)
    runs = {"net1": [fake_results("net1", [0.6, 0.62], 0.95, 2.0, m)],
            "net1half": [fake_results("net1half", [0.5, 0.55], 0.97, 2.0, m)],
            "net3": [fake_results("net3", [0.2, 0.2], 0.2, 0.0, m, dead=1.0)],
            "net3he": [fake_results("net3he", [0.4, 0.5], 0.6, 1.0, m)],
            "net1res50": [fake_results("net1res50", [0.5, 0.54], 0.9, 2.0, m)]}
    text = report(tmp_path, runs)
    q5 = text.split("## Q5")[1].split("\n## ")[0]
    assert ("best val accuracy 54.0% at 32×32, 62.0% at 64×64, a slope of +4.0 points per 16 pixels of side. It says "
            "how much the side matters below 64×64, not what a side above it would give.") in q5
    rows = [line for line in q5.splitlines() if line.startswith("| ") and "---" not in line]
    measured = {r.key for r, _ in hw4_report.remedy_rows(hw4_report.Experiment(runs, facts()))}
    assert measured == {"data", "he", "resolution"}
    assert len(rows) == 1 + len(measured) + sum(not r.testable for r in hw4_report.REMEDIES), "one row per measured net"
    unmeasured = next(line for line in q5.splitlines() if line.startswith("Not measured in this run: "))
    assert all((r.key in measured) != (r.words in unmeasured) for r in hw4_report.REMEDIES if r.testable)
    assert "| more training images per class | Net1-half (vs Net1) | 1 vs 1 of 1 | 55.0 vs 62.0% |" in q5
    assert "training on 50.0% of the images: not resolved at one seed (one seed has no interval" in q5
    assert "would likely" not in q5
    assert "| He's initialisation of the convs, the one for ReLU (hw4's addition) | Net3-He (vs Net3) |" in q5
    assert "| Net3-He (vs Net3) | 1 vs 0 of 1 |" in q5, "seeds that learned: Net3-He against Net3"
    assert "| a higher resolution than 64×64 | — | | | | | | not testable here: no picture of this dataset" in q5
    assert "| lower resolutions, 32 and 48 px of the same pictures (hw4's measurement) | Net1-res0.5 (vs Net1) | " \
           "1 vs 1 of 1 | 54.0 vs 62.0% |" in q5
    for names in re.findall(r"`--nets ([^`]*)`", text):
        assert set(names.split()) <= set(hw4.NETS), names


def test_dead_net3_is_reported_dead_and_batchnorm_keeps_it_alive(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    net3 = fake_results("net3", [0.2, 0.2, 0.2], 0.2, 0.0, m, dead=0.5)
    net3.grad_norms["conv1"] = [0.01, 0.0, 0.0]
    for layer in (*(f"chain{k}" for k in range(4, 11)), "fc1"):
        net3.dead_units[layer] = [0.9, 1.0, 1.0]
    net3res = fake_results("net3res", [0.2, 0.2, 0.2], 0.2, 0.0, m)
    net3res.dead_units["fc1"] = [1.0, 1.0, 1.0]  # the head dies whatever the residual chain does
    runs = {"net1": [fake_results("net1", [0.5, 0.6, 0.7], 0.9, 2.0, m)], "net3": [net3],
            "net3bn": [fake_results("net3bn", [0.5, 0.6, 0.7], 0.9, 2.0, m)], "net3res": [net3res]}
    text = report(tmp_path, runs)
    assert "Net3-Res against Net1, over 1 seed: vanishing, then dead in 1" in text
    assert "| Net3-Res | 5 | 0 | 0 | not recorded | not recorded | fc1 (epoch 1) | fc1 | 1 | vanishing, then dead |" \
        in text, "what died in the remedy, beside its base's row of the same seed in the appendix"
    assert ("| Net3 | 5 | 0 | 0.01 | not recorded | not recorded | chain4, chain5, chain6, chain7, chain8, chain9, "
            "chain10, fc1 (epoch 2) | 7 of 10 chain layers, fc1 | 2 | vanishing, then dead |") in text
    assert "Net3 against Net1, over 1 seed: vanishing, then dead in 1." in text
    net3.dead_units["chain10"] = [1.0, 0.0, 0.0]  # dead after epoch 1, alive again at the end
    assert "| chain10 (epoch 1); chain10 came back |" in report(tmp_path, runs), "a recovery is said, not hidden"
    assert "Net3-BN against Net1, over 1 seed: healthy in 1; early gradient ratio 2." in text, "a remedy judged against Net1, as Net3 is"
    assert "| batch normalisation for Net3 | Net3-BN (vs Net3) | 1 vs 0 of 1 | 70.0 vs 20.0% |" in text
    assert "batch normalisation, residual connections or a better initialisation could" not in text, \
        "advice only for what was not run"


def test_gradient_reading_and_chance_seeds(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    healthy = {"net1": [fake_results("net1", [0.6], 0.7, 0.5, m)], "net3": [fake_results("net3", [0.5], 0.6, 2.0, m)]}
    assert "| Net3 | 5 | 2 | 2 | not recorded | not recorded | none | none | never | healthy |" in report(tmp_path, healthy)
    net1 = [fake_results("net1", [0.60 + k / 100], 0.9, 1.0, m, seed=5 + k) for k in range(3)]
    net3 = [fake_results("net3", [0.21], 0.2, 0.0, m, seed=5), fake_results("net3", [0.20], 0.2, 0.0, m, seed=6),
            fake_results("net3", [0.55], 0.7, 1.0, m, seed=7)]
    text = report(tmp_path, {"net1": net1, "net3": net3})
    assert "| Net3 | 1 of 3 (1–91%) | 55.0% |" in text, "learned in 1 of 3 (Clopper–Pearson), values over that seed"
    assert "20.5" not in text.split("## Results")[1].split("## Figures")[0], "no mean or std over both regimes"


def test_grad_norm_figure_draws_exact_zeros():
    m = confusion_with_cat_dog_errors(2)
    runs = {"net1": [fake_results("net1", [0.5, 0.6], 0.7, 1.0, m)], "net3": [fake_results("net3", [0.2, 0.2], 0.2, 0.0, m)]}
    fig = hw4.draw_grad_norms(runs, None)
    per_epoch = next(ax for ax in fig.axes if ax.get_title() == "conv1: gradient norm, per epoch")
    lines = per_epoch.get_lines()
    labels = [line.get_label() for line in lines]
    zero_line = lines[labels.index("exactly 0 (drawn at the floor)")]
    assert zero_line.get_color() == lines[labels.index("Net3")].get_color(), "in Net3's colour"
    assert list(zero_line.get_xdata()) == [1, 2] and all(y > 0 for y in zero_line.get_ydata())
    assert [ax.get_title() for ax in fig.axes][:3] == [f"{layer}: gradient norm, per 100 iterations of epoch 1"
                                                      for layer in ("conv1", "last conv", "fc1")]


def test_seeds_2_keeps_per_seed_results_and_reports_mean_and_std(tiny_built, tmp_path, monkeypatch):
    cfg, _ = tiny_built
    cfg = dataclasses.replace(cfg, dataset_dir=str(tmp_path / "ds"))  # a copy: it is moved away below
    shutil.copytree(tiny_built[0].dataset_dir, cfg.dataset_dir)
    out = tmp_path / "r"
    rendered = skip_rendering(monkeypatch)  # where each figure goes is checked here; drawing them, elsewhere
    result = cli("--ann-file", cfg.ann_file, "--image-dir", cfg.image_dir, "--train-per-class", "85",
                 "--val-per-class", "15", "--image-size", "16", "--epochs", "1", "--dataset-dir", cfg.dataset_dir,
                 "--out", out, "--seeds", "2", "--nets", "net1", "net2", *CPU)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "metrics.json").read_text())
    for name in ("net1", "net2"):
        best = []
        for seed in (5, 6):
            with open(out / f"seed_{seed}" / hw4.pickle_name(name), "rb") as f:
                best.append(max(pickle.load(f)["epoch"]["val_class_acc"]))
        assert summary["nets"][name]["best_val_class_acc"] == best
        assert summary["nets"][name]["best_val_class_acc_mean"] == pytest.approx(np.mean(best))
        assert summary["nets"][name]["best_val_class_acc_std"] == pytest.approx(np.std(best, ddof=1))
    diffs = np.subtract(summary["nets"]["net2"]["best_val_class_acc"], summary["nets"]["net1"]["best_val_class_acc"])
    half = 12.706205 * np.std(diffs, ddof=1) / np.sqrt(2)
    pair = summary["comparisons"]["net2-net1"]
    if any(summary["nets"][name]["seeds_at_chance"] for name in ("net1", "net2")):  # two regimes: no t-interval
        assert pair["ci95"] is None and pair["diffs"] == pytest.approx(list(diffs))
        assert all(t["test"] == "REGIMES" or t["conditional"] for t in pair["tests"])
    else:
        assert pair["ci95"] == pytest.approx([diffs.mean() - half, diffs.mean() + half])
        assert [t["test"] for t in pair["tests"]] == ["T"]
    assert len(summary["claims"]) == len(hw4_report.CLAIMS)
    text = (out / "REPORT.md").read_text()
    assert "training seeds 5..6, paired across nets" in text and "seed_5/hardest_net1.png" in text
    for plot in hw4.FIGURES:
        assert (out / plot.file if not plot.per_net else out / "seed_6" / plot.file.format(net="net2")) in rendered
    assert (out / "seed_6" / "REPORT.md").is_file()

    # `report` rewrites every report from the metrics.json files alone: no checkpoints, no dataset
    written = {p: p.read_bytes() for p in [out / "REPORT.md", out / "metrics.json", *out.glob("seed_*/REPORT.md")]}
    for path in written:  # a seed's own report is rewritten where it is (blanked here), the run's where it is not
        if path.name == "REPORT.md":
            path.write_text("") if path.parent != out else path.unlink()
    rendered.clear()
    (out / "metrics.json").write_text((out / "metrics.json").read_text().replace('"seeds": 2', '"seeds": 2 '))
    hidden = tmp_path / "elsewhere"
    Path(cfg.dataset_dir).rename(hidden)  # the dataset is not needed
    try:
        for folder in out.glob("seed_*/checkpoints"):
            shutil.rmtree(folder)
        rewrote = cli("report", out)
    finally:
        hidden.rename(cfg.dataset_dir)
    assert rewrote.returncode == 0, rewrote.stderr
    assert {p: p.read_bytes() for p in written} == written
    assert {out / "curves_epoch.png", out / "claims.png", out / "seed_6" / "confusion_net2_val.png"} <= set(rendered)
    assert not any(p.name.startswith(("samples", "hardest")) for p in rendered), "no pictures without the dataset"

    # --resume takes finished nets from metrics.json when their checkpoints are gone: a third seed trains alone
    grown = cli("--ann-file", cfg.ann_file, "--image-dir", cfg.image_dir, "--train-per-class", "85",
                "--val-per-class", "15", "--image-size", "16", "--epochs", "1", "--dataset-dir", cfg.dataset_dir,
                "--out", out, "--seeds", "3", "--nets", "net1", "net2", "--resume", *CPU)
    assert grown.returncode == 0, grown.stderr
    assert grown.stdout.count("taken from there") == 4, grown.stdout
    assert grown.stdout.count("epoch  1/1") == 2
    assert json.loads((out / "metrics.json").read_text())["nets"]["net1"]["best_val_class_acc"][:2] == \
        summary["nets"]["net1"]["best_val_class_acc"]


def test_report_refuses_what_is_not_a_finished_run(tmp_path):
    assert_one_line_exit_2(cli("report", tmp_path), "metrics.json not found")
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert_one_line_exit_2(cli("report", tmp_path), "not the metrics.json of a finished hw4 run")


def test_reference_args_are_what_the_report_describes(tiny_built, reference):
    text = (reference / "REPORT.md").read_text()
    assert "85 train and 15 val images per class at 16×16" in text and "2 epochs" in text
    assert any("--epochs" == str(a) for a in reference_args(tiny_built, reference))


def test_report_on_a_stopped_seeds_run_uses_the_seeds_that_finished(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    m = confusion_with_cat_dog_errors(2)
    m[0, 0] += 50 - m.sum()  # the 50 val pictures the fake results say they evaluated
    for seed, nets in ((5, ("net1", "net2")), (6, ("net1", "net2")), (7, ("net1",))):
        runs = {n: fake_results(n, [0.5, 0.6 + seed / 100], 0.9, 1.0, m, seed=seed) for n in nets}
        hw4.write_json_atomic(tmp_path / f"seed_{seed}" / "metrics.json", {
            "format": hw4.METRICS_FORMAT, "config": runs["net1"].config, "dataset": dataclasses.asdict(facts()),
            "nets": {n: dataclasses.asdict(r) for n, r in runs.items()}})
    ran = cli("report", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "seed_7 is unfinished (it lacks net2); the report leaves it out" in ran.stdout
    assert "training seeds 5..6, paired across nets" in (tmp_path / "REPORT.md").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["nets"]["net1"]["seeds"] == [5, 6]
    # a stopped `--seeds N --resume` finishes seed 7 after that summary: the next report takes it in
    runs = {n: fake_results(n, [0.5, 0.67], 0.9, 1.0, m, seed=7) for n in ("net1", "net2")}
    hw4.write_json_atomic(tmp_path / "seed_7" / "metrics.json", {
        "format": hw4.METRICS_FORMAT, "config": runs["net1"].config, "dataset": dataclasses.asdict(facts()),
        "nets": {n: dataclasses.asdict(r) for n, r in runs.items()}})
    again = cli("report", tmp_path)
    assert again.returncode == 0 and "unfinished" not in again.stdout, again.stdout + again.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["nets"]["net1"]["seeds"] == [5, 6, 7]


def on_cpu(r: hw4.Results, cpu: str) -> hw4.Results:
    """The Results as if trained on this CPU model (the infrastructure that training records)."""
    return dataclasses.replace(r, infrastructure={"device": "cpu", "cpu": cpu, "cpus": 2, "gpu": None, "torch": "2.x",
                                                  "python": "3.11", "os": "Linux", "threads": 1, "hw4_commit": "a" * 40})


def test_a_seed_whose_nets_ran_on_two_machines_is_never_paired(tmp_path, monkeypatch):
    """Seed 7's Net2 ran on another CPU: every comparison with Net2 leaves seed 7 out and says so, the Q2
    pairing of Net3 with Net1 keeps all three seeds, and the infrastructure line names both machines."""
    skip_rendering(monkeypatch)
    m = confusion_with_cat_dog_errors(3)
    accs = {"net1": (0.60, 0.62, 0.64), "net2": (0.61, 0.64, 0.90), "net3": (0.40, 0.42, 0.41)}
    runs = {name: [on_cpu(fake_results(name, [a], 0.7, 1, m, seed=s), "Model B" if (name, s) == ("net2", 7)
                          else "Model A") for a, s in zip(values, (5, 6, 7))] for name, values in accs.items()}
    exp = hw4_report.Experiment(runs, facts())
    cmp = exp.compare("net1", "net2")
    assert cmp.seeds == 2 and cmp.unpaired == (7,) and cmp.diff == pytest.approx(0.015)  # seed 7's +26 left out
    assert exp.compare("net1", "net3").seeds == 3 and exp.compare("net1", "net3").unpaired == ()
    text = report(tmp_path, runs)
    assert "Net2 − Net1 +1.5 points (95% CI [" in text and "2 paired seeds; seed 7 left out: its two nets ran on " \
                                                             "different machines)" in text
    assert "Net3 against Net1, over 3 seeds:" in text
    infra = next(line for line in text.splitlines() if line.startswith("Infrastructure"))
    assert infra.startswith("Infrastructure, 2 machines: CPU Model A (2 cores), 1 torch thread per net"), infra
    assert "hw4 commit aaaaaaaaaaaa (seeds 5, 6; Net1, Net3 of seed 7). CPU Model B (2 cores)" in infra
    assert "hw4 commit aaaaaaaaaaaa (Net2 of seed 7)." in infra
    summary = tmp_path / "summary"
    summary.mkdir()
    hw4_report.write_seeds_summary(summary, exp)
    assert json.loads((summary / "metrics.json").read_text())["comparisons"]["net2-net1"]["unpaired"] == [7]


def test_nets_that_never_shared_a_machine_are_not_compared(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    m = confusion_with_cat_dog_errors(3)
    runs = {"net1": [on_cpu(fake_results("net1", [0.6 + s / 100], 0.7, 1, m, seed=s), "Model A") for s in (5, 6)],
            "net1drop": [on_cpu(fake_results("net1drop", [0.7 + s / 100], 0.7, 1, m, seed=s), "Model B") for s in (5, 6)]}
    exp = hw4_report.Experiment(runs, facts())
    assert exp.compare("net1", "net1drop").seeds == 0
    text = report(tmp_path, runs)
    assert ("not testable here: the two nets ran on different machines in every seed (seed 5, 6), so none pairs them"
            not in text)
    assert "not testable here: the two nets ran on different machines in every seed (seeds 5, 6), so none pairs them" \
        in text
    assert "+10.0 points" not in text  # the machines' difference is never shown as the nets'


def test_resume_onto_another_cpu_type_says_the_new_nets_will_not_pair(tiny_built, reference, tmp_path, monkeypatch):
    """A seed whose finished nets were recorded on another CPU: --resume says so in one line at start, names
    both machines, trains the missing net anyway, and the report then leaves that seed out of its pairs."""
    skip_rendering(monkeypatch)
    out = tmp_path / "r"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints")
    blob = json.loads((out / "metrics.json").read_text())
    for entry in blob["nets"].values():
        entry["infrastructure"]["cpu"] = "Elsewhere CPU 9000"
    del blob["nets"]["net1drop"]
    (out / "metrics.json").write_text(json.dumps(blob))
    ran = cli(*reference_args(tiny_built, out), "--resume")
    assert ran.returncode == 0, ran.stderr
    notes = [line for line in ran.stdout.splitlines() if line.startswith("note: seed 5 already has")]
    here = hw4.machine_of(hw4.infrastructure(torch.device("cpu"), 1))
    assert len(notes) == 1 and "Net1, Net1-aug, Net1-noise, Net3-BN trained on CPU Elsewhere CPU 9000" in notes[0], \
        ran.stdout
    assert f"this machine is {here}" in notes[0] and "will not pair" in notes[0]
    assert ran.stdout.index(notes[0]) < ran.stdout.index(" epoch ")  # said before training, and it trains
    row = next(line for line in (out / "REPORT.md").read_text().splitlines() if line.startswith("| dropout | Net1-drop"))
    assert "| not paired (seed 5 left out: its two nets ran on different machines) | — | not testable here: the two " \
           "nets ran on different machines in every seed (seed 5), so none pairs them |" in row, row


EXERCISE_ALL = Path(__file__).resolve().parents[1] / "results" / "exercise-all"


def seed_copy(tmp_path: Path, seed: int = 10) -> Path:
    """One committed exercise-all seed with per-picture predictions, as a one-seed run of its own."""
    run = tmp_path / f"seed_{seed}"
    run.mkdir()
    shutil.copy(EXERCISE_ALL / f"seed_{seed}" / "metrics.json", run / "metrics.json")
    return run


def edit_metrics(run: Path, change) -> dict[str, bytes]:
    blob = json.loads((run / "metrics.json").read_text())
    change(blob["nets"])
    (run / "metrics.json").write_text(json.dumps(blob))
    return {p.name: p.read_bytes() for p in run.iterdir()}


def test_forged_val_labels_are_refused_before_anything_is_written(tmp_path):
    """Labels set to a net's own predictions would make every comparison over the pictures a forgery: the best
    predictions must count up to the recorded val confusion matrix."""
    run = seed_copy(tmp_path)
    before = edit_metrics(run, lambda nets: nets["net1"]["val_predictions"].update(
        labels=nets["net1"]["val_predictions"]["best"]))
    assert_one_line_exit_2(cli("report", run), "nets.net1.val_predictions.best does not count up to val_confusion")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_labels_that_differ_between_nets_of_a_seed_are_refused(tmp_path):
    """Two pictures swapped in one net's labels and predictions alike keep its own counts, but not the seed's val
    set: every net of a seed saw the same pictures in the same order."""
    run = seed_copy(tmp_path)

    def swap(nets):
        preds = nets["net2"]["val_predictions"]
        labels = preds["labels"]
        k = next(k for k in range(1, len(labels)) if labels[k] != labels[0])
        for key in ("labels", "best", "final"):
            preds[key][0], preds[key][k] = preds[key][k], preds[key][0]

    before = edit_metrics(run, swap)
    assert_one_line_exit_2(cli("report", run), "nets.net2.val_predictions.labels differ from nets.net1's")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_final_predictions_must_give_the_final_val_accuracy(tmp_path):
    run = seed_copy(tmp_path)
    preds = json.loads((run / "metrics.json").read_text())["nets"]["net1"]["val_predictions"]
    wrong = next(k for k, (f, y) in enumerate(zip(preds["final"], preds["labels"])) if f == y)
    edit_metrics(run, lambda nets: nets["net1"]["val_predictions"]["final"].__setitem__(
        wrong, (preds["labels"][wrong] + 1) % 5))
    assert_one_line_exit_2(cli("report", run), "nets.net1.val_predictions.final does not give the final val accuracy")


def test_figures_survive_odd_class_names_and_a_bogus_mplbackend(tmp_path):
    code = ("import hw4, io; f = hw4.new_figure(); ax = f.subplots(); ax.set_title('air$\\\\bogus{$plane'); "
            "b = io.BytesIO(); f.savefig(b, format='png'); print('drawn')")
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MPLBACKEND": "bogus"})
    assert ran.returncode == 0 and "drawn" in ran.stdout, ran.stderr


def test_a_net_field_cannot_point_a_figure_outside_the_run(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path)
    (tmp_path / "victim_train.png").write_bytes(b"the user's")
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    blob["nets"]["net1"]["net"] = "x/../../../victim"
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    before = files_under(tmp_path)
    assert_one_line_exit_2(cli("report", run), "seed_6/metrics.json: nets.net1.net does not name the same net")
    assert files_under(tmp_path) == before and not (tmp_path / "victim_val.png").exists()


def test_a_summarys_seeds_cannot_lead_the_report_elsewhere(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path)
    assert cli("report", run).returncode == 0  # writes the summary metrics.json that lists the seeds
    other = tmp_path / "other"
    shutil.copytree(run / "seed_7", other)
    blob = json.loads((run / "metrics.json").read_text())
    blob["nets"]["net1"]["seeds"] = [5, "6/../../other"]
    (run / "metrics.json").write_text(json.dumps(blob))
    before = files_under(other)
    assert_one_line_exit_2(cli("report", run), "its seeds are not a list of distinct training seeds")
    assert files_under(other) == before


def test_a_symlinked_seed_folder_is_refused(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(COMMITTED / "seed_7", elsewhere, ignore=shutil.ignore_patterns("*.png", "*.pkl", "*.pt"))
    os.symlink(elsewhere, run / "seed_7")
    before = files_under(elsewhere)
    assert_one_line_exit_2(cli("report", run), "seed_7 is a symlink")
    assert files_under(elsewhere) == before


def test_a_stray_seed_0005_is_not_a_second_seed_5(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    shutil.copytree(run / "seed_5", run / "seed_0005")
    ran = cli("report", run)
    assert ran.returncode == 0, ran.stderr
    assert json.loads((run / "metrics.json").read_text())["nets"]["net1"]["seeds"] == [5, 6]


def test_report_on_a_read_only_run_is_one_line_before_any_write(tmp_path, monkeypatch):
    """As root, permissions do not stop a write: a read-only mount is simulated at the one probe hw4 makes."""
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    real_mkdir = Path.mkdir

    def read_only_mount(self, *args, **kwargs):
        if self.name.startswith(".hw4-probe"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mount)
    before = files_under(run)
    assert_one_line_exit_2(cli("report", run), "report: the run folder", "Read-only file system")
    assert files_under(run) == before


SCHEMA_FAULTS = {  # field to change -> (its new value, the words the one line must have)
    "epoch as a string": (("epoch",), "x", "nets.net1.epoch.val_class_acc is not a list"),
    "no classes": (("classes",), [], "nets.net1.classes is not a list of 2 to 1,000 distinct names"),
    "classes as ints": (("classes",), [1, 2, 3, 4, 5], "nets.net1.classes is not a list"),
    "1,000 classes": (("classes",), [f"c{k}" for k in range(1000)], "nets.net1.train_confusion is not a 1000x1000"),
    "config as a list": (("config",), [1, 2], "nets.net1.config is not an object"),
    "3-D confusion": (("val_confusion",), [[[1]]], "nets.net1.val_confusion is not a 5x5 matrix"),
    "scalar confusion": (("val_confusion",), 7, "nets.net1.val_confusion is not a 5x5 matrix"),
    "no cpus": (("infrastructure", "cpus"), None, "nets.net1.infrastructure.cpus is missing"),
    "short series": (("epoch", "train_class_acc"), [0.5], "nets.net1.epoch.train_class_acc has 1 values, not 15"),
    "accuracy 97": (("epoch", "val_class_acc"), [97.0] * 15, "nets.net1.epoch.val_class_acc holds 97.0, outside 0..1"),
    "10,001 epochs": (("epoch", "val_class_acc"), [0.5] * 10_001, "nets.net1.epoch has 10,001 epochs, more than the 10,000"),
    "dead units out of range": (("dead_units", "conv1"), [5, -3, 1e300] + [0] * 12, "nets.net1.dead_units.conv1 holds 5"),
    "a negative gradient norm": (("grad_norms", "conv1"), [-1.0] * 15, "nets.net1.grad_norms.conv1 holds -1.0, outside 0..1e+30"),
    "a loss of 1e300": (("epoch", "train_cross_entropy"), [1e300] * 15, "nets.net1.epoch.train_cross_entropy holds 1e+300"),
    "a count of 10**30": (("n_train",), 10 ** 30, "nets.net1.n_train is not a count"),
    "a confusion cell of 10**30": (("val_confusion",), [[10 ** 30] * 5] * 5, "nets.net1.val_confusion is not a 5x5"),
    "a time of 1e308 s": (("train_time_s",), 1e308, "nets.net1.train_time_s is not a time in seconds"),
    "batch size 0": (("config", "batch_size"), 0, "nets.net1.config has a batch size or epoch count"),
    "a negative learning rate": (("config", "lr"), -1.0, "nets.net1.config has a learning rate or Adam betas"),
    "no betas": (("config", "betas"), [], "nets.net1.config has a learning rate or Adam betas"),
    "a spec that escapes": (("spec", "pickle_name"), "../../x.pkl", "nets.net1.spec.pickle_name is not what a net spec"),
    "a spec of 10**6 channels": (("spec", "channels"), [10 ** 6, 32], "nets.net1.spec.channels is not what a net spec"),
    "a spec field hw4 lacks": (("spec", "colour"), "red", "nets.net1.spec does not hold the fields of a net spec"),
    "seed 2**100": (("config", "train_seed"), 2 ** 100, "nets.net1.config.train_seed is not a training seed"),
    "no last_conv gradient": (("grad_norms", "last_conv"), None, "nets.net1.grad_norms.last_conv is missing"),
    "no dead units": (("dead_units",), {}, "nets.net1.dead_units.conv1 is missing"),
    "markup in the cpu": (("infrastructure", "cpu"), "\x1b[31mEVIL\x1b[0m\n\n# injected <script>x</script>",
                          "nets.net1.infrastructure.cpu is not plain text"),
    "html in the label": (("label",), "<img src=x onerror=alert(1)>", "nets.net1.label is not plain text"),
    "train 100-step series cut": (("steps100", "train_class_acc"), [0.5] * 7,
                                  "nets.net1.steps100 has series of different lengths"),
    "best epoch 0": (("best_epoch",), 0, "nets.net1.best_epoch is not an epoch from 1 to 15"),
    "params of another net": (("params",), 13_669, "nets.net1.params is not Net1's parameter count at 64x64"),
    "hardest without a path": (("hardest", 0, "path"), None, "nets.net1.hardest[0].path is missing"),
    "predictions too short": (("val_predictions",), {"labels": [0] * 2500, "best": [0] * 7},
                              "nets.net1.val_predictions.best is not one class index (0..4) per val image (2500)"),
    "a predicted class out of range": (("val_predictions",), {"labels": [0] * 2500, "best": [5] * 2500},
                                       "nets.net1.val_predictions.best is not one class index"),
    "predictions without labels": (("val_predictions",), {"best": [0] * 2500},
                                   "nets.net1.val_predictions.labels is missing"),
}


@pytest.mark.parametrize("fault", SCHEMA_FAULTS)
def test_a_metrics_json_hw4_did_not_write_is_one_line_naming_the_field(fault, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    keys, value, words = SCHEMA_FAULTS[fault]
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    *parents, last = keys
    target = blob["nets"]["net1"]
    for k in parents:
        target = target[k]
    if value is None:
        del target[last]
    else:
        target[last] = value
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    before = files_under(run)
    assert_one_line_exit_2(cli("report", run), "seed_6/metrics.json: " + words)
    assert files_under(run) == before


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("text, words", [
    (nested(100_000), "nested too deeply"),
    ('{"format": 99, "nets": {"a": 1}}', f"format 99 is not the one this hw4 reads ({hw4.METRICS_FORMAT}); update hw4"),
    ('{"format": 2, "nets": {"a": 1}}', "format 2 is an earlier hw4's, which this one no longer reads"),
    ('{"nets": {"net1": {"config": {"betas": ' + nested(700) + '}}}}', "nests deeper than 32 levels"),
])
def test_unreadable_nesting_and_formats_are_one_line(text, words, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    (run / "seed_6" / "metrics.json").write_text(text)
    assert_one_line_exit_2(cli("report", run), words)


def test_a_metrics_json_over_the_size_cap_is_not_parsed(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    monkeypatch.setattr(hw4_records, "METRICS_MAX_BYTES", 1000)
    assert_one_line_exit_2(cli("report", run), "over the 0 MB an hw4 metrics.json can reach")


def test_seeds_of_other_settings_are_not_pooled(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    for entry in blob["nets"].values():
        entry["config"].update(lr=0.5, batch_size=64)
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    assert_one_line_exit_2(cli("report", run), "was trained with other settings than", "batch_size, lr")
    shutil.copytree(run / "seed_5", run / "seed_7")
    shutil.rmtree(run / "seed_6")
    assert_one_line_exit_2(cli("report", run), "seed_7/metrics.json: net1 was trained with seed 5, not 7")


def test_an_interrupted_report_says_what_it_was_doing(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(hw4_report, "write_run_reports", interrupted)
    ran = cli("report", run)
    assert ran.returncode == 130 and "interrupted while rewriting the reports; every file is whole" in ran.stderr
    assert "nothing was trained" not in ran.stderr and "checking the arguments" not in ran.stderr


def test_seeds_whose_100_iteration_series_differ_in_length_are_not_pooled(tmp_path, monkeypatch):
    """Each seed's file is valid on its own, but a mean over seeds needs series of one length."""
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    steps = blob["nets"]["net1"]["steps100"]
    for key in ("train_cross_entropy", "train_class_acc"):
        steps[key] = steps[key][:7]
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    before = files_under(run)
    assert_one_line_exit_2(cli("report", run), "seed_6/metrics.json: net1's 100-iteration series are not as long")
    assert files_under(run) == before


def test_report_of_one_seed_needs_no_lock_in_a_read_only_run_around_it(tmp_path, monkeypatch):
    """`report OUT/seed_<s>` locks OUT too, against a training that writes the whole run; an OUT it cannot write to
    has no such training, so a writable seed folder is reported all the same."""
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != run and real_access(path, mode))
    ran = cli("report", run / "seed_5")
    assert ran.returncode == 0, ran.stderr
    assert not (run / hw4_records.RUN_LOCK).exists() and (run / "seed_5" / "REPORT.md").exists()


def test_identical_seeds_shifted_back_to_a_gap_get_no_t_test():
    """Three seeds with one gap: the difference against the threshold keeps a rounding crumb of spread, the gap
    shifted back has none, and neither is given an interval that claims certainty (nor divides by zero)."""
    cmp = hw4_report.paired_difference([0.1] * 3, [0.7837985890347726] * 3)
    assert cmp.sd != 0, "the crumb this test is about"
    gap = hw4_report.shifted(cmp, 0.1)
    assert gap.degenerate and gap.parts == () and gap.ci95 is None


@pytest.mark.parametrize("change, words", [
    (lambda d: d["counts"]["train"].update({next(iter(d["counts"]["train"])): -10 ** 30}), "dataset.counts is not a count"),
    (lambda d: d.update(source="<script>x</script>"), "dataset.source is not plain text"),
])
def test_dataset_facts_out_of_range_or_with_markup_are_one_line(change, words, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    change(blob["dataset"])
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    assert_one_line_exit_2(cli("report", run), words)
