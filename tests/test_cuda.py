"""The CUDA path. These tests skip on a machine without CUDA; run them on a GPU machine with
`python -m pytest -q tests/test_cuda.py`. They have not yet run on a GPU (see README)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import hw4
from conftest import PHOTOS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_dry_run_trains_on_cuda_and_weights_load_on_the_cpu(tiny_built, tmp_path):
    cfg, manifest = tiny_built
    cfg = dataclasses.replace(cfg, out=str(tmp_path), device="cuda", epochs=2)
    data = hw4.load_dataset_tensors(cfg.dataset_dir, manifest).to(torch.device("cuda"))
    state = hw4.train("net1aug", data, manifest, cfg, torch.device("cuda"))
    results = hw4.results_dict(state, cfg, manifest, data)
    hw4.write_net_outputs(tmp_path, state, results, cfg.dataset_dir)
    assert all(v.device.type == "cpu" for v in state.best.state_dict.values() if isinstance(v, torch.Tensor))
    rows = hw4.predict_images(tmp_path / "net1aug.pt", [PHOTOS / "chelsea.png"], device="cpu")
    assert rows[0]["class"] in manifest["classes"]


def test_resume_on_cuda_after_an_interrupt(tiny_built, tmp_path):
    cfg, manifest = tiny_built
    cuda = torch.device("cuda")
    data = hw4.load_dataset_tensors(cfg.dataset_dir, manifest).to(cuda)
    ref = hw4.train("net3bn", data, manifest, dataclasses.replace(cfg, out=str(tmp_path / "ref")), cuda)

    class StopAfter(hw4.StopRequest):
        def __init__(self, steps: int):
            super().__init__()
            self.left = steps

        @property
        def requested(self) -> bool:
            self.left -= 1
            return self.left < 0

        @requested.setter
        def requested(self, value: bool) -> None:
            pass

    cut_cfg = dataclasses.replace(cfg, out=str(tmp_path / "cut"))
    with pytest.raises(hw4.Interrupted):
        hw4.train("net3bn", data, manifest, cut_cfg, cuda, StopAfter(150))
    resumed = hw4.train("net3bn", data, manifest, dataclasses.replace(cut_cfg, resume=True), cuda)
    assert resumed.history.epoch.keys() == ref.history.epoch.keys()
    for key, values in ref.history.epoch.items():  # CUDA kernels may not be bit-exact: within 1e-4
        assert resumed.history.epoch[key] == pytest.approx(values, abs=1e-4), key
