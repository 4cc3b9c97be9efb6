#!/usr/bin/env python3
"""Benchmark: what recording Adam's update size costs a training step, in one run.

Times one epoch of batch-4 steps of Net1 and Net3 (forward, backward, gradient norms, fused Adam) with and
without train_epoch's update-size measurement at the steps hw4.measures_update picks (copy the watched weights, step, their norm before, the norm of the
difference), alternating the two in rounds on the same net and data, and prints the median ms a step.

    python benchmarks/update_sizes.py            # about four minutes on a 2-core CPU, one thread
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hw4  # noqa: E402


def steps(net, opt, x, y, n: int, measure: bool) -> float:
    """ms per step over n steps; with measure, at the steps hw4 measures (hw4.measures_update) of one epoch."""
    watched = net.watched_weights()
    before = [torch.empty_like(w) for w in watched]
    sizes = torch.empty(n, len(watched))
    t0 = time.perf_counter()
    for k in range(n):
        loss = F.cross_entropy(net(x[k % len(x)]), y[k % len(y)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.stack([torch.linalg.vector_norm(w.grad) for w in watched])
        measured = measure and hw4.measures_update(k % 1875)  # an epoch of 7,500 pictures at batch 4
        if measured:
            torch._foreach_copy_(before, [w.detach() for w in watched])
        opt.step()
        if measured:
            norms = torch.stack(torch._foreach_norm(before))
            torch._foreach_sub_(before, [w.detach() for w in watched])
            sizes[k] = torch.stack(torch._foreach_norm(before)) / norms
    return 1000 * (time.perf_counter() - t0) / n


def main() -> None:
    torch.set_num_threads(1)
    cfg = hw4.Config()
    classes = ["airplane", "bus", "cat", "dog", "pizza"]
    gen = torch.Generator().manual_seed(0)
    x = [hw4.to_input(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=gen)) for _ in range(50)]
    y = [torch.randint(0, 5, (4,), generator=gen) for _ in range(50)]
    print(f"{hw4.cpu_model()}, torch {torch.__version__}, 1 thread, batch 4, 64x64")
    for name in ("net1", "net3"):
        net = hw4.build_net(name, 64, classes).to(memory_format=torch.channels_last)
        opt = hw4.make_optimizer(net, cfg, torch.device("cpu"))
        steps(net, opt, x, y, 100, True)  # warm-up
        times = {False: [], True: []}
        for _ in range(3):
            for measure in (False, True):
                times[measure].append(steps(net, opt, x, y, 1875, measure))
        plain, measured = statistics.median(times[False]), statistics.median(times[True])
        print(f"{name}: {plain:.3f} ms a step without, {measured:.3f} with the update sizes "
              f"({100 * (measured / plain - 1):+.1f}%)")


if __name__ == "__main__":
    main()
