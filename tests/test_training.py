"""Training, evaluation and outputs: metrics, determinism, pickles, figures and the CLI end to end."""
from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hw4
from conftest import (CPU, PHOTOS, REFERENCE_NETS, assert_one_line_exit_2, cli, reference_args, skip_rendering)

ORIGINAL_KEYS = ("train_cross_entropy", "train_class_acc", "val_cross_entropy", "val_class_acc")


def train_tiny(tiny_built, tmp_path, name="net1", **overrides):
    cfg, manifest = tiny_built
    cfg = dataclasses.replace(cfg, out=str(tmp_path), **overrides)
    torch.set_num_threads(cfg.threads)
    data = hw4.load_dataset_tensors(cfg.dataset_dir, manifest)
    state = hw4.train(name, data, manifest, cfg, torch.device("cpu"))
    return cfg, manifest, data, state


def test_training_lowers_the_loss_and_records_everything(tiny_built, tmp_path):
    cfg, manifest, data, state = train_tiny(tiny_built, tmp_path)
    hist = state.history
    assert hist.epoch["train_cross_entropy"][1] < hist.epoch["train_cross_entropy"][0]
    for key in ORIGINAL_KEYS:
        assert len(hist.epoch[key]) == cfg.epochs
    # 425 train images = 107 iterations: one 100-iteration window per epoch; 75 val images: none
    assert [len(hist.steps100[k]) for k in ORIGINAL_KEYS] == [2, 2, 0, 0]
    for layer in hw4.GRAD_LAYERS:
        assert len(hist.grad_norms[layer]) == cfg.epochs and min(hist.grad_norms[layer]) > 0
    assert list(hist.dead_units) == ["conv1", "conv2", "fc1"]
    assert all(len(v) == cfg.epochs and 0 <= min(v) <= max(v) <= 1 for v in hist.dead_units.values())

    results = hw4.results_from_state(state, cfg, manifest, data)
    assert results.best_epoch == 1 + int(np.argmax(hist.epoch["val_class_acc"]))
    for split, matrix, n in (("train", results.train_confusion, 425), ("val", results.val_confusion, 75)):
        assert matrix.dtype == np.int64 and matrix.shape == (5, 5) and matrix.sum() == n
        assert np.trace(matrix) / n == pytest.approx(hist.epoch[f"{split}_class_acc"][results.best_epoch - 1],
                                                     abs=1e-12)
    assert len(results.hardest) == 5 * hw4.HARDEST_PER_CLASS
    val_ids = {e["image_id"]: e for e in manifest["entries"] if e["split"] == "val"}
    for name in manifest["classes"]:
        losses = [h.loss for h in results.hardest if h.label == name]
        assert losses == sorted(losses, reverse=True)
    for h in results.hardest:
        assert val_ids[h.image_id]["class"] == h.label
        assert int(data.val_y[h.val_position]) == manifest["classes"].index(h.label)


def test_100_step_means_match_a_per_step_recomputation(tiny_built, tmp_path):
    """The vectorised bookkeeping equals the original's running sums over 100 iterations."""
    cfg, manifest, data, state = train_tiny(tiny_built, tmp_path, epochs=1)
    hw4.seed_everything(cfg.seed, torch.device("cpu"))  # replay epoch 1 with the original's per-batch loop, same seed
    layout = hw4.memory_format(torch.device("cpu"))
    net = hw4.build_net("net1", cfg.image_size, manifest["classes"]).to(memory_format=layout)
    opt = hw4.make_optimizer(net, cfg, torch.device("cpu"))
    perm = hw4.epoch_permutation(len(data.train_x), cfg.seed, 0, torch.device("cpu"))
    running_loss = running_acc = 0.0
    for i in range(100):
        idx = perm[i * 4:(i + 1) * 4]
        out = net((data.train_x[idx].float() / 255).contiguous(memory_format=layout))
        loss = torch.nn.functional.cross_entropy(out, data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        running_loss += loss.item()
        running_acc += (out.argmax(1) == data.train_y[idx]).float().mean().item()
    got = state.history.steps100
    assert got["train_cross_entropy"][0] == pytest.approx(running_loss / 100, rel=1e-5)
    assert got["train_class_acc"][0] == pytest.approx(running_acc / 100, rel=1e-6)


def test_same_seed_same_metrics_and_independent_of_order(tiny_built, tmp_path):
    *_, a = train_tiny(tiny_built, tmp_path / "a", name="net2")
    train_tiny(tiny_built, tmp_path / "b", name="net1")  # another net first must not matter
    *_, b = train_tiny(tiny_built, tmp_path / "b", name="net2")
    assert a.history == b.history
    assert all(torch.equal(v, b.best.state_dict[k]) for k, v in a.best.state_dict.items() if isinstance(v, torch.Tensor))
    *_, c = train_tiny(tiny_built, tmp_path / "c", name="net2", train_seed=6)
    assert c.history.epoch != a.history.epoch


def test_each_epoch_has_its_own_order():
    cpu = torch.device("cpu")
    first, second = (hw4.epoch_permutation(50, 5, e, cpu) for e in (0, 1))
    assert not torch.equal(first, second)
    assert torch.equal(first, hw4.epoch_permutation(50, 5, 0, cpu))
    assert sorted(first.tolist()) == list(range(50))


def test_half_the_data_is_a_fixed_stratified_share():
    labels = torch.arange(5).repeat_interleave(20)
    half = hw4.training_indices(labels, 0.5, subset_seed=5)
    assert torch.equal(half, hw4.training_indices(labels, 0.5, subset_seed=5)), "the same half in every seed"
    assert torch.bincount(labels[half]).tolist() == [10] * 5 and half.unique().numel() == 50
    assert not torch.equal(half, hw4.training_indices(labels, 0.5, subset_seed=6))
    assert torch.equal(hw4.training_indices(labels, 1.0, subset_seed=5), torch.arange(100))


def test_confusion_matrix_rows_are_true_labels():
    labels, preds = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    assert (hw4.confusion_matrix(labels, preds, 3) == np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])).all()


def test_seeding_makes_cuda_deterministic_and_keeps_tf32_off():
    """The flags are set where a run is seeded, so train() gets them however it is called (README: TF32 off)."""
    torch.backends.cudnn.benchmark = True
    hw4.seed_everything(5, torch.device("cuda"))  # flags only: no CUDA device is needed to set them
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    hw4.seed_everything(5, torch.device("cpu"))  # the CPU's kernels are deterministic without torch's costly mode
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic


def test_adam_is_fused_on_the_cpu():
    net = hw4.build_net("net1", 16, ("a", "b"))
    assert hw4.make_optimizer(net, hw4.Config(), torch.device("cpu")).defaults["fused"] is True


def test_device_auto_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else ("cpu" if not torch.accelerator.is_available() else None)
    if expected:
        assert hw4.pick_device("auto").type == expected
    assert hw4.pick_device("cpu").type == "cpu"


def is_png(path: Path) -> bool:
    with Image.open(path) as img:
        img.verify()
        return img.format == "PNG"


def figure_files(nets) -> list[str]:
    """Every file of FIGURES for these nets: the writer, REPORT.md and this list read one table."""
    return [p.file.format(net=n) for p in hw4.FIGURES for n in (nets if p.per_net else [None])]


def test_reference_run_writes_the_originals_pickles_and_every_output(reference):
    for name in REFERENCE_NETS:
        with open(reference / hw4.pickle_name(name), "rb") as f:
            res = pickle.load(f)
        assert set(res) >= {"100steps", "epoch", "confusion matrix", "net", "best_epoch", "config"}
        for scale in ("100steps", "epoch"):
            assert set(res[scale]) == set(ORIGINAL_KEYS)
        assert all(isinstance(v, float) for v in res["100steps"]["train_class_acc"] + res["epoch"]["val_class_acc"])
        assert len(res["100steps"]["train_class_acc"]) == 2 and len(res["epoch"]["val_class_acc"]) == 2
        # both spellings of the confusion keys, for readers written either way, with the same arrays
        for outer, train_key, val_key in (("confusion matrix", "train confusion", "val confusion"),
                                          ("confusion_matrix", "train_confusion", "val_confusion")):
            assert isinstance(res[outer][val_key], np.ndarray)
            assert np.array_equal(res[outer][train_key], res["confusion matrix"]["train confusion"])
            assert np.array_equal(res[outer][val_key], res["confusion matrix"]["val confusion"])
        assert set(res["train_clean"]) == {"train_clean_cross_entropy", "train_clean_class_acc"}
        assert res["net"] == name and res["config"]["image_size"] == 16
        assert res["config"]["subset_seed"] == 5 and res["config"]["train_seed"] == 5
        assert torch.load(reference / f"{name}.pt", weights_only=True)["_extra_state"]["net"] == name
    assert [hw4.pickle_name(n) for n in hw4.DEFAULT_NETS] == ["results1.pkl", "results2.pkl", "results3.pkl"]
    metrics = json.loads((reference / "metrics.json").read_text())
    assert set(metrics["nets"]) == set(REFERENCE_NETS)
    with open(reference / "results1.pkl", "rb") as f:  # the original's series, whatever METRICS adds beside them
        original = pickle.load(f)["epoch"]
    assert original == {k: metrics["nets"]["net1"]["epoch"][k] for k in ORIGINAL_KEYS}
    for fig in figure_files(REFERENCE_NETS):
        assert is_png(reference / fig), fig
    report = (reference / "REPORT.md").read_text()
    assert all(f"({fig})" in report for fig in figure_files(REFERENCE_NETS)), "REPORT.md shows every figure"
    assert not list(reference.rglob("*.hw4-tmp-*"))


def tiny_cli_args(tiny_built, out, *extra):
    cfg, _ = tiny_built
    return ["--ann-file", cfg.ann_file, "--image-dir", cfg.image_dir, "--train-per-class", "85", "--val-per-class",
            "15", "--image-size", "16", "--epochs", "1", "--dataset-dir", cfg.dataset_dir, "--out", out, *CPU, *extra]


def test_dry_run_takes_one_batch_per_epoch_and_warns_about_nothing(tiny_built, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli(*tiny_cli_args(tiny_built, tmp_path / "r", "--dry-run", "--nets", "net3", "--epochs", "2"))
    assert result.returncode == 0, result.stderr
    assert not caught, [str(w.message) for w in caught]
    with open(tmp_path / "r" / "results3.pkl", "rb") as f:
        res = pickle.load(f)
    assert res["confusion matrix"]["train confusion"].sum() == 4 and res["confusion matrix"]["val confusion"].sum() == 4
    assert len(res["epoch"]["train_class_acc"]) == 2


def test_demo_learns_and_explicit_flags_override_its_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    skip_rendering(monkeypatch)
    result = cli("--demo", "--train-per-class", "60", "--val-per-class", "20", "--image-size", "32", "--epochs", "3",
                 "--nets", "net1", "--out", tmp_path / "r", *CPU)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics["nets"]) == {"net1"} and len(metrics["nets"]["net1"]["epoch"]["val_class_acc"]) == 3
    assert max(metrics["nets"]["net1"]["epoch"]["val_class_acc"]) >= 0.6, "the demo classes are learnable"
    assert metrics["config"]["train_per_class"] == 60 and (tmp_path / "demo_data" / "hw4_dataset").is_dir()
    assert f"results are in {tmp_path / 'r'}" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clean_error(tiny_built, tmp_path):
    assert_one_line_exit_2(cli(*tiny_cli_args(tiny_built, tmp_path / "r"), "--device", "cuda"),
                           "--device cuda was asked for but torch sees no CUDA device")


def class_sorted_subset(per_class_val: int = 1200, size: int = 16, classes: int = 5) -> hw4.SubsetTensors:
    """Random images whose val split is stored class by class, as the manifest stores real COCO."""
    gen = torch.Generator().manual_seed(0)
    n_val = per_class_val * classes
    data = {"train_x": torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8, generator=gen),
            "train_y": torch.arange(8) % classes,
            "val_x": torch.randint(0, 256, (n_val, 3, size, size), dtype=torch.uint8, generator=gen),
            "val_y": torch.arange(classes).repeat_interleave(per_class_val)}
    return hw4.SubsetTensors.from_splits(data, subset_seed=5)


def test_val_windows_of_a_constant_net_sit_at_chance():
    """Class-sorted val with 3 windows per class: a net that always says class 0 must score ~1/C in
    every 400-image window, not 1.0 in the first three and 0.0 in the others."""
    data = class_sorted_subset()
    net = hw4.build_net("net1", 16, [f"c{k}" for k in range(5)])
    with torch.no_grad():
        net.fc2.weight.zero_()
        net.fc2.bias.copy_(torch.tensor([5.0, 0, 0, 0, 0]))
    cfg, history = hw4.Config(threads=1, batch_size=4), hw4.History()
    val = hw4.evaluate(net, data.val_x, data.val_y, cfg, count_dead=True)
    trace = hw4.EpochTrace(torch.zeros(8, 5), torch.zeros(2, 3), torch.zeros(2, 3))
    hw4.record_epoch(history, trace, data.train_y[:8], val, cfg, 5)
    windows = history.steps100["val_class_acc"]
    assert len(windows) == 15 and all(0.1 < w < 0.3 for w in windows), windows
    assert history.epoch["val_class_acc"] == [0.2]
    again = class_sorted_subset()  # the order is the subset's: the same every time, mapping back to the entries
    assert torch.equal(again.val_entry, data.val_entry) and sorted(data.val_entry.tolist()) == list(range(6000))


def test_dead_units_of_a_frozen_net_with_negative_biases():
    """With every bias at -100 no ReLU of Net3 ever fires: every layer is dead."""
    data = class_sorted_subset(per_class_val=60)
    net = hw4.build_net("net3", 16, [f"c{k}" for k in range(5)])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.fill_(-100.0)
    val = hw4.evaluate(net, data.val_x, data.val_y, hw4.Config(threads=1), count_dead=True)
    assert list(val.dead_units) == ["conv1", "conv2", *(f"chain{k}" for k in range(1, 11)), "fc1"]
    assert all(v == 1.0 for v in val.dead_units.values())
    assert hw4.dead_fraction(torch.tensor([[0.0, 1.0], [0.0, 0.0]])) == 0.5


def test_augmentation_is_a_seeded_flip_and_padded_crop():
    cpu = torch.device("cpu")
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8)
    out = hw4.Augmentation(flip=torch.tensor([0, 1]), corner=torch.tensor([[4, 4], [4, 4]])).apply(x, 0)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    shifted = hw4.Augmentation(flip=torch.tensor([0]), corner=torch.tensor([[0, 8]])).apply(x[:1], 0)
    # a corner of (0, 8) in the 4-padded image: 4 rows of zero padding on top, shifted 4 columns left
    assert (shifted[0, :, :4] == 0).all() and torch.equal(shifted[0, :, 4:, :2], x[0, :, :2, 4:])
    a, b = (hw4.Augmentation.for_epoch(50, 5, 0, cpu) for _ in range(2))
    assert torch.equal(a.flip, b.flip) and torch.equal(a.corner, b.corner)
    assert not torch.equal(a.corner, hw4.Augmentation.for_epoch(50, 5, 1, cpu).corner)
    assert int(a.corner.min()) >= 0 and int(a.corner.max()) <= 8


def test_augmented_and_dropout_training_differ_and_are_deterministic(tiny_built, tmp_path):
    *_, plain = train_tiny(tiny_built, tmp_path / "a", name="net1", epochs=1)
    for variant in ("net1aug", "net1drop"):
        *_, one = train_tiny(tiny_built, tmp_path / f"{variant}1", name=variant, epochs=1)
        *_, two = train_tiny(tiny_built, tmp_path / f"{variant}2", name=variant, epochs=1)
        assert one.history == two.history
        assert one.history.epoch["train_cross_entropy"] != plain.history.epoch["train_cross_entropy"], variant


def test_every_setting_has_a_fingerprint_role_and_train_settings_reach_the_resume_check(tiny_built):
    cfg, manifest = tiny_built
    cpu = torch.device("cpu")
    base = hw4.run_fingerprint(cfg, manifest, "net1", cpu)
    changed = {"batch_size": 8, "epochs": 3, "lr": 0.01, "betas": (0.8, 0.9), "threads": 2, "dry_run": True,
               "train_seed": 11}
    roles = {f.name: f.metadata["role"] for f in dataclasses.fields(hw4.Config)}
    assert set(roles.values()) <= set(hw4.ROLES)
    assert {n for n, r in roles.items() if r == "train"} == set(changed)
    for name, value in changed.items():
        assert hw4.run_fingerprint(dataclasses.replace(cfg, **{name: value}), manifest, "net1", cpu) != base, name
    assert hw4.run_fingerprint(dataclasses.replace(cfg, out="elsewhere", jobs=2), manifest, "net1", cpu) == base
    for variant in ("net1aug", "net1drop", "net1half"):
        assert hw4.run_fingerprint(cfg, manifest, variant, cpu) != base, variant


def test_a_new_variant_is_one_table_entry(tiny_built, tmp_path, monkeypatch):
    """One line adds a net; it is trained and found in every output, and predict reads its weights."""
    monkeypatch.setitem(hw4.NETS, "net1slim", hw4.NetSpec("Net1-slim", channels=(8, 16), base="net1"))
    out = tmp_path / "r"
    assert cli(*tiny_cli_args(tiny_built, out, "--nets", "net1", "net1slim", "--dry-run")).returncode == 0
    with open(out / "results_net1slim.pkl", "rb") as f:
        res = pickle.load(f)
    assert res["net"] == "net1slim" and res["fc1_in_features"] == 16 * 2 * 2
    assert set(res["epoch"]) == set(ORIGINAL_KEYS) and "conv2" in res["dead_units"]
    for fig in figure_files(["net1slim"]):
        assert is_png(out / fig), fig
    assert "net1slim" in json.loads((out / "metrics.json").read_text())["nets"]
    report = (out / "REPORT.md").read_text()
    assert "| Net1-slim |" in report and "Net1-slim (" in report.split("## Q3")[1]
    assert (out / "results1.pkl").is_file() and not (out / "results_net1.pkl").exists()
    monkeypatch.delitem(hw4.NETS, "net1slim")  # the weights alone must be enough
    assert hw4.predict_images(out / "net1slim.pt", [PHOTOS / "chelsea.png"])[0]["class"] in hw4.DEFAULT_CLASSES


def test_a_new_metric_is_one_edit(tiny_built, tmp_path, monkeypatch, with_top2):
    """One Metric in METRICS reaches the epoch line, metrics.json, the curves and the report, never the original's
    pickles (their series are the original's own)."""
    skip_rendering(monkeypatch)  # the curves' axes are checked below on the figure itself
    out = tmp_path / "r"
    result = cli(*tiny_cli_args(tiny_built, out, "--nets", "net1"))
    assert result.returncode == 0, result.stderr
    assert "top2 " in next(line for line in result.stdout.splitlines() if line.startswith("net1 epoch"))
    metrics = json.loads((out / "metrics.json").read_text())["nets"]["net1"]
    assert (metrics["epoch"]["val_top2_acc"][0] >= metrics["epoch"]["val_class_acc"][0]
            and metrics["steps100"]["train_top2_acc"])
    with open(out / "results1.pkl", "rb") as f:
        original = pickle.load(f)
    assert set(original["epoch"]) == {"train_cross_entropy", "train_class_acc", "val_cross_entropy", "val_class_acc"}
    assert not any("top2" in k for k in [*original["100steps"], *original["train_clean"]])
    runs = {"net1": [hw4.Results(**{**metrics, "hardest": [], "train_confusion": np.eye(5),
                                    "val_confusion": np.eye(5)})]}
    assert [ax.get_ylabel() for ax in hw4.draw_curves_epoch(runs, None).axes] == [m.axis for m in hw4.METRICS]
    assert "final val top2 |" in (out / "REPORT.md").read_text()


def test_a_diverging_run_finishes_with_a_warning_and_valid_json(tiny_built, tmp_path):
    out = tmp_path / "r"
    result = cli(*tiny_cli_args(tiny_built, out, "--nets", "net1", "--lr", "1e308"))
    assert result.returncode == 0, result.stderr
    assert "warning: net1 diverged in epoch 1" in result.stdout and "lower --lr" in result.stdout

    def no_nan(token):
        raise AssertionError(f"{token} is not JSON")
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=no_nan)
    assert metrics["nets"]["net1"]["epoch"]["train_cross_entropy"] == [None]
    assert "diverged in epoch 1" in (out / "REPORT.md").read_text()


def test_reference_and_jobs_args_use_the_cpu(tiny_built, tmp_path):
    """The byte-for-byte comparisons must not depend on a GPU being there (README: CPU only)."""
    args = [str(a) for a in reference_args(tiny_built, tmp_path)]
    assert args[args.index("--device") + 1] == "cpu" and args[args.index("--threads") + 1] == "1"


def test_clean_train_accuracy_is_measured_in_eval_mode_after_the_epoch(tiny_built, tmp_path):
    """train_clean is the final weights on the unaugmented training images in eval mode (dropout off),
    not the running mean of the original's train_class_acc; measured at new best epochs and the last."""
    cfg, manifest, data, state = train_tiny(tiny_built, tmp_path, name="net1drop", epochs=1)
    net = hw4.build_net("net1drop", cfg.image_size, manifest["classes"])
    net.load_state_dict(torch.load(tmp_path / "checkpoints" / "net1drop_last.pt", weights_only=True)["model"])
    net.eval()
    with torch.no_grad():
        logits = net(hw4.to_input(data.train_x)).double()
    expected = float((logits.argmax(1) == data.train_y).double().mean())
    assert state.history.train_clean["train_clean_class_acc"] == [pytest.approx(expected, abs=1e-12)]
    assert state.history.train_clean["train_clean_class_acc"] != state.history.epoch["train_class_acc"]
    results = hw4.results_from_state(state, cfg, manifest, data)
    assert results.gap == pytest.approx(expected - state.history.epoch["val_class_acc"][-1])
    assert results.infrastructure["device"] == "cpu" and results.infrastructure["threads"] == cfg.threads


def test_a_run_records_adams_update_size_beside_the_gradient(reference):
    """Per net and GRAD_LAYERS layer, ||dw|| / ||w|| of Adam's steps: one value per epoch and per 100-iteration
    window, like the gradient norms; positive and finite, and in the original's pickle as extra keys."""
    entries = json.loads((reference / "metrics.json").read_text())["nets"]
    for name, entry in entries.items():
        assert set(entry["update_sizes"]) == set(hw4.GRAD_LAYERS), name
        for layer in hw4.GRAD_LAYERS:
            per_epoch, windows = entry["update_sizes"][layer], entry["update_sizes_steps100"][layer]
            assert len(per_epoch) == 2 and len(windows) == len(entry["grad_norms_steps100"][layer]) == 2
            assert all(0 < v < 1 for v in per_epoch + windows), (name, layer, per_epoch, windows)
    blob = pickle.loads((reference / "results1.pkl").read_bytes())  # our own reference run's pickle
    assert blob["update_sizes"] == entries["net1"]["update_sizes"]


def test_update_sizes_are_measured_on_every_early_step_then_sampled():
    steps = [s for s in range(1875) if hw4.measures_update(s)]
    assert steps[:hw4.WINDOW_STEPS] == list(range(hw4.WINDOW_STEPS)) and len(steps) == 100 + 178
    history = hw4.History()
    sizes = torch.full((200, 3), math.nan)
    sizes[:100] = 0.01
    sizes[100::10] = 0.03
    trace = hw4.EpochTrace(torch.zeros(800, 5), torch.ones(200, 3), sizes)
    hw4.record_per_layer(history.update_sizes, history.update_sizes_steps100, trace.update_sizes, sampled=True)
    assert history.update_sizes_steps100["fc1"] == pytest.approx([0.01, 0.03])
    assert history.update_sizes["fc1"] == pytest.approx([(100 * 0.01 + 10 * 0.03) / 110])


def test_metrics_json_keeps_lists_of_numbers_on_one_line(reference, tmp_path):
    """Per-picture predictions and per-epoch series are lists of numbers: one line each, not one line a number; the
    file still reads back to the same values, and a string that looks like a list keeps its bytes."""
    text = (reference / "metrics.json").read_text()
    lines = text.splitlines()
    assert not [line for line in lines if re.fullmatch(r"\s*(-?[\d.eE+-]+|null),?", line)]
    n_val = json.loads(text)["nets"]["net1"]["n_val"]
    labels = [line for line in lines if line.strip().startswith('"labels": [')]
    assert len(labels) == len(REFERENCE_NETS) and all(line.count(",") == n_val - 1 + line.endswith(",")
                                                      for line in labels), "one line a list, not a line a picture"
    data = {"path": "odd[\n 1,\n 2\n]", "series": [1.5, float("nan"), 2], "matrix": [[1, 2], [3, 4]]}
    hw4.write_json_atomic(tmp_path / "m.json", data)
    assert json.loads((tmp_path / "m.json").read_text()) == {**data, "series": [1.5, None, 2]}
    assert '"series": [1.5, null, 2]' in (tmp_path / "m.json").read_text()
