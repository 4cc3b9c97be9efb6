"""Checkpoints and --resume: a killed run continues to exactly the uninterrupted result (the reference run)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

import hw4
from conftest import REFERENCE_NETS, assert_one_line_exit_2, cli, reference_args, run_cli, skip_rendering, start_cli


def wait_for(path: Path, proc, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.005)


def assert_same_outputs(a: Path, b: Path, nets: Sequence[str] = REFERENCE_NETS) -> None:
    """Byte-identical pickles and tensor-equal weights for each net (by default every net of the reference run)."""
    for name in nets:
        assert (a / hw4.pickle_name(name)).read_bytes() == (b / hw4.pickle_name(name)).read_bytes(), name
        wa, wb = (torch.load(d / f"{name}.pt", weights_only=True) for d in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor)), name


def no_partial_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if ".hw4-tmp-" in p.name]


def stop_after_first_epoch(proc, out: Path, net: str, sig: int) -> str:
    """Send `sig` once `net` has checkpointed its first epoch; what the run printed."""
    wait_for(out / "checkpoints" / f"{net}_last.pt", proc)
    proc.send_signal(sig)
    printed, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        assert "--resume" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return printed


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(tiny_built, reference, tmp_path):
    """SIGKILL once the augmented net has checkpointed its first epoch, then SIGTERM on the resumed run once
    the BatchNorm net has: each --resume redoes at most the epoch that was running, and the run ends
    bit-identical on the CPU (augmentation's random stream and BatchNorm's running statistics carry over;
    the --jobs 2 stop test does the same for dropout)."""
    cut, nets = tmp_path / "cut", ["net1aug", "net3bn"]
    args = [*reference_args(tiny_built, cut), "--nets", *nets]
    stop_after_first_epoch(start_cli(*args), cut, "net1aug", signal.SIGKILL)
    printed = stop_after_first_epoch(start_cli(*args, "--resume"), cut, "net3bn", signal.SIGTERM)
    assert "net1aug epoch  1/2" not in printed, "a checkpointed epoch must not be redone"
    assert not (cut / hw4.pickle_name("net3bn")).exists()
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not [n for n in nets if f"{n} epoch  1/2" in resumed.stdout]
    assert_same_outputs(reference, cut, nets)
    assert no_partial_files(cut)


@pytest.fixture()
def finished_copy(reference, tmp_path) -> Path:
    """A copy of the reference run's folder, checkpoints included."""
    shutil.copytree(reference, tmp_path / "r")
    return tmp_path / "r"


def test_resume_of_a_finished_run_trains_nothing_and_rewrites_the_same_outputs(tiny_built, reference, finished_copy,
                                                                                 monkeypatch):
    skip_rendering(monkeypatch)  # pickles and weights are the point here
    for name in REFERENCE_NETS:
        (finished_copy / hw4.pickle_name(name)).unlink()
    trained_by = json.loads((reference / "metrics.json").read_text())["nets"][REFERENCE_NETS[0]]["infrastructure"]
    later = {**trained_by, "hw4_commit": "f" * 40}  # the resume runs from a later commit than trained the nets
    monkeypatch.setattr(hw4, "infrastructure", lambda device, threads: later)
    again = cli(*reference_args(tiny_built, finished_copy), "--resume")
    assert again.returncode == 0, again.stderr
    assert " epoch " not in again.stdout and "resuming" not in again.stdout
    assert_same_outputs(reference, finished_copy)
    recorded = json.loads((finished_copy / "metrics.json").read_text())["nets"]
    assert [recorded[n]["infrastructure"] for n in REFERENCE_NETS] == [trained_by] * len(REFERENCE_NETS), \
        "a finished net keeps the record of where and by which commit it trained"


def test_changed_truncated_and_foreign_checkpoints_are_refused(tiny_built, finished_copy):
    ckpt = finished_copy / "checkpoints" / "net1_last.pt"
    changed = cli(*reference_args(tiny_built, finished_copy), "--lr", "0.01", "--resume")
    assert_one_line_exit_2(changed, "holds a run made with other settings (lr 0.001, now 0.01)", "--overwrite")
    forced = cli(*reference_args(tiny_built, finished_copy), "--lr", "0.01", "--resume", "--overwrite")
    assert_one_line_exit_2(forced, "different settings", str(ckpt))
    # the last net's checkpoint is damaged: refused before the first net trains, not when its turn comes
    last = finished_copy / "checkpoints" / f"{REFERENCE_NETS[-1]}_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    truncated = cli(*reference_args(tiny_built, finished_copy), "--resume")
    assert_one_line_exit_2(truncated, f"checkpoint {last} is damaged", "delete it")
    assert " epoch " not in truncated.stdout
    assert (finished_copy / "results1.pkl").exists(), "a refused resume must not remove finished results"


@pytest.mark.parametrize("tamper, message", [
    (lambda c: c.update(epoch=99), "epoch 99 is not a finished epoch count of 0..2"),
    (lambda c: c.update(epoch=-1), "epoch -1 is not"),
    (lambda c: c.update(epoch="2"), "epoch '2' is not"),
    (lambda c: c["history"]["epoch"]["val_class_acc"].pop(), "its histories do not hold 2 epochs"),
    (lambda c: c.update(best=None), "its best epoch does not fit"),
    (lambda c: c["model"].pop("fc2.bias"), "its weights or optimizer state do not fit"),
    (lambda c: c["model"].update({"fc2.bias": torch.zeros(3)}), "its weights or optimizer state do not fit"),
    (lambda c: c.update(optimizer={"state": 5}), "its weights or optimizer state do not fit"),
    (lambda c: c.update(history={}), "its histories do not hold 2 epochs"),
    (lambda c: c.update(history="garbage"), "in its training state"),
    (lambda c: c.update(infrastructure={"cpu": "AMD"}), "infrastructure.device is missing"),
    (lambda c: c["infrastructure"].update(cpu="<img src=x>"), "infrastructure.cpu is not plain text"),
])
def test_a_tampered_checkpoint_with_a_valid_fingerprint_gets_one_line(reference, tmp_path, tamper, message):
    ckpt = torch.load(reference / "checkpoints" / "net1_last.pt", weights_only=True)
    tamper(ckpt)
    path = tmp_path / "net1_last.pt"
    torch.save(ckpt, path)
    net = hw4.build_net("net1", 16, ["a", "b", "c", "d", "e"])
    with pytest.raises(hw4.UserError, match=re.escape(message)):
        hw4.restore_checkpoint(path, ckpt["fingerprint"] if isinstance(ckpt, dict) else "", 2, net,
                               hw4.make_optimizer(net, hw4.Config(), torch.device("cpu")))


def test_checkpoints_load_without_arbitrary_pickles(tmp_path):
    """A checkpoint holding a non-tensor object is rejected by weights_only loading."""
    evil = tmp_path / "net1_last.pt"
    torch.save({"fingerprint": "x", "model": {}, "epoch": 0, "payload": os.system}, evil)
    with pytest.raises(hw4.UserError, match="damaged or not an hw4 checkpoint"):
        hw4.load_checkpoint(evil, "x")


def test_checkpoint_of_another_hw4_version_is_refused(tmp_path):
    old = tmp_path / "net1_last.pt"
    torch.save({"format": 2, "fingerprint": "x", "model": {}, "epoch": 0, "history": {}}, old)
    with pytest.raises(hw4.UserError, match="written by another version of hw4; delete it"):
        hw4.load_checkpoint(old, "x")


def test_resume_retrains_a_net_whose_entry_fails_the_checks(tiny_built, reference, tmp_path, monkeypatch):
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


def test_a_kill_between_a_nets_files_and_metrics_json_resumes_with_plain_resume(tiny_built, reference, tmp_path):
    """The first net's pickle, weights and figures are written before the run's metrics.json: a kill there leaves
    them with their checkpoint, which says hw4 wrote them, so a plain --resume finishes the run exactly."""
    out = tmp_path / "killed"
    first = REFERENCE_NETS[0]
    kept = {hw4.pickle_name(first), f"{first}.pt", *(p.file.format(net=first) for p in hw4.FIGURES if p.per_net)}
    shutil.copytree(reference, out, ignore=lambda folder, names: [
        n for n in names if Path(folder) == reference and n not in kept and n != "checkpoints"
        or Path(folder).name == "checkpoints" and not n.startswith(f"{first}_")])
    assert not (out / "metrics.json").exists() and (out / hw4.pickle_name(first)).exists()
    ran = cli(*reference_args(tiny_built, out), "--resume")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert_same_outputs(out, reference)
