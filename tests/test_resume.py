"""Checkpoints and --resume: an interrupted run continues to exactly the uninterrupted result."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hw4
from conftest import ROOT, demo_paths, run_cli

OUTPUTS = ["results1.pkl", "results2.pkl", "net1.pt", "net2.pt"]


def args_for(demo_coco, tmp_path, out):
    ann, images = demo_paths(demo_coco)
    return ["--ann-file", ann, "--image-dir", images, "--train-per-class", "100", "--val-per-class", "20",
            "--image-size", "32", "--epochs", "3", "--nets", "net1", "net2", "--threads", "1",
            "--dataset-dir", tmp_path / "ds", "--out", out]


def start(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "hw4.py"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.005)


def assert_same_outputs(a: Path, b: Path, outputs: list[str] = OUTPUTS) -> None:
    for name in outputs:
        if name.endswith(".pkl"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        else:
            wa, wb = (torch.load(d / name, weights_only=True) for d in (a, b))
            assert all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor)), name


def no_partial_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_sigterm_mid_run_then_resume_is_exact(demo_coco, tmp_path):
    reference = run_cli(*args_for(demo_coco, tmp_path, tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr

    proc = start(args_for(demo_coco, tmp_path, tmp_path / "cut"))
    wait_for(tmp_path / "cut" / "checkpoints" / "net1_last.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert no_partial_files(tmp_path / "cut")
    assert not (tmp_path / "cut" / "results2.pkl").exists()

    resumed = run_cli(*args_for(demo_coco, tmp_path, tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_outputs(tmp_path / "ref", tmp_path / "cut")


def test_sigkill_between_nets_then_resume_is_exact(demo_coco, tmp_path):
    reference = run_cli(*args_for(demo_coco, tmp_path, tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    proc = start(args_for(demo_coco, tmp_path, tmp_path / "cut"))
    wait_for(tmp_path / "cut" / "checkpoints" / "net2_last.pt", proc)
    proc.kill()
    proc.communicate()
    resumed = run_cli(*args_for(demo_coco, tmp_path, tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "net1 epoch" not in resumed.stdout, "a finished net must be skipped"
    assert_same_outputs(tmp_path / "ref", tmp_path / "cut")
    assert no_partial_files(tmp_path / "cut")


def test_truncated_and_foreign_checkpoints_are_refused(demo_coco, tmp_path):
    out = tmp_path / "r"
    first = run_cli(*args_for(demo_coco, tmp_path, out))
    assert first.returncode == 0, first.stderr
    ckpt = out / "checkpoints" / "net1_last.pt"

    changed = run_cli(*args_for(demo_coco, tmp_path, out), "--lr", "0.01", "--resume")
    assert changed.returncode == 2
    assert "different settings" in changed.stderr and str(ckpt) in changed.stderr

    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    truncated = run_cli(*args_for(demo_coco, tmp_path, out), "--resume")
    assert truncated.returncode == 2 and "Traceback" not in truncated.stderr
    assert f"checkpoint {ckpt} is damaged" in truncated.stderr and "delete it" in truncated.stderr
    assert (out / "results1.pkl").exists(), "a refused resume must not remove finished results"


def test_checkpoints_load_without_arbitrary_pickles(tmp_path):
    """A checkpoint holding a non-tensor object is rejected by weights_only loading."""
    evil = tmp_path / "net1_last.pt"
    torch.save({"fingerprint": "x", "model": {}, "epoch": 0, "payload": os.system}, evil)
    try:
        hw4.load_checkpoint(evil, "x")
    except hw4.UserError as exc:
        assert "damaged or not an hw4 checkpoint" in str(exc)
    else:
        raise AssertionError("an unsafe checkpoint was loaded")


def test_two_sigterms_then_resume_is_exact_for_augmentation_and_batchnorm(demo_coco, tmp_path):
    """Augmentation draws and BatchNorm statistics survive a mid-run stop in each net."""
    nets = ["--nets", "net1aug", "net3bn"]
    outputs = ["results_net1aug.pkl", "results_net3bn.pkl", "net1aug.pt", "net3bn.pt"]
    reference = run_cli(*args_for(demo_coco, tmp_path, tmp_path / "ref"), *nets)
    assert reference.returncode == 0, reference.stderr
    cut = tmp_path / "cut"
    for k, name in enumerate(("net1aug", "net3bn")):
        proc = start([*args_for(demo_coco, tmp_path, cut), *nets, *(["--resume"] if k else [])])
        wait_for(cut / "checkpoints" / f"{name}_last.pt", proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
    resumed = run_cli(*args_for(demo_coco, tmp_path, cut), *nets, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", cut, outputs)


def test_checkpoint_of_another_hw4_version_is_refused(tmp_path):
    old = tmp_path / "net1_last.pt"
    torch.save({"format": 1, "fingerprint": "x", "model": {}, "epoch": 0, "history": {"100steps": {}}}, old)
    with pytest.raises(hw4.UserError, match="written by another version of hw4; delete it"):
        hw4.load_checkpoint(old, "x")
