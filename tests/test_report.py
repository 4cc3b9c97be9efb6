"""REPORT.md answers from the numbers, --seeds statistics, and the predict mode."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import hw4
from conftest import PHOTOS, demo_paths, run_cli

CLASSES = ["airplane", "bus", "cat", "dog", "pizza"]


def fake_results(name: str, val_accs: list[float], train_acc: float, grad_conv1: float,
                 val_confusion: np.ndarray, seed: int = 5, dead: float = 0.25) -> dict:
    epochs = len(val_accs)
    chain = [f"chain{k}" for k in range(1, 11)] if hw4.NETS[name].extra_convs else []
    return {
        "100steps": {k: [] for k in hw4.METRIC_KEYS},
        "epoch": {"train_cross_entropy": [1.0] * (epochs - 1) + [1.0 - train_acc],
                  "train_class_acc": [train_acc] * epochs,
                  "val_cross_entropy": [1.0] * epochs, "val_class_acc": val_accs},
        "confusion matrix": {"train confusion": np.eye(5, dtype=np.int64) * 10, "val confusion": val_confusion},
        "net": name, "label": hw4.NETS[name].label, "best_epoch": int(np.argmax(val_accs)) + 1,
        "classes": CLASSES, "params": 1000, "n_train": 50, "n_val": 50,
        "grad_norms": {"conv1": [grad_conv1] * epochs, "last_conv": [1.0] * epochs, "fc1": [1.0] * epochs},
        "dead_units": {layer: [dead] * epochs for layer in ("conv1", "conv2", *chain, "fc1")},
        "hardest": [{"class": "cat", "predicted": "dog", "loss": 3.0, "image_id": 7, "path": "val_data/cat_7.jpg",
                     "also_shows": ["dog"]}],
        "config": {"train_per_class": 10, "val_per_class": 10, "image_size": 64, "batch_size": 4,
                   "epochs": epochs, "lr": 0.001, "betas": [0.9, 0.99], "subset_seed": 5, "train_seed": seed},
    }


def confusion_with_cat_dog_errors(n: int) -> np.ndarray:
    m = np.eye(5, dtype=np.int64) * 10
    m[2, 3], m[3, 2], m[0, 1] = n, n - 1, 1
    return m


def test_report_follows_the_numbers(tmp_path):
    """Net1 beats Net2 here, Net3's first layer starves: the report must say exactly that."""
    runs = {
        "net1": [fake_results("net1", [0.5, 0.70, 0.68], 0.95, 2.0, confusion_with_cat_dog_errors(6))],
        "net2": [fake_results("net2", [0.5, 0.62, 0.61], 0.90, 2.0, confusion_with_cat_dog_errors(5))],
        "net3": [fake_results("net3", [0.2, 0.30, 0.31], 0.35, 0.001, confusion_with_cat_dog_errors(4))],
    }
    val = [{"split": "val", "class": c, "also_shows": also} for c, also in
           [("cat", ["dog"]), ("cat", []), ("dog", ["cat"]), ("dog", ["cat", "pizza"]), ("pizza", ["dog"])]]
    manifest = {"entries": val + [{"split": "train", "class": "cat", "also_shows": ["dog"]}]}
    cfg = hw4.Config(ann_file="a", image_dir="b", epochs=3)
    hw4.write_report(tmp_path, cfg, runs, {n: [1.0] for n in runs}, manifest)
    text = (tmp_path / "REPORT.md").read_text()
    assert "3 of the 4 val images of cat and dog show both (1 labelled cat, 2 labelled dog)" in text
    assert "Net2 − Net1 = -8.0 points of best val accuracy" in text
    assert "By best val accuracy: Net1 (70.0%) > Net2 (62.0%) > Net3 (31.0%)." in text
    assert "Best performer in this run: Net1." in text
    assert "Net3's first layer gets 2e+03× less gradient" in text
    assert "what vanishing gradients look like" in text
    assert "- Net3: no layer dies" in text and "a shrink by 10^3.0 from fc1 to conv1" in text
    assert "most confused pair **cat / dog** (11 images" in text
    assert "- Net1: train accuracy ends 27.0 points above val accuracy and val peaks at epoch 2 of 3: it overfits" in text
    assert "- Net3: train accuracy is only 35.0%" in text
    assert "| Net1 | 70.0% | 2 |" in text


def test_report_names_chance_level_and_appearance_confusions(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    runs = {"net3": [fake_results("net3", [0.2, 0.21], 0.2, 1.0, m)]}
    manifest = {"entries": [{"split": "val", "class": "cat", "also_shows": []},
                            {"split": "val", "class": "dog", "also_shows": []}]}
    hw4.write_report(tmp_path, hw4.Config(ann_file="a", image_dir="b", epochs=2), runs, {"net3": [1.0]}, manifest)
    text = (tmp_path / "REPORT.md").read_text()
    assert "- Net3: train accuracy 20.0% is at chance level (20.0%): it does not learn at all" in text
    assert "No val image of cat or dog shows the other class" in text
    assert "Not measured: this run did not train both net1 and net2." in text


def test_report_with_seeds_says_whether_differences_exceed_the_spread(tmp_path):
    m = confusion_with_cat_dog_errors(3)
    runs = {"net1": [fake_results("net1", [0.60], 0.7, 1, m), fake_results("net1", [0.64], 0.7, 1, m)],
            "net2": [fake_results("net2", [0.61], 0.7, 1, m), fake_results("net2", [0.63], 0.7, 1, m)],
            "net3": [fake_results("net3", [0.40], 0.5, 1, m), fake_results("net3", [0.41], 0.5, 1, m)]}
    cfg = hw4.Config(ann_file="a", image_dir="b", epochs=1, seeds=2)
    hw4.write_report(tmp_path, cfg, runs, {n: [1.0, 2.0] for n in runs})
    text = (tmp_path / "REPORT.md").read_text()
    assert "Net2 − Net1 = +0.0 points" in text
    assert "(mean of 2 paired seeds; 95% t-interval [-12.7, +12.7] points), and the interval includes 0" in text
    assert "| Net1 | 62.0 ± 2.8% |" in text
    assert "Net3 − Net1 = -21.5 points of best val accuracy (mean of 2 paired seeds; 95% t-interval " \
           "[-40.6, -2.4] points), and the interval excludes 0" in text


def test_seeds_2_keeps_per_seed_results_and_reports_mean_and_std(demo_coco, tmp_path):
    ann, images = demo_paths(demo_coco)
    out = tmp_path / "r"
    result = run_cli("--ann-file", ann, "--image-dir", images, "--train-per-class", "30", "--val-per-class", "10",
                     "--image-size", "32", "--epochs", "2", "--dataset-dir", tmp_path / "ds", "--out", out,
                     "--seeds", "2", "--nets", "net1", "net2", "--threads", "1")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "metrics.json").read_text())
    for name in ("net1", "net2"):
        best = []
        for seed in (5, 6):
            with open(out / f"seed_{seed}" / hw4.pickle_name(name), "rb") as f:
                best.append(max(pickle.load(f)["epoch"]["val_class_acc"]))
        assert summary["nets"][name]["best_val_acc"] == best
        assert summary["nets"][name]["best_val_acc_mean"] == pytest.approx(np.mean(best))
        assert summary["nets"][name]["best_val_acc_std"] == pytest.approx(np.std(best, ddof=1))
    diffs = np.subtract(summary["nets"]["net2"]["best_val_acc"], summary["nets"]["net1"]["best_val_acc"])
    half = 12.706 * np.std(diffs, ddof=1) / np.sqrt(2)
    assert summary["comparisons"]["net2-net1"]["ci95"] == pytest.approx([diffs.mean() - half, diffs.mean() + half])
    report = (out / "REPORT.md").read_text()
    assert "training seeds 5..6, paired across nets" in report and "paired seeds; 95% t-interval" in report
    assert "seed_5/hardest_net1.png" in report
    for fig in ("curves_epoch.png", "curves_100steps.png", "grad_norms.png", "dead_units.png", "samples.png"):
        assert (out / fig).is_file()
    assert (out / "seed_6" / "REPORT.md").is_file()


@pytest.fixture(scope="module")
def trained_weights(demo_coco, tmp_path_factory) -> Path:
    ann, images = demo_paths(demo_coco)
    tmp = tmp_path_factory.mktemp("weights")
    result = run_cli("--ann-file", ann, "--image-dir", images, "--train-per-class", "30", "--val-per-class", "10",
                     "--image-size", "32", "--epochs", "1", "--dataset-dir", tmp / "ds", "--out", tmp / "r",
                     "--nets", "net2", "--threads", "1")
    assert result.returncode == 0, result.stderr
    return tmp / "r" / "net2.pt"


def test_predict_on_fixture_photos(trained_weights):
    photos = sorted(PHOTOS.iterdir())
    rows = hw4.predict_images(trained_weights, photos)
    assert len(rows) == len(photos)
    for row in rows:
        probs = np.array(list(row["probs"].values()))
        assert list(row["probs"]) == CLASSES
        assert (probs >= 0).all() and probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["class"] == CLASSES[int(probs.argmax())]
    result = run_cli("predict", "--weights", trained_weights, *photos)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == len(photos)
    assert "chelsea.png: " in result.stdout


def test_predict_errors_are_clean(trained_weights, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    bogus = tmp_path / "bogus.pt"
    torch.save({"weight": torch.zeros(3)}, bogus)
    results_pickle = tmp_path / "results2.pkl"  # a likely mix-up; torch warns about its protocol
    results_pickle.write_bytes(pickle.dumps({"epoch": {}}, protocol=4))
    cases = [
        ((str(results_pickle), PHOTOS / "chelsea.png"), "is not hw4 weights"),
        ((str(trained_weights), text), f"cannot read {text} as an image"),
        ((str(trained_weights), tmp_path / "missing.jpg"), "image not found"),
        ((str(tmp_path / "none.pt"), PHOTOS / "chelsea.png"), "weights file not found"),
        ((str(bogus), PHOTOS / "chelsea.png"), "is not hw4 weights"),
        ((str(text), PHOTOS / "chelsea.png"), "is not hw4 weights"),
    ]
    for (weights, image), message in cases:
        result = run_cli("predict", "--weights", weights, image)
        assert result.returncode == 2, (weights, image)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_paired_interval_matches_a_hand_calculation():
    # diffs 0.02, 0.04, 0.03: mean 0.03, sd 0.01, se 0.01/sqrt(3), t(0.975, 2) = 4.303
    cmp = hw4.paired_difference([0.50, 0.60, 0.70], [0.52, 0.64, 0.73])
    half = 4.303 * 0.01 / np.sqrt(3)
    assert cmp["diff"] == pytest.approx(0.03)
    assert cmp["ci95"] == pytest.approx([0.03 - half, 0.03 + half])
    assert cmp["excludes_zero"] is True
    wide = hw4.paired_difference([0.5, 0.5], [0.6, 0.4])
    assert wide["ci95"] == pytest.approx([-0.1 * 12.706, 0.1 * 12.706]) and wide["excludes_zero"] is False
    one = hw4.paired_difference([0.5], [0.6])
    assert one["ci95"] is None and one["seeds"] == 1
    assert hw4.t_quantile_975(2) == 4.303 and hw4.t_quantile_975(40) == pytest.approx(2.021, abs=1e-3)
    assert hw4.t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)


def test_most_confused_pair_without_errors_and_single_class_nets():
    assert hw4.most_confused_pair(np.eye(3, dtype=np.int64) * 4, ["a", "b", "c"]) is None
    collapsed = np.zeros((5, 5), dtype=np.int64)
    collapsed[:, 4] = 10
    assert hw4.single_predicted_class(collapsed) == 4
    runs = {"net3": [fake_results("net3", [0.2], 0.2, 1.0, collapsed)],
            "net1": [fake_results("net1", [0.9], 0.9, 1.0, np.eye(5, dtype=np.int64) * 10)]}
    text = "\n".join(hw4.answer_hardest(runs, None))
    assert "Net3 predicts one class (pizza) for every val image, so it has no confused pair" in text
    assert "most confused pair" not in text and "- Net1: no val errors." in text


def test_dead_net3_is_reported_dead_with_an_exactly_zero_gradient(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    net3 = fake_results("net3", [0.2, 0.2, 0.2], 0.2, 0.0, m, dead=0.5)
    net3["grad_norms"]["conv1"] = [0.01, 0.0, 0.0]
    for layer in (*(f"chain{k}" for k in range(4, 11)), "fc1"):
        net3["dead_units"][layer] = [0.9, 1.0, 1.0]
    runs = {"net1": [fake_results("net1", [0.5, 0.6, 0.7], 0.9, 2.0, m)], "net3": [net3],
            "net3bn": [fake_results("net3bn", [0.5, 0.6, 0.7], 0.9, 2.0, m)]}
    hw4.write_report(tmp_path, hw4.Config(epochs=3), runs, {n: [1.0] for n in runs})
    text = (tmp_path / "REPORT.md").read_text()
    assert ("- Net3: from epoch 2, 7 of its 10 chain layers and fc1 are dead (every unit outputs 0 on the first "
            "256 val images); the gradient reaching conv1 is exactly 0 from epoch 2") in text
    assert "Net3's failure is dead units, not merely vanishing gradients" in text
    assert "Net3-BN keeps its units alive: 0 of 1 seed end with a dead layer." in text
    assert "- Measured: Net3-BN (Net3 with BatchNorm in the chain) reaches 70.0% best val accuracy (Net3: 20.0%)" in text
    assert "batch normalisation or residual connections" not in text, "advice only for what was not run"


def test_gradient_ratio_direction_and_grammar(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    runs = {"net1": [fake_results("net1", [0.6], 0.7, 0.5, m)], "net3": [fake_results("net3", [0.5], 0.6, 2.0, m)]}
    manifest = {"entries": [{"split": "val", "class": "cat", "also_shows": ["dog"]},
                            *[{"split": "val", "class": c, "also_shows": []} for c in ("cat", "dog", "dog")]]}
    hw4.write_report(tmp_path, hw4.Config(epochs=1), runs, {n: [1.0] for n in runs}, manifest)
    text = (tmp_path / "REPORT.md").read_text()
    assert "Net3's first layer gets 4× more gradient, relative to its classifier, than Net1's (no vanishing)" in text
    assert "1 of the 4 val images of cat and dog shows both" in text


def test_seeds_that_stay_at_chance_are_counted_apart(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    net1 = [fake_results("net1", [0.60 + k / 100], 0.9, 1.0, m, seed=5 + k) for k in range(3)]
    net3 = [fake_results("net3", [0.21], 0.2, 0.0, m, seed=5), fake_results("net3", [0.20], 0.2, 0.0, m, seed=6),
            fake_results("net3", [0.55], 0.7, 1.0, m, seed=7)]
    hw4.write_report(tmp_path, hw4.Config(epochs=1, seeds=3), {"net1": net1, "net3": net3}, {"net1": [1.0] * 3,
                                                                                        "net3": [1.0] * 3})
    text = (tmp_path / "REPORT.md").read_text()
    assert ("- Net3: 2 of 3 seeds stayed at chance (best val 20.5 ± 0.7%, seeds 5, 6); the 1 that learned "
            "reached 55.0%") in text
    assert "Net1: " not in text.split("## Q3")[1].split("## Q4")[0].replace("Net1 (", "")


def test_grad_norm_figure_draws_exact_zeros(tmp_path):
    m = confusion_with_cat_dog_errors(2)
    runs = {"net1": [fake_results("net1", [0.5, 0.6], 0.7, 1.0, m)],
            "net3": [fake_results("net3", [0.2, 0.2], 0.2, 0.0, m)]}
    fig_calls = []
    original = hw4.savefig_atomic

    def capture(fig, path):
        fig_calls.append(fig)
        original(fig, path)
    hw4.savefig_atomic, saved = capture, hw4.savefig_atomic
    try:
        hw4.plot_grad_norms(runs, tmp_path / "g.png")
    finally:
        hw4.savefig_atomic = saved
    labels = [ln.get_label() for ln in fig_calls[0].axes[0].get_lines()]
    assert "Net3: exactly 0 (drawn at the floor)" in labels
    zero_line = fig_calls[0].axes[0].get_lines()[labels.index("Net3: exactly 0 (drawn at the floor)")]
    assert list(zero_line.get_xdata()) == [1, 2] and all(y > 0 for y in zero_line.get_ydata())
    assert (tmp_path / "g.png").stat().st_size > 1000
