"""Training, evaluation and outputs: metrics, determinism, pickles, figures and the CLI end to end."""
from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hw4
from conftest import demo_paths, run_cli

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
    n_train, n_val = len(data.train_x), len(data.val_x)
    train_iters, val_iters = -(-n_train // cfg.batch_size), -(-n_val // cfg.batch_size)
    for key in ORIGINAL_KEYS:
        assert len(hist.epoch[key]) == cfg.epochs
        iters = train_iters if key.startswith("train") else val_iters
        assert len(hist.steps100[key]) == cfg.epochs * (iters // 100)
    assert len(hist.steps100["train_cross_entropy"]) == 2  # 125 iterations per epoch
    for layer in hw4.GRAD_LAYERS:
        assert len(hist.grad_norms[layer]) == cfg.epochs and min(hist.grad_norms[layer]) > 0
    assert list(hist.dead_units) == hw4.build_net("net1", 32, manifest["classes"]).relu_layers()
    assert all(len(v) == cfg.epochs and 0 <= min(v) <= max(v) <= 1 for v in hist.dead_units.values())

    results = hw4.results_dict(state, cfg, manifest, data)
    best = results["best_epoch"]
    assert best == 1 + int(np.argmax(hist.epoch["val_class_acc"]))
    for split, n in (("train", n_train), ("val", n_val)):
        matrix = results["confusion matrix"][f"{split} confusion"]
        assert matrix.dtype == np.int64 and matrix.shape == (5, 5)
        assert matrix.sum() == n
        assert np.trace(matrix) / matrix.sum() == pytest.approx(hist.epoch[f"{split}_class_acc"][best - 1], abs=1e-12)
    hardest = results["hardest"]
    assert len(hardest) == 5 * hw4.HARDEST_PER_CLASS
    for name in manifest["classes"]:
        losses = [h["loss"] for h in hardest if h["class"] == name]
        assert losses == sorted(losses, reverse=True)
    val_ids = {e["image_id"]: e for e in manifest["entries"] if e["split"] == "val"}
    assert all(val_ids[h["image_id"]]["class"] == h["class"] for h in hardest)


def test_100_step_means_match_a_per_step_recomputation(tiny_built, tmp_path):
    """The vectorised bookkeeping equals the original's running sums over 100 iterations."""
    cfg, manifest, data, state = train_tiny(tiny_built, tmp_path, epochs=1)
    # replay epoch 1 with the original's per-batch loop on a fresh net with the same seed
    hw4.seed_everything(cfg.seed)
    layout = hw4.memory_format(torch.device("cpu"))
    net = hw4.build_net("net1", cfg.image_size, manifest["classes"]).to(memory_format=layout)
    opt = hw4.make_optimizer(net, cfg)
    perm = hw4.epoch_permutation(len(data.train_x), cfg.seed, 0, torch.device("cpu"))
    running_loss = running_acc = 0.0
    windows = []
    for i in range(100):
        idx = perm[i * 4:(i + 1) * 4]
        out = net((data.train_x[idx].float() / 255).contiguous(memory_format=layout))
        loss = torch.nn.functional.cross_entropy(out, data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        running_loss += loss.item()
        running_acc += (out.argmax(1) == data.train_y[idx]).float().mean().item()
    windows.append((running_loss / 100, running_acc / 100))
    got = state.history.steps100
    assert got["train_cross_entropy"][0] == pytest.approx(windows[0][0], rel=1e-5)
    assert got["train_class_acc"][0] == pytest.approx(windows[0][1], rel=1e-6)


def test_same_seed_same_metrics_and_independent_of_order(tiny_built, tmp_path):
    *_, a = train_tiny(tiny_built, tmp_path / "a", name="net2")
    train_tiny(tiny_built, tmp_path / "b", name="net1")  # another net first must not matter
    *_, b = train_tiny(tiny_built, tmp_path / "b", name="net2")
    assert a.history == b.history
    for k, v in a.best.state_dict.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b.best.state_dict[k])
    *_, c = train_tiny(tiny_built, tmp_path / "c", name="net2", train_seed=6)
    assert c.history.epoch != a.history.epoch


def test_each_epoch_has_its_own_order():
    cpu = torch.device("cpu")
    first, second = (hw4.epoch_permutation(50, 5, e, cpu) for e in (0, 1))
    assert not torch.equal(first, second)
    assert torch.equal(first, hw4.epoch_permutation(50, 5, 0, cpu))
    assert sorted(first.tolist()) == list(range(50))


def test_confusion_matrix_rows_are_true_labels():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert (hw4.confusion_matrix(labels, preds, 3) == expected).all()


def test_device_auto_on_this_machine():
    expected = "cuda" if torch.cuda.is_available() else ("cpu" if not torch.accelerator.is_available() else None)
    if expected:
        assert hw4.pick_device("auto").type == expected
    assert hw4.pick_device("cpu").type == "cpu"


def is_png(path: Path) -> bool:
    with Image.open(path) as img:
        img.verify()
        return img.format == "PNG"


FIGURES = ["samples.png", "curves_epoch.png", "curves_100steps.png", "grad_norms.png", "dead_units.png",
           *[f"confusion_{n}_{s}.png" for n in hw4.DEFAULT_NETS for s in ("train", "val")],
           *[f"hardest_{n}.png" for n in hw4.DEFAULT_NETS]]


def tiny_cli_args(demo_coco, out, dataset):
    ann, images = demo_paths(demo_coco)
    return ["--ann-file", ann, "--image-dir", images, "--train-per-class", "30", "--val-per-class", "10",
            "--image-size", "32", "--epochs", "2", "--dataset-dir", dataset, "--out", out, "--threads", "1"]


def test_cli_end_to_end(demo_coco, tmp_path):
    out = tmp_path / "r"
    result = run_cli(*tiny_cli_args(demo_coco, out, tmp_path / "ds"))
    assert result.returncode == 0, result.stderr
    assert "net1 epoch  2/2" in result.stdout and "fc1 in" in result.stdout
    for k, name in enumerate(hw4.DEFAULT_NETS, 1):
        with open(out / f"results{k}.pkl", "rb") as f:
            res = pickle.load(f)
        assert set(res) >= {"100steps", "epoch", "confusion matrix", "net", "best_epoch", "config"}
        for scale in ("100steps", "epoch"):
            assert set(res[scale]) == set(ORIGINAL_KEYS)
            assert all(isinstance(v, float) for key in ORIGINAL_KEYS for v in res[scale][key])
        assert set(res["confusion matrix"]) == {"train confusion", "val confusion"}
        assert isinstance(res["confusion matrix"]["val confusion"], np.ndarray)
        assert res["net"] == name and res["config"]["image_size"] == 32
        assert res["config"]["subset_seed"] == 5 and res["config"]["train_seed"] == 5
        state = torch.load(out / f"{name}.pt", weights_only=True)
        assert state["_extra_state"]["net"] == name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["nets"]) == set(hw4.DEFAULT_NETS)
    assert metrics["nets"]["net1"]["epoch"] == res_epoch(out, 1)
    for fig in FIGURES:
        assert is_png(out / fig), fig
    assert (out / "REPORT.md").is_file()


def res_epoch(out: Path, k: int) -> dict:
    with open(out / f"results{k}.pkl", "rb") as f:
        return pickle.load(f)["epoch"]


def test_parallel_jobs_give_the_same_results_as_sequential(demo_coco, tmp_path):
    ds = tmp_path / "ds"
    seq = run_cli(*tiny_cli_args(demo_coco, tmp_path / "seq", ds), "--nets", "net1", "net2")
    par = run_cli(*tiny_cli_args(demo_coco, tmp_path / "par", ds), "--nets", "net1", "net2", "--jobs", "2")
    assert seq.returncode == 0 and par.returncode == 0, par.stderr
    for k, name in ((1, "net1"), (2, "net2")):
        assert (tmp_path / "seq" / f"results{k}.pkl").read_bytes() == (tmp_path / "par" / f"results{k}.pkl").read_bytes()
        a = torch.load(tmp_path / "seq" / f"{name}.pt", weights_only=True)
        b = torch.load(tmp_path / "par" / f"{name}.pt", weights_only=True)
        assert all(torch.equal(a[key], b[key]) for key in a if isinstance(a[key], torch.Tensor))


def test_dry_run_takes_one_batch_per_epoch(demo_coco, tmp_path):
    result = run_cli(*tiny_cli_args(demo_coco, tmp_path / "r", tmp_path / "ds"), "--dry-run", "--nets", "net3")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "r" / "results3.pkl", "rb") as f:
        res = pickle.load(f)
    assert res["confusion matrix"]["train confusion"].sum() == 4
    assert res["confusion matrix"]["val confusion"].sum() == 4
    assert len(res["epoch"]["train_class_acc"]) == 2


def test_demo_learns_and_explicit_flags_override_its_defaults(tmp_path):
    result = run_cli("--demo", "--epochs", "2", "--nets", "net1", "net2", "--out", tmp_path / "r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics["nets"]) == {"net1", "net2"}
    for name in ("net1", "net2"):
        assert len(metrics["nets"][name]["epoch"]["val_class_acc"]) == 2
        assert max(metrics["nets"][name]["epoch"]["val_class_acc"]) >= 0.6
    assert metrics["config"]["train_per_class"] == hw4.DEMO_DEFAULTS["train_per_class"]
    assert f"results are in {tmp_path / 'r'}" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clean_error(demo_coco, tmp_path):
    result = run_cli(*tiny_cli_args(demo_coco, tmp_path / "r", tmp_path / "ds"), "--device", "cuda")
    assert result.returncode == 2
    assert "--device cuda was asked for but torch sees no CUDA device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


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
    classes = [f"c{k}" for k in range(5)]
    net = hw4.build_net("net1", 16, classes)
    with torch.no_grad():
        net.fc2.weight.zero_()
        net.fc2.bias.copy_(torch.tensor([5.0, 0, 0, 0, 0]))
    cfg = hw4.Config(threads=1, batch_size=4)
    state = hw4.TrainState("net1", "fp", buffers=hw4.EpochBuffers.new(2, 8, torch.device("cpu")))
    val = hw4.evaluate(net, data, cfg)
    hw4.record_epoch(state, data, torch.arange(8), val, cfg, 5)
    windows = state.history.steps100["val_class_acc"]
    assert len(windows) == 15
    assert all(0.1 < w < 0.3 for w in windows), windows
    assert state.history.epoch["val_class_acc"] == [0.2]
    # the order is a property of the subset: the same every time, and it maps back to the entries
    again = class_sorted_subset()
    assert torch.equal(again.val_entry, data.val_entry)
    assert sorted(data.val_entry.tolist()) == list(range(6000))


def test_dead_units_of_a_frozen_net_with_negative_biases():
    """At initialisation with every bias at -100, no ReLU of Net3 ever fires: every layer is dead."""
    data = class_sorted_subset(per_class_val=60)
    net = hw4.build_net("net3", 16, [f"c{k}" for k in range(5)])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.fill_(-100.0)
    val = hw4.evaluate(net, data, hw4.Config(threads=1))
    assert list(val.dead_units) == net.relu_layers()
    assert all(v == 1.0 for v in val.dead_units.values())
    assert hw4.dead_fraction(torch.tensor([[0.0, 1.0], [0.0, 0.0]])) == 0.5


def test_augmentation_is_a_seeded_flip_and_padded_crop():
    cpu = torch.device("cpu")
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8)
    aug = hw4.Augmentation(flip=torch.tensor([0, 1]), corner=torch.tensor([[4, 4], [4, 4]]))
    out = aug.apply(x, 0)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    shifted = hw4.Augmentation(flip=torch.tensor([0]), corner=torch.tensor([[0, 8]])).apply(x[:1], 0)
    # a corner of (0, 8) in the 4-padded image: 4 rows of zero padding on top, shifted 4 columns left
    assert (shifted[0, :, :4] == 0).all() and torch.equal(shifted[0, :, 4:, :2], x[0, :, :2, 4:])
    a, b = (hw4.Augmentation.for_epoch(50, 5, 0, cpu) for _ in range(2))
    assert torch.equal(a.flip, b.flip) and torch.equal(a.corner, b.corner)
    assert not torch.equal(a.corner, hw4.Augmentation.for_epoch(50, 5, 1, cpu).corner)
    assert int(a.corner.min()) >= 0 and int(a.corner.max()) <= 8


def test_augmented_training_differs_and_is_deterministic(tiny_built, tmp_path):
    *_, plain = train_tiny(tiny_built, tmp_path / "a", name="net1", epochs=1)
    *_, aug1 = train_tiny(tiny_built, tmp_path / "b", name="net1aug", epochs=1)
    *_, aug2 = train_tiny(tiny_built, tmp_path / "c", name="net1aug", epochs=1)
    assert aug1.history == aug2.history
    assert aug1.history.epoch["train_cross_entropy"] != plain.history.epoch["train_cross_entropy"]


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
    assert hw4.run_fingerprint(cfg, manifest, "net1aug", cpu) != base, "augmentation must be in the fingerprint"


def test_a_new_variant_is_one_table_entry(demo_coco, tmp_path, monkeypatch):
    """One line adds a net; it is trained and found in every output, and predict reads its weights."""
    monkeypatch.setitem(hw4.NETS, "net1slim", hw4.NetSpec("Net1-slim", channels=(8, 16), base="net1"))
    out = tmp_path / "r"
    args = tiny_cli_args(demo_coco, out, tmp_path / "ds") + ["--nets", "net1", "net1slim", "--dry-run"]
    assert hw4.main([str(a) for a in args]) == 0
    with open(out / "results_net1slim.pkl", "rb") as f:
        res = pickle.load(f)
    assert res["net"] == "net1slim" and res["fc1_in_features"] == 16 * 6 * 6
    assert set(res["epoch"]) == set(ORIGINAL_KEYS) and "conv2" in res["dead_units"]
    for fig in ("confusion_net1slim_train.png", "confusion_net1slim_val.png", "hardest_net1slim.png"):
        assert is_png(out / fig), fig
    assert "net1slim" in json.loads((out / "metrics.json").read_text())["nets"]
    report = (out / "REPORT.md").read_text()
    assert "| Net1-slim |" in report and "Measured: Net1-slim" in report
    assert (out / "results1.pkl").is_file() and not (out / "results_net1.pkl").exists()
    monkeypatch.delitem(hw4.NETS, "net1slim")  # the weights alone must be enough
    rows = hw4.predict_images(out / "net1slim.pt", [Path(__file__).parent / "fixtures" / "photos" / "chelsea.png"])
    assert rows[0]["class"] in hw4.DEFAULT_CLASSES


def test_short_run_prints_no_warnings(demo_coco, tmp_path):
    result = run_cli(*tiny_cli_args(demo_coco, tmp_path / "r", tmp_path / "ds"), "--epochs", "1",
                     "--nets", "net1")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "No artists" not in result.stderr, result.stderr
