"""Hostile inputs, round 3 (the defects fixed so far): `report` writes nowhere but its run's folder, whatever a
crafted metrics.json says; class names, weights and file names that were let through. Numbered as the probe
numbered them."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import hw4
from conftest import PHOTOS, ROOT, assert_one_line_exit_2, cli, skip_rendering

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
    assert_one_line_exit_2(cli("report", run), "seed_6/metrics.json: nets.'net1' is not an entry hw4 writes")
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


def test_22_a_file_name_that_is_not_utf8_gets_an_id():
    name = os.fsdecode(b"train/cat/caf\xe9.jpg")  # as os.walk gives it: surrogate-escaped
    assert hw4.picture_id(name) == hw4.picture_id(os.fsdecode(b"train/cat/caf\xe9.jpg")) != hw4.picture_id("x.jpg")


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
