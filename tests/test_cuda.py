"""The CUDA path: the first thing to run on a GPU (`python -m pytest -q tests/test_cuda.py`, or
benchmarks/gpu_check.sh). Every test skips on a machine without CUDA; none has run on a GPU yet (README)."""
from __future__ import annotations

import shutil

import pytest
import torch

import hw4
from test_resume import assert_same_outputs, wait_for
from conftest import PHOTOS, REFERENCE_NETS, cli, reference_args, run_cli, start_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = ("--device", "cuda")


@pytest.fixture(scope="module")
def cuda_reference(tiny_built, tmp_path_factory):
    """An uninterrupted CUDA run of the reference nets: main end to end with --device cuda."""
    out = tmp_path_factory.mktemp("cuda") / "r"
    result = run_cli(*reference_args(tiny_built, out), *CUDA)
    assert result.returncode == 0, result.stderr
    return out


def test_main_end_to_end_on_cuda(cuda_reference):
    for name in REFERENCE_NETS:
        assert (cuda_reference / hw4.pickle_name(name)).is_file()
        state = torch.load(cuda_reference / f"{name}.pt", weights_only=True)  # saved from the CPU: loads anywhere
        assert all(v.device.type == "cpu" for v in state.values() if isinstance(v, torch.Tensor))
    assert "Warning" not in (cuda_reference / "REPORT.md").read_text()


def test_cuda_runs_are_deterministic(tiny_built, cuda_reference, tmp_path):
    again = run_cli(*reference_args(tiny_built, tmp_path / "again"), *CUDA)
    assert again.returncode == 0, again.stderr
    assert_same_outputs(cuda_reference, tmp_path / "again")


def test_predict_across_devices(reference, cuda_reference):
    """Weights trained on the CPU predict on CUDA and the reverse, with the same top class as on the CPU."""
    photos = sorted(PHOTOS.iterdir())
    for weights in (reference / "net1.pt", cuda_reference / "net1.pt"):
        on_cpu = hw4.predict_images(weights, photos, device="cpu")
        on_cuda = hw4.predict_images(weights, photos, device="cuda")
        for a, b in zip(on_cpu, on_cuda):
            assert a["class"] == b["class"]
            assert max(abs(a["probs"][c] - b["probs"][c]) for c in a["probs"]) < 1e-4
    assert cli("predict", "--device", "cuda", "--weights", reference / "net1.pt", photos[0]).returncode == 0


def test_resume_on_cuda_after_a_kill_is_exact(tiny_built, cuda_reference, tmp_path):
    cut = tmp_path / "cut"
    proc = start_cli(*reference_args(tiny_built, cut), *CUDA)
    wait_for(cut / "checkpoints" / "net1drop_last.pt", proc)
    proc.kill()
    proc.communicate()
    resumed = run_cli(*reference_args(tiny_built, cut), *CUDA, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(cuda_reference, cut)


def test_jobs_2_on_cuda_equal_sequential(tiny_built, cuda_reference, tmp_path):
    par = run_cli(*reference_args(tiny_built, tmp_path / "par"), *CUDA, "--jobs", "2")
    assert par.returncode == 0, par.stderr
    assert_same_outputs(cuda_reference, tmp_path / "par")


def test_adam_is_fused_on_cuda():
    net = hw4.build_net("net1", 16, ("a", "b")).cuda()
    opt = hw4.make_optimizer(net, hw4.Config(), torch.device("cuda"))
    assert opt.defaults["fused"] is True
    net(torch.rand(2, 3, 16, 16, device="cuda")).sum().backward()
    opt.step()  # the fused kernel exists for these parameters


def test_to_input_on_cuda_is_exactly_the_cpu_values():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert torch.equal(hw4.to_input(x.cuda()).cpu(), hw4.to_input(x).contiguous())


def test_a_checkpoint_moves_between_devices(tiny_built, cuda_reference, tmp_path):
    """A CUDA run's checkpoints hold no CUDA RNG state and no device tensors that a CPU-only load refuses."""
    shutil.copytree(cuda_reference / "checkpoints", tmp_path / "ckpt")
    blob = hw4.quiet_torch_load(tmp_path / "ckpt" / "net1_last.pt")
    assert "rng" not in blob and blob["epoch"] == 2
