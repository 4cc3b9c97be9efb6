"""Shared helpers: the hw4 module, the third-party fixtures, generated demo COCO data, the CLI."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hw4  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"  # copied in: a clone must pass with nothing beside it
VISION_SYNTH = FIXTURES / "vision-synth" / "train"
KWCOCO = FIXTURES / "kwcoco-shapes"
PHOTOS = FIXTURES / "photos"


def run_cli(*args, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python hw4.py ARGS` as a user would; returns the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "hw4.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def make_config(ann_file, image_dir, dataset_dir, **overrides) -> hw4.Config:
    """A Config for tests: one build worker, small counts unless overridden."""
    base = hw4.Config(ann_file=str(ann_file), image_dir=str(image_dir), dataset_dir=str(dataset_dir),
                      workers=1, threads=1)
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="session")
def demo_coco(tmp_path_factory) -> Path:
    """A generated COCO-format set: 130 images per class, ~10% grayscale, ~10% with two classes."""
    root = tmp_path_factory.mktemp("demo_coco")
    hw4.make_demo_coco(root, images_per_class=130, seed=0)
    return root


def demo_paths(root: Path) -> tuple[Path, Path]:
    return root / "coco" / "annotations" / "instances_train2014.json", root / "coco" / "images"


@pytest.fixture(scope="session")
def tiny_built(demo_coco, tmp_path_factory):
    """The demo set built at 32x32 with 100 train + 20 val per class: 125 iterations per epoch."""
    ann, images = demo_paths(demo_coco)
    cfg = make_config(ann, images, tmp_path_factory.mktemp("tiny") / "ds", train_per_class=100,
                      val_per_class=20, image_size=32, epochs=2)
    return cfg, hw4.build_subset(cfg)
