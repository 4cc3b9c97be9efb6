"""Hostile inputs, round 3 (the defects fixed so far): `report` writes nowhere but its run's folder, whatever a
crafted metrics.json says; class names, weights and file names that were let through. Numbered as the probe
numbered them."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hw4
import hw4_report
from conftest import PHOTOS, ROOT, assert_one_line_exit_2, cli, reference_args, skip_rendering

COMMITTED = ROOT / "results" / "exercise"


def run_copy(tmp_path: Path, seeds=(5, 6, 7)) -> Path:
    """The committed run's metrics.json files for a few seeds, as a run folder of its own."""
    run = tmp_path / "run"
    for s in seeds:
        (run / f"seed_{s}").mkdir(parents=True)
        shutil.copy(COMMITTED / f"seed_{s}" / "metrics.json", run / f"seed_{s}" / "metrics.json")
    return run


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_1_a_net_field_cannot_point_a_figure_outside_the_run(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path)
    (tmp_path / "victim_train.png").write_bytes(b"the user's")
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    blob["nets"]["net1"]["net"] = "x/../../../victim"
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    before = files_under(tmp_path)
    assert_one_line_exit_2(cli("report", run), "seed_6/metrics.json: nets.net1.net does not name the same net")
    assert files_under(tmp_path) == before and not (tmp_path / "victim_val.png").exists()


def test_2_a_summarys_seeds_cannot_lead_the_report_elsewhere(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path)
    assert cli("report", run).returncode == 0  # writes the summary metrics.json that lists the seeds
    other = tmp_path / "other"
    shutil.copytree(run / "seed_7", other)
    blob = json.loads((run / "metrics.json").read_text())
    blob["nets"]["net1"]["seeds"] = [5, "6/../../other"]
    (run / "metrics.json").write_text(json.dumps(blob))
    before = files_under(other)
    assert_one_line_exit_2(cli("report", run), "its seeds are not a list of training seeds")
    assert files_under(other) == before


def test_2_a_symlinked_seed_folder_is_refused(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(COMMITTED / "seed_7", elsewhere, ignore=shutil.ignore_patterns("*.png", "*.pkl", "*.pt"))
    os.symlink(elsewhere, run / "seed_7")
    before = files_under(elsewhere)
    assert_one_line_exit_2(cli("report", run), "seed_7 is a symlink")
    assert files_under(elsewhere) == before


def test_7_a_stray_seed_0005_is_not_a_second_seed_5(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    shutil.copytree(run / "seed_5", run / "seed_0005")
    ran = cli("report", run)
    assert ran.returncode == 0, ran.stderr
    assert json.loads((run / "metrics.json").read_text())["nets"]["net1"]["seeds"] == [5, 6]


@pytest.mark.parametrize("name", [".", "", "..", "a/b", "bad\x1bname"])
def test_10_a_class_name_that_is_no_folder_name_is_refused(name, tmp_path):
    ran = cli("--classes", "cat", name, "--demo", "--out", tmp_path / "o")
    assert_one_line_exit_2(ran, "is not a class name")
    assert "\x1b" not in ran.stderr


def nan_weights(reference: Path, tmp_path: Path) -> Path:
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    return tmp_path / "diverged.pt"


def test_11_and_12_predict_refuses_nan_weights_and_duplicate_classes(reference, tmp_path):
    assert_one_line_exit_2(cli("predict", "--weights", nan_weights(reference, tmp_path), PHOTOS / "chelsea.png"),
                           "holds NaN or infinite weights: the training diverged")
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"]["classes"] = ["cat", "cat", "dog", "dog", "pizza"]
    torch.save(state, tmp_path / "dup.pt")
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path / "dup.pt", PHOTOS / "chelsea.png"),
                           "is not hw4 weights (ValueError: a net spec out of bounds)")


def test_22_a_file_name_that_is_not_utf8_gets_an_id(tmp_path):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg"))  # as os.walk gives it: surrogate-escaped
    odd.write_bytes(b"a picture's bytes")
    (tmp_path / "plain.jpg").write_bytes(b"another picture's bytes")
    assert hw4.picture_id(odd) == hw4.picture_id(odd) != hw4.picture_id(tmp_path / "plain.jpg")


def test_8_one_picture_in_several_class_folders_is_found_by_its_bytes(tmp_path):
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for folder in ("train/cat", "train/dog", "val/cat", "val/dog"):
        (tmp_path / folder).mkdir(parents=True)
    for folder in ("train/cat", "train/dog", "val/dog"):
        Image.fromarray(pixels).save(tmp_path / folder / "dup.jpg")
    for k, folder in enumerate(("train/cat", "train/dog", "val/cat", "val/dog")):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(tmp_path / folder / f"own{k}.jpg")
    pictures = hw4.scan_class_folders(tmp_path, ["cat", "dog"])
    cfg = hw4.Config(image_folders=str(tmp_path), classes=("cat", "dog"), train_per_class=None, val_per_class=None)
    summary = hw4.shared_pictures_summary(pictures, cfg)
    assert (summary["in_two_classes"], summary["in_both_splits"]) == (1, 1)
    kept = hw4.choose_folder_pictures(pictures, dataclasses.replace(cfg, exclusive=True))
    assert "dup.jpg" not in {Path(p.file_name).name for p in kept} and len(kept) == 4


def test_24_predict_accepts_every_size_training_accepts_and_sizes_its_batch(reference):
    meta = torch.load(reference / "net1.pt", weights_only=True)["_extra_state"]
    for name in ("net1", "net2", "net1fc"):
        spec = dataclasses.asdict(hw4.NETS[name])
        assert hw4.spec_from_weights({**meta, "spec": spec, "image_size": 640}) == hw4.NETS[name]
        assert hw4.spec_from_weights({**meta, "spec": spec, "image_size": hw4.MAX_IMAGE_SIZE}) == hw4.NETS[name]
    assert hw4.predict_chunk(hw4.NETS["net1"], 64) == hw4.PREDICT_CHUNK
    assert 1 <= hw4.predict_chunk(hw4.NETS["net1"], hw4.MAX_IMAGE_SIZE) < 4


def test_25_a_device_file_as_weights_is_not_called_missing():
    assert_one_line_exit_2(cli("predict", "--weights", "/dev/zero", PHOTOS / "chelsea.png"),
                           "--weights /dev/zero is not a regular file")


def test_21_report_on_a_read_only_run_is_one_line_before_any_write(tmp_path, monkeypatch):
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


def test_23_class_names_from_weights_are_escaped_on_the_terminal(reference, tmp_path):
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"]["classes"] = ["\x1b[2Jairplane", "bus\nfake.png: cat (1.000)", "cat", "dog", "pizza"]
    torch.save(state, tmp_path / "escapes.pt")
    ran = cli("predict", "--weights", tmp_path / "escapes.pt", PHOTOS / "chelsea.png")
    assert ran.returncode == 0, ran.stderr
    assert "\x1b" not in ran.stdout and len(ran.stdout.strip().splitlines()) == 1
    assert "\\x1b[2Jairplane" in ran.stdout and "bus\\nfake.png" in ran.stdout


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


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
    "accuracy 97": (("epoch", "val_class_acc"), [97.0] * 15, "nets.net1.epoch.val_class_acc holds an accuracy"),
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
def test_20_a_metrics_json_hw4_did_not_write_is_one_line_naming_the_field(fault, tmp_path, monkeypatch):
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


@pytest.mark.parametrize("text, words", [(nested(100_000), "nested too deeply"), ('{"format": 99, "nets": {"a": 1}}',
                                                                                  "format 99 is not one this hw4 reads")])
def test_19_and_20_unreadable_nesting_and_formats_are_one_line(text, words, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    (run / "seed_6" / "metrics.json").write_text(text)
    assert_one_line_exit_2(cli("report", run), words)


def test_19_a_metrics_json_over_the_size_cap_is_not_parsed(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))
    monkeypatch.setattr(hw4, "METRICS_MAX_BYTES", 1000)
    assert_one_line_exit_2(cli("report", run), "over the 0 MB an hw4 metrics.json can reach")


def test_7_seeds_of_other_settings_are_not_pooled(tmp_path, monkeypatch):
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


def test_5_resume_retrains_a_net_whose_entry_fails_the_checks(tiny_built, reference, tmp_path, monkeypatch):
    """An injected or doctored entry (here Net1's params under another count) is not taken as finished."""
    skip_rendering(monkeypatch)
    out = tmp_path / "r"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints")
    blob = json.loads((out / "metrics.json").read_text())
    blob["nets"]["net1"]["params"] += 1
    blob["nets"]["net1"]["epoch"]["val_class_acc"][-1] = 0.97
    (out / "metrics.json").write_text(json.dumps(blob))
    ran = cli(*reference_args(tiny_built, out), "--resume")
    assert ran.returncode == 0, ran.stderr
    assert "note: net1 is not taken from" in ran.stdout and "nets.net1.params is not Net1's parameter count" in \
        ran.stdout and "net1 epoch  1/2" in ran.stdout and "net1aug: finished in" in ran.stdout
    retrained = json.loads((out / "metrics.json").read_text())["nets"]["net1"]
    assert retrained["epoch"] == json.loads((reference / "metrics.json").read_text())["nets"]["net1"]["epoch"]
    assert (out / "results1.pkl").read_bytes() == (reference / "results1.pkl").read_bytes()


def test_15_a_crafted_net_whose_activations_cannot_fit_is_refused(reference, tmp_path):
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"].update(image_size=1024)
    state["_extra_state"]["spec"].update(channels=[1024, 1], hidden=[1])  # few parameters, 12 GB a picture
    torch.save(state, tmp_path / "wide.pt")
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path / "wide.pt", PHOTOS / "chelsea.png"),
                           "a net whose activations take 12,884,901,888 bytes a picture")


def test_19_a_weights_file_that_inflates_beyond_any_net_is_refused_before_inflating(tmp_path, monkeypatch):
    import zipfile
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", b"\0" * (8 * 2 ** 20))  # 8 MB of zeros: a few kB on disk
    monkeypatch.setattr(hw4, "max_predict_params", lambda classes: 2 ** 20)  # so that 8 MB is beyond any net
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path / "bomb.pt", PHOTOS / "chelsea.png"),
                           "bytes once inflated, more than any net of the table")
    assert (tmp_path / "bomb.pt").stat().st_size < 100_000


@pytest.mark.parametrize("mine", ["samples.png", "curves_epoch.png", "confusion_net1_val.png", "hardest_net1.png",
                                  "seed_6/samples.png"])
def test_3_a_users_own_figures_in_out_are_not_overwritten(mine, tiny_built, tmp_path):
    out = tmp_path / "out"
    (out / mine).parent.mkdir(parents=True)
    (out / mine).write_bytes(b"my own figure")
    args = ["--seeds", "2"] if mine.startswith("seed_") else []
    ran = cli(*reference_args(tiny_built, out), *args)
    assert_one_line_exit_2(ran, f"{mine} is not an hw4 run's (no hw4 metrics.json beside it)", "--overwrite")
    assert (out / mine).read_bytes() == b"my own figure" and sorted(p.name for p in out.rglob("*")) == sorted(
        Path(mine).parts)


def test_25_an_interrupted_report_says_what_it_was_doing(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    run = run_copy(tmp_path, seeds=(5, 6))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(hw4_report, "write_run_reports", interrupted)
    ran = cli("report", run)
    assert ran.returncode == 130 and "interrupted while rewriting the reports; every file is whole" in ran.stderr
    assert "nothing was trained" not in ran.stderr and "checking the arguments" not in ran.stderr


@pytest.mark.parametrize("inside", ["dataset", "out"])
def test_13_no_output_folder_lies_inside_the_class_folders(inside, tmp_path):
    pics = tmp_path / "pics"
    (pics / "train" / "cat").mkdir(parents=True)
    (pics / "val" / "cat").mkdir(parents=True)
    within = pics / "train" / "cat" / "hw4_out"
    ds, out = (within, tmp_path / "out") if inside == "dataset" else (tmp_path / "ds", within)
    ran = cli("--image-folders", pics, "--classes", "cat", "dog", "--dataset-dir", ds, "--out", out)
    assert_one_line_exit_2(ran, f"{'--dataset-dir' if inside == 'dataset' else '--out'} {within} lies inside "
                                f"--image-folders {pics}")
    assert not within.exists()


@pytest.mark.parametrize("damage", ["zeroed images", "labels shifted by one"])
def test_6_a_tensor_cache_that_does_not_match_its_digest_is_decoded_again(damage, tiny_built, tmp_path):
    cfg, _ = tiny_built
    ds = tmp_path / "ds"
    shutil.copytree(cfg.dataset_dir, ds)
    manifest = hw4.read_manifest(ds)
    good = hw4.decoded_splits(ds, manifest)
    cache = ds / f"tensors-{manifest['fingerprint']}.pt"
    saved = torch.load(cache, weights_only=True)
    assert saved["digest"] == hw4.tensors_digest(good)
    if damage == "zeroed images":
        saved["train_x"].zero_()
    else:
        labels = [e["label"] for e in manifest["entries"] if e["split"] == "train"]
        saved["train_y"] = torch.tensor([(v + 1) % len(manifest["classes"]) for v in labels])
    torch.save(saved, cache)  # the digest kept as it was
    again = hw4.decoded_splits(ds, manifest)
    assert all(torch.equal(again[k], good[k]) for k in good) and "digest" not in again


def test_9_sixteen_bit_pictures_are_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image
    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(gradient).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    rgb = np.asarray(hw4.decode_rgb_thumbnail(tmp_path / "deep.png", 64))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, -1].tolist() == [255, 255, 255]
    assert abs(int(rgb[0, 32, 0]) - round(gradient[0, 32] / 257)) <= 2 and (rgb == 255).mean() < 0.05


class Trickle:
    """A local server whose body never ends: `rate` bytes at a time, every `pause` seconds."""

    def __init__(self, rate: int, pause: float):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"x" * rate)
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x.jpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_16_and_17_a_trickling_or_endless_body_and_a_full_disk_end_each_download(tmp_path):
    slow, endless = Trickle(1, 0.05), Trickle(1 << 16, 0)
    try:
        started = time.monotonic()
        with pytest.raises(hw4.RetryableError, match="too slow: not complete after 1 s"):
            hw4.http_get(slow.url, tmp_path / "a", read_timeout=5, deadline_s=1)
        assert time.monotonic() - started < 4
        with pytest.raises(hw4.PermanentError, match="runs past 1,000,000 bytes"):
            hw4.http_get(endless.url, tmp_path / "b", read_timeout=5, max_bytes=1_000_000)
        assert (tmp_path / "b").stat().st_size <= 1_000_000
        with pytest.raises(hw4.UserError, match="no space left on the device of /dev while writing full"):
            hw4.http_get(endless.url, Path("/dev/full"), read_timeout=5)
        hw4.DOWNLOAD_STOP.set()  # what Ctrl-C or SIGTERM sets: every thread stops at its next chunk
        try:
            with pytest.raises(hw4.PermanentError, match="stopped"):
                hw4.http_get(slow.url, tmp_path / "c", read_timeout=5)
        finally:
            hw4.DOWNLOAD_STOP.clear()
    finally:
        slow.close()
        endless.close()


def test_25_an_empty_out_and_a_large_picture_say_nothing_misleading(tmp_path, monkeypatch):
    import warnings
    from PIL import Image
    assert_one_line_exit_2(cli("--demo", "--out", ""), "--out: an empty path")
    Image.new("RGB", (40, 40), "red").save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the warning limit, under the error's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hw4.decode_rgb_thumbnail(tmp_path / "big.png", 16).size == (16, 16)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("name", ["## Verdict: reproduced", "<img src=x>", "a|b", "`code`"])
def test_23_class_names_that_markdown_or_html_would_act_on_are_refused(name, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    assert_one_line_exit_2(cli("--classes", "cat", name, "--demo", "--out", tmp_path / "o"), "is not a class name")
    run = run_copy(tmp_path, seeds=(5, 6))
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    blob["nets"]["net1"]["classes"][0] = name
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    assert_one_line_exit_2(cli("report", run), "nets.net1.classes is not a list of 2 to 1,000 distinct names")


def test_14_the_originals_loader_stacks_every_picture_hw4_built(tmp_path):
    """The original's Dataset opens each thumbnail without converting it and stacks a batch: a one-channel file
    fails with 'stack expects each tensor to be equal size'. A grayscale picture that already has the size is
    written as an RGB PNG, every pixel kept (an RGB JPEG would re-encode it)."""
    from PIL import Image
    import torchvision.transforms as tvt
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for k, mode in enumerate(("RGB", "L", "RGB")):
                (tmp_path / "pics" / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert(mode).save(
                    tmp_path / "pics" / split / name / f"COCO_train2014_{100 * c + 10 * (split == 'val') + k:012d}.jpg")
    cfg = hw4.Config(image_folders=str(tmp_path / "pics"), classes=("cat", "dog"), image_size=16, workers=1,
                     train_per_class=None, val_per_class=None, dataset_dir=str(tmp_path / "ds"))
    manifest = hw4.build_subset(cfg)
    for split in ("train_data", "val_data"):  # the original's MyCOCODataset and its default collate
        folder = tmp_path / "ds" / split
        batch = torch.stack([tvt.ToTensor()(Image.open(folder / f)) for f in os.listdir(folder)])
        assert batch.shape == (6, 3, 16, 16)
    grey = [e for e in manifest["entries"] if e["file_name"].endswith("1.jpg")]
    assert len(grey) == 4 and all(e["path"].endswith(".png") for e in grey)
    for e in grey:
        with Image.open(tmp_path / "ds" / e["path"]) as built, Image.open(tmp_path / "pics" / e["file_name"]) as src:
            assert built.mode == "RGB" and np.array_equal(np.asarray(built), np.asarray(src.convert("RGB")))
