"""Hostile inputs, round 2: hw4 owns only what it wrote, validates every file where it reads it, bounds its
resources, and answers signals with one line. One test per defect of the probe (numbered as it numbered them)."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hw4
from conftest import CPU, PHOTOS, ROOT, assert_one_line_exit_2, cli, make_config, reference_args


def copy_build(tiny_built, tmp_path) -> tuple[hw4.Config, Path]:
    cfg, _ = tiny_built
    ds = tmp_path / "ds"
    shutil.copytree(cfg.dataset_dir, ds)
    return dataclasses.replace(cfg, dataset_dir=str(ds)), ds


def test_1_a_rebuild_never_deletes_files_inside_the_dataset_folders(tiny_built, tmp_path):
    cfg, ds = copy_build(tiny_built, tmp_path)
    (ds / "train_data" / "NOTES.txt").write_text("notes")
    (ds / "val_data" / "my_extra").mkdir()
    Image.new("RGB", (16, 16)).save(ds / "val_data" / "my_extra" / "mine.png")
    with pytest.raises(hw4.UserError, match="holds files the build did not write .*train_data/NOTES.txt"):
        hw4.build_subset(dataclasses.replace(cfg, seed=6))
    assert (ds / "train_data" / "NOTES.txt").read_text() == "notes" and (ds / "val_data/my_extra/mine.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "my other project"}))
    with pytest.raises(hw4.UserError, match="is not an hw4 dataset"):
        hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(other)))
    assert json.loads((other / "manifest.json").read_text()) == {"name": "my other project"}


def test_2_out_keeps_what_the_user_made(tiny_built, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "REPORT.md").write_text("my own report")
    assert_one_line_exit_2(cli(*reference_args(tiny_built, out)), "REPORT.md is not an hw4 run's", "--overwrite")
    assert (out / "REPORT.md").read_text() == "my own report"
    (out / ".notes.tmp-1").write_text("keep me")
    hw4.remove_partial_writes(out)
    assert (out / ".notes.tmp-1").read_text() == "keep me"
    # an unfinished run is not restarted silently
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    ckpt = torch.load(run / "checkpoints" / "net1_last.pt", weights_only=True)
    torch.save({**ckpt, "epoch": 1}, run / "checkpoints" / "net1_last.pt")
    assert_one_line_exit_2(cli(*reference_args(tiny_built, run)), "holds an unfinished run (epoch 1 of 2)", "--resume")
    # the same command twice over a finished run is allowed (the demo twice), and --overwrite lets through
    args = hw4.build_parser().parse_args([str(a) for a in reference_args(tiny_built, reference)])
    hw4.check_out_folder(hw4.config_from_args(args))
    args = hw4.build_parser().parse_args([str(a) for a in reference_args(tiny_built, run)] + ["--overwrite"])
    hw4.check_out_folder(hw4.config_from_args(args))


def test_3_a_crafted_weights_file_is_refused_before_the_net_is_built(reference, tmp_path):
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"]["spec"]["extra_convs"] = 200_000
    torch.save(state, tmp_path / "huge.pt")
    started = time.perf_counter()
    with pytest.raises(hw4.UserError, match="not hw4 weights .*out of bounds"):
        hw4.predict_images(tmp_path / "huge.pt", [PHOTOS / "chelsea.png"])
    assert time.perf_counter() - started < 10
    state["_extra_state"]["spec"].update(extra_convs=10, channels=[4096, 4096])
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(hw4.UserError, match="parameters"):
        hw4.predict_images(tmp_path / "wide.pt", [PHOTOS / "chelsea.png"])


def test_5_a_running_build_is_not_deleted_by_a_second_one(tiny_built, tmp_path):
    cfg, _ = tiny_built
    target = tmp_path / "ds"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".ds.building-{sleeper.pid}"
        running.mkdir()
        with pytest.raises(hw4.UserError, match=f"another build into --dataset-dir .* is running \\(process "
                                                f"{sleeper.pid}\\)"):
            hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(target)))
        assert running.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_6_a_full_disk_is_one_line_that_names_the_folder(tmp_path, monkeypatch):
    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(hw4.UserError, match=f"no space left on the device of {tmp_path} while writing x.json"):
        hw4.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert not list(tmp_path.iterdir())


def test_7_predict_runs_in_chunks(reference, monkeypatch):
    monkeypatch.setattr(hw4, "PREDICT_CHUNK", 2)
    seen = []
    original = hw4.to_input
    monkeypatch.setattr(hw4, "to_input", lambda x: seen.append(len(x)) or original(x))
    rows = hw4.predict_images(reference / "net1.pt", [PHOTOS / "chelsea.png"] * 5)
    assert len(rows) == 5 and seen == [2, 2, 1]
    assert all(r["probs"] == pytest.approx(rows[0]["probs"], abs=1e-5) for r in rows)


@pytest.mark.parametrize("name", [".", "./", ""])
def test_8_an_annotation_file_name_of_dot_is_unsafe(name):
    with pytest.raises(hw4.UserError, match="unsafe file_name"):
        hw4.source_path("images", name)


def test_9_and_17_figures_survive_odd_class_names_and_a_bogus_mplbackend(tmp_path):
    code = ("import hw4, io; f = hw4.new_figure(); ax = f.subplots(); ax.set_title('air$\\\\bogus{$plane'); "
            "b = io.BytesIO(); f.savefig(b, format='png'); print('drawn')")
    ran = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MPLBACKEND": "bogus"})
    assert ran.returncode == 0 and "drawn" in ran.stdout, ran.stderr


@pytest.mark.parametrize("tamper", [[1, 2], "text", {"entries": []}, "drop:config", "label:9", "classes:short",
                                    "path:../x.jpg"])
def test_10_a_tampered_manifest_is_not_trusted(tiny_built, tmp_path, tamper):
    cfg, ds = copy_build(tiny_built, tmp_path)
    manifest = json.loads((ds / "manifest.json").read_text())
    if isinstance(tamper, str) and ":" in tamper:
        what, value = tamper.split(":")
        if what == "drop":
            del manifest[value]
        elif what == "label":
            manifest["entries"][0]["label"] = int(value)
        elif what == "classes":
            manifest["classes"] = manifest["classes"][:3]
        else:
            manifest["entries"][0]["path"] = value
    else:
        manifest = tamper
    (ds / "manifest.json").write_text(json.dumps(manifest))
    assert hw4.read_manifest(ds) is None
    with pytest.raises(hw4.UserError, match="is not an hw4 dataset"):
        hw4.build_subset(cfg)


@pytest.mark.parametrize("cache", [{}, [1, 2], "labels", "size", "short"])
def test_12_a_wrong_tensor_cache_is_rebuilt(tiny_built, tmp_path, cache):
    cfg, ds = copy_build(tiny_built, tmp_path)
    manifest = hw4.read_manifest(ds)
    good = hw4.decoded_splits(ds, manifest)
    bad = {k: v.clone() for k, v in good.items()}
    if cache == "labels":
        bad["train_y"][0] = 99
    elif cache == "size":
        bad["train_x"] = bad["train_x"][:, :, :8, :8]
    elif cache == "short":
        bad = {k: v[:7] for k, v in bad.items()}
    else:
        bad = cache
    torch.save(bad, ds / f"tensors-{manifest['fingerprint']}.pt")
    again = hw4.decoded_splits(ds, manifest)
    assert all(torch.equal(again[k], good[k]) for k in good)


@pytest.mark.parametrize("thing, kind", [("checkpoints", "file"), ("net1.pt", "folder"), ("seed_5", "file")])
def test_13_a_file_or_folder_in_the_way_is_refused_before_work(tiny_built, tmp_path, thing, kind):
    out = tmp_path / "out"
    out.mkdir()
    (out / thing).mkdir() if kind == "folder" else (out / thing).write_text("mine")
    seeds = ["--seeds", "2"] if thing == "seed_5" else []
    result = cli(*reference_args(tiny_built, out), *seeds)
    assert_one_line_exit_2(result, str(out / thing), "move it away")
    assert " epoch " not in result.stdout


def test_14_a_fifo_among_the_images_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "x.jpg")
    assert hw4.write_thumbnails([(str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg"), 16)]) == ["not a regular file"]


def handles(pid: int, sig: int) -> bool:
    """The process has installed a handler for sig (Linux: the SigCgt mask of /proc/PID/status)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_15_an_interrupt_while_torch_imports_is_one_line_and_130(tmp_path):
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, str(ROOT / "hw4.py"), "--help"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while not handles(proc.pid, signal.SIGTERM) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)  # the first lines of hw4.py have run: torch is importing now
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # the machine imported torch in under 0.3 s: nothing to interrupt
            continue
        assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_16_a_path_that_is_not_utf8_does_not_crash_the_last_print(tiny_built, tmp_path):
    cfg, _ = tiny_built
    odd = os.fsdecode(bytes(tmp_path) + b"/ds\xff")
    shutil.copytree(cfg.dataset_dir, odd)
    ran = subprocess.run([sys.executable, str(ROOT / "hw4.py"), "--ann-file", cfg.ann_file, "--image-dir",
                          cfg.image_dir, "--train-per-class", "85", "--val-per-class", "15", "--image-size", "16",
                          "--dataset-dir", odd, "--build-only"], capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert ran.returncode == 0 and b"Traceback" not in ran.stderr, ran.stderr


def test_18_a_symlinked_dataset_dir_stays_a_link(tiny_built, tmp_path):
    cfg, ds = copy_build(tiny_built, tmp_path)
    link = tmp_path / "ds_link"
    link.symlink_to(ds)
    with contextlib.redirect_stdout(None):
        hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(link), seed=6))
    assert link.is_symlink() and (link / "manifest.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".building-" in p.name]


def test_19_and_20_predict_and_messages_say_what_is_wrong(tmp_path, demo_coco):
    torch.save(torch.zeros(3), tmp_path / "bare.pt")
    result = cli("predict", "--weights", tmp_path / "bare.pt", PHOTOS / "chelsea.png")
    assert_one_line_exit_2(result, "is not hw4 weights")
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path, PHOTOS / "chelsea.png"), "is a folder")
    assert_one_line_exit_2(cli("--ann-file", tmp_path, "--image-dir", tmp_path, "--dataset-dir", tmp_path / "d",
                               "--build-only"), f"--ann-file {tmp_path} is a folder")
    assert_one_line_exit_2(cli("--demo", "--data_dir", tmp_path), "--data_dir has no use with it")
    assert_one_line_exit_2(cli("--data_dir", tmp_path / "none", "--build-only", "--dataset-dir", tmp_path / "d"),
                           "python hw4.py --demo")
    assert_one_line_exit_2(cli("--lr", "-1"), "argument --lr: must be > 0, got -1")
    assert cli("--lr", "-1").stderr.startswith("hw4: error:") and cli("predict").stderr.startswith("hw4: error:")
    note = cli("--threads", "1000", "--build-only", "--data_dir", tmp_path / "none", "--dataset-dir", tmp_path / "d")
    assert "note: --threads 1000 is more than" not in note.stdout, "--build-only trains nothing"
    args = hw4.build_parser().parse_args(["--threads", "1000", "--out", str(tmp_path / "o")])
    with contextlib.redirect_stdout(buffer := __import__("io").StringIO()):
        hw4.check_before_work(hw4.config_from_args(args), args)
    assert "note: --threads 1000 is more than" in buffer.getvalue()


def test_6_a_full_dataset_disk_is_not_blamed_on_the_pictures(tmp_path, monkeypatch):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(hw4, "write_thumbnail", full)
    with pytest.raises(hw4.UserError, match=f"no space left on the device of {re.escape(str(tmp_path))} while "
                                            "writing b.jpg") as caught:
        hw4.write_thumbnails([(str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), 16)])
    assert "picture" not in str(caught.value)


def test_device_auto_never_picks_a_path_that_has_not_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)  # an MPS or XPU machine
    assert hw4.pick_device("auto") == torch.device("cpu")
