#!/usr/bin/env python3
"""hw4: Purdue ECE 60146 homework 4 (spring 2023), reproducible and fast.

What it does, in data-flow order:
  1. builds the 5-class dataset (airplane, bus, cat, dog, pizza; 1500 train + 500 val per class, 64x64
     RGB): cut out of MS-COCO 2014 train with pycocotools (no image used twice), or read as given from
     class folders (--image-folders ROOT: ROOT/{train,val}/<class>/*);
  2. trains HW4Net (Net1), Net2 (padding=1) and Net3 (Net1 + 10 extra convs) with Adam at batch
     size 4 for 15 epochs; opt-in variants measure each remedy the original report proposes;
  3. writes results{1,2,3}.pkl (the original report's keys), metrics.json, the best-epoch weights,
     the figures of FIGURES and REPORT.md, which answers the exercise's questions from the numbers
     and checks the original report's claims; `report OUT` rewrites a finished run's reports.

What it needs: Python 3.11, torch, torchvision, pycocotools, numpy, pillow, matplotlib, seaborn and
tqdm (requirements.txt), and COCO 2014 (annotations + train2014 images, or --download), class
folders, or nothing (--demo).

    python hw4.py --demo                                  # offline demo, about 1 min on a 2-core CPU
    python hw4.py --data_dir DIR                          # DIR/coco/{annotations,images}
    python hw4.py --data_dir DIR --download               # fetch only the images the subset needs
    python hw4.py --image-folders ROOT                    # class folders, as given
    python hw4.py report results/exercise                 # rewrite a finished run's reports
    python hw4.py predict --weights results/exercise/seed_5/net2.pt tests/fixtures/photos/chelsea.png

A net is one NetSpec in NETS, a metric one Metric in hw4_records.METRICS, a figure one Plot in FIGURES, a report
answer one Question in hw4_report.QUESTIONS; everything else reads those tables. Beside this file, never importing
it: hw4_records.py (a run's records, locks, limits) and hw4_sources.py (class folders, download, demo data), which
it imports; hw4_report.py and hw4_compare.py, which only their commands load. The exercise's own code:
select_subset (the subset), NETS and HW4Net (the nets), train_epoch and train (the loop), original_pickle
(the pickles).
"""
from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C or SIGTERM while torch imports (a second or two): one line, exit 130
    import signal as _signal

    def _interrupted_while_starting(signum, frame):
        import os as _os
        _os.write(2, b"hw4: interrupted while starting; nothing was done. Rerun the same command.\n")
        _os._exit(130)

    _signal.signal(_signal.SIGINT, _interrupted_while_starting)
    _signal.signal(_signal.SIGTERM, _interrupted_while_starting)

import argparse
import contextlib
import dataclasses
import difflib
import functools
import hashlib
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import sys
import time
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # hw4's layers, beside this file: a missing or broken one is one line before any work
    from hw4_records import (ACCURACY, BEST_VAL, CROSS_ENTROPY, DEFAULT_NETS, DatasetFacts, Exercise, HARDEST_PER_CLASS,
                             HardImage, MAX_IMAGE_SIZE, MAX_PER_CLASS, MAX_SEED, METRICS, METRICS_FORMAT,
                             MIN_IMAGE_SIZE, Metric, NOT_IN_CLASS_NAMES, NetSpec, OWN_SETTINGS, OneLineErrorParser,
                             RUN_LOCK, Results, SPLITS, SchemaError, TMP_TAG, UserError, VAL_CHUNK, WATCHED_LAYERS,
                             WINDOW_STEPS, check_folder_creatable, check_infrastructure, check_results_entry,
                             clean_train_keys, diverged_epoch, fingerprint, infrastructure, is_class_name, is_number,
                             machine_of, map_leaves, mean_std, metric_keys, new_figure, path_argument, path_text, pct,
                             per_sample_cross_entropy, quiet_torch_load, read_metrics_json, recorded, run_in_processes,
                             run_lock, save_torch_atomic, savefig_atomic, scaled_side, seed_list_text, seeds_text,
                             series_key, shown_metrics, spec_parameter_count, terminal_text, write_bytes_atomic,
                             write_json_atomic)
    from hw4_sources import (DOWNLOAD_STOP, IMAGE_ERRORS, IMAGE_EXTENSIONS, MANIFEST_VERSION, PermanentError,
                             WriteJob, build_lock, check_dataset_dir_is_ours, checked_url, choose_folder_pictures,
                             content_digest, decode_rgb_thumbnail, ensure_demo_data, fetch_annotations, fetch_images,
                             folder_listing_digest, make_job, open_picture, reusable_manifest, run_write_jobs,
                             scan_class_folders, shared_pictures_summary, source_path, swap_into_place,
                             write_folder_subset)
except (ImportError, SyntaxError) as _exc:
    if __name__ != "__main__":
        raise
    sys.stderr.write(f"hw4: error: {getattr(_exc, 'name', None) or _exc}: hw4.py needs hw4_records.py and "
                     "hw4_sources.py beside it, as the repository has them; copy the whole folder\n")
    sys.exit(2)

# =============================================================================
# Config: every setting of a run with its CLI flag, default, valid range and fingerprint role.
# Hands a frozen Config to every later section.
# =============================================================================

DEFAULT_CLASSES = ("airplane", "bus", "cat", "dog", "pizza")
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
DEMO_DATA_DIR = "demo_data"
DEMO_MAX_PER_CLASS = 5_000  # demo images are drawn one by one; more would take long to generate
# Settings that --demo changes unless the user passes them explicitly.
DEMO_DEFAULTS = {"train_per_class": 200, "val_per_class": 60, "epochs": 5, "out": "results/demo",
                 "dataset_dir": "demo_data/hw4_dataset"}


def in_range(kind: type, low: float, high: float, low_open: bool = False,
             high_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: int or float in [low, high], ends excluded on request; NaN never passes."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not ((value > low if low_open else value >= low) and (value < high if high_open else value <= high)):
            if high >= sys.float_info.max:  # no upper end worth naming
                raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text}")
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low:g}, {high:g}"
                                             f"{')' if high_open else ']'}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def default_threads() -> int:
    """Intra-op threads per net: all cores, capped at 2 (on a 2-core x86 CPU at batch 4, 1 thread gave
    820 img/s for Net1 and 334 for Net3, 2 threads 1113 and 418; more were not measured). Fixed, never
    timed at run time, because the thread count changes float summation order and so the metrics."""
    return max(1, min(2, os.cpu_count() or 1))


ROLES = ("build", "train", "run")


def setting(default: Any, help: str, role: str, group: str, flag: str | None = None,
            default_text: str | None = None, **argparse_kwargs) -> Any:
    """A Config field with its own CLI flag ("" for none), help, valid range (its argparse type) and role:
    "build" decides the dataset (the build fingerprint hashes it), "train" the metrics (the resume
    fingerprint hashes it), "run" only where things go or how fast."""
    assert role in ROLES, role
    return field(default=default, metadata={"help": help, "role": role, "group": group, "flag": flag,
                                            "default_text": default_text, "argparse": argparse_kwargs})


@dataclass(frozen=True)
class Config:
    """Every setting of a run, saved with the results. The defaults are the full reproduction's;
    DEMO_DEFAULTS replaces some with --demo."""

    ann_file: str = setting("", "instances JSON", "build", "data", type=path_argument,
                            default_text="DATA_DIR/coco/annotations/instances_train2014.json")
    image_dir: str = setting("", "folder of the train2014 images", "build", "data", type=path_argument,
                             default_text="DATA_DIR/coco/images")
    image_folders: str | None = setting(None, "read the pictures from class folders ROOT/{train,val}/<class>/* "
                                        "(torchvision's ImageFolder layout) instead of COCO; the folders decide "
                                        "each picture's split and class", "build", "data", type=path_argument,
                                        default_text="off: COCO", metavar="ROOT")
    classes: tuple[str, ...] = setting(DEFAULT_CLASSES, "COCO category names (class folder names with "
                                       "--image-folders)", "build", "data", nargs="+")
    train_per_class: int | None = setting(1500, "train images per class (with --image-folders: at most this "
                                          "many, a seeded draw; all by default)", "build", "data",
                                          type=in_range(int, 1, MAX_PER_CLASS))
    val_per_class: int | None = setting(500, "val images per class (with --image-folders: at most, as above)",
                                        "build", "data", type=in_range(int, 1, MAX_PER_CLASS))
    image_size: int = setting(64, "square side in pixels", "build", "data",
                              type=in_range(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE))
    seed: int = setting(5, "seed for the subset and the training", "build", "data", type=in_range(int, 0, MAX_SEED))
    exclusive: bool = setting(False, "skip images that contain two or more of the classes (with --image-folders: "
                              "pictures that sit in two class folders or in both splits)", "build", "data")
    dataset_dir: str = setting("hw4_dataset", "where train_data/, val_data/ and manifest.json go", "run", "data",
                               type=path_argument)
    workers: int = setting(max(1, os.cpu_count() or 1), "processes that decode images during the build",
                           "run", "data", default_text=f"CPU count, here {os.cpu_count()}", type=in_range(int, 1, 512))
    download: bool = setting(False, "fetch the annotations if missing and only the images the subset needs",
                             "run", "download")
    coco_url_base: str | None = setting(None, "mirror laid out like http://images.cocodataset.org", "run",
                                        "download", default_text="each image's coco_url")
    download_workers: int = setting(8, "parallel downloads", "run", "download", type=in_range(int, 1, 256))
    download_timeout: float = setting(30.0, "read timeout per request in seconds; connecting times out after "
                                      "10 s", "run", "download", type=in_range(float, 0, 86400, low_open=True))
    download_retries: int = setting(5, "retries per file after a timeout, reset, 5xx or 429, with "
                                    "exponential backoff", "run", "download", type=in_range(int, 0, 100))
    nets: tuple[str, ...] = setting(DEFAULT_NETS, "nets to train; 'all' trains every net of the table (NETS; the "
                                    "table is printed at start), 'q5' Net1-3 and the remedies of "
                                    "results/exercise-all", "run", "training", nargs="+")
    batch_size: int = setting(4, "training batch size", "train", "training", type=in_range(int, 1, 65536))
    epochs: int = setting(15, "training epochs", "train", "training", type=in_range(int, 1, 10000))
    lr: float = setting(1e-3, "Adam learning rate", "train", "training",
                        type=in_range(float, 0, sys.float_info.max, low_open=True))
    betas: tuple[float, float] = setting((0.9, 0.99), "Adam betas", "train", "training",
                                         type=in_range(float, 0, 1, high_open=True), nargs=2)
    device: str = setting("auto", "auto picks CUDA when torch sees it, else the CPU", "run", "training",
                          choices=("auto", "cpu", "cuda"))
    threads: int = setting(default_threads(), "torch threads per net; metrics depend on it", "train",
                           "training", default_text=f"min(2, CPUs), here {default_threads()}",
                           type=in_range(int, 1, 1024))
    jobs: int = setting(1, "nets trained in parallel processes, if the cores allow jobs x threads", "run",
                        "training", type=in_range(int, 1, 256))
    seeds: int = setting(1, "train every net for seeds SEED..SEED+N-1 on the same subset and report paired "
                         "differences with 95%% t-intervals", "run", "training", type=in_range(int, 1, 1000))
    out: str = setting("results", "output folder", "run", "training", type=path_argument)
    resume: bool = setting(False, "continue unfinished nets from their checkpoints (OUT/checkpoints/, or "
                           "OUT/seed_<s>/checkpoints/ with --seeds), at their last finished epoch, and skip finished "
                           "ones (also those whose checkpoints are gone but whose results are in metrics.json)",
                           "run", "training")
    overwrite: bool = setting(False, "replace what --out holds: a run with other settings, an unfinished run's "
                              "checkpoints, or files hw4 did not write", "run", "training")
    dry_run: bool = setting(False, "one batch per epoch, for smoke tests", "train", "training")
    train_seed: int | None = setting(None, "training seed; None means --seed", "train", "training", flag="")

    @property
    def training_seed(self) -> int:
        return self.seed if self.train_seed is None else self.train_seed

    def settings(self, role: str) -> dict[str, Any]:
        """The fields of one role, as JSON-able values."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self) if f.metadata["role"] == role}

    def build_settings(self) -> dict[str, Any]:
        """What decides the dataset's content, paths as given: they end up in committed results, which
        must not name this machine's folders."""
        return {**self.settings("build"), "version": MANIFEST_VERSION}

    def build_fingerprint(self) -> str:
        """The build settings, where the paths really point and the annotation file's size and mtime:
        the same relative path from another folder, or an edited file, is another build."""
        if self.image_folders is not None:  # the listing stands in for the annotation file
            return fingerprint({**self.build_settings(), "image_folders": str(Path(self.image_folders).resolve()),
                                "listing": folder_listing_digest(Path(self.image_folders))})
        ann = Path(self.ann_file)
        stat = ann.stat() if ann.is_file() else None
        return fingerprint({**self.build_settings(), "ann_file": str(ann.resolve()),
                            "image_dir": str(Path(self.image_dir).resolve()),
                            "ann_file_size": stat and stat.st_size, "ann_file_mtime_ns": stat and stat.st_mtime_ns})

    def train_settings(self) -> dict[str, Any]:
        """What decides the training metrics (the resume fingerprint hashes these)."""
        return {**self.settings("train"), "train_seed": self.training_seed}


# =============================================================================
# COCO subset: choose the images. Reads the annotation file (checked as untrusted input) and hands
# a Selection (picked ids per class, and where replacements come from) to the build (below).
# =============================================================================

COCO_LISTS = {"categories": ("id", "name"), "images": ("id", "file_name"), "annotations": ("image_id", "category_id")}


def check_coco_json(data: Any, path: Path) -> None:
    """Treat the annotation file as untrusted: every field hw4 reads is there with the right type,
    ids are unique integers, category names unique strings, and every reference resolves."""
    def bad(what: str) -> UserError:
        return UserError(f"annotation file {path}: {what}; fix the file or pass another --ann-file")

    def is_id(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not isinstance(data, dict):
        raise UserError(f"annotation file {path} is not COCO instances JSON (not an object); check --ann-file")
    for key, needed in COCO_LISTS.items():
        if not isinstance(data.get(key), list):
            raise UserError(f"annotation file {path} has no '{key}' list; COCO instances JSON needs "
                            f"'categories', 'images' and 'annotations'; check --ann-file")
        for k, item in enumerate(data[key]):
            missing = [f for f in needed if not isinstance(item, dict) or f not in item]
            if missing:
                raise bad(f"{key} entry #{k} has no '{missing[0]}'")
    ids: dict[str, dict[int, int]] = {"categories": {}, "images": {}}
    for key, seen in ids.items():
        for k, item in enumerate(data[key]):
            if not is_id(item["id"]):
                raise bad(f"{key} entry #{k} has an id that is not an integer ({item['id']!r})")
            if item["id"] in seen:
                raise bad(f"{key} entries #{seen[item['id']]} and #{k} share the id {item['id']}"
                          + (" (one photo could land in two classes or splits)" if key == "images" else ""))
            seen[item["id"]] = k
    names: dict[str, int] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat["name"], str):
            raise bad(f"categories entry #{k} (id {cat['id']}) has a name that is not a string ({cat['name']!r})")
        if cat["name"] in names:
            raise bad(f"categories entries #{names[cat['name']]} and #{k} are both named {cat['name']!r}")
        names[cat["name"]] = k
    for k, image in enumerate(data["images"]):
        if not isinstance(image["file_name"], str):
            raise bad(f"images entry #{k} (id {image['id']!r}) has a file_name that is not a string "
                      f"({image['file_name']!r})")
    for k, ann in enumerate(data["annotations"]):
        for ref, key in (("image_id", "images"), ("category_id", "categories")):
            if not is_id(ann[ref]) or ann[ref] not in ids[key]:
                raise bad(f"annotations entry #{k} has {ref} {ann[ref]!r}, which no {key} entry has")


def load_coco(ann_file: str | Path):
    """Load and check an instances JSON, then index it with pycocotools (without its chatter)."""
    from pycocotools.coco import COCO

    path = Path(ann_file)
    if path.is_dir():
        raise UserError(f"--ann-file {path} is a folder; pass the instances JSON file inside it")
    if not path.is_file():
        raise UserError(f"annotation file not found: {path} (pass --ann-file, fix --data_dir or add --download; or "
                        "run `python hw4.py --demo` on the built-in demo data)")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, OSError, RecursionError) as exc:
        raise UserError(f"annotation file {path} is not COCO instances JSON ({exc}); check --ann-file") from None
    check_coco_json(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def resolve_category_ids(coco, class_names: Sequence[str]) -> dict[str, int]:
    """Map each class name to its COCO category id; unknown names list close matches."""
    by_name = {cat["name"]: cat["id"] for cat in coco.dataset["categories"]}
    for name in class_names:
        if name not in by_name:
            close = difflib.get_close_matches(name, by_name, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"known classes: {', '.join(sorted(by_name)[:12])}{' ...' if len(by_name) > 12 else ''}")
            raise UserError(f"unknown class {name!r} in the annotation file; {hint}")
    return {name: by_name[name] for name in class_names}


def candidate_ids_per_class(coco, cat_ids: dict[str, int], exclusive: bool) -> dict[str, list[int]]:
    """Per class, the sorted ids of the images that contain it, from coco.catToImgs one class at a
    time (getImgIds with several ids returns the intersection, with none every image)."""
    images_of = {name: set(coco.catToImgs.get(cid, [])) for name, cid in cat_ids.items()}
    if exclusive:
        counts: dict[int, int] = {}
        for img_id in (i for ids in images_of.values() for i in ids):
            counts[img_id] = counts.get(img_id, 0) + 1
        images_of = {name: {i for i in ids if counts[i] == 1} for name, ids in images_of.items()}
    return {name: sorted(ids) for name, ids in images_of.items()}


class CandidateQueue:
    """A class's shuffled candidates, handed out in order, skipping images used elsewhere."""

    def __init__(self, ids: list[int]):
        self.ids, self.pos = ids, 0

    def take(self, used: set[int]) -> int | None:
        """The next candidate nobody has used, now marked used; None when the class has run out."""
        while self.pos < len(self.ids):
            img_id = self.ids[self.pos]
            self.pos += 1
            if img_id not in used:
                used.add(img_id)
                return img_id
        return None


@dataclass
class Selection:
    """The picked image ids per class, and the queues that their replacements come from."""

    picks: dict[str, list[int]]
    queues: dict[str, CandidateQueue]
    used: set[int]

    def replacement(self, class_name: str) -> int | None:
        """The one replacement rule, for the build and --download alike: the next candidate of the
        class, in plan order, that no class has used. So --download fetches what the build will use."""
        return self.queues[class_name].take(self.used)


def select_subset(coco, cfg: Config) -> Selection:
    """Shuffle each class's candidates with one RNG seeded by --seed, then deal images to the classes
    in turn, so that an image showing two requested classes goes to whichever reaches it first and
    is never used again, in either split."""
    candidates = candidate_ids_per_class(coco, resolve_category_ids(coco, cfg.classes), cfg.exclusive)
    need = cfg.train_per_class + cfg.val_per_class
    for name, ids in candidates.items():
        if len(ids) < need:
            kind = "images with only this class (--exclusive)" if cfg.exclusive else "images"
            raise UserError(f"class {name!r} has {len(ids)} {kind} but needs {need} ({cfg.train_per_class} train + "
                            f"{cfg.val_per_class} val); lower --train-per-class/--val-per-class")
    rng = random.Random(cfg.seed)
    queues = {}
    for name, ids in candidates.items():
        rng.shuffle(ids)
        queues[name] = CandidateQueue(ids)
    selection = Selection({name: [] for name in queues}, queues, set())
    for _ in range(need):
        for name, picks in selection.picks.items():
            img_id = selection.replacement(name)
            if img_id is None:
                raise UserError(f"class {name!r} has {len(picks)} images left after removing those already taken "
                                f"by other classes but needs {need}; lower --train-per-class/--val-per-class or "
                                "use fewer classes")
            picks.append(img_id)
    return selection


# =============================================================================
# Loading: the built subset as uint8 tensors, and the one uint8 -> net-input conversion.
# Hands SubsetTensors to training and to the figures.
# =============================================================================


@dataclass
class SubsetTensors:
    """The built subset in memory: uint8 images (N x 3 x H x W) and int64 labels.

    train is in manifest order (each epoch draws its own permutation). val is held in one fixed,
    seeded, class-mixed order, because the manifest stores it class by class and every 400-image
    val window would otherwise hold one class; val_entry maps a val position to its manifest entry.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_entry: torch.Tensor

    @classmethod
    def from_splits(cls, data: dict[str, torch.Tensor], subset_seed: int) -> "SubsetTensors":
        """From manifest-order tensors; the val order is drawn from the subset's seed, so every net,
        epoch, seed and resume uses the same one (the original shuffled its val file list once)."""
        order = torch.randperm(len(data["val_y"]), generator=torch.Generator().manual_seed(subset_seed * 7_919 + 1))
        return cls(data["train_x"], data["train_y"], data["val_x"][order], data["val_y"][order], order)

    def to(self, device: torch.device) -> "SubsetTensors":
        """On an accelerator the whole subset lives in its memory (10,000 x 12 KiB uint8 = 120 MiB)."""
        return SubsetTensors(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def decoded_splits(dataset_dir: str | Path, manifest: dict) -> dict[str, torch.Tensor]:
    """train_x/val_x (uint8, N x 3 x S x S) and train_y/val_y (int64) in manifest order.

    Decoding thousands of small files costs seconds per run, so the tensors are cached beside the
    dataset, keyed by the manifest fingerprint; a rebuild replaces the folder and with it the cache.
    """
    root = Path(dataset_dir)
    cache = root / f"tensors-{manifest['fingerprint']}.pt"
    with contextlib.suppress(Exception):  # a damaged or wrong cache is only a cache: decode again
        cached = quiet_torch_load(cache)
        if cache_is_valid(cached, manifest):
            return {k: v for k, v in cached.items() if k != "digest"}
    size, data = manifest["config"]["image_size"], {}
    for split in SPLITS:
        entries = [e for e in manifest["entries"] if e["split"] == split]
        images = np.empty((len(entries), 3, size, size), dtype=np.uint8)
        for k, entry in enumerate(entries):
            path = root / entry["path"]
            try:
                with open_picture(path) as img:
                    arr = np.asarray(img.convert("RGB"))
            except IMAGE_ERRORS as exc:
                raise UserError(f"cannot read {path} ({type(exc).__name__}); delete {root} and rebuild") from None
            if arr.shape != (size, size, 3):
                raise UserError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}; delete {root} "
                                "and rebuild")
            images[k] = arr.transpose(2, 0, 1)
        data[f"{split}_x"] = torch.from_numpy(images)
        data[f"{split}_y"] = torch.tensor([e["label"] for e in entries], dtype=torch.int64)
    save_torch_atomic({**data, "digest": tensors_digest(data)}, cache)
    return data


def tensors_digest(data: dict[str, torch.Tensor]) -> str:
    """A digest of the decoded tensors' bytes, saved with the cache: a cache damaged or edited after it was
    written (zeroed images, shifted labels) no longer matches it."""
    digest = hashlib.sha256()
    for key in (f"{split}_{part}" for split in SPLITS for part in "xy"):
        digest.update(key.encode() + data[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_is_valid(data: Any, manifest: dict) -> bool:
    """The tensors the manifest describes: uint8 images of the right size and count, the manifest's labels, and
    bytes that still match the digest saved with them."""
    size = manifest["config"]["image_size"]
    for split in SPLITS:
        labels = [e["label"] for e in manifest["entries"] if e["split"] == split]
        x, y = data[f"{split}_x"], data[f"{split}_y"]
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == torch.uint8
                and tuple(x.shape) == (len(labels), 3, size, size) and y.dtype == torch.int64
                and y.tolist() == labels):
            return False
    return data.get("digest") == tensors_digest(data)


def load_dataset_tensors(dataset_dir: str | Path, manifest: dict) -> SubsetTensors:
    return SubsetTensors.from_splits(decoded_splits(dataset_dir, manifest), manifest["config"]["seed"])


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on the CPU: oneDNN's NHWC convolutions ran Net1 at 1420 img/s against 1112
    (Net3: 546 against 438) at batch 4 on a 2-core x86 CPU. Elsewhere the default layout."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


@functools.lru_cache(maxsize=None)
def unit_scale(device: torch.device) -> torch.Tensor:
    """v / 255 for v = 0..255, divided once on the CPU: exactly ToTensor's values. Dividing on CUDA
    by a Python number multiplies by fl32(1/255), which is 1 ulp off for 126 of the 256 values."""
    return torch.arange(256, dtype=torch.float32).div(255).to(device)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> the float tensor the nets eat: ToTensor's [0, 1] scaling to the bit on every
    device (a table lookup, no arithmetic), in the layout the device's convolutions run fastest.
    Training, validation and predict all go through here. On the CPU, float32 division is correctly rounded,
    so dividing gives the same bits as the table (tested) without the int conversion and the gather."""
    if x.device.type == "cpu":
        return x.to(torch.float32).div_(255).contiguous(memory_format=torch.channels_last)
    return unit_scale(x.device)[x.int()].contiguous(memory_format=memory_format(x.device))


# =============================================================================
# Models: the net table (NETS) and the one net class that every entry builds.
# Hands HW4Net to training and predict.
# =============================================================================


DROPOUT = 0.5  # the classic rate for fully connected layers (Srivastava et al. 2014)
# The noise's standard deviation, fixed before any noise run trained and from no val number: 0.1 of the [0, 1]
# pixel scale (about 26 of 255 grey levels), under a third of the exercise's training pixels' own spread (std
# 0.27 over all 7,500 pictures and channels), so that every object stays visible to a person.
NOISE_STD = 0.1

NETS: dict[str, NetSpec] = {
    "net1": NetSpec("Net1", pickle_name="results1.pkl", about="HW4Net, the exercise's net"),
    "net2": NetSpec("Net2", padding=1, pickle_name="results2.pkl", base="net1", about="Net1 with padding 1"),
    "net3": NetSpec("Net3", extra_convs=10, pickle_name="results3.pkl", base="net1", about="Net1 + 10 extra 3x3 convs"),
    "net3bn": NetSpec("Net3-BN", extra_convs=10, block="bn", base="net3", remedy="batchnorm",
                      about="Net3 with BatchNorm after each chain conv"),
    "net3res": NetSpec("Net3-Res", extra_convs=10, block="res", base="net3", remedy="residual",
                       about="Net3 with a residual connection around each chain conv"),
    "net3xavier": NetSpec("Net3-Xavier", extra_convs=10, init="xavier_all", base="net3", remedy="xavier",
                          about="Net3 with Xavier-uniform weights in every layer, torch's biases"),
    "net3he": NetSpec("Net3-He", extra_convs=10, init="he", base="net3", remedy="he",
                      about="Net3 with Kaiming (He) normal conv weights, zero conv biases (hw4's addition)"),
    "net1aug": NetSpec("Net1-aug", augment=True, base="net1", remedy="augment",
                       about="Net1 trained with random flips and crops (hw4's addition)"),
    "net2aug": NetSpec("Net2-aug", padding=1, augment=True, base="net2", remedy="augment",
                       about="Net2 trained with random flips and crops (hw4's addition)"),
    "net1drop": NetSpec("Net1-drop", dropout=DROPOUT, base="net1", remedy="dropout",
                        about=f"Net1 with dropout {DROPOUT} before and after fc1"),
    "net2drop": NetSpec("Net2-drop", padding=1, dropout=DROPOUT, base="net2", remedy="dropout",
                        about=f"Net2 with dropout {DROPOUT} before and after fc1"),
    "net1fc": NetSpec("Net1-FC", hidden=(64, 64), base="net1", remedy="fc", about="Net1 with a second hidden FC layer"),
    "net1half": NetSpec("Net1-half", train_fraction=0.5, base="net1", remedy="data",
                        about="Net1 on a fixed half of the training set"),
    # Added for the original's own wording of Q5 (issue faithful-remedies): Xavier on every layer of every net,
    # noise on the samples, and resolution, which these pictures can only measure downward from 64x64.
    "net1xavier": NetSpec("Net1-Xavier", init="xavier_all", base="net1", remedy="xavier",
                          about="Net1 with Xavier-uniform weights in every layer, torch's biases"),
    "net1noise": NetSpec("Net1-noise", noise_std=NOISE_STD, base="net1", remedy="noise",
                         about=f"Net1 trained on pictures with Gaussian noise of std {NOISE_STD} added"),
    "net2noise": NetSpec("Net2-noise", padding=1, noise_std=NOISE_STD, base="net2", remedy="noise",
                         about=f"Net2 trained on pictures with Gaussian noise of std {NOISE_STD} added"),
    "net1res50": NetSpec("Net1-res0.5", input_scale=0.5, base="net1", remedy="resolution",
                         about="Net1 on its pictures averaged down to 1/2 the side (32x32 from 64x64)"),
    "net1res75": NetSpec("Net1-res0.75", input_scale=0.75, base="net1", remedy="resolution",
                         about="Net1 on its pictures averaged down to 3/4 the side (48x48 from 64x64)"),
}
# Named --nets sets, fixed when they are made: a committed run's documented command names its set, so that a new row
# of NETS never makes that command train something new ("all" is every row of today's table).
NET_SETS: dict[str, tuple[str, ...]] = {
    "q5": ("net1", "net2", "net3", "net3bn", "net3res", "net3xavier", "net3he", "net1aug", "net2aug", "net1drop",
           "net2drop", "net1fc", "net1half", "net1xavier", "net1noise", "net2noise", "net1res50", "net1res75"),
}
GRAD_LAYERS = WATCHED_LAYERS  # where HW4Net.watched_weights looks (conv1, the last conv, fc1)
CHAIN_BLOCKS = ("plain", "bn", "res")  # NetSpec.block
# NetSpec.init. "xavier" is the conv-only variant (zero biases) that Net3-Xavier had before it followed the
# original's "Xavier initialization for the weights of each layer"; it stays so that its weights files still load.
INITS = ("default", "xavier_all", "he", "xavier")


def pickle_name(name: str) -> str:
    return NETS[name].pickle_file(name)


def net_label(name: str) -> str:
    """How figures and the report name a net: its table label."""
    return NETS[name].label if name in NETS else name


class ChainBlock(nn.Module):
    """conv 3x3 (padding 1, so the size stays), then BatchNorm ("bn"), then ReLU; "res" adds the
    block's input before the ReLU, so the gradient has a path around the conv."""

    def __init__(self, channels: int, block: str):
        super().__init__()
        if block not in CHAIN_BLOCKS:
            raise ValueError(f"unknown chain block {block!r}")
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=block != "bn")
        self.bn = nn.BatchNorm2d(channels) if block == "bn" else None
        self.residual = block == "res"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) if self.bn is None else self.bn(self.conv(x))
        return F.relu(x + y if self.residual else y)


def tap(taps: dict[str, torch.Tensor] | None, name: str, x: torch.Tensor) -> torch.Tensor:
    """Keep a ReLU layer's output when the caller asked for them (dead-unit counting)."""
    if taps is not None:
        taps[name] = x
    return x


class HW4Net(nn.Module):
    """conv(3->16) relu pool, conv(16->32) relu pool, [chain of 32->32 blocks], fc 64, [fc 64], fc C.

    fc1's input size is measured by a dry forward of the conv layers on a zero image, so any padding,
    channel count or chain fits. The net's name, spec, image size and classes travel inside its
    state_dict (as '_extra_state'), so saved weights can be used without other files.
    """

    def __init__(self, name: str, spec: NetSpec, image_size: int, classes: Sequence[str]):
        super().__init__()
        c1, c2 = spec.channels
        self.meta = {"net": name, "spec": dataclasses.asdict(spec), "image_size": image_size, "classes": list(classes)}
        self.dropout = spec.dropout
        self.input_side = scaled_side(image_size, spec.input_scale)
        self.conv1 = nn.Conv2d(3, c1, 3, padding=spec.padding)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=spec.padding)
        self.conv_chain = nn.ModuleList(ChainBlock(c2, spec.block) for _ in range(spec.extra_convs))
        self.fc1 = nn.Linear(self.conv_output_size(image_size), spec.hidden[0])
        self.extra_fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(spec.hidden, spec.hidden[1:]))
        self.fc2 = nn.Linear(spec.hidden[-1], len(classes))
        self.initialise(spec.init)

    def initialise(self, init: str) -> None:
        """xavier_all: Xavier-uniform weights in every conv and linear layer, as the original proposes ("Xavier
        initialization for the weights of each layer"); its words name the weights, so the biases keep torch's
        default. he (hw4's addition): Kaiming-normal (fan-in, for ReLU) conv weights, zero conv biases. xavier:
        the older conv-only Xavier, zero conv biases."""
        if init == "xavier_all":
            for layer in (m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))):
                nn.init.xavier_uniform_(layer.weight)
        elif init != "default":
            fill = {"xavier": nn.init.xavier_uniform_,
                    "he": functools.partial(nn.init.kaiming_normal_, nonlinearity="relu")}[init]
            for conv in (m for m in self.modules() if isinstance(m, nn.Conv2d)):
                fill(conv.weight)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)

    def conv_output_size(self, image_size: int) -> int:
        """Flattened size after the conv layers, measured in eval mode (BatchNorm stats untouched)."""
        self.eval()
        try:
            with torch.no_grad():
                return self.features(torch.zeros(1, 3, image_size, image_size)).shape[1]
        except RuntimeError:
            raise UserError(f"--image-size {image_size} is too small for net {self.meta['net']}; use a larger "
                            "one") from None
        finally:
            self.train()

    def features(self, x: torch.Tensor, taps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        if self.input_side is not None:  # a lower resolution from the same pictures: each pixel the mean of its area
            x = F.interpolate(x, size=(self.input_side, self.input_side), mode="area")
        x = self.pool(tap(taps, "conv1", F.relu(self.conv1(x))))
        x = self.pool(tap(taps, "conv2", F.relu(self.conv2(x))))
        for k, block in enumerate(self.conv_chain, 1):
            x = tap(taps, f"chain{k}", block(x))
        return x.flatten(1)

    def forward(self, x: torch.Tensor, taps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """`taps`, when given, receives every ReLU layer's output by name (conv1, conv2, chain<k>, fc1,
        fc1_<k>). Dropout draws from torch's global RNG, which train() seeds from (seed, epoch)."""
        x = self.drop(self.features(x, taps))
        x = self.drop(tap(taps, "fc1", F.relu(self.fc1(x))))
        for k, fc in enumerate(self.extra_fcs, 2):
            x = self.drop(tap(taps, f"fc1_{k}", F.relu(fc(x))))
        return self.fc2(x)

    def drop(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout while training, only where the spec asks for it: at rate 0 torch would still draw a mask."""
        return F.dropout(x, self.dropout, training=True) if self.dropout and self.training else x

    def watched_weights(self) -> list[torch.Tensor]:
        """First conv, last conv and fc1 (GRAD_LAYERS): where the gradient norms are recorded."""
        return [self.conv1.weight, (self.conv_chain[-1].conv if len(self.conv_chain) else self.conv2).weight,
                self.fc1.weight]

    def get_extra_state(self) -> dict:
        return dict(self.meta)

    def set_extra_state(self, state: dict) -> None:
        self.meta = dict(state)


def build_net(name: str, image_size: int, classes: Sequence[str], spec: NetSpec | None = None) -> HW4Net:
    return HW4Net(name, spec or NETS[name], image_size, classes)


def net_outline(name: str, image_size: int, classes: Sequence[str]) -> HW4Net:
    """A net built for its sizes and parameter count, on the CPU with the RNG's state put back, so that
    building it draws nothing a training run would see. Not on the meta device: torch's first operation
    there imports its compiler stack (torch._dynamo), seconds in every process."""
    with torch.random.fork_rng(devices=[]):
        return build_net(name, image_size, classes)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def print_net_table(nets: Sequence[str], image_size: int, classes: Sequence[str]) -> None:
    """fc1 input size and parameter count of each net, for the chosen image size."""
    width = max(len(n) for n in nets)
    print(f"{'net':<{width}} {'fc1 in':>7} {'params':>9}   (image size {image_size})")
    for name in nets:
        net = net_outline(name, image_size, classes)
        print(f"{name:<{width}} {net.fc1.in_features:>7} {count_parameters(net):>9,}   {NETS[name].about}")


# =============================================================================
# Training: the typed training state, the hot loop, checkpoints at epoch ends (metrics: hw4_records.METRICS).
# Hands a finished TrainState (histories, best epoch, its weights and val logits) to Results.
# =============================================================================


def pick_device(requested: str) -> torch.device:
    """auto: CUDA when torch sees it, else the CPU. Apple's MPS and Intel's XPU are never picked: hw4 has
    not run on them, so their numbers and determinism are unknown."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu")
    return torch.device(requested)


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed every RNG and make CUDA choose deterministic kernels, so that a seed decides the numbers.

    cuDNN: deterministic algorithms, no benchmark autotuning (it may pick other kernels in another
    run). TF32 off: it rounds fp32 convolutions to a 10-bit mantissa on recent GPUs, about 1e-3
    relative off the CPU, and at batch 4 these launch-bound kernels gain nothing from it. On CUDA, ops
    without a deterministic kernel warn rather than fail. Not on the CPU, whose kernels are deterministic
    at a fixed thread count already: there torch's deterministic mode cost 18% of Net3's step time (it
    fills every new buffer) and changed no number (measured on real COCO, 3 nets, bit for bit).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS; read at its first use
    torch.use_deterministic_algorithms(device.type == "cuda", warn_only=True)


def make_optimizer(net: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Adam:
    """Adam(lr, betas) as the exercise asks; fused on the CPU and CUDA (on a 2-core CPU ~0.3 ms a step
    against ~2 ms for the for-loop implementation, a large share of a batch-4 step), else the default."""
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas,
                            fused=True if device.type in ("cpu", "cuda") else None)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The seed of one epoch's draws of one kind (0: order, 1: augmentation, 2: dropout)."""
    return seed * 100_003 + epoch + stream * 7_777_777


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one (seed, epoch, stream): a resumed run redraws exactly what an
    uninterrupted one drew, without saving RNG states."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, stream))


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The training order of one epoch: a fresh shuffle each epoch, derived from (seed, epoch)."""
    return torch.randperm(n, generator=epoch_generator(seed, epoch)).to(device)


def training_indices(labels: torch.Tensor, fraction: float, subset_seed: int) -> torch.Tensor:
    """The training images a net sees: all of them, or a fixed class-stratified share, drawn from
    the subset's seed, so it is the same share in every training seed and epoch."""
    labels = labels.cpu()
    if fraction >= 1:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(subset_seed * 7_919 + 2)
    keep = []
    for c in labels.unique(sorted=True):
        members = torch.nonzero(labels == c).flatten()
        keep.append(members[torch.randperm(len(members), generator=gen)[:max(1, round(fraction * len(members)))]])
    return torch.cat(keep).sort().values


@dataclass
class Augmentation:
    """One epoch's augmentation draws, by position in the epoch: a horizontal flip (0/1) and the
    top-left corner (0..2*pad) of the crop from the image zero-padded by `pad` pixels."""

    flip: torch.Tensor
    corner: torch.Tensor
    pad: int = 4

    @classmethod
    def for_epoch(cls, n: int, seed: int, epoch: int, device: torch.device, pad: int = 4) -> "Augmentation":
        gen = epoch_generator(seed, epoch, stream=1)
        flip = torch.randint(0, 2, (n,), generator=gen)
        corner = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
        return cls(flip.to(device), corner.to(device), pad)

    def apply(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Augment a uint8 batch (B x C x H x W) on its device with gathers, no Python loop per image."""
        b, _, h, w = x.shape
        flip, corner = self.flip[start:start + b], self.corner[start:start + b]
        padded = F.pad(x, (self.pad,) * 4)
        rows = corner[:, 0, None] + torch.arange(h, device=x.device)              # B x H
        cols = corner[:, 1, None] + torch.arange(w, device=x.device)              # B x W
        cols = torch.where(flip[:, None].bool(), cols.flip(1), cols)
        batch = torch.arange(b, device=x.device)[:, None, None]
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@dataclass
class InputNoise:
    """One epoch's additive Gaussian noise on the training inputs, drawn batch by batch in step order from its own
    (seed, epoch) stream: a resumed epoch, which restarts at its first step, draws the same noise again."""

    std: float
    generator: torch.Generator

    @classmethod
    def for_epoch(cls, std: float, seed: int, epoch: int) -> "InputNoise":
        return cls(std, epoch_generator(seed, epoch, stream=3))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x plus noise of the spec's std, drawn on the CPU (the same numbers on every device), not clamped to
        [0, 1]: clamping would shift dark and bright pixels, so the noise would no longer average to zero."""
        return x + torch.randn(x.shape, generator=self.generator).mul_(self.std).to(x.device)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> np.ndarray:
    """Rows true class, columns predicted class; one bincount on the host instead of a per-sample loop."""
    flat = torch.bincount(labels.cpu() * num_classes + preds.cpu(), minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).numpy().astype(np.int64)


def steps_per_epoch(n: int, cfg: Config) -> int:
    return 1 if cfg.dry_run else math.ceil(n / cfg.batch_size)


@dataclass
class History:
    """Everything recorded per epoch (and per 100 iterations); the pickles' lists.

    epoch holds the original's series: train values are running means over the epoch, taken while the
    weights change and with augmentation, dropout and batch statistics active. train_clean measures the
    training images after the epoch, in eval mode and unaugmented, like val, so that train - val gaps
    compare like with like across nets: after every new best epoch and the last one, NaN elsewhere.
    """

    steps100: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in metric_keys()})
    epoch: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in metric_keys()})
    train_clean: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in clean_train_keys()})
    grad_norms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in GRAD_LAYERS})
    grad_norms_steps100: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in GRAD_LAYERS})
    dead_units: dict[str, list[float]] = field(default_factory=dict)
    # Adam's relative update per layer (EpochTrace), like grad_norms; {} when a checkpoint from before it was resumed
    update_sizes: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in GRAD_LAYERS})
    update_sizes_steps100: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in GRAD_LAYERS})


@dataclass
class Best:
    """The epoch whose val value of the picking metric is best: its confusion matrices, weights
    (on the CPU, so saved weights load anywhere) and per-image val logits (class-mixed val order)."""

    epoch: int
    score: float
    train_confusion: list[list[int]]
    val_confusion: list[list[int]]
    state_dict: dict[str, Any]
    val_logits: torch.Tensor


@dataclass
class TrainState:
    """A net's training across epochs and processes: what a checkpoint holds besides the weights and
    Adam's state. `epoch` counts finished epochs; nothing of an unfinished epoch is kept."""

    net: str
    fingerprint: str
    epoch: int = 0
    history: History = field(default_factory=History)
    best: Best | None = None
    train_time_s: float = 0.0
    steps_time_s: float = 0.0
    last_val_predictions: torch.Tensor | None = None  # the last finished epoch's class per val image
    infrastructure: dict | None = None  # where its first epoch trained (infrastructure()): a resume keeps it

    def to_checkpoint(self) -> dict:
        """Plain dicts, lists and tensors: what torch.load(weights_only=True) accepts."""
        blob = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        blob["history"] = dataclasses.asdict(self.history)
        blob["best"] = dataclasses.asdict(self.best) if self.best is not None else None
        return blob

    @classmethod
    def from_checkpoint(cls, blob: dict) -> "TrainState":
        """A checkpoint written before last_val_predictions existed lacks it: the next epoch records it (a
        net already finished then has no final-epoch predictions, which the report says). One written before
        infrastructure was kept lacks that: the process that resumes it records its own."""
        late = ("last_val_predictions", "infrastructure")  # recorded since a later format; None when absent
        fields = {f.name: blob[f.name] for f in dataclasses.fields(cls) if f.name not in late}
        fields.update({name: blob.get(name) for name in late})
        history = {**blob["history"]}  # TypeError, as before, for a tampered non-mapping
        for key in ("update_sizes", "update_sizes_steps100"):  # a checkpoint from before they were recorded
            history.setdefault(key, {})
        fields["history"] = History(**history)
        fields["best"] = Best(**blob["best"]) if blob["best"] is not None else None
        return cls(**fields)


UPDATE_EVERY = 10  # after an epoch's first 100 steps, the update size is measured every 10th step


def measures_update(step: int) -> bool:
    """Every step of an epoch's first 100-iteration window, then every UPDATE_EVERY-th: measuring fc1's update
    at every step cost Net1 20% of its step time (benchmarks/update_sizes.py), this about 3%."""
    return step < WINDOW_STEPS or step % UPDATE_EVERY == 0


@dataclass
class EpochTrace:
    """One epoch's per-sample logits (in epoch order) and, per step and GRAD_LAYERS layer, the gradient norm and
    the relative size of Adam's update, ||w_after - w_before|| / ||w_before|| (NaN at steps measures_update
    skips): kept on the device until the epoch ends. The update is what the original's Q2 speaks of ("updates
    approach 0"); Adam divides each weight's gradient by its own running scale, so a small gradient need not
    make a small update."""

    logits: torch.Tensor
    grad_norms: torch.Tensor
    update_sizes: torch.Tensor


def train_epoch(net: HW4Net, opt: torch.optim.Optimizer, data: SubsetTensors, order: torch.Tensor,
                aug: Augmentation | None, noise: InputNoise | None, cfg: Config, desc: str) -> EpochTrace:
    """One pass over the training images in `order`, recording what EpochTrace holds.

    The hot loop: no host sync, no decoding, no DataLoader; a batch is an index slice of a uint8 tensor.
    """
    from tqdm import tqdm

    bs, n_steps = cfg.batch_size, steps_per_epoch(len(order), cfg)
    logits_out = torch.empty(min(len(order), n_steps * bs), net.fc2.out_features, device=order.device)
    grad_norms = torch.empty(n_steps, len(GRAD_LAYERS), device=order.device)
    update_sizes = torch.full((n_steps, len(GRAD_LAYERS)), math.nan, device=order.device)
    watched = net.watched_weights()
    weights = [w.detach() for w in watched]  # views of the parameters: Adam's in-place steps show through them
    before = [torch.empty_like(w) for w in watched]  # reused every step: no allocation in the loop
    net.train()
    for step in tqdm(range(n_steps), desc=desc, unit="batch", disable=None, leave=False):
        idx = order[step * bs:(step + 1) * bs]
        x = data.train_x[idx]
        if aug is not None:
            x = aug.apply(x, step * bs)
        x = to_input(x)
        if noise is not None:
            x = noise.apply(x)
        logits = net(x)
        loss = F.cross_entropy(logits, data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms[step] = torch.stack([torch.linalg.vector_norm(w.grad) for w in watched])
        measured = measures_update(step)
        if measured:
            torch._foreach_copy_(before, weights)
        opt.step()
        if measured:  # before becomes before - after; the weights' own norm is taken first
            norms_before = torch.stack(torch._foreach_norm(before))
            torch._foreach_sub_(before, weights)
            update_sizes[step] = torch.stack(torch._foreach_norm(before)) / norms_before
        logits_out[step * bs:step * bs + len(idx)] = logits.detach()
    return EpochTrace(logits_out, grad_norms, update_sizes)


@dataclass
class EvalResult:
    """Logits of images run in eval mode (val: in the class-mixed val order), their labels, and the dead
    share per ReLU layer (val only)."""

    logits: torch.Tensor
    labels: torch.Tensor
    dead_units: dict[str, float]


def dead_fraction(activation: torch.Tensor) -> float:
    """Share of units (channels, or features for fc layers) that are zero for every image given."""
    dims = [d for d in range(activation.dim()) if d != 1]
    return float((activation.amax(dim=dims) <= 0).float().mean())


def evaluate(net: HW4Net, x: torch.Tensor, y: torch.Tensor, cfg: Config, count_dead: bool = False) -> EvalResult:
    """Images in eval mode without gradients or augmentation, in chunks of 256 for speed (no optimizer
    step, so the chunk size changes no number); with count_dead, the first chunk counts dead ReLU units."""
    n = min(len(x), cfg.batch_size) if cfg.dry_run else len(x)
    logits, dead = [], {}
    net.eval()
    with torch.no_grad():
        for start in range(0, n, VAL_CHUNK):
            taps: dict[str, torch.Tensor] | None = {} if start == 0 and count_dead else None
            logits.append(net(to_input(x[start:min(n, start + VAL_CHUNK)]), taps))
            if taps is not None:
                dead = {layer: dead_fraction(a) for layer, a in taps.items()}
    return EvalResult(torch.cat(logits), y[:n], dead)


@dataclass
class EpochSummary:
    """One epoch's value of every metric key, and its confusion matrices."""

    values: dict[str, float]
    train_confusion: np.ndarray
    val_confusion: np.ndarray


def record_clean_train(history: History, clean: EvalResult | None) -> None:
    """One epoch's eval-mode train metrics, or NaN for an epoch where they were not measured."""
    logits, labels = (clean.logits.cpu().double(), clean.labels.cpu()) if clean is not None else (None, None)
    for m in METRICS:
        history.train_clean[series_key("train", m, clean=True)].append(
            math.nan if clean is None else float(m.per_sample(logits, labels).sum()) / len(labels))


def record_per_layer(per_epoch: dict[str, list[float]], windows: dict[str, list[float]], steps: torch.Tensor,
                     sampled: bool = False) -> None:
    """A per-step, per-GRAD_LAYERS buffer as the epoch's mean and the means of its whole 100-iteration windows (the
    first window shows the early steps, before layers die); layers absent from per_epoch are not recorded. sampled:
    the buffer is NaN at unmeasured steps, and the means are over the measured ones."""
    values = steps.cpu().double()
    full = len(values) // WINDOW_STEPS * WINDOW_STEPS
    mean = torch.nanmean if sampled else torch.mean
    for k, layer in enumerate(GRAD_LAYERS):
        if layer in per_epoch:
            per_epoch[layer].append(float(mean(values[:, k])))
            windows[layer].extend(mean(values[:full, k].view(-1, WINDOW_STEPS), 1).tolist())


def record_epoch(history: History, trace: EpochTrace, train_labels: torch.Tensor, val: EvalResult, cfg: Config,
                 num_classes: int) -> EpochSummary:
    """Turn the epoch's device buffers and the eval-mode outputs into history entries. Every reduction
    runs in float64 on the host: an epoch mean must not depend on the device's float32 summation order."""
    splits = {"train": (trace.logits.cpu().double(), train_labels.cpu()),
              "val": (val.logits.cpu().double(), val.labels.cpu())}
    values, window = {}, WINDOW_STEPS * cfg.batch_size
    for split, (logits, labels) in splits.items():
        for m in METRICS:
            key, per_sample = series_key(split, m), m.per_sample(logits, labels).double()
            full = per_sample.numel() // window * window  # whole windows of 100 iterations; a partial one is dropped
            windows = per_sample[:full].view(-1, window).mean(1).tolist() if full else []
            history.steps100.setdefault(key, []).extend(windows)
            values[key] = float(per_sample.sum()) / len(labels)
            history.epoch.setdefault(key, []).append(values[key])
    record_per_layer(history.grad_norms, history.grad_norms_steps100, trace.grad_norms)
    record_per_layer(history.update_sizes, history.update_sizes_steps100, trace.update_sizes, sampled=True)
    for layer, value in val.dead_units.items():
        history.dead_units.setdefault(layer, []).append(value)
    return EpochSummary(values, *(confusion_matrix(labels, logits.argmax(1), num_classes)
                                  for logits, labels in splits.values()))


def update_best(state: TrainState, net: nn.Module, summary: EpochSummary, val: EvalResult) -> bool:
    """Keep the confusion matrices, weights and val logits of the best epoch (by the picking metric)."""
    m = next(m for m in METRICS if m.picks_best)
    score = summary.values[series_key("val", m)]
    if state.best is not None and not (score > state.best.score if m.higher_is_better else score < state.best.score):
        return False
    state.best = Best(
        epoch=state.epoch + 1,
        score=score,
        train_confusion=summary.train_confusion.tolist(),
        val_confusion=summary.val_confusion.tolist(),
        state_dict={k: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v)
                    for k, v in net.state_dict().items()},
        val_logits=val.logits.detach().cpu().clone(),
    )
    return True


def print_epoch_line(state: TrainState, cfg: Config, seconds: float, improved: bool) -> None:
    e = state.history.epoch
    parts = [f"{split} " + " ".join(f"{m.short} {e[series_key(split, m)][-1]:.4f}" for m in METRICS)
             for split in SPLITS]
    print(f"{state.net} epoch {state.epoch:2d}/{cfg.epochs}  {'  '.join(parts)}  "
          f"{seconds:5.1f}s{'  *best' if improved else ''}", flush=True)
    if diverged_epoch(e) == state.epoch:  # stdout: a --jobs worker's stderr goes nowhere
        print(f"warning: {state.net} diverged in epoch {state.epoch} (its training numbers are no longer "
              f"finite); its results from here on mean nothing; try a lower --lr than {cfg.lr:g}", flush=True)


def run_fingerprint(cfg: Config, manifest: dict, name: str, device: torch.device) -> str:
    """What a checkpoint must match to be resumed: the dataset content digest, every training setting, the net's
    spec (augmentation, dropout and data share included) and the device type."""
    return fingerprint({**cfg.train_settings(), "dataset": manifest["content"], "net": name,
                        "spec": NETS[name].fingerprinted(), "device": device.type})


CHECKPOINT_FORMAT = 4  # bump when TrainState's fields change


def load_checkpoint(path: Path, expected_fingerprint: str) -> dict:
    """Load a checkpoint safely (weights_only), refusing damaged files and other configs."""
    try:
        ckpt = quiet_torch_load(path)
        ckpt["fingerprint"], ckpt["model"], ckpt["epoch"], ckpt["history"]  # noqa: B018 (shape check)
    except Exception as exc:
        raise UserError(f"checkpoint {path} is damaged or not an hw4 checkpoint "
                        f"({type(exc).__name__}); delete it to start that net again") from None
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {path} was written by another version of hw4; delete it (or drop "
                        "--resume) to start that net again")
    if ckpt["fingerprint"] != expected_fingerprint:
        raise UserError(f"checkpoint {path} was made with different settings (dataset, seed, "
                        "epochs, batch size, lr, betas, threads, net or device); rerun with the original "
                        "arguments, or delete it (or drop --resume) to start over")
    return ckpt


def restore_checkpoint(path: Path, fp: str, epochs: int, net: nn.Module, opt: torch.optim.Optimizer) -> TrainState:
    """Load a checkpoint into the net and optimizer and return its training state, after checking every
    part against the shape train() writes: a tampered or truncated file gets one line, never a traceback
    or a silently wrong run."""
    ckpt = load_checkpoint(path, fp)

    def bad(what: str) -> UserError:
        return UserError(f"checkpoint {path} is damaged ({what}); delete it to start that net again")

    epoch = ckpt["epoch"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= epochs:
        raise bad(f"epoch {epoch!r} is not a finished epoch count of 0..{epochs}")
    try:
        state = TrainState.from_checkpoint(ckpt)
        lengths = {len(v) for v in (*state.history.epoch.values(), *state.history.grad_norms.values(),
                                    *state.history.train_clean.values(), *state.history.dead_units.values(),
                                    *state.history.update_sizes.values())}
    except (KeyError, TypeError, AttributeError) as exc:
        raise bad(f"{type(exc).__name__} in its training state") from None
    if lengths - {epoch}:
        raise bad(f"its histories do not hold {epoch} epochs")
    if (state.best is None) != (epoch == 0) or (state.best is not None and not 1 <= state.best.epoch <= epoch):
        raise bad("its best epoch does not fit its epoch count")
    if state.infrastructure is not None:
        try:
            check_infrastructure(state.infrastructure, "infrastructure")
        except SchemaError as exc:
            raise bad(str(exc)) from None
    try:
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise bad(f"its weights or optimizer state do not fit the net: {type(exc).__name__}") from None
    return state


def train(name: str, data: SubsetTensors, manifest: dict, cfg: Config, device: torch.device) -> TrainState:
    """Train one net for cfg.epochs, validating after each epoch; returns its training state.

    A checkpoint is written at every epoch's end, and every draw of an epoch (its order,
    augmentation and dropout) comes from (seed, epoch): a kill loses at most the epoch in
    progress, and --resume redoes it exactly. The net seeds every RNG from its training seed,
    so its numbers do not depend on which nets ran before it.
    """
    spec, classes = NETS[name], manifest["classes"]
    fp = run_fingerprint(cfg, manifest, name, device)
    ckpt_file = Path(cfg.out) / "checkpoints" / f"{name}_last.pt"
    seed_everything(cfg.training_seed, device)
    net = build_net(name, cfg.image_size, classes).to(device, memory_format=memory_format(device))
    opt = make_optimizer(net, cfg, device)
    here = infrastructure(device, cfg.threads)
    state = TrainState(name, fp, infrastructure=here)
    if cfg.resume and ckpt_file.exists():
        state = restore_checkpoint(ckpt_file, fp, cfg.epochs, net, opt)
        state.infrastructure = state.infrastructure or here
        if state.epoch < cfg.epochs:
            print(f"{name}: resuming from {ckpt_file} after epoch {state.epoch}")
            if machine_of(state.infrastructure) != machine_of(here):
                print(f"note: {name}'s first epochs trained on {machine_of(state.infrastructure)}, and this machine "
                      f"is {machine_of(here)}: its numbers match neither type's (delete {ckpt_file} to start over)")
    shown = training_indices(data.train_y, spec.train_fraction, manifest["config"]["seed"]).to(device)
    clean_train = (data.train_x, data.train_y) if len(shown) == len(data.train_y) else \
        (data.train_x[shown], data.train_y[shown])  # the images this net trains on
    while state.epoch < cfg.epochs:
        t0 = time.perf_counter()
        torch.manual_seed(epoch_seed(cfg.training_seed, state.epoch, stream=2))  # dropout draws from it
        order = shown[epoch_permutation(len(shown), cfg.training_seed, state.epoch, device)]
        aug = Augmentation.for_epoch(len(order), cfg.training_seed, state.epoch, device) if spec.augment else None
        noise = InputNoise.for_epoch(spec.noise_std, cfg.training_seed, state.epoch) if spec.noise_std else None
        trace = train_epoch(net, opt, data, order, aug, noise, cfg, f"{name} epoch {state.epoch + 1}")
        state.steps_time_s += time.perf_counter() - t0
        val = evaluate(net, data.val_x, data.val_y, cfg, count_dead=True)
        summary = record_epoch(state.history, trace, data.train_y[order[:len(trace.logits)]], val, cfg, len(classes))
        improved = update_best(state, net, summary, val)
        state.last_val_predictions = val.logits.argmax(1).cpu()
        # eval-mode train metrics where the report reads them (a pass costs half an epoch on the CPU)
        record_clean_train(state.history, evaluate(net, *clean_train, cfg)
                           if improved or state.epoch + 1 == cfg.epochs else None)
        state.epoch += 1
        state.train_time_s += time.perf_counter() - t0
        print_epoch_line(state, cfg, time.perf_counter() - t0, improved)
        # everything needed to go on from this epoch's end: weights, Adam's moments, histories, best epoch
        save_torch_atomic({"format": CHECKPOINT_FORMAT, **state.to_checkpoint(), "model": net.state_dict(),
                           "optimizer": opt.state_dict()}, ckpt_file)
    return state


# =============================================================================
# Results of a training: the typed record (hw4_records.Results) filled from a finished training state,
# and the original's pickle layout.
# =============================================================================


def val_predictions(state: TrainState, data: SubsetTensors) -> dict[str, list[int]]:
    """Each val image's label and predicted class at the best epoch and (when the checkpoint recorded it) the
    final one: one small int per picture, so that a one-seed run can test two nets on the same pictures."""
    best = state.best.val_logits.argmax(1)
    out = {"labels": data.val_y[:len(best)].cpu().tolist(), "best": best.tolist()}
    if state.last_val_predictions is not None and len(state.last_val_predictions) == len(best):
        out["final"] = state.last_val_predictions.tolist()
    return out


def hardest_images(best: Best, data: SubsetTensors, manifest: dict) -> list[HardImage]:
    """Per class, the val images with the highest loss at the best epoch, highest first."""
    val_entries = [e for e in manifest["entries"] if e["split"] == "val"]
    classes = manifest["classes"]
    labels = data.val_y[:len(best.val_logits)].cpu()
    logits = best.val_logits.double()
    losses = per_sample_cross_entropy(logits, labels).numpy()
    preds = logits.argmax(1).tolist()
    entry_of = data.val_entry[:len(labels)].cpu().tolist()
    rows = []
    for k in range(len(classes)):
        positions = np.flatnonzero(labels.numpy() == k)
        for pos in positions[np.argsort(-losses[positions], kind="stable")][:HARDEST_PER_CLASS]:
            entry = val_entries[entry_of[pos]]
            rows.append(HardImage(classes[k], classes[preds[pos]], float(losses[pos]), entry["image_id"],
                                  entry["path"], list(entry.get("also_shows") or []), int(pos)))
    return rows


def results_config(cfg: Config, manifest: dict) -> dict:
    """The settings that made these numbers: the subset's (paths as given, its seed as subset_seed)
    and the training's (with train_seed), not where they were written or how fast."""
    subset = {k: v for k, v in manifest["config"].items() if k != "seed"}
    return {**subset, "subset_seed": manifest["config"]["seed"], **cfg.train_settings(),
            "dataset": manifest["content"]}


def results_from_state(state: TrainState, cfg: Config, manifest: dict, data: SubsetTensors,
                       device: torch.device = torch.device("cpu")) -> Results:
    """One net's Results from its finished training state."""
    classes, spec = list(manifest["classes"]), NETS[state.net]
    outline = net_outline(state.net, cfg.image_size, classes)
    shown = len(training_indices(data.train_y, spec.train_fraction, manifest["config"]["seed"]))
    best, hist = state.best, state.history
    return Results(
        net=state.net, label=spec.label, classes=classes, config=results_config(cfg, manifest),
        steps100={k: list(v) for k, v in hist.steps100.items()}, epoch={k: list(v) for k, v in hist.epoch.items()},
        train_clean={k: list(v) for k, v in hist.train_clean.items()},
        train_confusion=np.asarray(best.train_confusion, dtype=np.int64),
        val_confusion=np.asarray(best.val_confusion, dtype=np.int64), best_epoch=best.epoch,
        grad_norms={k: list(v) for k, v in hist.grad_norms.items()},
        grad_norms_steps100={k: list(v) for k, v in hist.grad_norms_steps100.items()},
        dead_units={k: list(v) for k, v in hist.dead_units.items()},
        fc1_in_features=outline.fc1.in_features, params=count_parameters(outline),
        n_train=min(shown, steps_per_epoch(shown, cfg) * cfg.batch_size), n_val=len(best.val_logits),
        hardest=hardest_images(best, data, manifest), train_time_s=state.train_time_s,
        infrastructure=state.infrastructure or infrastructure(device, cfg.threads), fingerprint=state.fingerprint,
        val_predictions=val_predictions(state, data),
        update_sizes={k: list(v) for k, v in hist.update_sizes.items()},
        update_sizes_steps100={k: list(v) for k, v in hist.update_sizes_steps100.items()},
        spec=dataclasses.asdict(spec))


ORIGINAL_METRICS = (CROSS_ENTROPY, ACCURACY)  # the series the original's pickles hold; a metric added later stays out


def original_pickle(r: Results) -> dict:
    """The original report's pickle layout ("100steps", "epoch", "confusion matrix"), plus the extras; of the
    metrics, only the original's own (ORIGINAL_METRICS), so that a metric added to METRICS leaves the pickles alone.

    The transcription of the original report shows the confusion keys with spaces, but extraction lost
    most underscores elsewhere, so its code may have used "confusion_matrix"; both spellings are
    written, pointing at the same arrays, so a reader written either way works."""
    original = {series_key(split, m, clean) for m in ORIGINAL_METRICS for split in SPLITS for clean in (False, True)}
    mine = lambda series: {k: list(v) for k, v in series.items() if k in original}  # noqa: E731
    confusion = {"train confusion": r.train_confusion, "val confusion": r.val_confusion}
    confusion.update({"train_confusion": r.train_confusion, "val_confusion": r.val_confusion})
    return {
        "100steps": mine(r.steps100), "epoch": mine(r.epoch),
        "confusion matrix": confusion, "confusion_matrix": confusion,
        "train_clean": mine(r.train_clean),
        "net": r.net, "label": r.label, "best_epoch": r.best_epoch, "config": r.config,
        "classes": list(r.classes), "grad_norms": r.grad_norms,
        "grad_norms_100steps": r.grad_norms_steps100, "dead_units": r.dead_units,
        "fc1_in_features": r.fc1_in_features, "params": r.params, "n_train": r.n_train,
        "n_val": r.n_val, "hardest": [h.to_original() for h in r.hardest],
        # only where recorded, so that a run saved before them writes the same pickles as it did
        **({"update_sizes": r.update_sizes, "update_sizes_100steps": r.update_sizes_steps100}
           if r.update_sizes else {}),
    }


def spec_changed(r: Results) -> bool:
    """Trained under an earlier row of NETS than today's (its fingerprint is not the one the table gives now):
    its numbers measure that row. False for a net that today's table does not hold: there is no row to compare."""
    if not r.fingerprint or r.net not in NETS:
        return False
    settings = {k: r.config.get(k) for k in Config().train_settings()}
    device = r.infrastructure.get("device", "cpu")
    return r.fingerprint != fingerprint({**settings, "dataset": r.config.get("dataset"), "net": r.net,
                                         "spec": NETS[r.net].fingerprinted(), "device": device})


# =============================================================================
# Outputs and plots: pickles, weights, metrics.json and the figures of FIGURES, each written
# atomically. Hands the files to the user and the figure table to the report.
# =============================================================================


def as_image(x: torch.Tensor) -> np.ndarray:
    """One uint8 C x H x W image tensor as an H x W x C array for imshow."""
    return x.cpu().permute(1, 2, 0).numpy()


def draw_samples(runs: dict[str, list[Results]], data: SubsetTensors, per_class: int = 5):
    """per_class random training images of each class, one row per class."""
    first = next(iter(runs.values()))[0]
    gen = torch.Generator().manual_seed(first.train_seed)
    classes = first.classes
    fig = new_figure(figsize=(per_class * 1.3, len(classes) * 1.4))
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    labels = data.train_y.cpu()
    for row, name in enumerate(classes):
        members = torch.nonzero(labels == row).flatten()
        chosen = members[torch.randperm(len(members), generator=gen)[:per_class]].tolist()
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(as_image(data.train_x[chosen[col]]))
                ax.set_title(f"{name} {col + 1}", fontsize=7)
    return fig


def seeds_note(runs: dict[str, list[Results]], what: str = "mean ± std") -> str:
    seeds = len(next(iter(runs.values())))
    return f" ({what} over {seeds} seeds)" if seeds > 1 else ""


def plot_line(ax, x: np.ndarray, series: list[list[float]], **style) -> None:
    """The mean over seeds, with a ±1 std band when there are several."""
    mean, std = mean_std(series)
    ax.plot(x, mean, **style)
    if len(series) > 1:
        ax.fill_between(x, mean - std, mean + std, color=style.get("color"), alpha=0.15)


def colour(k: int, n: int) -> Any:
    """The k-th of n nets' colour: matplotlib's ten default colours, or tab20's when more nets are drawn."""
    from matplotlib import colormaps

    return f"C{k}" if n <= 10 else colormaps["tab20"](k % 20)


def finish_axes(axes: Iterable, xlabel: str, integer_x: bool = False) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(True, linewidth=0.5)
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def add_legend(fig) -> None:
    """One legend for a figure (or a row of one), right of the plots so that it hides no curve or title, with
    each label's first handle."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize=7)


def finish_figure(fig, runs: dict[str, list[Results]], title: str, what: str = "mean ± std") -> None:
    """One title (with the seed count) and one legend for the whole figure."""
    add_legend(fig)
    fig.suptitle(title + seeds_note(runs, what), fontsize=10)


def mark_not_recorded(ax, metric: Metric, runs: dict[str, list[Results]]) -> None:
    """Say on a panel that some nets of the run did not record this metric (they trained before it existed)."""
    if any(recorded(seeds, "val", metric) is None for seeds in runs.values()):
        ax.text(0.5, 0.5, "not recorded for some nets", transform=ax.transAxes, ha="center", color="grey")


def regime_groups(name: str, seeds: list[Results]) -> list[tuple[str, list[Results], dict]]:
    """(legend label, seeds, line style) to draw a net by: for a net that learned in some seeds and stayed at
    chance in others, each regime apart (a mean over both is a curve no seed follows), labelled with its count."""
    learned = [r for r in seeds if not r.at_chance]
    if not 0 < len(learned) < len(seeds):
        return [(net_label(name), seeds, {})]
    chance = [r for r in seeds if r.at_chance]
    return [(f"{net_label(name)}: learned ({seeds_text(len(learned))})", learned, {}),
            (f"{net_label(name)}: at chance ({seeds_text(len(chance))})", chance, {"alpha": 0.6, "linewidth": 0.8})]


MAX_LEGEND = 12  # legend entries one panel may have and still be read


def exercise_root(name: str) -> str:
    """The exercise's net (Net1, Net2 or Net3) a net of the table derives from: itself, or its base's root."""
    while name not in DEFAULT_NETS and NETS[name].base:
        name = NETS[name].base
    return name


def net_families(runs: dict[str, list[Results]]) -> list[tuple[str, dict[str, list[Results]]]]:
    """The nets drawn together: all of them when their legend (one entry a regime) fits MAX_LEGEND, else one
    family per exercise net, each with the variants built on it (Net3 with its remedies, and so on)."""
    entries = sum(len(regime_groups(name, seeds)) for name, seeds in runs.items())
    roots = list(dict.fromkeys(exercise_root(name) for name in runs))
    if entries <= MAX_LEGEND or len(roots) == 1:
        return [("", runs)]
    return [(f"{net_label(root)} and its variants", {n: s for n, s in runs.items() if exercise_root(n) == root})
            for root in roots]


def draw_by_family(runs: dict[str, list[Results]], draw_row: Callable, size: tuple[float, float], title: str,
                   what: str = "mean ± std"):
    """One row of panels per family of nets (net_families), each with its own legend: a figure of 18 nets would
    otherwise have one legend of 20 entries in colours no reader tells apart."""
    families = net_families(runs)
    fig = new_figure(figsize=(size[0], size[1] * len(families)), layout="constrained")
    rows = fig.subfigures(len(families), 1, squeeze=False)[:, 0]
    for row, (heading, family) in zip(rows, families):
        draw_row(row, family)
        add_legend(row)
        if heading:
            row.suptitle(heading, fontsize=9)
    fig.suptitle(title + seeds_note(runs, what), fontsize=10)
    return fig


def draw_curves_epoch(runs: dict[str, list[Results]], data: SubsetTensors):
    """Every metric per epoch, train solid and val dashed, one row per family of nets."""
    metrics = shown_metrics(runs)
    return draw_by_family(runs, functools.partial(curves_epoch_row, metrics=metrics), (5.5 * len(metrics) + 1.5, 4.2),
                          "learning curves per epoch: train solid, val dashed")


def curves_epoch_row(fig, runs: dict[str, list[Results]], metrics: Sequence[Metric]) -> None:
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for k, (name, all_seeds) in enumerate(runs.items()):
        for label, seeds, look in regime_groups(name, all_seeds):
            for ax, m in zip(axes, metrics):
                for split, style in (("train", "-"), ("val", "--")):
                    if (series := recorded(seeds, split, m)) is not None:
                        plot_line(ax, np.arange(1, seeds[0].epochs + 1), series, linestyle=style,
                                  color=colour(k, len(runs)), label=label if split == "train" else None, **look)
    for ax, m in zip(axes, metrics):
        mark_not_recorded(ax, m, runs)
        ax.set_ylabel(m.axis)
        ax.set_title(m.axis, fontsize=9)
    finish_axes(axes, "epoch", integer_x=True)


def draw_curves_100steps(runs: dict[str, list[Results]], data: SubsetTensors):
    """Each 100-iteration (400-image) point on an honest axis.

    Top row, train: x = epochs of training done (images seen / train size), one point per
    100 iterations. Bottom row, val: each 400-image window of the val pass after epoch e,
    drawn at e (spread ±0.3), since every window of a pass evaluates the same model; the
    line through them is the epoch's val value. One pair of rows per family of nets.
    """
    window_images = WINDOW_STEPS * next(iter(runs.values()))[0].config["batch_size"]
    metrics = shown_metrics(runs)
    return draw_by_family(runs, functools.partial(curves_100steps_rows, metrics=metrics),
                          (5.5 * len(metrics) + 1.5, 8.5),
                          f"learning curves per 100 iterations ({window_images} images)")


def curves_100steps_rows(fig, runs: dict[str, list[Results]], metrics: Sequence[Metric]) -> None:
    axes = fig.subplots(2, len(metrics), squeeze=False)
    window_images = WINDOW_STEPS * next(iter(runs.values()))[0].config["batch_size"]
    for k, (name, all_seeds) in enumerate(runs.items()):
        for label, seeds, look in regime_groups(name, all_seeds):
            r0, tint, epochs = seeds[0], colour(k, len(runs)), seeds[0].epochs
            for col, m in enumerate(metrics):
                if recorded(seeds, "val", m) is None:
                    continue
                train = recorded(seeds, "train", m, steps100=True) or [[]]
                if train[0]:
                    per_epoch = len(train[0]) // epochs
                    x = (np.arange(epochs)[:, None] + window_images / r0.n_train * np.arange(1, per_epoch + 1)).ravel()
                    plot_line(axes[0][col], x, train, color=tint, marker=".", label=label, **look)
                val = recorded(seeds, "val", m, steps100=True) or [[]]
                if val[0]:  # every window of the pass after epoch e evaluates one model: all sit at e, ±0.3
                    spread = np.linspace(-0.3, 0.3, len(val[0]) // epochs) if len(val[0]) > epochs else np.zeros(1)
                    axes[1][col].plot((np.arange(1, epochs + 1)[:, None] + spread).ravel(), mean_std(val)[0], ".",
                                      color=tint, alpha=look.get("alpha", 1.0))
                plot_line(axes[1][col], np.arange(1, epochs + 1), recorded(seeds, "val", m),
                          color=tint, linestyle="--", label=label, **{"linewidth": 1, **look})
    for col, m in enumerate(metrics):
        mark_not_recorded(axes[1][col], m, runs)
        axes[0][col].set_title(f"train {m.axis} per 100 iterations", fontsize=9)
        axes[1][col].set_title(f"val {m.axis}: windows (dots), epoch value (dashed)", fontsize=9)
        for row in (0, 1):
            axes[row][col].set_ylabel(m.axis)
    finish_axes(axes[0], "epochs of training (images seen / train size)")
    finish_axes(axes[1], "val pass after epoch (its windows spread ±0.3)", integer_x=True)


def plain_log_axis(ax) -> None:
    """A log y axis with plain tick labels, at 1, 2 and 5 per decade when it spans under two decades.

    The log axis's default formatter writes mathtext ($\\mathdefault{10^{0}}$), which new_figure turns off,
    so it would print as raw text; and a span under a decade would show one labelled tick or none.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    narrow = low > 0 and math.log10(high / low) < 2
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def draw_grad_norms(runs: dict[str, list[Results]], data: SubsetTensors):
    """The gradient norm of the first conv, last conv and fc1: per 100 iterations through epoch 1, where Q2's
    vanishing shows, and per epoch; and, for nets that recorded it, Adam's update ||dw|| / ||w|| per epoch, which
    is what the original's "updates approach 0" speaks of. One block of rows per family of nets.

    A log axis cannot show 0, and a dead net's gradient is exactly 0 (its ReLUs pass nothing back), so zeros are
    drawn as x markers on the axis floor, not dropped.
    """
    rows = 2 + 2 * any(r.update_sizes for seeds in runs.values() for r in seeds)  # grad_norm_rows' rows
    return draw_by_family(runs, grad_norm_rows, (13 + 1.5, 2.7 * rows), "gradient norms and update sizes", "mean")


def first_epoch_windows(r: Results, series: dict[str, list[float]], layer: str) -> list[float]:
    """The 100-iteration windows of epoch 1 of a per-window series."""
    values = series.get(layer, [])
    return values[:len(values) // r.epochs] if values else []


def grad_norm_rows(fig, runs: dict[str, list[Results]]) -> None:
    """Rows: the gradient per 100 iterations of epoch 1 and per epoch, and Adam's relative update the same two ways
    (over the seeds that recorded it); one column per GRAD_LAYERS layer, each regime of a net apart."""
    # the updates of the nets whose every seed recorded them (a run saved before hw4 measured them has none): a net
    # drawn over some of its seeds would repeat its colour under another count in the legend
    whole = {name for name, seeds in runs.items() if all(r.update_sizes for r in seeds)}
    partly = [name for name, seeds in runs.items() if name not in whole and any(r.update_sizes for r in seeds)]
    panels = [("gradient norm, per 100 iterations of epoch 1", "iteration",
               lambda r, layer: first_epoch_windows(r, r.grad_norms_steps100, layer), WINDOW_STEPS, None),
              ("gradient norm, per epoch", "epoch", lambda r, layer: r.grad_norms[layer], 1, None)]
    if whole or partly:
        panels += [("Adam's update ||dw|| / ||w||, per 100 iterations of epoch 1", "iteration",
                    lambda r, layer: first_epoch_windows(r, r.update_sizes_steps100, layer), WINDOW_STEPS, whole),
                   ("Adam's update ||dw|| / ||w||, per epoch", "epoch", lambda r, layer: r.update_sizes[layer], 1,
                    whole)]
    axes = fig.subplots(len(panels), len(GRAD_LAYERS), squeeze=False)
    for row, (what, xlabel, values_of, step, kept) in zip(axes, panels):
        groups = [(k, label, {layer: mean_std([values_of(r, layer) for r in seeds])[0] for layer in GRAD_LAYERS}, look)
                  for k, (name, all_seeds) in enumerate(runs.items()) if kept is None or name in kept
                  for label, seeds, look in regime_groups(name, all_seeds)]
        positive = [v for _, _, layers, _ in groups for arr in layers.values() for v in np.ravel(arr) if v > 0]
        floor = min(positive) / 10 if positive else 1e-12
        for k, label, layers, look in groups:
            for ax, layer in zip(row, GRAD_LAYERS):
                values = np.asarray(layers[layer], dtype=float)
                x = step * np.arange(1, len(values) + 1)
                ax.plot(x, np.where(values > 0, values, np.nan), color=colour(k, len(runs)), marker=".",
                        label=label, **look)
                zero = values <= 0
                if zero.any():
                    ax.plot(x[zero], np.full(zero.sum(), floor), "x", color=colour(k, len(runs)), markersize=8,
                            label="exactly 0 (drawn at the floor)")
        for ax, layer in zip(row, GRAD_LAYERS):
            plain_log_axis(ax)
            ax.set_title(f"{layer.replace('_', ' ')}: {what}" + (
                f"\n(not drawn, as not every seed recorded it: {', '.join(map(net_label, partly))})"
                if kept is not None and partly and ax is row[1] else ""), fontsize=8)
        finish_axes(row, xlabel, integer_x=True)
        if step > 1:  # iterations: five ticks, not one a window
            from matplotlib.ticker import MaxNLocator
            for ax in row:
                ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))


DEAD_UNIT_COLUMNS = 4  # panels a row once a run has more than DEAD_UNIT_LABELLED groups


DEAD_UNIT_LABELLED = 6  # up to this many nets-and-regimes, one column of panels with a label in every cell


def draw_dead_units(runs: dict[str, list[Results]], data: SubsetTensors):
    """Per net (and per regime, for a net with two), the share of each ReLU layer's units (rows) that output
    zero for all of the first 256 val images, per epoch (columns); 1.0 = the whole layer is dead. A few nets: one
    column of panels, every cell labelled. More (the 20 groups of `--nets q5`): four panels a row, colour only,
    with one colour bar, so that the figure fits a screen. Plain imshow: seaborn's heatmap took about 700 MB per
    panel on a figure this wide (9 GB for the 13 nets of `--nets all`)."""
    groups = [(label, seeds) for name, all_seeds in runs.items() for label, seeds, _ in regime_groups(name, all_seeds)]
    epochs = next(iter(runs.values()))[0].epochs
    labelled = len(groups) <= DEAD_UNIT_LABELLED
    cols = 1 if labelled else DEAD_UNIT_COLUMNS
    grid = [groups[k:k + cols] for k in range(0, len(groups), cols)]
    per_layer, width = (0.32, max(5.0, 0.5 * epochs + 2.0)) if labelled else (0.16, cols * (0.17 * epochs + 1.3))
    heights = [per_layer * max(len(seeds[0].dead_units) for _, seeds in row) + (1.1 if labelled else 0.8)
               for row in grid]
    fig = new_figure(figsize=(width, sum(heights) + (0 if labelled else 0.6)), layout="constrained")
    image, sub = None, fig
    for sub, row in zip(fig.subfigures(len(grid), 1, squeeze=False, height_ratios=heights)[:, 0], grid):
        for ax, group in zip(sub.subplots(1, cols, squeeze=False)[0], row + [None] * (cols - len(row))):
            if group is None:
                ax.axis("off")
                continue
            label, seeds = group
            layers = list(seeds[0].dead_units)
            matrix = np.array([mean_std([r.dead_units[layer] for r in seeds])[0] for layer in layers])
            image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Reds", aspect="auto", interpolation="nearest")
            for (i, j), v in np.ndenumerate(matrix) if labelled and epochs <= 20 else ():
                if v > 0:  # a blank cell is 0: no dead units
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v > 0.6 else "black")
            ticks = range(0, epochs, 1 if labelled else 2)
            ax.set_xticks(list(ticks), [t + 1 for t in ticks], fontsize=7 if labelled else 6)
            ax.set_yticks(range(len(layers)), layers, fontsize=7 if labelled else 5.5)
            ax.set_xlabel("epoch", fontsize=8 if labelled else 6)
            ax.set_title(f"{label}: dead share" + (", mean over its seeds" if len(seeds) > 1 else ""),
                         fontsize=9 if labelled else 7)
    if not labelled and image is not None:  # one scale for every panel, under the last row
        sub.colorbar(image, ax=sub.axes, orientation="horizontal", fraction=0.08, aspect=60, shrink=0.6,
                     label="share of the layer's units dead (1 = the whole layer)")
    return fig


def draw_confusion(r: Results, data: SubsetTensors, split: str):
    """Seaborn heatmap of the best epoch, rows true and columns predicted, accuracy in the title."""
    import seaborn as sns

    matrix = r.train_confusion if split == "train" else r.val_confusion
    fig = new_figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", xticklabels=r.classes, yticklabels=r.classes,
                ax=ax, cbar=True)
    ax.set(xlabel="Predicted label", ylabel="True label")
    acc = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{r.label} {split} (best epoch {r.best_epoch})  accuracy = {100 * acc:.1f}%")
    return fig


def draw_hardest(r: Results, data: SubsetTensors):
    """Per class (rows) the highest-loss val images at the best epoch, titled true -> predicted with
    the COCO id; images that also show another class get a red frame."""
    rows = {c: [h for h in r.hardest if h.label == c] for c in r.classes}
    cols = max(1, max(len(v) for v in rows.values()))
    fig = new_figure(figsize=(cols * 1.9, len(r.classes) * 2.4), layout="constrained")
    axes = fig.subplots(len(r.classes), cols, squeeze=False)
    for i, name in enumerate(r.classes):
        for c in range(cols):
            ax = axes[i][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[name]):
                ax.axis("off")
                continue
            h = rows[name][c]
            ax.imshow(as_image(data.val_x[h.val_position]))
            title = f"{h.label} → {h.predicted}\nid {h.image_id}  loss {h.loss:.1f}"
            if h.also_shows:
                title += f"\n* also shows {', '.join(h.also_shows)}"
                for spine in ax.spines.values():
                    spine.set(color="red", linewidth=3)
            ax.set_title(title, fontsize=7)
    fig.suptitle(f"{r.label}: hardest val images at the best epoch ({r.best_epoch}); "
                 "red frame = image shows another class too", fontsize=9)
    return fig


@dataclass(frozen=True)
class Plot:
    """One figure file: what draws it, and the caption REPORT.md gives it. A per-net figure's file
    name holds '{net}', and its draw function takes one net's Results instead of all runs."""

    file: str
    draw: Callable[..., Any]
    caption: str
    per_net: bool = False
    needs_pictures: bool = False  # it shows dataset pictures, so `hw4.py report` (no dataset) keeps the run's


def draw_seed_scores(runs: dict[str, list[Results]], data: SubsetTensors):
    """Best val accuracy of every seed, one row per net and one dot per seed, the seeds that learned apart from
    those at chance: the score distribution, which a mean ± std hides when a net has two regimes."""
    names = list(runs)
    fig = new_figure(figsize=(8, 0.42 * len(names) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    chance = 100 / len(next(iter(runs.values()))[0].classes)
    for y, name in enumerate(reversed(names)):
        seeds = runs[name]
        offsets = np.linspace(-0.25, 0.25, len(seeds)) if len(seeds) > 1 else np.zeros(1)  # seeds side by side
        for r, dy in zip(seeds, offsets):
            ax.plot(100 * BEST_VAL.of(r), y + dy, "o", markersize=5, alpha=0.7,
                    color="tab:red" if r.at_chance else "tab:blue",
                    label="at chance (did not learn)" if r.at_chance else "learned")
        stuck = sum(r.at_chance for r in seeds)
        if stuck:  # every seed at chance scores exactly chance: the count says how many dots sit there
            ax.annotate(f"{stuck} of {len(seeds)}", (chance, y), xytext=(8, 0), textcoords="offset points",
                        va="center", fontsize=8, color="tab:red")
    ax.axvline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.0f}%)")
    ax.set_yticks(range(len(names)), [net_label(n) for n in reversed(names)], fontsize=8)
    ax.set_xlabel("best val accuracy (%), one dot per training seed (seeds spread vertically; red count: seeds at "
                  "chance)")
    ax.grid(True, axis="x", linewidth=0.5)
    finish_figure(fig, runs, "best val accuracy of every seed", "one dot each")
    return fig


def draw_val_confusions(runs: dict[str, list[Results]], data: SubsetTensors):
    """The val confusion matrices at the best epoch, summed over the seeds in which each net learned (over every
    seed when it learned in none), one panel per net, each row as a percentage of its true class on one colour
    scale: nets summed over different numbers of seeds compare as shares, not as counts."""
    import seaborn as sns

    names = list(runs)
    cols = min(len(names), 6)  # 18 nets in three rows: the figure fits a screen
    rows = math.ceil(len(names) / cols)
    fig = new_figure(figsize=(3.4 * cols, 3.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        seeds = [r for r in runs[name] if not r.at_chance] or runs[name]
        matrix = sum(r.val_confusion for r in seeds)
        classes = seeds[0].classes
        shares = 100 * matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
        sns.heatmap(shares, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, xticklabels=classes,
                    yticklabels=classes, ax=ax, cbar=False, annot_kws={"fontsize": 6})
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.tick_params(labelsize=7)
        which = (f"{seeds_text(len(seeds))} that learned" if len(seeds) < len(runs[name])
                 else seeds_text(len(seeds)))
        ax.set_title(f"{net_label(name)}: {pct(np.trace(matrix) / max(1, matrix.sum()))} ({which})", fontsize=9)
    for ax in axes[len(names):]:
        ax.axis("off")
    fig.suptitle("val confusion at the best epoch, summed over seeds: % of each true class (rows add up to 100; one "
                 "colour scale)", fontsize=10)
    return fig


FIGURES = (
    Plot("seed_scores.png", draw_seed_scores, "best val accuracy per seed"),
    Plot("samples.png", draw_samples, "5 random training images per class", needs_pictures=True),
    Plot("confusion_val.png", draw_val_confusions, "val confusions, % of each true class"),
    Plot("curves_epoch.png", draw_curves_epoch, "learning curves per epoch"),
    Plot("curves_100steps.png", draw_curves_100steps, "learning curves per 100 iterations"),
    Plot("grad_norms.png", draw_grad_norms, "gradient norms of conv1, last conv, fc1"),
    Plot("dead_units.png", draw_dead_units, "dead ReLU units per layer and epoch"),
    Plot("confusion_{net}_train.png", functools.partial(draw_confusion, split="train"), "train confusion",
         per_net=True),
    Plot("confusion_{net}_val.png", functools.partial(draw_confusion, split="val"), "val confusion", per_net=True),
    Plot("hardest_{net}.png", draw_hardest, "hardest val images", per_net=True, needs_pictures=True),
)


def write_net_outputs(out: Path, r: Results, weights: dict[str, Any], data: SubsetTensors) -> None:
    """The pickle, weights and per-net figures of one net, as soon as it finishes. Strings are interned so
    that equal results give equal bytes: pickle shares equal strings only if they are one object, and a
    --jobs worker builds them differently shared than a sequential run."""
    interned = map_leaves(original_pickle(r), lambda v: sys.intern(v) if isinstance(v, str) else v)
    write_bytes_atomic(out / pickle_name(r.net), pickle.dumps(interned, protocol=4))
    save_torch_atomic(weights, out / f"{r.net}.pt")
    write_net_figures(out, r, data)


def write_net_figures(out: Path, r: Results, data: SubsetTensors | None) -> None:
    """One net's figures; without data (`hw4.py report`) only those that show no pictures."""
    for plot in FIGURES:
        if plot.per_net and (data is not None or not plot.needs_pictures):
            savefig_atomic(plot.draw(r, data), out / plot.file.format(net=r.net))


def write_run_figures(out: Path, runs: dict[str, list[Results]], data: SubsetTensors | None) -> None:
    """The figures over all nets; without data only those that show no pictures."""
    for plot in FIGURES:
        if not plot.per_net and (data is not None or not plot.needs_pictures):
            savefig_atomic(plot.draw(runs, data), out / plot.file)


# =============================================================================
# Building the dataset: the chosen COCO subset (or the class folders) written once, with its manifest;
# --download first. main calls it before training; loading, above, reads what it writes.
# =============================================================================


def write_subset(selection: Selection, coco, cfg: Config, root: Path) -> tuple[list[dict], list[dict]]:
    """Write every picked image (the first N of a class to train, the next M to val); replace failures
    by Selection.replacement."""
    taken: dict[str, set[str]] = {"train": set(), "val": set()}
    pending: list[WriteJob] = []
    for label, (name, ids) in enumerate(selection.picks.items()):
        for k, img_id in enumerate(ids):
            split = "train" if k < cfg.train_per_class else "val"
            pending.append(make_job(split, name, label, img_id, coco, taken, len(pending)))
    entries: dict[int, dict] = {}
    replacements: list[dict] = []
    first_round = True
    while pending:
        failures = run_write_jobs(pending, cfg.image_dir, cfg, root,
                                  "writing images" if first_round else "replacements")
        if first_round and all(why is not None for why in failures):
            raise UserError(f"none of the {len(pending)} chosen images could be read (first: "
                            f"{source_path(cfg.image_dir, pending[0].file_name)}: {failures[0]}); the image dir "
                            f"{cfg.image_dir} is probably wrong: pass --image-dir or fix --data_dir")
        retry = []
        for job, why in zip(pending, failures):
            if why is None:
                entries[job.slot] = job.entry()
                continue
            new_id = selection.replacement(job.class_name)
            if new_id is None:
                raise UserError(f"class {job.class_name!r} ran out of readable images while replacing "
                                f"{job.file_name} ({why}); check --image-dir {cfg.image_dir}")
            taken[job.split].discard(job.out_name)
            retry.append(make_job(job.split, job.class_name, job.label, new_id, coco, taken, job.slot))
            replacements.append({"class": job.class_name, "split": job.split, "image_id": job.image_id,
                                 "file_name": job.file_name, "reason": why, "replacement_image_id": new_id})
            print(f"replaced {job.file_name} ({why}) with image {new_id} for class {job.class_name!r}")
        pending, first_round = retry, False
    return [entries[k] for k in sorted(entries)], replacements


def note_other_classes(entries: list[dict], coco, cat_ids: dict[str, int]) -> None:
    """Record in each entry the other requested classes its image shows (label noise, for Q4)."""
    name_of = {cid: name for name, cid in cat_ids.items()}
    for e in entries:
        anns = coco.imgToAnns.get(e["image_id"], [])
        shown = {name_of[a["category_id"]] for a in anns if a["category_id"] in name_of}
        e["also_shows"] = sorted(shown - {e["class"]})


def write_build(cfg: Config, target: Path, coco=None) -> dict:
    """The dataset written beside the target folder and swapped in when whole; its manifest. The caller holds the
    build lock."""
    check_dataset_dir_is_ours(target)
    if cfg.image_folders is None:
        coco = coco or load_coco(cfg.ann_file)
        selection = select_subset(coco, cfg)
    else:  # everything about the folders is checked before anything is written
        pictures = scan_class_folders(Path(cfg.image_folders), cfg.classes)
        chosen = choose_folder_pictures(pictures, cfg)
    for other in target.parent.glob(f".{target.name}.building-*"):  # left by interrupted builds: none runs now
        shutil.rmtree(other, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.building-{os.getpid()}")
    for split in SPLITS:
        (tmp / f"{split}_data").mkdir(parents=True)
    try:
        if cfg.image_folders is None:
            entries, replacements = write_subset(selection, coco, cfg, tmp)
            note_other_classes(entries, coco, resolve_category_ids(coco, cfg.classes))
            source: dict[str, Any] = {"source": "coco"}
        else:
            entries, replacements = write_folder_subset(chosen, pictures, cfg, tmp), []
            source = {"source": "image_folders", "shared_pictures": shared_pictures_summary(chosen, cfg)}
        counts = {split: {c: sum(e["split"] == split and e["class"] == c for e in entries) for c in cfg.classes}
                  for split in SPLITS}
        manifest = {"version": MANIFEST_VERSION, "fingerprint": cfg.build_fingerprint(),
                    "content": content_digest(tmp, cfg.classes, entries), "config": cfg.build_settings(),
                    "classes": list(cfg.classes), "counts": counts, **source, "replacements": replacements,
                    "entries": entries}
        write_json_atomic(tmp / "manifest.json", manifest)
        swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def build_subset(cfg: Config, coco=None) -> dict:
    """Build (or reuse) the dataset, atomically: written beside the target, swapped in when whole."""
    manifest = reusable_manifest(cfg)
    if manifest is not None:
        print(f"reusing the dataset in {cfg.dataset_dir} (fingerprint {manifest['fingerprint']})")
        return manifest
    target = Path(cfg.dataset_dir)
    if target.is_symlink():  # build beside the folder it points to, so the link stays a link
        target = target.resolve()
    with build_lock(target, cfg.dataset_dir):  # from here on no other build writes into --dataset-dir
        manifest = write_build(cfg, target, coco)
    width = max(map(len, cfg.classes))
    print(f"{'class':<{width}}  train    val")
    for name in cfg.classes:
        print(f"{name:<{width}}  {manifest['counts']['train'][name]:5d}  {manifest['counts']['val'][name]:5d}")
    if manifest["replacements"]:
        print(f"{len(manifest['replacements'])} missing or unreadable images were replaced (listed in manifest.json)")
    if "shared_pictures" in manifest:
        shared = manifest["shared_pictures"]
        print(f"{shared['in_two_classes']} pictures sit in two class folders and {shared['in_both_splits']} in both "
              f"splits ({'kept, as the folders give them' if shared['kept'] else 'dropped: --exclusive'}; listed in "
              "manifest.json)")
    return manifest


def download_subset_images(cfg: Config):
    """--download: the annotations if missing, then exactly the chosen images, and for each that fails
    for good the replacement the build will pick (Selection.replacement)."""
    DOWNLOAD_STOP.clear()  # an earlier download in this process may have been stopped
    if cfg.coco_url_base:
        try:
            checked_url(cfg.coco_url_base)
        except PermanentError as exc:
            raise UserError(f"--coco-url-base: {exc}") from None
    if not Path(cfg.ann_file).is_file():
        fetch_annotations(cfg)
    coco = load_coco(cfg.ann_file)
    selection = select_subset(coco, cfg)
    pending = [(name, img_id) for name, ids in selection.picks.items() for img_id in ids]
    outcome: dict[int, tuple[str, int, str]] = {}
    while pending:
        results = fetch_images([img_id for _, img_id in pending], coco, cfg)
        outcome.update(results)
        failed = [name for name, img_id in pending if results[img_id][0] == "failed"]
        pending = [(name, new_id) for name in failed if (new_id := selection.replacement(name)) is not None]
    counts = {s: sum(o[0] == s for o in outcome.values()) for s in ("downloaded", "present", "failed")}
    print(f"download: {counts['downloaded']} downloaded, {counts['present']} already present, "
          f"{sum(o[1] for o in outcome.values())} retries, {counts['failed']} failed for good")
    failures = [(coco.imgs[i]["file_name"], o[2]) for i, o in outcome.items() if o[0] == "failed"]
    for file_name, reason in failures[:5]:
        print(f"  failed: {file_name}: {reason}")
    if failures and len(failures) == len(outcome):
        raise UserError(f"no image could be downloaded (first: {failures[0][1]}); check the network or pass "
                        "--coco-url-base")
    return coco


# =============================================================================
# The report and compare: what hw4 hands them, and loading them (only in the commands that need them).
# =============================================================================


def exercise() -> Exercise:
    """What the report and compare read of the exercise: the net table, the figures and their writers."""
    return Exercise(nets=NETS, figures=FIGURES, write_run_figures=write_run_figures,
                    write_net_figures=write_net_figures, spec_changed=spec_changed)


def siblings():
    """hw4_report and hw4_compare, loaded (only by the commands that need them) with the exercise handed over."""
    try:
        import hw4_compare
        import hw4_report
    except (ImportError, SyntaxError) as exc:
        raise UserError(f"{getattr(exc, 'name', None) or exc}: hw4.py needs hw4_report.py and hw4_compare.py beside "
                        "it, as the repository has them; copy the whole folder") from None
    hw4_report.use(exercise())
    return hw4_report, hw4_compare


# =============================================================================
# Running the experiment: nets in sequence or in worker processes, one or many seeds.
# Hands Results per net and seed to the outputs above and to the report (hw4_report.py).
# =============================================================================


def prepare_torch(cfg: Config) -> torch.device:
    torch.set_num_threads(cfg.threads)
    return pick_device(cfg.device)


def train_and_write(name: str, cfg: Config, manifest: dict, data: SubsetTensors, device: torch.device) -> Results:
    """Train one net (or take its finished checkpoint) and write its files at once."""
    state = train(name, data, manifest, cfg, device)
    results = results_from_state(state, cfg, manifest, data, device)
    write_net_outputs(Path(cfg.out), results, state.best.state_dict, data)
    return results


def train_in_worker(name: str, cfg: Config, manifest: dict) -> Results:
    """Entry point of a --jobs worker process: it loads the cached tensors itself."""
    device = prepare_torch(cfg)
    data = load_dataset_tensors(cfg.dataset_dir, manifest).to(device)
    return train_and_write(name, cfg, manifest, data, device)


def effective_jobs(cfg: Config, tasks: int) -> int:
    """--jobs, limited so that jobs x threads fits the cores (oversubscribing only slows down)."""
    cores = os.cpu_count() or 1
    fit = max(1, cores // cfg.threads)
    jobs = min(cfg.jobs, tasks, fit)
    if cfg.jobs > fit and tasks > 1:
        print(f"note: --jobs {cfg.jobs} x --threads {cfg.threads} needs {cfg.jobs * cfg.threads} cores, "
              f"this machine has {cores}: running {jobs} at a time")
    return jobs


def run_tasks(tasks: list[tuple[Config, str]], manifest: dict, data: SubsetTensors,
              on_done: Callable[[Config, str, Results], None]) -> None:
    """Train every (config, net) task; calls on_done(cfg, name, results) as each finishes.

    Metrics depend on --threads, never on --jobs: a worker uses exactly the threads a
    sequential run would, so parallel and sequential agree bit for bit.
    """
    jobs = effective_jobs(tasks[0][0], len(tasks))
    if jobs == 1:
        device = prepare_torch(tasks[0][0])
        on_device = data.to(device)
        for cfg, name in tasks:
            on_done(cfg, name, train_and_write(name, cfg, manifest, on_device, device))
        return
    # spawn: a fork after torch has started its thread pools can deadlock the child
    run_in_processes(train_in_worker, [(name, cfg, manifest) for cfg, name in tasks], jobs, "spawn",
                     lambda k, results: on_done(*tasks[k], results))


def seed_configs(cfg: Config) -> list[Config]:
    """One config per training seed, all on the subset built with --seed; with --seeds N > 1
    each seed writes into out/seed_<s>/, and every net sees the same seeds (paired runs)."""
    if cfg.seeds == 1:
        return [cfg]
    return [dataclasses.replace(cfg, train_seed=cfg.training_seed + k, seeds=1,
                                out=str(Path(cfg.out) / f"seed_{cfg.training_seed + k}"))
            for k in range(cfg.seeds)]


def remove_partial_writes(out: Path) -> None:
    """Delete the temporary files of writes that a kill cut short (the real files are intact)."""
    for tmp in [*out.glob(f".*.{TMP_TAG}*"), *out.glob(f"checkpoints/.*.{TMP_TAG}*")]:
        tmp.unlink(missing_ok=True)


def run_experiment(cfg: Config, manifest: dict) -> dict[str, list[Results]]:
    """Train every net for every seed and write all outputs; returns the results per net, per seed."""
    print_net_table(cfg.nets, cfg.image_size, manifest["classes"])
    data = load_dataset_tensors(cfg.dataset_dir, manifest)  # also the first check of every thumbnail
    per_seed = seed_configs(cfg)
    results: dict[str, dict[str, Results]] = {c.out: {} for c in per_seed}
    for c in per_seed:
        Path(c.out).mkdir(parents=True, exist_ok=True)
        remove_partial_writes(Path(c.out))

    facts = DatasetFacts.from_manifest(manifest)

    def on_done(c: Config, name: str, res: Results) -> None:  # metrics.json: every finished net's Results,
        results[c.out][name] = res                                # in --nets order whatever order they finish in
        write_json_atomic(Path(c.out) / "metrics.json", {
            "format": METRICS_FORMAT, "config": results_config(c, manifest), "dataset": dataclasses.asdict(facts),
            "nets": {n: dataclasses.asdict(results[c.out][n]) for n in cfg.nets if n in results[c.out]}})

    device = pick_device(cfg.device)  # every finished net is read before on_done rewrites a metrics.json
    finished = {(c.out, name): finished_results(c, name, manifest, device) for c in per_seed for name in cfg.nets}
    tasks = [(c, name) for c in per_seed for name in cfg.nets if finished[(c.out, name)] is None]
    note = other_machine_note(per_seed, cfg.nets, finished, machine_of(infrastructure(device, cfg.threads)))
    if note:
        print(note)
    for c, name in tasks:  # every checkpoint is checked now, not when its net's turn comes hours later
        check_checkpoint(c, name, manifest, device)
    for c in per_seed:
        for name in cfg.nets:
            if finished[(c.out, name)] is not None:
                print(f"{name}: finished in {c.out}/metrics.json with these settings; taken from there")
                on_done(c, name, finished[(c.out, name)])
    if tasks:
        run_tasks(tasks, manifest, data, on_done)
    runs_by_seed = [{name: results[c.out][name] for name in cfg.nets} for c in per_seed]
    hw4_report = siblings()[0]  # the report is its own program; training loads it only here
    hw4_report.write_run_reports(Path(cfg.out), [Path(c.out) for c in per_seed], runs_by_seed, facts, data)
    return {name: [runs[name] for runs in runs_by_seed] for name in cfg.nets}


def other_machine_note(per_seed: list[Config], nets: Sequence[str], finished: dict[tuple[str, str], Results | None],
                       here: str | None) -> str | None:
    """One line when --resume trains nets into a seed whose finished nets ran on another machine type: the
    report will not pair the new nets with those (Experiment.same_machine). A note, not a refusal."""
    seeds, others, old_nets = [], {}, {}
    for c in per_seed:
        done = [(name, finished[(c.out, name)]) for name in nets if finished[(c.out, name)] is not None]
        moved = [(name, r.machine) for name, r in done if r.machine not in (None, here)]
        if moved and len(done) < len(nets):
            seeds.append(c.training_seed)
            others.update(dict.fromkeys(m for _, m in moved))
            old_nets.update(dict.fromkeys(net_label(n) for n, _ in moved))
    if not seeds:
        return None
    return (f"note: {seed_list_text(seeds)} already {'has' if len(seeds) == 1 else 'have'} {', '.join(old_nets)} "
            f"trained on {' and '.join(others)}, and this machine is {here}: the nets trained now will not pair "
            "with those in the report (rerun the whole seed on one machine type to pair them)")


def check_checkpoint(c: Config, name: str, manifest: dict, device: torch.device) -> None:
    """With --resume, the net's checkpoint (if any) restores whole into a net built on the CPU."""
    path = Path(c.out) / "checkpoints" / f"{name}_last.pt"
    if c.resume and path.exists():
        net = build_net(name, c.image_size, manifest["classes"])
        restore_checkpoint(path, run_fingerprint(c, manifest, name, device), c.epochs, net,
                           make_optimizer(net, c, torch.device("cpu")))


def finished_results(c: Config, name: str, manifest: dict, device: torch.device) -> Results | None:
    """With --resume, a net that has no checkpoint but whose Results sit in OUT/metrics.json under this run's
    fingerprint is finished: so a committed run (metrics.json and pickles, no checkpoints) grows by more
    seeds without retraining the ones it has."""
    path = Path(c.out) / "metrics.json"
    if not c.resume or (Path(c.out) / "checkpoints" / f"{name}_last.pt").exists() or not path.exists():
        return None
    try:  # the one reader, and the report's checks of this net's entry: a doctored entry is not taken as finished
        entry = read_metrics_json(path)["nets"].get(name)
        if entry is None:
            return None
        check_results_entry(name, entry)
    except (UserError, SchemaError) as exc:
        print(f"note: {name} is not taken from {path}: {str(exc).removeprefix(str(path) + ': ')}; it trains again")
        return None
    if entry.get("fingerprint") != run_fingerprint(c, manifest, name, device):
        return None
    results = Results.from_json(entry)
    missing = results.missing_series()
    if missing:  # METRICS is not in the fingerprint: a metric changes no trained number, so the net is not retrained
        print(f"note: {name} (seed {results.train_seed}) is taken as finished from {path}, which did not record "
              f"{', '.join(missing)}: the report shows {'it' if len(missing) == 1 else 'them'} as not recorded; "
              "to record them, train into a new --out")
    return results


# =============================================================================
# Predict: classify images with saved weights (the weights carry the net's spec and classes).
# =============================================================================


PREDICT_MAX_PARAMS = 2 ** 29  # 2 GiB of float32 weights: predict reads no larger net (Net2 at 1024x1024 has 134 M)
PREDICT_MAX_ACTIVATION = 2 ** 30  # bytes one picture's activations may take in one forward pass


def max_predict_params(classes: int) -> int:
    """The largest net predict reads: a fixed size, not the table's largest row, so that a new row never moves it
    (a test holds every row, and a wider one, under it). A crafted spec beyond it is refused before anything is
    built."""
    return PREDICT_MAX_PARAMS


PREDICT_CHUNK = 256  # images per forward pass at most: memory stays flat for any number of images
PREDICT_MEMORY = 512 * 2 ** 20  # bytes of activations one forward pass may take


def activation_bytes(spec: NetSpec, image_size: int) -> int:
    """About the largest activation memory of one picture in a forward pass: a conv's float32 output, its ReLU
    and its pool held at once, at conv1 (full size) or conv2 (half size)."""
    c1, c2 = spec.channels
    return 3 * 4 * max(c1 * image_size ** 2, c2 * (image_size // 2) ** 2)


def predict_chunk(spec: NetSpec, image_size: int) -> int:
    """Images per forward pass: PREDICT_CHUNK, fewer for a net whose activations are large, so that a 1024x1024
    net does not ask for gigabytes."""
    return max(1, min(PREDICT_CHUNK, PREDICT_MEMORY // activation_bytes(spec, image_size)))


def spec_from_weights(meta: Any) -> NetSpec:
    """The NetSpec inside a weights file, treated as untrusted: every field of the right type and within
    bounds, and the net it describes small enough, counted from the spec before anything is built."""
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise ValueError("no net spec")
    fields = {f.name: f for f in dataclasses.fields(NetSpec)}
    spec_dict = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["spec"].items() if k in fields}
    spec = NetSpec(**spec_dict)
    ints = [spec.padding, spec.extra_convs, *spec.channels, *spec.hidden]
    reals = [spec.dropout, spec.train_fraction, spec.noise_std, spec.input_scale]
    if not all(is_number(v) and math.isfinite(v) for v in reals) or not 0 < spec.input_scale <= 1:
        raise ValueError("a net spec out of bounds")
    if (not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not 0 <= spec.padding <= 8
            or not 0 <= spec.extra_convs <= 64 or not all(1 <= v <= 4096 for v in [*spec.channels, *spec.hidden])
            or len(spec.channels) != 2 or not 1 <= len(spec.hidden) <= 8 or spec.block not in CHAIN_BLOCKS
            or spec.init not in INITS or not isinstance(meta.get("image_size"), int)
            or not MIN_IMAGE_SIZE <= meta["image_size"] <= MAX_IMAGE_SIZE or not isinstance(meta.get("classes"), list)
            or not 2 <= len(meta["classes"]) <= 1000 or not all(isinstance(c, str) for c in meta["classes"])
            or len(set(meta["classes"])) != len(meta["classes"])):
        raise ValueError("a net spec out of bounds")
    size = spec_parameter_count(spec, meta["image_size"], len(meta["classes"]))
    if size > max_predict_params(len(meta["classes"])):
        raise ValueError(f"a net of {size:,} parameters")
    if activation_bytes(spec, meta["image_size"]) > PREDICT_MAX_ACTIVATION:  # one picture alone would not fit
        raise ValueError(f"a net whose activations take {activation_bytes(spec, meta['image_size']):,} bytes a picture")
    return spec


def predict_images(weights: str | Path, images: Sequence[str | Path], device: str = "cpu") -> list[dict]:
    """Class probabilities for each image, with the training preprocessing (RGB, resize, to_input). The
    net is rebuilt from its .pt file alone: its spec, image size and classes travel inside."""
    dev, path = pick_device(device), Path(weights)
    if path.is_dir():
        raise UserError(f"--weights {path} is a folder; pass a <net>.pt file inside it, such as {path / 'net1.pt'}")
    if os.path.lexists(path) and not path.is_file():
        raise UserError(f"--weights {path} is not a regular file; pass a <net>.pt written by hw4")
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (train first with `python hw4.py --demo`, which writes "
                        "results/demo/net2.pt, or use results/exercise/seed_5/net2.pt)")
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign file stay off the user's stderr
            warnings.simplefilter("ignore")
            state = quiet_torch_load(path, 4 * max_predict_params(1000) + 2 ** 20)  # float32 weights, some metadata
            if not isinstance(state, dict):
                raise ValueError(f"a {type(state).__name__}, not a state dict")
            meta = state["_extra_state"]
            spec = spec_from_weights(meta)
            net = build_net(meta["net"], meta["image_size"], meta["classes"], spec)
            net.load_state_dict(state)
            if not all(torch.isfinite(t).all() for t in net.state_dict().values()
                       if isinstance(t, torch.Tensor) and t.is_floating_point()):
                raise UserError(f"{path} holds NaN or infinite weights: the training diverged; retrain with a lower "
                                "--lr (the report's diagnosis column names the epoch)")
    except UserError:
        raise
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}" if isinstance(exc, ValueError) else \
            type(exc).__name__  # one line: torch's own messages run to paragraphs
        raise UserError(f"{path} is not hw4 weights ({why}); pass a <net>.pt written by hw4, "
                        "such as results/exercise/seed_5/net2.pt") from None
    net = net.to(dev, memory_format=memory_format(dev)).eval()
    images = [p for image in images for p in (pictures_in(Path(image)) if Path(image).is_dir() else [image])]
    for image in images:
        if not Path(image).is_file():
            raise UserError(f"image not found: {image}" if not os.path.lexists(image) else
                            f"{image} is not a regular file; pass image files")
    classes, rows = meta["classes"], []
    step = predict_chunk(spec, meta["image_size"])
    for start in range(0, len(images), step):
        chunk, batch = images[start:start + step], []
        for image in chunk:
            try:
                batch.append(np.asarray(decode_rgb_thumbnail(image, meta["image_size"])).transpose(2, 0, 1))
            except IMAGE_ERRORS as exc:
                raise UserError(f"cannot read {image} as an image ({type(exc).__name__}); pass JPEG or PNG files of "
                                "reasonable size") from None
        with torch.no_grad():
            probs = torch.softmax(net(to_input(torch.from_numpy(np.stack(batch)).to(dev))), dim=1).cpu().numpy()
        rows += [{"image": str(image), "class": classes[int(p.argmax())], "probs": dict(zip(classes, p.tolist()))}
                 for image, p in zip(chunk, probs)]
    return rows


def pictures_in(folder: Path) -> list[Path]:
    """The pictures directly inside a folder given to predict, in name order: the extensions torchvision reads,
    hidden files (.DS_Store) skipped, sub-folders not entered."""
    found = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir()
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise UserError(f"{folder} holds no pictures ({', '.join(IMAGE_EXTENSIONS[:3])}, ...); pass image files or a "
                        "folder of them")
    return found


def predict_main(argv: Sequence[str]) -> int:
    parser = OneLineErrorParser(prog="hw4.py predict",
                                description="Classify images with weights saved by hw4 (net1.pt ...).")
    parser.add_argument("--weights", required=True, type=path_argument, help="a <net>.pt written by hw4 (required)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="(default: cpu)")
    parser.add_argument("images", nargs="+", type=path_argument,
                        help="image files (any mode PIL reads; converted to RGB), or folders of them (the pictures "
                             "directly inside, in name order)")
    args = parser.parse_args(argv)
    for row in predict_images(args.weights, args.images, args.device):  # class names come from the file: escaped
        probs = "  ".join(f"{terminal_text(c)} {p:.3f}" for c, p in row["probs"].items())
        top = f"{terminal_text(row['class'])} ({row['probs'][row['class']]:.3f})"
        print(f"{path_text(row['image'])}: {top}  |  {probs}")
    return 0


# =============================================================================
# CLI: argparse built from the Config fields, the checks that run before any work, then main().
# =============================================================================


def help_default(f: dataclasses.Field) -> str:
    if f.metadata["default_text"]:
        text = f.metadata["default_text"]
    elif isinstance(f.default, tuple):
        text = " ".join(map(str, f.default))
    elif isinstance(f.default, bool):
        text = "on" if f.default else "off"
    else:
        text = f.default
    demo = f"; {DEMO_DEFAULTS[f.name]} with --demo" if f.name in DEMO_DEFAULTS else ""
    return f"(default: {text}{demo})"


def build_parser() -> argparse.ArgumentParser:
    """Every Config field with a flag becomes an option; its help, default and range come from the field."""
    p = OneLineErrorParser(
        prog="hw4.py",
        description="Build the 5-class COCO subset (or read class folders), train Net1/Net2/Net3 (and opt-in "
                    "variants) and report. Also: `hw4.py predict --weights W IMAGE...` and `hw4.py report OUT`.")
    groups = {name: p.add_argument_group(name) for name in ("data", "download", "training")}
    groups["data"].add_argument("--data_dir", "--data-dir", dest="data_dir", default=".", type=path_argument,
                                help="folder holding coco/annotations/instances_train2014.json and "
                                     "coco/images/ (default: .)")
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if meta["flag"] == "":
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kwargs, text = dict(meta["argparse"]), meta["help"]
        if f.name == "nets":
            kwargs.update(choices=[*NETS, "all", *NET_SETS], metavar="NET")
            text = text.replace("NETS", ", ".join(NETS))
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        # None, so that config_from_args can tell an explicit flag from a mode-dependent default
        default = None if f.name in DEMO_DEFAULTS or f.name in ("ann_file", "image_dir") else f.default
        groups[meta["group"]].add_argument(flag, dest=f.name, default=default,
                                           help=f"{text} {help_default(f)}", **kwargs)
    groups["data"].add_argument("--build-only", action="store_true", help="stop after building the dataset "
                                "(default: off)")
    groups["data"].add_argument("--demo", action="store_true", help="generate an offline COCO-format demo set in "
                                f"{DEMO_DATA_DIR}/ and run everything on it (default: off)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Fill in the mode-dependent defaults (--demo or full) and check what one flag alone cannot."""
    data_dir = Path(DEMO_DATA_DIR if args.demo else args.data_dir)
    values = {}
    for f in dataclasses.fields(Config):
        if f.metadata["flag"] == "":
            continue
        value = getattr(args, f.name)
        if value is None and f.name in DEMO_DEFAULTS:
            value = DEMO_DEFAULTS[f.name] if args.demo else f.default
            if args.image_folders is not None and f.name in ("train_per_class", "val_per_class"):
                value = None  # the folders' own counts
        values[f.name] = tuple(value) if isinstance(value, list) else value
    if args.image_folders is not None:
        given = [flag for flag, on in (("--demo", args.demo), ("--download", args.download),
                                       ("--ann-file", args.ann_file), ("--image-dir", args.image_dir),
                                       ("--data_dir", args.data_dir != ".")) if on]
        if given:
            raise UserError(f"--image-folders reads the pictures from class folders, so {given[0]} has no use with "
                            "it; drop one of the two")
        values["ann_file"] = values["image_dir"] = ""
    else:
        values["ann_file"] = args.ann_file or str(data_dir / "coco" / "annotations" / "instances_train2014.json")
        values["image_dir"] = args.image_dir or str(data_dir / "coco" / "images")
    values["nets"] = tuple(NETS) if "all" in values["nets"] else tuple(dict.fromkeys(
        n for given in values["nets"] for n in NET_SETS.get(given, (given,))))
    cfg = Config(**values)
    if len(set(cfg.classes)) != len(cfg.classes):
        raise UserError(f"--classes lists a class twice: {' '.join(cfg.classes)}")
    if len(cfg.classes) < 2:
        raise UserError("--classes needs at least two classes")
    for name in cfg.classes:
        if not is_class_name(name):
            raise UserError(f"--classes {terminal_text(name)!r} is not a class name: each names a class folder and "
                            "appears in REPORT.md, so it must be a non-empty name, not '.' or '..', without control "
                            f"characters or any of {''.join(sorted(NOT_IN_CLASS_NAMES))}")
    if cfg.seed + cfg.seeds - 1 > MAX_SEED:
        raise UserError(f"--seed {cfg.seed} with --seeds {cfg.seeds} runs past the largest seed, {MAX_SEED}; "
                        "use a smaller --seed")
    if args.demo and args.data_dir != ".":
        raise UserError("--demo generates its own data in demo_data/, so --data_dir has no use with it; drop one of "
                        "the two")
    if args.demo and cfg.train_per_class + cfg.val_per_class > DEMO_MAX_PER_CLASS:
        raise UserError(f"--demo generates at most {DEMO_MAX_PER_CLASS} images per class, but "
                        f"--train-per-class {cfg.train_per_class} + --val-per-class {cfg.val_per_class} need more; "
                        "lower them, or use real COCO with --data_dir")
    return cfg


def check_before_work(cfg: Config, args: argparse.Namespace) -> None:
    """Everything that can fail cheaply fails before the build and before any training."""
    check_folder_creatable(cfg.dataset_dir, "--dataset-dir")
    outputs = [("--dataset-dir", cfg.dataset_dir)] + ([] if args.build_only else [("--out", cfg.out)])
    for flag, folder in outputs if cfg.image_folders else ():  # the next build would read hw4's files as pictures
        if Path(folder).resolve().is_relative_to(Path(cfg.image_folders).resolve()):
            raise UserError(f"{flag} {folder} lies inside --image-folders {cfg.image_folders}, whose pictures the "
                            "build reads: its thumbnails and figures would become training pictures; put it elsewhere")
    if args.build_only:
        return
    check_folder_creatable(cfg.out, "--out")
    if Path(cfg.out).resolve().is_relative_to(Path(cfg.dataset_dir).resolve()):
        raise UserError(f"--out {cfg.out} lies inside --dataset-dir {cfg.dataset_dir}, which a rebuild replaces as "
                        "a whole; put the results in another folder")
    check_out_folder(cfg)
    if cfg.threads > (os.cpu_count() or 1):
        print(f"note: --threads {cfg.threads} is more than this machine's {os.cpu_count()} CPUs; torch runs slower "
              "when its threads outnumber the cores")
    if cfg.device != "auto":
        pick_device(cfg.device)
    for name in cfg.nets:  # a net that does not fit the image size fails here, not after the build
        net_outline(name, cfg.image_size, cfg.classes)


def check_out_folder(cfg: Config, locked: bool = False) -> None:
    """hw4 owns only what it wrote: before any work, refuse an --out that holds files hw4 would overwrite
    but did not write, a run with other settings, an unfinished run (without --resume), or a file or
    folder where hw4 writes the other kind. --overwrite allows all but the last. Another command writing there is
    said first, unless this one holds the lock already (locked)."""
    folders = [Path(cfg.out), *([Path(c.out) for c in seed_configs(cfg)] if cfg.seeds > 1 else [])]
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file where hw4 writes a results folder; move it away or pass another --out")
        if not folder.is_dir():
            continue
        for path, is_folder in [(folder / "checkpoints", True), (folder / "REPORT.md", False),
                                (folder / "metrics.json", False),
                                *((folder / f, False) for n in cfg.nets for f in (f"{n}.pt", pickle_name(n)))]:
            if path.exists() and path.is_dir() != is_folder:
                raise UserError(f"{path} is a {'file' if is_folder else 'folder'} where hw4 writes a "
                                f"{'folder' if is_folder else 'file'}; move it away or pass another --out")
        if not locked and (folder / RUN_LOCK).exists():  # another command writing here is said first: its files
            with run_lock(folder):                          # are not a stranger's (no lock file: nobody holds it)
                pass
        if cfg.overwrite:
            continue
        check_out_is_this_run(folder, cfg)
        if not cfg.resume:
            for ckpt in sorted((folder / "checkpoints").glob("*_last.pt")):
                epoch = None
                with contextlib.suppress(Exception):  # a damaged checkpoint holds no progress to lose
                    epoch = quiet_torch_load(ckpt)["epoch"]
                if isinstance(epoch, int) and epoch < cfg.epochs:
                    raise UserError(f"{ckpt} holds an unfinished run (epoch {epoch} of {cfg.epochs}); add --resume "
                                    "to continue it, or --overwrite to start it over")


def net_file_names(net: str) -> list[str]:
    """The files one finished net writes into its folder: its pickle, weights and per-net figures."""
    return [pickle_name(net), f"{net}.pt", *(p.file.format(net=net) for p in FIGURES if p.per_net)]


def run_file_names(nets: Sequence[str]) -> list[str]:
    """Every file a run writes into its folder (or a seed's): hw4 owns these names only where it wrote them."""
    return ["REPORT.md", "metrics.json", "claims.png", *(p.file for p in FIGURES if not p.per_net),
            *(name for n in nets for name in net_file_names(n))]


def check_out_is_this_run(folder: Path, cfg: Config) -> None:
    """The REPORT.md and metrics.json in folder are an hw4 run's with these settings, or absent."""
    metrics = folder / "metrics.json"
    try:
        blob = read_metrics_json(metrics) if metrics.exists() else None
    except UserError:
        blob = []
    ours = isinstance(blob, dict) and isinstance(blob.get("config"), dict)
    if metrics.exists() and not ours:
        raise UserError(f"{metrics} is not an hw4 run's metrics.json; pass another --out, or --overwrite to replace it")
    # a net killed between its files and metrics.json: its checkpoint says that hw4 wrote them
    checkpointed = {f for n in cfg.nets if (folder / "checkpoints" / f"{n}_last.pt").is_file()
                    for f in net_file_names(n)}
    theirs = [] if ours else [name for name in run_file_names(cfg.nets)
                              if (folder / name).exists() and name not in checkpointed]
    if theirs:
        raise UserError(f"{folder / theirs[0]} is not an hw4 run's (no hw4 metrics.json beside it), and hw4 would "
                        "write over it; pass another --out, or --overwrite to replace it")
    if ours:
        now = {**cfg.train_settings(), "image_size": cfg.image_size, "classes": list(cfg.classes)}
        for key in OWN_SETTINGS:
            if key in blob["config"] and blob["config"][key] != now[key]:
                raise UserError(f"--out {folder} holds a run made with other settings ({key} {blob['config'][key]}, "
                                f"now {now[key]}); pass another --out, or --overwrite to replace it")


def raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handled like Ctrl-C: the run stops where it is, and every file it wrote stays whole."""
    raise KeyboardInterrupt


def report_main(argv: Sequence[str]) -> int:
    """`hw4.py report`: hw4_report.py's program, loaded only for it."""
    return siblings()[0].report_main(argv)


def compare_main(argv: Sequence[str]) -> int:
    """`hw4.py compare`: hw4_compare.py's program, loaded only for it."""
    return siblings()[1].compare_main(argv)


SUBCOMMANDS = {"predict": (predict_main, "classifying the images"), "report": (report_main, "rewriting the reports"),
               "compare": (compare_main, "comparing")}  # each one's main, and what an interrupt says it was doing


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # a path that is not valid UTF-8 must not crash the last print
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    stage = "checking the arguments"
    try:
        if argv[:1] and argv[0] in SUBCOMMANDS:
            command, stage = SUBCOMMANDS[argv[0]]
            return command(argv[1:])
        args = build_parser().parse_args(argv)
        siblings()  # training ends in the report: a missing sibling is one line now, before any data is made
        cfg = config_from_args(args)
        check_before_work(cfg, args)
        if args.demo and not (args.ann_file or args.image_dir):  # enough images: 10% of them show two classes
            stage = "generating the demo data"
            ensure_demo_data(Path(DEMO_DATA_DIR), math.ceil(1.2 * (cfg.train_per_class + cfg.val_per_class)) + 10)
        with contextlib.ExitStack() as held:
            if not args.build_only:  # from here on no other run can write into --out
                held.enter_context(run_lock(Path(cfg.out)))
                check_out_folder(cfg, locked=True)  # again, now under the lock
            coco = None
            if cfg.download and reusable_manifest(cfg) is None:
                stage = "downloading the images"
                coco = download_subset_images(cfg)
            stage = "building the dataset"
            manifest = build_subset(cfg, coco)
            if args.build_only:
                print(f"dataset ready in {cfg.dataset_dir}")
                return 0
            stage = "training"
            run_experiment(cfg, manifest)
        print(f"results are in {cfg.out}/ (REPORT.md, metrics.json, results*.pkl, <net>.pt, *.png)")
        return 0
    except UserError as exc:
        print(f"hw4: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, BrokenProcessPool):  # Ctrl-C, SIGTERM, or a worker killed from outside
        subcommand = any(stage == s for _, s in SUBCOMMANDS.values())
        print("hw4: interrupted. Finished nets and epochs are kept; to continue, rerun the same command with "
              "--resume (it redoes at most the epoch that was running)." if stage == "training" else
              f"hw4: interrupted while {stage}; every file is whole (each is written at once). Rerun the same "
              "command to do it again." if subcommand else
              f"hw4: interrupted while {stage}; nothing was trained. Rerun the same command to start that again.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main())
