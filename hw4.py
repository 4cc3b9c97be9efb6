#!/usr/bin/env python3
"""hw4: Purdue ECE 60146 homework 4 (spring 2023), reproducible and fast.

What it does, in data-flow order:
  1. cuts a 5-class image-classification subset (airplane, bus, cat, dog, pizza;
     1500 train + 500 val per class, 64x64 RGB, no image used twice) out of
     MS-COCO 2014 train with pycocotools;
  2. trains HW4Net (Net1), Net2 (padding=1) and Net3 (Net1 + 10 extra convs)
     with Adam at batch size 4, 15 epochs;
  3. writes results{1,2,3}.pkl (the original report's keys), metrics.json,
     the best-epoch weights, the learning-curve and confusion-matrix figures,
     and REPORT.md, which answers the exercise's questions from the numbers.

What it needs: Python 3.11, torch, torchvision, pycocotools, numpy, pillow,
matplotlib, seaborn and tqdm (see requirements.txt), and either COCO 2014
(annotations + train2014 images, or --download) or nothing at all (--demo).

    python hw4.py --demo                                  # offline demo, ~1 min on a laptop CPU
    python hw4.py --data_dir DIR                          # DIR/coco/{annotations,images}
    python hw4.py --data_dir DIR --download               # fetch only the images the subset needs
    python hw4.py predict --weights results/net2.pt a.jpg # classify images with trained weights

torch is imported lazily: it costs about 2 s, and reusing a finished dataset
build must stay faster than that.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import hashlib
import http.client
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import sys
import threading
import time
import urllib.parse
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

if TYPE_CHECKING:  # imported for real inside the functions that need them
    import torch
    from torch import nn

# =============================================================================
# Config
# =============================================================================

DEFAULT_CLASSES = ("airplane", "bus", "cat", "dog", "pizza")
NET_NAMES = ("net1", "net2", "net3")
MANIFEST_VERSION = 2  # bump whenever the build writes different files (selection, decoding, naming)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Settings that --demo changes unless the user passes them explicitly.
DEMO_DEFAULTS = {
    "train_per_class": 200,
    "val_per_class": 60,
    "epochs": 5,
    "out": "results/demo",
    "dataset_dir": "demo_data/hw4_dataset",
}
FULL_DEFAULTS = {
    "train_per_class": 1500,
    "val_per_class": 500,
    "epochs": 15,
    "out": "results",
    "dataset_dir": "hw4_dataset",
}
DEMO_DATA_DIR = "demo_data"


class UserError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, never a traceback."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; the current net's checkpoint has been saved."""


@dataclass(frozen=True)
class Config:
    """Every setting of a run, collected in one place and saved with the results."""

    # where COCO is
    ann_file: str
    image_dir: str
    # the subset
    classes: tuple[str, ...] = DEFAULT_CLASSES
    train_per_class: int = 1500
    val_per_class: int = 500
    image_size: int = 64
    seed: int = 5
    exclusive: bool = False
    dataset_dir: str = "hw4_dataset"
    workers: int = 1
    # training
    nets: tuple[str, ...] = NET_NAMES
    batch_size: int = 4
    epochs: int = 15
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    device: str = "auto"
    threads: int = 2
    jobs: int = 1
    seeds: int = 1
    out: str = "results"
    dry_run: bool = False
    resume: bool = False
    # downloading
    download: bool = False
    coco_url_base: str | None = None
    download_workers: int = 8
    download_timeout: float = 30.0
    download_retries: int = 5

    def build_settings(self) -> dict[str, Any]:
        """The settings that decide the dataset's content (not where it is written or how fast)."""
        ann = Path(self.ann_file)
        stat = ann.stat() if ann.exists() else None
        return {
            "version": MANIFEST_VERSION,
            "ann_file": str(ann.resolve()),
            "ann_file_size": stat.st_size if stat else None,
            "ann_file_mtime_ns": stat.st_mtime_ns if stat else None,
            "image_dir": str(Path(self.image_dir).resolve()),
            "classes": list(self.classes),
            "train_per_class": self.train_per_class,
            "val_per_class": self.val_per_class,
            "image_size": self.image_size,
            "seed": self.seed,
            "exclusive": self.exclusive,
        }

    def train_settings(self) -> dict[str, Any]:
        """The settings that decide the training metrics (the resume fingerprint hashes these)."""
        return {
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "lr": self.lr,
            "betas": list(self.betas),
            "threads": self.threads,
            "dry_run": self.dry_run,
        }


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of a settings dict."""
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def default_threads() -> int:
    """Intra-op threads per net.

    Measured on a 2-core x86 CPU at batch 4 with fused Adam (a loop of forward,
    backward and step): 1 thread gave 820 img/s (Net1) and 334 (Net3), 2 threads
    gave 1113 and 418. So: all cores, capped at 2 because larger counts were not
    measured. This is a fixed number, never timed at run time, because the thread
    count changes float summation order and so the metrics.
    """
    return max(1, min(2, os.cpu_count() or 1))


# =============================================================================
# COCO subset: choose the images
# =============================================================================


def load_coco(ann_file: str | Path):
    """Load an instances JSON with pycocotools, keeping its chatter off our stdout."""
    from pycocotools.coco import COCO

    path = Path(ann_file)
    if not path.is_file():
        raise UserError(
            f"annotation file not found: {path} (pass --ann-file, fix --data_dir, or add --download)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise UserError(f"annotation file {path} is not COCO instances JSON ({exc}); check --ann-file") from None


def resolve_category_ids(coco, class_names: Sequence[str]) -> dict[str, int]:
    """Map each class name to its COCO category id; unknown names list close matches."""
    by_name = {cat["name"]: cat["id"] for cat in coco.loadCats(coco.getCatIds())}
    ids = {}
    for name in class_names:
        if name not in by_name:
            close = difflib.get_close_matches(name, by_name, n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"known classes: {', '.join(sorted(by_name)[:12])}{' ...' if len(by_name) > 12 else ''}")
            raise UserError(f"unknown class {name!r} in the annotation file; {hint}")
        ids[name] = by_name[name]
    return ids


def candidate_ids_per_class(coco, cat_ids: dict[str, int], exclusive: bool) -> dict[str, list[int]]:
    """Per class, the sorted ids of the images that contain it.

    Built from coco.catToImgs one class at a time: the multi-id getImgIds call
    returns the intersection, and an empty list returns every image.
    """
    images_of = {name: set(coco.catToImgs.get(cid, [])) for name, cid in cat_ids.items()}
    if exclusive:
        counts: dict[int, int] = {}
        for ids in images_of.values():
            for img_id in ids:
                counts[img_id] = counts.get(img_id, 0) + 1
        images_of = {name: {i for i in ids if counts[i] == 1} for name, ids in images_of.items()}
    return {name: sorted(ids) for name, ids in images_of.items()}


def shuffle_candidates(candidates: dict[str, list[int]], seed: int) -> dict[str, list[int]]:
    """Shuffle each class's sorted ids with one local RNG, in class order."""
    rng = random.Random(seed)
    shuffled = {}
    for name, ids in candidates.items():
        ids = list(ids)
        rng.shuffle(ids)
        shuffled[name] = ids
    return shuffled


class CandidateQueue:
    """A class's shuffled candidates, handed out in order, skipping images used elsewhere."""

    def __init__(self, name: str, ids: list[int]):
        self.name = name
        self.ids = ids
        self.pos = 0

    def next_unused(self, used: set[int]) -> int | None:
        while self.pos < len(self.ids):
            img_id = self.ids[self.pos]
            self.pos += 1
            if img_id not in used:
                return img_id
        return None


def check_enough_candidates(candidates: dict[str, list[int]], cfg: Config) -> None:
    """Fail early, naming the class, when a class cannot fill its train and val quota."""
    need = cfg.train_per_class + cfg.val_per_class
    for name, ids in candidates.items():
        if len(ids) < need:
            kind = "images with only this class (--exclusive)" if cfg.exclusive else "images"
            raise UserError(
                f"class {name!r} has {len(ids)} {kind} but needs {need} "
                f"({cfg.train_per_class} train + {cfg.val_per_class} val); "
                "lower --train-per-class/--val-per-class"
            )


def pick_images(queues: dict[str, CandidateQueue], cfg: Config, used: set[int]) -> dict[str, list[int]]:
    """Deal images to the classes in turn, so that shared images are split fairly.

    An image that holds two requested classes goes to whichever class reaches
    it first and is never used again, in either split.
    """
    need = cfg.train_per_class + cfg.val_per_class
    picks: dict[str, list[int]] = {name: [] for name in queues}
    for _ in range(need):
        for name, queue in queues.items():
            img_id = queue.next_unused(used)
            if img_id is None:
                raise UserError(
                    f"class {name!r} has {len(picks[name])} images left after removing those "
                    f"already taken by other classes but needs {need}; lower "
                    "--train-per-class/--val-per-class or use fewer classes"
                )
            used.add(img_id)
            picks[name].append(img_id)
    return picks


# =============================================================================
# COCO subset: write the images and the manifest
# =============================================================================


def safe_relative_path(file_name: str) -> PurePosixPath:
    """Check an annotation's file_name: relative, no '..'. Sub-folders are fine."""
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if not file_name or rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0]):
        raise UserError(
            f"unsafe file_name {file_name!r} in the annotations: it must be a path relative "
            "to the image dir without '..'; fix the annotation file"
        )
    return rel


def source_path(image_dir: str | Path, file_name: str) -> Path:
    """Where an annotation's image lives, guaranteed to be inside image_dir."""
    return Path(image_dir) / safe_relative_path(file_name)


def output_name(class_name: str, file_name: str, taken: set[str], image_id: int) -> str:
    """'<class>_<basename>' as the original named them; made unique within a split."""
    base = PurePosixPath(file_name.replace("\\", "/")).name
    stem, ext = os.path.splitext(base)
    if ext.lower() not in (".jpg", ".jpeg", ".png"):
        ext = ".png"
    safe_class = class_name.replace("/", "-").replace(os.sep, "-")
    name = f"{safe_class}_{stem}{ext}"
    if name in taken:  # same basename in two sub-folders (kwcoco) or repeated file_name
        name = f"{safe_class}_{image_id}_{stem}{ext}"
    taken.add(name)
    return name


def decode_rgb_thumbnail(src: str | Path, size: int) -> Image.Image:
    """Open any image, convert it to RGB and resize it to size x size.

    JPEGs are first decoded in draft mode, which downsamples by 1/2..1/8 inside
    the DCT and so skips most of the decoding work; we ask for at least twice the
    target size so that the final bicubic resize still has real pixels to
    average (mean abs difference to a full decode is measured in the benchmark).
    """
    with Image.open(src) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        if img.mode == "P":  # palette transparency warns unless it goes through RGBA
            img = img.convert("RGBA")
        rgb = img.convert("RGB")
    return rgb.resize((size, size), Image.Resampling.BICUBIC)


def save_thumbnail(img: Image.Image, dst: str | Path) -> None:
    """Save as JPEG (quality 95) or PNG, by the destination's extension."""
    if str(dst).lower().endswith((".jpg", ".jpeg")):
        img.save(dst, format="JPEG", quality=95)
    else:
        img.save(dst, format="PNG")


def write_one_thumbnail(job: tuple[str, str, int]) -> str | None:
    """Pool worker: decode, resize and save one image. Returns None or why it failed."""
    src, dst, size = job
    if not os.path.isfile(src):
        return "missing"
    try:
        save_thumbnail(decode_rgb_thumbnail(src, size), dst)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    return None


@dataclass
class WriteJob:
    split: str
    class_name: str
    label: int
    image_id: int
    file_name: str
    out_name: str
    slot: int  # position in the plan, kept by a replacement so the manifest order is stable

    def entry(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "path": f"{self.split}_data/{self.out_name}",
            "class": self.class_name,
            "label": self.label,
            "image_id": self.image_id,
            "file_name": self.file_name,
        }


def run_write_jobs(jobs: list[WriteJob], cfg: Config, root: Path, desc: str) -> list[str | None]:
    """Write a batch of thumbnails, in parallel when --workers > 1. Order is kept."""
    from tqdm import tqdm

    args = [(str(source_path(cfg.image_dir, j.file_name)), str(root / f"{j.split}_data" / j.out_name),
             cfg.image_size) for j in jobs]
    chunks = max(1, len(args) // (cfg.workers * 8))  # few round trips, yet an even spread
    bar = dict(total=len(args), desc=desc, unit="img", disable=None, leave=False)
    if cfg.workers > 1 and len(args) > 1:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            return list(tqdm(pool.map(write_one_thumbnail, args, chunksize=chunks), **bar))
    return [write_one_thumbnail(a) for a in tqdm(args, **bar)]


def plan_jobs(picks: dict[str, list[int]], coco, cfg: Config, taken: dict[str, set[str]]) -> list[WriteJob]:
    """Turn the picked ids into write jobs: the first N of a class to train, the next M to val."""
    jobs = []
    for label, (name, ids) in enumerate(picks.items()):
        for k, img_id in enumerate(ids):
            split = "train" if k < cfg.train_per_class else "val"
            jobs.append(make_job(split, name, label, img_id, coco, taken, len(jobs)))
    return jobs


def make_job(split: str, name: str, label: int, img_id: int, coco, taken: dict[str, set[str]],
             slot: int) -> WriteJob:
    file_name = coco.imgs[img_id]["file_name"]
    safe_relative_path(file_name)
    out_name = output_name(name, file_name, taken[split], img_id)
    return WriteJob(split, name, label, img_id, file_name, out_name, slot)


def write_subset(picks, queues, used, coco, cfg: Config, root: Path) -> tuple[list[dict], list[dict]]:
    """Write every picked image; replace failures by the next unused candidate of their class."""
    taken: dict[str, set[str]] = {"train": set(), "val": set()}
    jobs = plan_jobs(picks, coco, cfg, taken)
    entries: dict[int, dict] = {}
    replacements: list[dict] = []
    pending, first_round = jobs, True
    while pending:
        failures = run_write_jobs(pending, cfg, root, "writing images" if first_round else "replacements")
        if first_round and all(why is not None for why in failures):
            raise UserError(
                f"none of the {len(pending)} chosen images could be read (first: "
                f"{source_path(cfg.image_dir, pending[0].file_name)}: {failures[0]}); the image dir "
                f"{cfg.image_dir} is probably wrong: pass --image-dir or fix --data_dir"
            )
        retry = []
        for job, why in zip(pending, failures):
            if why is None:
                entries[job.slot] = job.entry()
                continue
            new_id = queues[job.class_name].next_unused(used)
            if new_id is None:
                raise UserError(
                    f"class {job.class_name!r} ran out of readable images while replacing "
                    f"{job.file_name} ({why}); check --image-dir {cfg.image_dir}"
                )
            used.add(new_id)
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
        shown = {name_of[a["category_id"]] for a in coco.imgToAnns.get(e["image_id"], [])
                 if a["category_id"] in name_of}
        e["also_shows"] = sorted(shown - {e["class"]})


def count_entries(entries: Iterable[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for e in entries:
        counts.setdefault(e["split"], {}).setdefault(e["class"], 0)
        counts[e["split"]][e["class"]] += 1
    return counts


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_manifest(dataset_dir: str | Path) -> dict | None:
    """The finished build's manifest, or None when there is none (or it is damaged)."""
    try:
        return json.loads((Path(dataset_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def reusable_manifest(cfg: Config) -> dict | None:
    """The manifest of a finished build with this exact config, if its files are all there."""
    manifest = read_manifest(cfg.dataset_dir)
    if not manifest or manifest.get("fingerprint") != fingerprint(cfg.build_settings()):
        return None
    root = Path(cfg.dataset_dir)
    if not all((root / e["path"]).is_file() for e in manifest["entries"]):
        return None
    return manifest


def check_dataset_dir_is_ours(dataset_dir: Path) -> None:
    """Refuse to replace a folder that is not an hw4 build: it may hold the user's files."""
    if dataset_dir.exists() and (not dataset_dir.is_dir() or (
            any(dataset_dir.iterdir()) and not (dataset_dir / "manifest.json").exists())):
        raise UserError(
            f"--dataset-dir {dataset_dir} exists and is not an hw4 dataset (no manifest.json); "
            "choose another --dataset-dir or remove it"
        )


def swap_into_place(tmp: Path, target: Path) -> None:
    """Replace target by tmp with renames, so a reader never sees half a build."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_builds(target: Path) -> None:
    """Delete temporary folders that interrupted builds left beside the target."""
    for stale in target.parent.glob(f".{target.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)


def select_subset(coco, cfg: Config):
    """Choose the subset's images; returns (picks, queues, used) for writing and replacing."""
    cat_ids = resolve_category_ids(coco, cfg.classes)
    candidates = candidate_ids_per_class(coco, cat_ids, cfg.exclusive)
    check_enough_candidates(candidates, cfg)
    shuffled = shuffle_candidates(candidates, cfg.seed)
    queues = {name: CandidateQueue(name, ids) for name, ids in shuffled.items()}
    used: set[int] = set()
    picks = pick_images(queues, cfg, used)
    return picks, queues, used


def build_subset(cfg: Config, coco=None) -> dict:
    """Build (or reuse) the dataset; returns its manifest."""
    manifest = reusable_manifest(cfg)
    if manifest is not None:
        print(f"reusing the dataset in {cfg.dataset_dir} (fingerprint {manifest['fingerprint']})")
        return manifest
    target = Path(cfg.dataset_dir)
    check_dataset_dir_is_ours(target)
    if coco is None:
        coco = load_coco(cfg.ann_file)
    picks, queues, used = select_subset(coco, cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(target)
    tmp = target.with_name(f".{target.name}.building-{os.getpid()}")
    for split in ("train", "val"):
        (tmp / f"{split}_data").mkdir(parents=True)
    try:
        entries, replacements = write_subset(picks, queues, used, coco, cfg, tmp)
        note_other_classes(entries, coco, resolve_category_ids(coco, cfg.classes))
        settings = cfg.build_settings()
        manifest = {
            "version": MANIFEST_VERSION,
            "fingerprint": fingerprint(settings),
            "config": settings,
            "classes": list(cfg.classes),
            "counts": count_entries(entries),
            "replacements": replacements,
            "entries": entries,
        }
        write_json_atomic(tmp / "manifest.json", manifest)
        swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_counts(manifest)
    return manifest


def print_counts(manifest: dict) -> None:
    counts = manifest["counts"]
    width = max(len(c) for c in manifest["classes"])
    print(f"{'class':<{width}}  train    val")
    for name in manifest["classes"]:
        print(f"{name:<{width}}  {counts.get('train', {}).get(name, 0):5d}  {counts.get('val', {}).get(name, 0):5d}")
    if manifest["replacements"]:
        print(f"{len(manifest['replacements'])} missing or unreadable images were replaced "
              "(listed in manifest.json)")


# =============================================================================
# COCO subset: download only the chosen images (--download)
# =============================================================================

DEFAULT_COCO_URL_BASE = "http://images.cocodataset.org"
ANNOTATIONS_ZIP = "annotations/annotations_trainval2014.zip"
ANNOTATIONS_MEMBER = "annotations/instances_train2014.json"
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0


class RetryableError(Exception):
    """A timeout, a reset, a cut body, a 5xx or a 429: worth another try after a pause."""


class PermanentError(Exception):
    """A 404 or another 4xx, or a URL we refuse: trying again will not help."""


@dataclass(frozen=True)
class FetchOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retries: int = 5


def fetch_options(cfg: Config) -> FetchOptions:
    return FetchOptions(read_timeout=cfg.download_timeout, retries=cfg.download_retries)


def checked_url(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"refusing URL {url!r}: only http and https are allowed")
    return parts


def http_get(url: str, dest: Path, opts: FetchOptions, redirects: int = 3) -> None:
    """GET url into dest with separate connect and read timeouts; classifies every failure."""
    parts = checked_url(url)
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=opts.connect_timeout)
    try:
        conn.connect()
        conn.sock.settimeout(opts.read_timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", target, headers={"User-Agent": "hw4"})
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and redirects and resp.getheader("Location"):
            return http_get(urllib.parse.urljoin(url, resp.getheader("Location")), dest, opts, redirects - 1)
        if resp.status == 429 or resp.status >= 500:
            raise RetryableError(f"HTTP {resp.status} {resp.reason}")
        if resp.status != 200:
            raise PermanentError(f"HTTP {resp.status} {resp.reason}")
        expected = resp.getheader("Content-Length")
        size = 0
        with open(dest, "wb") as f:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                size += len(chunk)
        if expected is not None and size != int(expected):
            raise RetryableError(f"body cut off: {size} of {expected} bytes")
    except (http.client.HTTPException, OSError) as exc:  # timeouts, resets, cut bodies, DNS
        raise RetryableError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    finally:
        conn.close()


def is_valid_image(path: Path) -> bool:
    """The file decodes completely (a truncated JPEG fails here); draft mode keeps it cheap."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (64, 64))
            img.load()
        return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def fetch_with_retries(url: str, dest: Path, opts: FetchOptions, check=is_valid_image) -> tuple[str, int, str]:
    """Fetch url to dest unless a valid copy is there. Returns (status, retries, reason).

    The body goes to a temporary file that is renamed into place only once it is
    complete and decodes, so an interrupted run never leaves a file that looks done.
    """
    if dest.is_file() and check(dest):
        return "present", 0, ""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}-{threading.get_ident()}")
    reason, attempt = "", 0
    for attempt in range(opts.retries + 1):
        try:
            http_get(url, tmp, opts)
            if not check(tmp):
                raise RetryableError("the body is not a readable image")
            os.replace(tmp, dest)
            return "downloaded", attempt, ""
        except PermanentError as exc:
            reason = str(exc)
            break
        except RetryableError as exc:
            reason = str(exc)
            if attempt < opts.retries:  # exponential backoff with jitter, so threads do not retry in step
                time.sleep(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt) * random.uniform(0.5, 1.5))
        finally:
            tmp.unlink(missing_ok=True)
    return "failed", attempt, reason


def image_url(image: dict, base: str | None) -> str:
    """URL of one COCO image: the mirror's train2014/<file_name>, or the annotation's coco_url."""
    rel = safe_relative_path(image["file_name"])
    if base:
        return f"{base.rstrip('/')}/train2014/{urllib.parse.quote(str(rel))}"
    if not image.get("coco_url"):
        raise PermanentError(f"image {image['id']} has no coco_url (pass --coco-url-base)")
    return image["coco_url"]


def destination_inside(image_dir: Path, file_name: str) -> Path:
    """Where a download goes: under image_dir, even through symlinks (resolve follows existing ones)."""
    dest = source_path(image_dir, file_name)
    if not dest.parent.resolve().is_relative_to(image_dir.resolve()):
        raise PermanentError(f"{file_name} would be written outside {image_dir}")
    return dest


def fetch_annotations(cfg: Config) -> None:
    """Fetch the 2014 annotations zip and extract instances_train2014.json to --ann-file."""
    base = (cfg.coco_url_base or DEFAULT_COCO_URL_BASE).rstrip("/")
    ann = Path(cfg.ann_file)
    ann.parent.mkdir(parents=True, exist_ok=True)
    archive = ann.with_name(".annotations_trainval2014.zip")
    url = f"{base}/{ANNOTATIONS_ZIP}"
    print(f"fetching the annotations from {url} ...")
    status, _, reason = fetch_with_retries(url, archive, fetch_options(cfg), check=zipfile.is_zipfile)
    if status == "failed":
        raise UserError(f"could not download {url} ({reason}); check the network or --coco-url-base")
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(ANNOTATIONS_MEMBER) as src:
            tmp = ann.with_name(f".{ann.name}.tmp-{os.getpid()}")
            with open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
        os.replace(tmp, ann)
    except KeyError:
        raise UserError(f"{url} has no {ANNOTATIONS_MEMBER}; check --coco-url-base") from None
    finally:
        archive.unlink(missing_ok=True)


def fetch_images(ids: list[int], coco, cfg: Config, opts: FetchOptions) -> dict[int, tuple[str, int, str]]:
    """Fetch the images with these ids in parallel threads; returns id -> (status, retries, reason)."""
    from concurrent.futures import ThreadPoolExecutor
    from tqdm import tqdm

    image_dir = Path(cfg.image_dir)

    def one(img_id: int) -> tuple[str, int, str]:
        image = coco.imgs[img_id]
        try:
            return fetch_with_retries(image_url(image, cfg.coco_url_base),
                                      destination_inside(image_dir, image["file_name"]), opts)
        except PermanentError as exc:
            return "failed", 0, str(exc)

    with ThreadPoolExecutor(max_workers=cfg.download_workers) as pool:
        results = list(tqdm(pool.map(one, ids), total=len(ids), desc="downloading", unit="img", disable=None))
    return dict(zip(ids, results))


def checked_or_user_error(url: str) -> None:
    try:
        checked_url(url)
    except PermanentError as exc:
        raise UserError(f"--coco-url-base: {exc}") from None


def download_subset_images(cfg: Config):
    """--download: the annotations if missing, then exactly the chosen images (and replacements).

    Replacements follow the builder's rule (the next unused candidate of the
    class, in plan order), so the build that follows finds every image it needs.
    """
    if cfg.coco_url_base:
        checked_or_user_error(cfg.coco_url_base)
    if not Path(cfg.ann_file).is_file():
        fetch_annotations(cfg)
    coco = load_coco(cfg.ann_file)
    picks, queues, used = select_subset(coco, cfg)
    opts = fetch_options(cfg)
    pending = [(name, img_id) for name, ids in picks.items() for img_id in ids]
    outcome: dict[int, tuple[str, int, str]] = {}
    while pending:
        results = fetch_images([img_id for _, img_id in pending], coco, cfg, opts)
        outcome.update(results)
        retry = []
        for name, img_id in pending:
            if results[img_id][0] == "failed":
                new_id = queues[name].next_unused(used)
                if new_id is not None:
                    used.add(new_id)
                    retry.append((name, new_id))
        pending = retry
    print_download_summary(outcome, coco)
    return coco


def print_download_summary(outcome: dict[int, tuple[str, int, str]], coco) -> None:
    counts = {s: sum(o[0] == s for o in outcome.values()) for s in ("downloaded", "present", "failed")}
    retries = sum(o[1] for o in outcome.values())
    print(f"download: {counts['downloaded']} downloaded, {counts['present']} already present, "
          f"{retries} retries, {counts['failed']} failed for good")
    failures = [(i, o[2]) for i, o in outcome.items() if o[0] == "failed"]
    for img_id, reason in failures[:5]:
        print(f"  failed: {coco.imgs[img_id]['file_name']}: {reason}")
    if failures and len(failures) == len(outcome):
        raise UserError(f"no image could be downloaded (first: {failures[0][1]}); "
                        "check the network or --coco-url-base")


# =============================================================================
# Demo data: an offline COCO-format set with learnably different classes
# =============================================================================

DEMO_CATEGORIES = {"airplane": 5, "bus": 6, "cat": 17, "dog": 18, "pizza": 59}


def demo_background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A smooth random colour gradient with pixel noise, like an out-of-focus scene."""
    corners = rng.integers(40, 220, size=(2, 2, 3)).astype(np.float32)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    top = corners[0, 0] * (1 - xx) + corners[0, 1] * xx
    bottom = corners[1, 0] * (1 - xx) + corners[1, 1] * xx
    img = top * (1 - yy) + bottom * yy + rng.normal(0, 12, size=(h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 30) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def draw_demo_object(draw: ImageDraw.ImageDraw, name: str, box: tuple[int, int, int, int],
                     rng: np.random.Generator) -> None:
    """Draw one class's shape inside box = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if name == "airplane":  # a thin fuselage crossed by swept wings and a tail
        grey = jitter(rng, (225, 225, 235), 20)
        draw.ellipse((x0, cy - h * 0.1, x1, cy + h * 0.1), fill=grey)
        draw.polygon([(cx - w * 0.1, cy), (cx + w * 0.15, cy), (cx - w * 0.15, y0), (cx - w * 0.3, y0)], fill=grey)
        draw.polygon([(cx - w * 0.1, cy), (cx + w * 0.15, cy), (cx - w * 0.15, y1), (cx - w * 0.3, y1)], fill=grey)
        draw.polygon([(x0, cy), (x0 + w * 0.12, cy), (x0, cy - h * 0.35)], fill=grey)
    elif name == "bus":  # a long box with a row of windows and two wheels
        body = jitter(rng, (230, 180, 20))
        draw.rectangle((x0, y0 + h * 0.1, x1, y1 - h * 0.15), fill=body)
        for k in range(5):
            wx = x0 + w * (0.06 + 0.18 * k)
            draw.rectangle((wx, y0 + h * 0.2, wx + w * 0.12, y0 + h * 0.45), fill=(40, 50, 70))
        for wx in (x0 + w * 0.2, x1 - w * 0.2):
            draw.ellipse((wx - h * 0.15, y1 - h * 0.3, wx + h * 0.15, y1), fill=(20, 20, 20))
    elif name == "cat":  # a round head with pointed ears and two eyes
        fur = jitter(rng, (235, 140, 50))
        r = min(w, h) * 0.35
        draw.polygon([(cx - r, cy - r * 0.2), (cx - r * 0.7, cy - r * 1.6), (cx - r * 0.2, cy - r * 0.8)], fill=fur)
        draw.polygon([(cx + r, cy - r * 0.2), (cx + r * 0.7, cy - r * 1.6), (cx + r * 0.2, cy - r * 0.8)], fill=fur)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fur)
        for ex in (cx - r * 0.4, cx + r * 0.4):
            draw.ellipse((ex - r * 0.15, cy - r * 0.3, ex + r * 0.15, cy), fill=(60, 200, 60))
    elif name == "dog":  # a long body on four legs with a head and a floppy ear
        coat = jitter(rng, (120, 75, 35))
        draw.ellipse((x0 + w * 0.15, cy - h * 0.2, x1 - w * 0.1, cy + h * 0.15), fill=coat)
        for lx in (0.25, 0.4, 0.65, 0.8):
            draw.rectangle((x0 + w * lx, cy, x0 + w * (lx + 0.07), y1), fill=coat)
        draw.ellipse((x0, y0, x0 + w * 0.35, y0 + h * 0.4), fill=coat)
        draw.ellipse((x0 + w * 0.05, y0 + h * 0.15, x0 + w * 0.15, y0 + h * 0.45), fill=(60, 35, 15))
    elif name == "pizza":  # a crust disc, tomato, and pepperoni dots
        r = min(w, h) * 0.48
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=jitter(rng, (210, 160, 90), 15))
        draw.ellipse((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), fill=jitter(rng, (200, 50, 30), 20))
        for _ in range(7):
            a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, r * 0.6)
            px, py = cx + d * math.cos(a), cy + d * math.sin(a)
            draw.ellipse((px - r * 0.12, py - r * 0.12, px + r * 0.12, py + r * 0.12), fill=(140, 20, 20))
    else:
        raise ValueError(name)


def random_box(rng: np.random.Generator, w: int, h: int, frac: float) -> tuple[int, int, int, int]:
    bw, bh = int(w * frac * rng.uniform(0.8, 1.0)), int(h * frac * rng.uniform(0.8, 1.0))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return x0, y0, x0 + bw, y0 + bh


def demo_image(rng: np.random.Generator, names: list[str]) -> tuple[Image.Image, list[tuple[str, tuple]]]:
    """One demo photo with the given classes drawn in it, and their boxes."""
    w, h = int(rng.integers(160, 321)), int(rng.integers(120, 241))
    img = demo_background(rng, w, h)
    draw = ImageDraw.Draw(img)
    objects = []
    frac = 0.75 if len(names) == 1 else 0.5
    for name in names:
        box = random_box(rng, w, h, frac)
        draw_demo_object(draw, name, box, rng)
        objects.append((name, box))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), objects


def make_demo_coco(root: Path, images_per_class: int, seed: int = 0) -> None:
    """Write root/coco/annotations/instances_train2014.json and root/coco/images/*.jpg.

    About 10% of the images are grayscale and about 10% show two classes, as in COCO.
    """
    rng = np.random.default_rng(seed)
    names = list(DEMO_CATEGORIES)
    image_dir = root / "coco" / "images"
    ann_dir = root / "coco" / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(images_per_class * len(names)):
        shown = [names[k % len(names)]]
        if rng.random() < 0.1:
            shown.append(str(rng.choice([n for n in names if n != shown[0]])))
        img, objects = demo_image(rng, shown)
        if rng.random() < 0.1:
            img = img.convert("L")
        img_id = 100000 + k
        file_name = f"COCO_train2014_{img_id:012d}.jpg"
        img.save(image_dir / file_name, quality=90)
        images.append({"id": img_id, "file_name": file_name, "width": img.width, "height": img.height,
                       "coco_url": f"http://images.cocodataset.org/train2014/{file_name}"})
        for name, (x0, y0, x1, y1) in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": DEMO_CATEGORIES[name],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            })
    categories = [{"id": 1, "name": "person", "supercategory": "person"}] + [
        {"id": cid, "name": name, "supercategory": "demo"} for name, cid in DEMO_CATEGORIES.items()]
    data = {"info": {"description": "hw4 demo data"}, "images": images, "annotations": annotations,
            "categories": categories}
    write_json_atomic(ann_dir / "instances_train2014.json", data)


def ensure_demo_data(root: Path, images_per_class: int) -> None:
    """Generate the demo COCO set once; a marker records how many images it holds."""
    marker = root / "coco" / "demo.json"
    want = {"images_per_class": images_per_class, "version": 1}
    try:
        if json.loads(marker.read_text()) == want:
            return
    except (OSError, ValueError):
        pass
    print(f"generating demo COCO data in {root}/coco ...")
    shutil.rmtree(root / "coco", ignore_errors=True)
    make_demo_coco(root, images_per_class)
    write_json_atomic(marker, want)


# =============================================================================
# Loading: the built subset as one uint8 tensor per split
# =============================================================================


def decode_split(dataset_dir: Path, entries: list[dict], size: int) -> np.ndarray:
    """Decode a split's thumbnails into one N x 3 x size x size uint8 array."""
    out = np.empty((len(entries), 3, size, size), dtype=np.uint8)
    for k, entry in enumerate(entries):
        path = dataset_dir / entry["path"]
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise UserError(f"cannot read {path} ({exc}); delete {dataset_dir} and rebuild") from None
        if arr.shape != (size, size, 3):
            raise UserError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, expected {size}x{size}; "
                            f"delete {dataset_dir} and rebuild")
        out[k] = arr.transpose(2, 0, 1)
    return out


def load_dataset_tensors(dataset_dir: str | Path, manifest: dict) -> dict[str, "torch.Tensor"]:
    """train_x/val_x (uint8, N x 3 x H x W) and train_y/val_y (int64), in manifest order.

    Decoding thousands of small files costs seconds per run, so the tensors are
    cached beside the dataset, keyed by the manifest fingerprint; a rebuild
    replaces the whole folder and with it the cache.
    """
    import torch

    root = Path(dataset_dir)
    cache = root / f"tensors-{manifest['fingerprint']}.pt"
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True)
        except Exception:  # a damaged cache is only a cache: decode again
            pass
    size = manifest["config"]["image_size"]
    data = {}
    for split in ("train", "val"):
        entries = [e for e in manifest["entries"] if e["split"] == split]
        data[f"{split}_x"] = torch.from_numpy(decode_split(root, entries, size))
        data[f"{split}_y"] = torch.tensor([e["label"] for e in entries], dtype=torch.int64)
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    torch.save(data, tmp)
    os.replace(tmp, cache)
    return data


# =============================================================================
# Models: HW4Net (Net1), Net2 (padding), Net3 (10 extra convs)
# =============================================================================

NET_SPECS = {
    "net1": {"padding": 0, "extra_convs": 0},
    "net2": {"padding": 1, "extra_convs": 0},
    "net3": {"padding": 0, "extra_convs": 10},
}


def fc1_in_features(image_size: int, padding: int) -> int:
    """fc1's input size: two blocks of 3x3 conv (+2*padding-2 pixels) and 2x2 max-pool (halve).

    The original hard-coded 5408/7200, the sizes for 60x60 inputs; at 64x64 they are 6272/8192.
    """
    side = image_size
    for _ in range(2):
        side = (side + 2 * padding - 2) // 2
    if side < 1:
        raise UserError(f"--image-size {image_size} is too small for these nets; use at least 10")
    return 32 * side * side


@functools.cache
def hw4net_class() -> type:
    """Define HW4Net on first use (see the module docstring on why torch is imported late)."""
    import torch.nn.functional as F
    from torch import nn

    class HW4Net(nn.Module):
        """conv(3->16) relu pool, conv(16->32) relu pool, [10 x conv(32->32, pad 1) relu], fc 64, fc C.

        The net's name, image size and class names travel inside its state_dict
        (as '_extra_state'), so saved weights can be used without other files.
        """

        def __init__(self, name: str, image_size: int, classes: Sequence[str]):
            super().__init__()
            spec = NET_SPECS[name]
            pad = spec["padding"]
            self.meta = {"net": name, "image_size": image_size, "classes": list(classes)}
            self.conv1 = nn.Conv2d(3, 16, 3, padding=pad)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=pad)
            self.conv_chain = nn.ModuleList(nn.Conv2d(32, 32, 3, padding=1) for _ in range(spec["extra_convs"]))
            self.fc1 = nn.Linear(fc1_in_features(image_size, pad), 64)
            self.fc2 = nn.Linear(64, len(classes))

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            for conv in self.conv_chain:
                x = F.relu(conv(x))
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc2(x)

        def watched_weights(self) -> list:
            """First conv, last conv and fc1: where the gradient norms are recorded."""
            last_conv = self.conv_chain[-1] if len(self.conv_chain) else self.conv2
            return [self.conv1.weight, last_conv.weight, self.fc1.weight]

        def get_extra_state(self) -> dict:
            return dict(self.meta)

        def set_extra_state(self, state: dict) -> None:
            self.meta = dict(state)

    return HW4Net


def build_net(name: str, image_size: int, classes: Sequence[str]) -> "nn.Module":
    return hw4net_class()(name, image_size, classes)


def count_parameters(net: "nn.Module") -> int:
    return sum(p.numel() for p in net.parameters())


def print_net_table(nets: Sequence[str], image_size: int, classes: Sequence[str]) -> None:
    """fc1 input size and parameter count of each net, for the chosen image size."""
    print(f"{'net':<5} {'fc1 in':>7} {'params':>9}   (image size {image_size})")
    for name in nets:
        net = build_net(name, image_size, classes)
        print(f"{name:<5} {net.fc1.in_features:>7} {count_parameters(net):>9,}")


# =============================================================================
# Training
# =============================================================================

GRAD_LAYERS = ("conv1", "last_conv", "fc1")
METRIC_KEYS = ("train_cross_entropy", "train_class_acc", "val_cross_entropy", "val_class_acc")


class StopRequest:
    """Set by SIGINT/SIGTERM; the training loop stops after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self.forward_to_children = False  # set while --jobs workers run

    def install(self) -> None:
        import multiprocessing

        def handler(signum, frame):
            self.requested = True
            if self.forward_to_children:  # a plain `kill PID` reaches only the parent
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signum)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def pick_device(requested: str) -> "torch.device":
    """auto: the accelerator torch reports (CUDA, MPS, XPU...), else the CPU."""
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.accelerator.is_available():
            return torch.accelerator.current_accelerator()
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device auto or cpu")
    return torch.device(requested)


def memory_format(device: "torch.device"):
    """channels_last on the CPU: oneDNN's NHWC convolutions ran Net1 at 1420 img/s against 1112
    (Net3: 546 against 438) at batch 4 on a 2-core x86 CPU. Elsewhere the default layout."""
    import torch

    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(net: "nn.Module", cfg: Config, device: "torch.device"):
    """Adam(lr, betas) as the exercise asks; fused where the device has the kernel.

    On a 2-core CPU the fused step takes ~0.3 ms against ~2 ms for the default
    for-loop implementation, which is a large share of a batch-4 step.
    """
    import torch

    for flags in ({"fused": True}, {"foreach": True}, {}):
        try:
            return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas, **flags)
        except (RuntimeError, ValueError):
            continue
    raise AssertionError("unreachable")


def epoch_permutation(n: int, seed: int, epoch: int, device: "torch.device") -> "torch.Tensor":
    """The training order of one epoch: a fresh shuffle each epoch, derived from (seed, epoch).

    Deriving it rather than drawing it from a running generator makes a resumed
    run see exactly the order an uninterrupted one would have.
    """
    import torch

    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def window_means(values: "torch.Tensor", size: int) -> list[float]:
    """Means of consecutive full windows of `size` values (a trailing partial window is dropped)."""
    full = values.numel() // size * size
    if full == 0:
        return []
    return values[:full].float().view(-1, size).mean(1).tolist()


def confusion_matrix(labels: "torch.Tensor", preds: "torch.Tensor", num_classes: int) -> np.ndarray:
    """Rows true class, columns predicted class; one bincount instead of a per-sample loop."""
    import torch

    flat = torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes).cpu().numpy().astype(np.int64)


def steps_per_epoch(n: int, cfg: Config) -> int:
    return 1 if cfg.dry_run else math.ceil(n / cfg.batch_size)


def new_history() -> dict:
    return {
        "100steps": {k: [] for k in METRIC_KEYS},
        "epoch": {k: [] for k in METRIC_KEYS},
        "grad_norms": {k: [] for k in GRAD_LAYERS},
    }


def new_epoch_buffers(n_steps: int, n_samples: int, device: "torch.device") -> dict:
    """Per-step results kept on the device for the whole epoch; read back once at its end."""
    import torch

    return {
        "loss": torch.zeros(n_steps, device=device),
        "preds": torch.zeros(n_samples, dtype=torch.int64, device=device),
        "grad_norms": torch.zeros(n_steps, len(GRAD_LAYERS), device=device),
    }


def train_steps(net, opt, data: dict, perm: "torch.Tensor", state: dict, cfg: Config,
                stop: StopRequest | None) -> bool:
    """Run the current epoch's remaining steps. Returns False when a stop was requested.

    This is the hot loop: no host sync, no per-item decoding, no DataLoader;
    a batch is an index slice of the uint8 training tensor.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    train_x, train_y = data["train_x"], data["train_y"]
    bs, buf = cfg.batch_size, state["buffers"]
    n_steps = buf["loss"].numel()
    watched = net.watched_weights()
    layout = memory_format(train_x.device)
    net.train()
    bar = tqdm(total=n_steps, initial=state["step"], desc=f"{state['net']} epoch {state['epoch'] + 1}",
               unit="batch", disable=None, leave=False)
    for step in range(state["step"], n_steps):
        idx = perm[step * bs:(step + 1) * bs]
        # exactly what ToTensor gives: [0, 1], no normalisation; laid out like the net's weights
        x = train_x[idx].float().div_(255).contiguous(memory_format=layout)
        y = train_y[idx]
        logits = net(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        buf["grad_norms"][step] = torch.stack([torch.linalg.vector_norm(w.grad) for w in watched])
        opt.step()
        buf["loss"][step] = loss.detach()
        buf["preds"][step * bs:step * bs + len(idx)] = logits.detach().argmax(1)
        state["step"] = step + 1
        bar.update()
        if stop is not None and stop.requested:
            bar.close()
            return False
    bar.close()
    return True


def evaluate(net, x_all: "torch.Tensor", y_all: "torch.Tensor", cfg: Config) -> tuple:
    """Per-sample cross-entropy and predictions, in eval mode without gradients.

    Validation has no optimizer step, so it runs in chunks of 256 for speed; the
    original's 100-iteration windows of batch 4 become windows of 400 samples.
    """
    import torch
    import torch.nn.functional as F

    n = cfg.batch_size if cfg.dry_run else len(x_all)
    layout = memory_format(x_all.device)
    losses, preds = [], []
    net.eval()
    with torch.no_grad():
        for start in range(0, n, 256):
            x = x_all[start:min(n, start + 256)].float().div_(255).contiguous(memory_format=layout)
            y = y_all[start:min(n, start + 256)]
            logits = net(x)
            losses.append(F.cross_entropy(logits, y, reduction="none"))
            preds.append(logits.argmax(1))
    return torch.cat(losses), torch.cat(preds), y_all[:n]


def record_epoch(state: dict, data: dict, perm: "torch.Tensor", val: tuple, cfg: Config,
                 num_classes: int) -> dict:
    """Turn the epoch's device buffers and the validation output into history entries."""
    bs, buf, hist = cfg.batch_size, state["buffers"], state["history"]
    n_steps = buf["loss"].numel()
    n_train = min(len(data["train_x"]), n_steps * bs)
    train_labels = data["train_y"][perm[:n_train]]
    train_preds = buf["preds"][:n_train]
    batch_sizes = [min(bs, n_train - s * bs) for s in range(n_steps)]
    # float64 on the host: the epoch mean must not depend on the device's float32 summation order
    step_losses = buf["loss"].cpu().double()
    loss_sum = float((step_losses * step_losses.new_tensor(batch_sizes)).sum())
    train_correct = (train_preds == train_labels)
    val_losses, val_preds, val_labels = val
    val_correct = (val_preds == val_labels)
    window = 100 * bs
    hist["100steps"]["train_cross_entropy"] += window_means(buf["loss"][:n_train // bs], 100)
    hist["100steps"]["train_class_acc"] += window_means(train_correct, window)
    hist["100steps"]["val_cross_entropy"] += window_means(val_losses, window)
    hist["100steps"]["val_class_acc"] += window_means(val_correct, window)
    summary = {
        "train_cross_entropy": loss_sum / n_train,
        "train_class_acc": int(train_correct.sum()) / n_train,
        "val_cross_entropy": float(val_losses.cpu().double().sum()) / len(val_labels),
        "val_class_acc": int(val_correct.sum()) / len(val_labels),
    }
    for key, value in summary.items():
        hist["epoch"][key].append(value)
    for k, layer in enumerate(GRAD_LAYERS):
        hist["grad_norms"][layer].append(float(buf["grad_norms"][:, k].cpu().double().mean()))
    summary["train_confusion"] = confusion_matrix(train_labels, train_preds, num_classes)
    summary["val_confusion"] = confusion_matrix(val_labels, val_preds, num_classes)
    return summary


def run_fingerprint(cfg: Config, manifest: dict, name: str, device: "torch.device") -> str:
    """What a checkpoint must match to be resumed: dataset, training settings, seed, net, device."""
    return fingerprint({**cfg.train_settings(), "dataset": manifest["fingerprint"], "seed": cfg.seed,
                        "net": name, "device": device.type})


def rng_states() -> dict:
    """Every RNG state, in types that torch.load(weights_only=True) accepts."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    import torch

    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_path(cfg: Config, name: str) -> Path:
    return Path(cfg.out) / "checkpoints" / f"{name}_last.pt"


def save_checkpoint(path: Path, state: dict, net, opt) -> None:
    """Everything needed to continue exactly: weights, Adam moments, position, histories, RNGs."""
    save_torch_atomic({
        "format": 1,
        "fingerprint": state["fingerprint"],
        "net": state["net"],
        "epoch": state["epoch"],
        "step": state["step"],
        "finished": state["finished"],
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "buffers": state["buffers"],
        "history": state["history"],
        "best": state["best"],
        "train_time_s": state["train_time_s"],
        "steps_time_s": state["steps_time_s"],
        "rng": rng_states(),
    }, path)


def load_checkpoint(path: Path, expected_fingerprint: str, device: "torch.device") -> dict:
    """Load a checkpoint safely (weights_only), refusing damaged files and other configs."""
    import torch

    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        ckpt["fingerprint"], ckpt["model"], ckpt["epoch"]  # noqa: B018 (shape check)
    except Exception as exc:
        raise UserError(f"checkpoint {path} is damaged or not an hw4 checkpoint "
                        f"({type(exc).__name__}); delete it to start that net again") from None
    if ckpt["fingerprint"] != expected_fingerprint:
        raise UserError(f"checkpoint {path} was made with different settings (dataset, seed, "
                        "epochs, batch size, lr, betas, threads or device); rerun with the original "
                        "arguments, or delete it (or drop --resume) to start over")
    return ckpt


def new_train_state(name: str, fp: str) -> dict:
    return {"net": name, "fingerprint": fp, "epoch": 0, "step": 0, "finished": False,
            "buffers": None, "history": new_history(), "best": None, "train_time_s": 0.0, "steps_time_s": 0.0}


def update_best(state: dict, net, summary: dict) -> bool:
    """Keep the confusion matrices and weights of the epoch with the best val accuracy."""
    best = state["best"]
    if best is not None and summary["val_class_acc"] <= best["val_acc"]:
        return False
    state["best"] = {
        "epoch": state["epoch"] + 1,
        "val_acc": summary["val_class_acc"],
        "train_confusion": summary["train_confusion"].tolist(),
        "val_confusion": summary["val_confusion"].tolist(),
        "state_dict": {k: (v.detach().clone() if hasattr(v, "detach") else v)
                       for k, v in net.state_dict().items()},
    }
    return True


def print_epoch_line(state: dict, cfg: Config, seconds: float, improved: bool) -> None:
    e = state["history"]["epoch"]
    print(f"{state['net']} epoch {state['epoch'] + 1:2d}/{cfg.epochs}  "
          f"train loss {e['train_cross_entropy'][-1]:.4f} acc {e['train_class_acc'][-1]:.4f}  "
          f"val loss {e['val_cross_entropy'][-1]:.4f} acc {e['val_class_acc'][-1]:.4f}  "
          f"{seconds:5.1f}s{'  *best' if improved else ''}", flush=True)


def train(name: str, data: dict, manifest: dict, cfg: Config, device: "torch.device",
          stop: StopRequest | None = None) -> dict:
    """Train one net for cfg.epochs, validating after each epoch; returns its training state.

    The net seeds every RNG from cfg.seed itself, so its numbers do not depend on
    which nets ran before it. A checkpoint is written after every epoch and on a stop.
    """
    classes = manifest["classes"]
    fp = run_fingerprint(cfg, manifest, name, device)
    ckpt_file = checkpoint_path(cfg, name)
    seed_everything(cfg.seed)
    net = build_net(name, cfg.image_size, classes).to(device, memory_format=memory_format(device))
    opt = make_optimizer(net, cfg, device)
    state = new_train_state(name, fp)
    if cfg.resume and ckpt_file.exists():
        ckpt = load_checkpoint(ckpt_file, fp, device)
        net.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        restore_rng_states(ckpt["rng"])
        state.update({k: ckpt[k] for k in ("epoch", "step", "finished", "buffers", "history", "best",
                                           "train_time_s", "steps_time_s")})
        if not state["finished"]:
            print(f"{name}: resuming from {ckpt_file} at epoch {state['epoch'] + 1}, step {state['step']}")
    n_train = len(data["train_x"])
    n_steps = steps_per_epoch(n_train, cfg)
    while state["epoch"] < cfg.epochs and not state["finished"]:
        if state["buffers"] is None:
            state["buffers"] = new_epoch_buffers(n_steps, min(n_train, n_steps * cfg.batch_size), device)
        perm = epoch_permutation(n_train, cfg.seed, state["epoch"], device)
        t0 = time.perf_counter()
        completed = train_steps(net, opt, data, perm, state, cfg, stop)
        state["steps_time_s"] += time.perf_counter() - t0
        if not completed:
            state["train_time_s"] += time.perf_counter() - t0
            save_checkpoint(ckpt_file, state, net, opt)
            raise Interrupted(f"{name} stopped at epoch {state['epoch'] + 1}, step {state['step']}; "
                              f"its checkpoint is {ckpt_file}")
        val = evaluate(net, data["val_x"], data["val_y"], cfg)
        summary = record_epoch(state, data, perm, val, cfg, len(classes))
        improved = update_best(state, net, summary)
        seconds = time.perf_counter() - t0
        state["train_time_s"] += seconds
        print_epoch_line(state, cfg, seconds, improved)
        state["epoch"] += 1
        state["step"], state["buffers"] = 0, None
        save_checkpoint(ckpt_file, state, net, opt)
        if stop is not None and stop.requested and state["epoch"] < cfg.epochs:
            raise Interrupted(f"{name} stopped after epoch {state['epoch']}; its checkpoint is {ckpt_file}")
    if not state["finished"]:
        state["finished"] = True
        save_checkpoint(ckpt_file, state, net, opt)
    return state


# =============================================================================
# Evaluation summary: the original's results dict
# =============================================================================


def results_dict(state: dict, cfg: Config, manifest: dict) -> dict:
    """The original report's pickle layout, plus net, best_epoch, config and gradient norms.

    Nothing time-dependent goes in here, so that a resumed run's pickle is
    byte-identical to an uninterrupted one's; timings live in metrics.json.
    """
    hist, best = state["history"], state["best"]
    return {
        "100steps": {k: list(hist["100steps"][k]) for k in METRIC_KEYS},
        "epoch": {k: list(hist["epoch"][k]) for k in METRIC_KEYS},
        "confusion matrix": {
            "train confusion": np.asarray(best["train_confusion"], dtype=np.int64),
            "val confusion": np.asarray(best["val_confusion"], dtype=np.int64),
        },
        "net": state["net"],
        "best_epoch": best["epoch"],
        "config": results_config(cfg, manifest),
        "classes": list(manifest["classes"]),
        "grad_norms": {k: list(hist["grad_norms"][k]) for k in GRAD_LAYERS},
        "fc1_in_features": fc1_in_features(cfg.image_size, NET_SPECS[state["net"]]["padding"]),
        "params": sum(v.numel() for k, v in best["state_dict"].items() if hasattr(v, "numel")),
    }


def results_config(cfg: Config, manifest: dict) -> dict:
    """The settings that made these numbers (not where they were written or how it was run)."""
    return {**manifest["config"], **cfg.train_settings(), "seed": cfg.seed, "dataset": manifest["fingerprint"]}


# =============================================================================
# Outputs and plots
# =============================================================================


def write_bytes_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def canonical_pickle(obj: Any) -> bytes:
    """Pickle without the memo, so equal results give equal bytes however their strings are shared
    (a --jobs worker and a sequential run build the same dict from differently shared objects)."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=4)
    pickler.fast = True
    pickler.dump(obj)
    return buf.getvalue()


def net_index(name: str) -> int:
    return NET_NAMES.index(name) + 1


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def savefig_atomic(fig, path: Path) -> None:
    """Render to memory, then write with a rename, so no truncated PNG is ever left."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())


def new_figure(*args, **kwargs):
    """A figure on the Agg canvas: no pyplot, no window, works headless."""
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], title: str, path: Path) -> None:
    """Seaborn heatmap, rows true and columns predicted, with the accuracy in the title."""
    import seaborn as sns

    fig = new_figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    sns.heatmap(matrix, annot=True, fmt="d", cmap="Blues", xticklabels=classes, yticklabels=classes,
                ax=ax, cbar=True)
    ax.set(xlabel="Predicted label", ylabel="True label")
    acc = np.trace(matrix) / max(1, matrix.sum())
    ax.set_title(f"{title}  accuracy = {100 * acc:.1f}%")
    savefig_atomic(fig, path)


def write_net_outputs(out: Path, state: dict, results: dict) -> None:
    """results{k}.pkl, net{k}.pt and the net's two confusion figures, as soon as it finishes."""
    name, k = state["net"], net_index(state["net"])
    write_bytes_atomic(out / f"results{k}.pkl", canonical_pickle(results))
    save_torch_atomic(state["best"]["state_dict"], out / f"{name}.pt")
    label = f"Net{k}"
    for split in ("train", "val"):
        matrix = results["confusion matrix"][f"{split} confusion"]
        plot_confusion(matrix, results["classes"], f"{label} {split} (best epoch {results['best_epoch']})",
                       out / f"confusion_{name}_{split}.png")


def plot_samples(manifest: dict, dataset_dir: str | Path, path: Path, seed: int, per_class: int = 5) -> None:
    """samples.png: per_class random training images of each class, one row per class."""
    rng = random.Random(seed)
    classes = manifest["classes"]
    fig = new_figure(figsize=(per_class * 1.3, len(classes) * 1.4))
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for row, name in enumerate(classes):
        entries = [e for e in manifest["entries"] if e["split"] == "train" and e["class"] == name]
        chosen = rng.sample(entries, min(per_class, len(entries)))
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(chosen):
                with Image.open(Path(dataset_dir) / chosen[col]["path"]) as img:
                    ax.imshow(np.asarray(img.convert("RGB")))
                ax.set_title(f"{name} {col + 1}", fontsize=7)
    savefig_atomic(fig, path)


def mean_and_spread(runs: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-point mean and standard deviation across seeds (std 0 for one seed)."""
    arr = np.asarray(runs, dtype=np.float64)
    return arr.mean(0), (arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1]))


def plot_curves(runs_by_net: dict[str, list[dict]], scale: str, path: Path) -> None:
    """Loss and accuracy, train solid and val dashed, all nets on one figure; bands span seeds."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(11, 4.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    unit = "epoch" if scale == "epoch" else "100 iterations"
    for k, (name, runs) in enumerate(runs_by_net.items()):
        colour = f"C{k}"
        for split, style in (("train", "-"), ("val", "--")):
            for ax, metric in ((ax_loss, "cross_entropy"), (ax_acc, "class_acc")):
                series = [r[scale][f"{split}_{metric}"] for r in runs]
                if not series[0]:
                    continue
                mean, std = mean_and_spread(series)
                x = np.arange(1, len(mean) + 1)
                ax.plot(x, mean, style, color=colour, label=f"Net{net_index(name)} {split}")
                if len(runs) > 1:
                    ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15)
    for ax, ylabel in ((ax_loss, "cross-entropy"), (ax_acc, "classification accuracy")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(unit)
        ax.set_ylabel(ylabel)
        ax.grid(True, linewidth=0.5)
        ax.legend(fontsize=8)
    seeds = len(next(iter(runs_by_net.values())))
    note = f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""
    ax_loss.set_title(f"Cross-entropy per {unit}{note}")
    ax_acc.set_title(f"Accuracy per {unit}{note}")
    savefig_atomic(fig, path)


def plot_grad_norms(runs_by_net: dict[str, list[dict]], path: Path) -> None:
    """grad_norms.png: mean gradient norm per epoch of the first conv, last conv and fc1."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(12, 3.8))
    axes = fig.subplots(1, len(GRAD_LAYERS))
    for k, (name, runs) in enumerate(runs_by_net.items()):
        for ax, layer in zip(axes, GRAD_LAYERS):
            mean, _ = mean_and_spread([r["grad_norms"][layer] for r in runs])
            ax.plot(np.arange(1, len(mean) + 1), mean, color=f"C{k}", label=f"Net{net_index(name)}")
    for ax, layer in zip(axes, GRAD_LAYERS):
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"grad norm: {layer.replace('_', ' ')}")
        ax.set_xlabel("epoch")
        ax.grid(True, linewidth=0.5)
        ax.legend(fontsize=8)
    savefig_atomic(fig, path)


def write_metrics_json(out: Path, cfg: Config, manifest: dict, results: dict[str, dict],
                       timings: dict[str, float]) -> None:
    """metrics.json: every finished net's results (as in its pickle) plus its training time."""
    nets = {name: {**to_jsonable(r), "train_time_s": round(timings.get(name, 0.0), 2)}
            for name, r in results.items()}
    write_json_atomic(out / "metrics.json", {"config": results_config(cfg, manifest), "nets": nets})


# =============================================================================
# Running the experiment: nets in sequence or in parallel processes, one or many seeds
# =============================================================================


def prepare_torch(cfg: Config) -> "torch.device":
    import torch

    torch.set_num_threads(cfg.threads)
    return pick_device(cfg.device)


def data_on_device(data: dict, device: "torch.device") -> dict:
    """On an accelerator the whole subset lives in its memory (10,000 x 12 KiB uint8 = 120 MiB)."""
    return {k: v.to(device) for k, v in data.items()}


def train_and_write(name: str, cfg: Config, manifest: dict, data: dict, device: "torch.device",
                    stop: StopRequest | None) -> tuple[dict, float]:
    """Train one net and write its files at once; returns its results and training seconds."""
    state = train(name, data, manifest, cfg, device, stop)
    results = results_dict(state, cfg, manifest)
    write_net_outputs(Path(cfg.out), state, results)
    return results, state["train_time_s"]


def train_in_worker(name: str, cfg: Config, manifest: dict) -> tuple[dict, float]:
    """Entry point of a --jobs worker process: it loads the cached tensors itself."""
    stop = StopRequest()
    stop.install()
    device = prepare_torch(cfg)
    data = data_on_device(load_dataset_tensors(cfg.dataset_dir, manifest), device)
    return train_and_write(name, cfg, manifest, data, device, stop)


def effective_jobs(cfg: Config, tasks: int) -> int:
    """--jobs, limited so that jobs x threads fits the cores (oversubscribing only slows down)."""
    cores = os.cpu_count() or 1
    fit = max(1, cores // cfg.threads)
    jobs = min(cfg.jobs, tasks, fit)
    if cfg.jobs > fit and tasks > 1:
        print(f"note: --jobs {cfg.jobs} x --threads {cfg.threads} needs {cfg.jobs * cfg.threads} cores, "
              f"this machine has {cores}: running {jobs} at a time")
    return jobs


def run_tasks(tasks: list[tuple[Config, str]], manifest: dict, stop: StopRequest,
              on_done) -> None:
    """Train every (config, net) task; calls on_done(cfg, name, results, seconds) as each finishes.

    Metrics depend on --threads, never on --jobs: a worker uses exactly the
    threads a sequential run would, so parallel and sequential agree bit for bit.
    """
    jobs = effective_jobs(tasks[0][0], len(tasks))
    if jobs == 1:
        device = prepare_torch(tasks[0][0])
        data = data_on_device(load_dataset_tensors(tasks[0][0].dataset_dir, manifest), device)
        for cfg, name in tasks:
            on_done(cfg, name, *train_and_write(name, cfg, manifest, data, device, stop))
        return
    import multiprocessing
    from concurrent.futures import as_completed

    load_dataset_tensors(tasks[0][0].dataset_dir, manifest)  # fill the cache once, before the workers
    stop.forward_to_children = True
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads is unsafe
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(train_in_worker, name, cfg, manifest): (cfg, name) for cfg, name in tasks}
        for future in as_completed(futures):
            cfg, name = futures[future]
            on_done(cfg, name, *future.result())


def seed_configs(cfg: Config) -> list[Config]:
    """One config per seed; with --seeds N > 1 each seed writes into out/seed_<s>/."""
    if cfg.seeds == 1:
        return [cfg]
    return [dataclasses.replace(cfg, seed=cfg.seed + k, seeds=1, out=str(Path(cfg.out) / f"seed_{cfg.seed + k}"))
            for k in range(cfg.seeds)]


def remove_partial_writes(out: Path) -> None:
    """Delete the temporary files of writes that a SIGKILL cut short (the real files are intact)."""
    for tmp in [*out.glob(".*.tmp-*"), *out.glob("checkpoints/.*.tmp-*")]:
        tmp.unlink(missing_ok=True)


def run_experiment(cfg: Config, manifest: dict, stop: StopRequest) -> dict[str, list[dict]]:
    """Train every net for every seed and write all outputs; returns the results per net, per seed."""
    print_net_table(cfg.nets, cfg.image_size, manifest["classes"])
    per_seed = seed_configs(cfg)
    results: dict[str, dict[str, dict]] = {c.out: {} for c in per_seed}
    timings: dict[str, dict[str, float]] = {c.out: {} for c in per_seed}
    for c in per_seed:
        Path(c.out).mkdir(parents=True, exist_ok=True)
        remove_partial_writes(Path(c.out))
        plot_samples(manifest, cfg.dataset_dir, Path(c.out) / "samples.png", c.seed)

    def on_done(c: Config, name: str, res: dict, seconds: float) -> None:
        results[c.out][name] = res
        timings[c.out][name] = seconds
        write_metrics_json(Path(c.out), c, manifest, results[c.out], timings[c.out])

    run_tasks([(c, name) for c in per_seed for name in cfg.nets], manifest, stop, on_done)
    for c in per_seed:
        ordered = {name: results[c.out][name] for name in cfg.nets}
        write_run_figures(Path(c.out), {name: [r] for name, r in ordered.items()})
        write_report(Path(c.out), c, {name: [r] for name, r in ordered.items()},
                     {name: [timings[c.out][name]] for name in cfg.nets}, manifest)
    runs_by_net = {name: [results[c.out][name] for c in per_seed] for name in cfg.nets}
    if cfg.seeds > 1:
        out = Path(cfg.out)
        plot_samples(manifest, cfg.dataset_dir, out / "samples.png", cfg.seed)
        write_run_figures(out, runs_by_net)
        times = {name: [timings[c.out][name] for c in per_seed] for name in cfg.nets}
        write_seeds_summary(out, cfg, runs_by_net, times)
        write_report(out, cfg, runs_by_net, times, manifest)
    return runs_by_net


def write_run_figures(out: Path, runs_by_net: dict[str, list[dict]]) -> None:
    plot_curves(runs_by_net, "epoch", out / "curves_epoch.png")
    plot_curves(runs_by_net, "100steps", out / "curves_100steps.png")
    plot_grad_norms(runs_by_net, out / "grad_norms.png")


# =============================================================================
# Report: the exercise's five questions, answered from this run's numbers
# =============================================================================


def stat(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def net_summary(runs: list[dict]) -> dict[str, list[float]]:
    """Per-seed headline numbers of one net."""
    return {
        "best_val_acc": [max(r["epoch"]["val_class_acc"]) for r in runs],
        "best_epoch": [r["best_epoch"] for r in runs],
        "final_train_acc": [r["epoch"]["train_class_acc"][-1] for r in runs],
        "final_val_acc": [r["epoch"]["val_class_acc"][-1] for r in runs],
        "final_train_loss": [r["epoch"]["train_cross_entropy"][-1] for r in runs],
        "final_val_loss": [r["epoch"]["val_cross_entropy"][-1] for r in runs],
    }


def compare_nets(a: list[float], b: list[float]) -> dict[str, Any]:
    """b - a, and whether it exceeds the seed-to-seed spread (the larger of the two stds)."""
    diff = float(np.mean(b) - np.mean(a))
    spread = max(stat(a)[1], stat(b)[1])
    return {"diff": diff, "spread": spread, "seeds": len(a),
            "larger_than_spread": bool(len(a) > 1 and abs(diff) > spread)}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pm(values: Sequence[float], scale: float = 100.0, digits: int = 1, unit: str = "%") -> str:
    mean, std = stat(values)
    if len(values) == 1:
        return f"{scale * mean:.{digits}f}{unit}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}{unit}"


def describe_difference(label: str, cmp: dict) -> str:
    points = 100 * cmp["diff"]
    text = f"{label} = {points:+.1f} points of best val accuracy"
    if cmp["seeds"] == 1:
        return (text + ". This is one seed, so the run-to-run noise is unknown; rerun with "
                "`--seeds 3` or more before reading anything into a difference of this size.")
    verdict = "larger" if cmp["larger_than_spread"] else "not larger"
    return (text + f" (mean over {cmp['seeds']} seeds); the seed-to-seed spread is "
            f"{100 * cmp['spread']:.1f} points, so the difference is {verdict} than the noise.")


def most_confused_pair(matrix: np.ndarray, classes: Sequence[str]) -> tuple[str, str, int, int]:
    """The class pair with the largest symmetric off-diagonal sum, its count and all errors."""
    sym = matrix + matrix.T
    np.fill_diagonal(sym, 0)
    i, j = np.unravel_index(int(np.argmax(np.triu(sym))), sym.shape)
    return classes[i], classes[j], int(sym[i, j]), int(matrix.sum() - np.trace(matrix))


def report_table(runs_by_net: dict[str, list[dict]], times: dict[str, list[float]]) -> list[str]:
    lines = ["| net | best val acc | best epoch | final train acc | final val acc | final train loss "
             "| final val loss | params | training time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in runs_by_net.items():
        s = net_summary(runs)
        lines.append(
            f"| Net{net_index(name)} | {pm(s['best_val_acc'])} | {pm(s['best_epoch'], 1, int(len(runs) > 1), '')} "
            f"| {pm(s['final_train_acc'])} | {pm(s['final_val_acc'])} "
            f"| {pm(s['final_train_loss'], 1, 3, '')} | {pm(s['final_val_loss'], 1, 3, '')} "
            f"| {runs[0]['params']:,} | {pm(times[name], 1, 0, ' s')} |")
    return lines


def answer_padding(runs_by_net: dict, summaries: dict) -> list[str]:
    if not {"net1", "net2"} <= set(runs_by_net):
        return ["Not measured: this run did not train both net1 and net2."]
    cmp = compare_nets(summaries["net1"]["best_val_acc"], summaries["net2"]["best_val_acc"])
    line = describe_difference("Net2 − Net1", cmp)
    if cmp["larger_than_spread"]:
        better = "helped" if cmp["diff"] > 0 else "hurt"
        line += f" Padding {better} here."
    elif cmp["seeds"] > 1:
        line += " On these numbers padding makes no difference that the runs can resolve."
    return [line]


def answer_vanishing(runs_by_net: dict, summaries: dict) -> list[str]:
    if not {"net1", "net3"} <= set(runs_by_net):
        return ["Not measured: this run did not train both net1 and net3."]

    def first_to_fc1(name: str) -> float:
        ratios = [np.mean(r["grad_norms"]["conv1"]) / max(1e-12, np.mean(r["grad_norms"]["fc1"]))
                  for r in runs_by_net[name]]
        return float(np.mean(ratios))

    r1, r3 = first_to_fc1("net1"), first_to_fc1("net3")
    lines = [f"Mean gradient norm of the first conv relative to fc1 (see `grad_norms.png`): "
             f"Net1 {r1:.3g}, Net3 {r3:.3g}, so Net3's first layer gets {r1 / max(r3, 1e-12):.2g}× "
             f"{'less' if r3 < r1 else 'more'} gradient, relative to its classifier, than Net1's."]
    loss1, loss3 = (stat(summaries[n]["final_train_loss"])[0] for n in ("net1", "net3"))
    lines.append(f"Final training loss: Net1 {loss1:.3f}, Net3 {loss3:.3f}.")
    if r3 < r1 / 3 and loss3 > loss1:
        lines.append("Both point the same way: the deep chain shrinks the gradient reaching the early "
                     "layers and Net3 fits the training set worse, which is what vanishing gradients look like.")
    elif r3 < r1 / 3:
        lines.append("The early-layer gradient is clearly smaller in Net3, but Net3 still fits the training set "
                     "as well as Net1, so the effect does not stop it from learning here.")
    else:
        lines.append("The first-layer gradient of Net3 is not much smaller than Net1's, so this run shows no "
                     "clear sign of vanishing gradients.")
    return lines


def answer_ranking(summaries: dict) -> list[str]:
    order = sorted(summaries, key=lambda n: -stat(summaries[n]["best_val_acc"])[0])
    ranked = " > ".join(f"Net{net_index(n)} ({pm(summaries[n]['best_val_acc'])})" for n in order)
    lines = [f"By best val accuracy: {ranked}."]
    seeds = len(summaries[order[0]]["best_val_acc"])
    for a, b in zip(order, order[1:]):
        cmp = compare_nets(summaries[b]["best_val_acc"], summaries[a]["best_val_acc"])
        if seeds == 1:
            continue
        verdict = "is" if cmp["larger_than_spread"] else "is not"
        lines.append(f"The gap Net{net_index(a)} − Net{net_index(b)} of {100 * cmp['diff']:.1f} points "
                     f"{verdict} larger than the seed-to-seed spread ({100 * cmp['spread']:.1f} points).")
    if seeds == 1 and len(order) > 1:
        lines.append("With one seed, gaps of a few points may be noise; `--seeds N` measures it.")
    best = order[0]
    lines.append(f"Best performer in this run: Net{net_index(best)}.")
    return lines


def answer_hardest(runs_by_net: dict, manifest: dict | None) -> list[str]:
    lines, pairs = [], []
    for name, runs in runs_by_net.items():
        classes = runs[0]["classes"]
        matrix = sum(r["confusion matrix"]["val confusion"] for r in runs)
        a, b, n, errors = most_confused_pair(matrix, classes)
        pairs.append((a, b))
        recall = np.diag(matrix) / np.maximum(1, matrix.sum(1))
        worst = classes[int(np.argmin(recall))]
        share = f"{100 * n / errors:.0f}% of its {errors} val errors" if errors else "no val errors"
        lines.append(f"- Net{net_index(name)}: most confused pair **{a} / {b}** ({n} images, {share}); "
                     f"lowest recall: {worst} ({pct(float(recall.min()))}).")
    lines.append("Confusions come from the symmetric off-diagonal sums of the best-epoch val confusion "
                 "matrices (summed over seeds).")
    if manifest is not None and all(e.get("also_shows") is not None for e in manifest["entries"]):
        for a, b in dict.fromkeys(pairs):
            lines.append(shared_scene_sentence(manifest, a, b))
    return lines


def shared_scene_sentence(manifest: dict, a: str, b: str) -> str:
    """How many val images of the pair show both classes: label noise no net can resolve."""
    val = [e for e in manifest["entries"] if e["split"] == "val"]
    a_with_b = sum(e["class"] == a and b in e["also_shows"] for e in val)
    b_with_a = sum(e["class"] == b and a in e["also_shows"] for e in val)
    n_pair = sum(e["class"] in (a, b) for e in val)
    if a_with_b + b_with_a == 0:
        return (f"No val image of {a} or {b} shows the other class, so their confusion comes from how "
                "alike they look at this resolution, not from label noise.")
    return (f"{a_with_b + b_with_a} of the {n_pair} val images of {a} and {b} show both ({a_with_b} labelled "
            f"{a}, {b_with_a} labelled {b}); each carries only the class it was drawn for, so part of this "
            "confusion is label noise that no net can resolve.")


def answer_improvement(summaries: dict, epochs: int, num_classes: int) -> list[str]:
    lines = []
    for name, s in summaries.items():
        gap = stat(s["final_train_acc"])[0] - stat(s["final_val_acc"])[0]
        peak = stat(s["best_epoch"])[0]
        label = f"Net{net_index(name)}"
        if gap > 0.1:
            lines.append(f"- {label}: train accuracy ends {100 * gap:.1f} points above val accuracy and val "
                         f"peaks at epoch {peak:.0f} of {epochs}: it overfits. Data augmentation (flips, crops), "
                         "dropout or weight decay, and stopping at the best epoch would help.")
        elif stat(s["final_train_acc"])[0] < 1.5 / num_classes:
            lines.append(f"- {label}: train accuracy {pm(s['final_train_acc'])} is at chance level "
                         f"({pct(1 / num_classes)}): it does not learn at all (see Q2).")
        elif stat(s["final_train_acc"])[0] < 0.8:
            lines.append(f"- {label}: train accuracy is only {pm(s['final_train_acc'])} with a gap of "
                         f"{100 * gap:.1f} points: it underfits. More epochs, a higher resolution than "
                         f"64×64 or more capacity would help.")
        else:
            lines.append(f"- {label}: train/val gap {100 * gap:.1f} points, train accuracy "
                         f"{pm(s['final_train_acc'])}: neither strong over- nor underfitting.")
    if {"net1", "net3"} <= set(summaries) and (
            stat(summaries["net3"]["best_val_acc"])[0] < stat(summaries["net1"]["best_val_acc"])[0]):
        lines.append("- Net3 does worse than Net1 despite its depth: batch normalisation or residual "
                     "connections in the conv chain would let the extra layers train.")
    return lines


def write_report(out: Path, cfg: Config, runs_by_net: dict[str, list[dict]],
                 times: dict[str, list[float]], manifest: dict | None = None) -> None:
    """REPORT.md: tables, figures and the five answers, every sentence computed from the numbers."""
    summaries = {name: net_summary(runs) for name, runs in runs_by_net.items()}
    seeds = len(next(iter(runs_by_net.values())))
    first = next(iter(runs_by_net.values()))[0]
    conf = first["config"]
    seed_text = f"seeds {cfg.seed}..{cfg.seed + seeds - 1} (mean ± std)" if seeds > 1 else f"seed {cfg.seed}"
    lines = [
        "# hw4 report", "",
        f"Classes: {', '.join(first['classes'])}; {conf['train_per_class']} train and {conf['val_per_class']} "
        f"val images per class at {conf['image_size']}×{conf['image_size']}; batch size {conf['batch_size']}, "
        f"{conf['epochs']} epochs, Adam(lr={conf['lr']}, betas={tuple(conf['betas'])}); {seed_text}.", "",
        "Every number and verdict below is computed from this run's metrics.", "",
        "## Results", "", *report_table(runs_by_net, times), "",
        "## Figures", "",
        "![training samples](samples.png)", "",
        "![learning curves per epoch](curves_epoch.png)", "",
        "![learning curves per 100 iterations](curves_100steps.png)", "",
        "![gradient norms](grad_norms.png)", "",
    ]
    if seeds == 1:
        for name in runs_by_net:
            lines += [f"![{name} train confusion](confusion_{name}_train.png) "
                      f"![{name} val confusion](confusion_{name}_val.png)", ""]
    else:
        lines += ["Confusion matrices of each seed are in `seed_<s>/`.", ""]
    lines += ["## Q1. Does padding make a difference?", "", *answer_padding(runs_by_net, summaries), "",
              "## Q2. Does Net3 show vanishing gradients?", "", *answer_vanishing(runs_by_net, summaries), "",
              "## Q3. Which net is best?", "", *answer_ranking(summaries), "",
              "## Q4. Which classes are hardest, and why?", "", *answer_hardest(runs_by_net, manifest), "",
              "## Q5. What would improve the results?", "", *answer_improvement(summaries, cfg.epochs, len(first["classes"])),
              ""]
    write_bytes_atomic(out / "REPORT.md", "\n".join(lines).encode())


def write_seeds_summary(out: Path, cfg: Config, runs_by_net: dict[str, list[dict]],
                        times: dict[str, list[float]]) -> None:
    """The top-level metrics.json of a --seeds run: per-net mean ± std and pairwise comparisons."""
    summaries = {name: net_summary(runs) for name, runs in runs_by_net.items()}
    nets = {}
    for name, s in summaries.items():
        nets[name] = {"seeds": [cfg.seed + k for k in range(cfg.seeds)], **s, "train_time_s": times[name]}
        for key in ("best_val_acc", "final_val_acc"):
            nets[name][f"{key}_mean"], nets[name][f"{key}_std"] = stat(s[key])
    comparisons = {f"{b}-{a}": compare_nets(summaries[a]["best_val_acc"], summaries[b]["best_val_acc"])
                   for a, b in (("net1", "net2"), ("net1", "net3")) if a in summaries and b in summaries}
    write_json_atomic(out / "metrics.json", {"config": next(iter(runs_by_net.values()))[0]["config"],
                                            "seeds": cfg.seeds, "nets": nets, "comparisons": comparisons})


# =============================================================================
# Predict: classify images with saved weights
# =============================================================================


def load_trained_net(weights: str | Path, device: "torch.device"):
    """Rebuild a net from its .pt file alone: the net type, image size and classes travel inside."""
    import torch

    path = Path(weights)
    if not path.is_file():
        raise UserError(f"weights file not found: {path} (train first, e.g. `python hw4.py --demo`)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        meta = state["_extra_state"]
        net = build_net(meta["net"], meta["image_size"], meta["classes"])
        net.load_state_dict(state)
    except Exception as exc:
        raise UserError(f"{path} is not hw4 weights ({type(exc).__name__}); pass a net1.pt/net2.pt/net3.pt "
                        "written by hw4") from None
    return net.to(device).eval(), meta


def predict_images(weights: str | Path, images: Sequence[str | Path], device: str = "cpu") -> list[dict]:
    """Class probabilities for each image, with the training preprocessing (RGB, resize)."""
    import torch

    dev = pick_device(device)
    net, meta = load_trained_net(weights, dev)
    batch = []
    for path in images:
        if not Path(path).is_file():
            raise UserError(f"image not found: {path}")
        try:
            img = decode_rgb_thumbnail(path, meta["image_size"])
        except (OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"cannot read {path} as an image ({type(exc).__name__}); pass JPEG/PNG files") from None
        batch.append(np.asarray(img).transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(batch)).to(dev).float().div_(255)
    with torch.no_grad():
        probs = torch.softmax(net(x), dim=1).cpu().numpy()
    classes = meta["classes"]
    return [{"image": str(path), "class": classes[int(p.argmax())], "probs": dict(zip(classes, p.tolist()))}
            for path, p in zip(images, probs)]


def predict_main(argv: Sequence[str]) -> int:
    parser = OneLineErrorParser(prog="hw4.py predict",
                                description="Classify images with weights saved by hw4 (net1.pt ...).")
    parser.add_argument("--weights", required=True, help="a netN.pt written by hw4 (required)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="(default: cpu)")
    parser.add_argument("images", nargs="+", help="image files (any mode PIL reads; converted to RGB)")
    args = parser.parse_args(argv)
    for row in predict_images(args.weights, args.images, args.device):
        probs = "  ".join(f"{c} {p:.3f}" for c, p in row["probs"].items())
        print(f"{row['image']}: {row['class']} ({row['probs'][row['class']]:.3f})  |  {probs}")
    return 0


# =============================================================================
# CLI
# =============================================================================


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (and exit code 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parse_number(text: str, kind: type, low: float, high: float = math.inf, low_ok: bool = True):
    """int(text) or float(text) within [low, high) (or (low, high)), else an argparse error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not ((value >= low if low_ok else value > low) and value < high):
        if high == math.inf:
            bounds = f"at least {low:g}" if low_ok else f"greater than {low:g}"
        else:
            bounds = f"in [{low:g}, {high:g})"
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
    return value


def positive_int(text: str) -> int:
    return parse_number(text, int, 1)


def non_negative_int(text: str) -> int:
    return parse_number(text, int, 0)


def positive_float(text: str) -> float:
    return parse_number(text, float, 0, low_ok=False)


def beta(text: str) -> float:
    return parse_number(text, float, 0, 1)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(
        prog="hw4.py",
        description="Build the 5-class COCO subset, train Net1/Net2/Net3 and report. "
                    "Also: `hw4.py predict --weights W IMAGE...`.")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", "--data-dir", dest="data_dir", default=".",
                   help="folder holding coco/annotations/instances_train2014.json and coco/images/ (default: .)")
    g.add_argument("--ann-file", help="instances JSON (default: DATA_DIR/coco/annotations/instances_train2014.json)")
    g.add_argument("--image-dir", help="folder of the train2014 images (default: DATA_DIR/coco/images)")
    g.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES),
                   help=f"COCO category names (default: {' '.join(DEFAULT_CLASSES)})")
    g.add_argument("--train-per-class", type=positive_int, help="train images per class (default: 1500; 200 with --demo)")
    g.add_argument("--val-per-class", type=positive_int, help="val images per class (default: 500; 60 with --demo)")
    g.add_argument("--image-size", type=positive_int, default=64, help="square side in pixels (default: 64)")
    g.add_argument("--seed", type=int, default=5, help="seed for the subset and the training (default: 5)")
    g.add_argument("--exclusive", action="store_true",
                   help="skip images that contain two or more of the classes (default: off)")
    g.add_argument("--dataset-dir", help="where train_data/, val_data/ and manifest.json go "
                                         "(default: hw4_dataset; demo_data/hw4_dataset with --demo)")
    g.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1,
                   help=f"processes that decode images during the build (default: CPU count, here {os.cpu_count()})")
    g.add_argument("--build-only", action="store_true", help="stop after building the dataset (default: off)")
    g.add_argument("--demo", action="store_true",
                   help="generate an offline COCO-format demo set in demo_data/ and run everything on it "
                        "(default: off)")
    d = p.add_argument_group("download")
    d.add_argument("--download", action="store_true",
                   help="fetch the annotations if missing and only the images the subset needs (default: off)")
    d.add_argument("--coco-url-base", help="mirror laid out like http://images.cocodataset.org "
                                           "(default: each image's coco_url)")
    d.add_argument("--download-workers", type=positive_int, default=8, help="parallel downloads (default: 8)")
    d.add_argument("--download-timeout", type=positive_float, default=30.0,
                   help="read timeout per request in seconds; connecting times out after 10 s (default: 30)")
    d.add_argument("--download-retries", type=non_negative_int, default=5,
                   help="retries per file after a timeout, reset, 5xx or 429, with exponential backoff (default: 5)")
    t = p.add_argument_group("training")
    t.add_argument("--nets", nargs="+", choices=NET_NAMES, default=list(NET_NAMES),
                   help="nets to train (default: net1 net2 net3)")
    t.add_argument("--batch-size", type=positive_int, default=4, help="(default: 4)")
    t.add_argument("--epochs", type=positive_int, help="(default: 15; 5 with --demo)")
    t.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default: 0.001)")
    t.add_argument("--betas", type=beta, nargs=2, default=[0.9, 0.99], help="Adam betas (default: 0.9 0.99)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto picks the accelerator torch reports, else the CPU (default: auto)")
    t.add_argument("--threads", type=positive_int, default=default_threads(),
                   help=f"torch threads per net; metrics depend on it (default: min(2, CPUs), here "
                        f"{default_threads()})")
    t.add_argument("--jobs", type=positive_int, default=1,
                   help="nets trained in parallel processes, if the cores allow jobs x threads (default: 1)")
    t.add_argument("--seeds", type=positive_int, default=1,
                   help="repeat the training for seeds SEED..SEED+N-1 and report mean ± std (default: 1)")
    t.add_argument("--out", help="output folder (default: results; results/demo with --demo)")
    t.add_argument("--resume", action="store_true",
                   help="continue unfinished nets from OUT/checkpoints and skip finished ones (default: off)")
    t.add_argument("--dry-run", action="store_true", help="one batch per epoch, for smoke tests (default: off)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """Fill in the mode-dependent defaults (--demo or full) and check what argparse cannot."""
    defaults = DEMO_DEFAULTS if args.demo else FULL_DEFAULTS
    data_dir = Path(DEMO_DATA_DIR if args.demo else args.data_dir)
    if len(set(args.classes)) != len(args.classes):
        raise UserError(f"--classes lists a class twice: {' '.join(args.classes)}")
    if len(args.classes) < 2:
        raise UserError("--classes needs at least two classes")
    fc1_in_features(args.image_size, 0)  # rejects sizes too small for the nets
    return Config(
        ann_file=args.ann_file or str(data_dir / "coco" / "annotations" / "instances_train2014.json"),
        image_dir=args.image_dir or str(data_dir / "coco" / "images"),
        classes=tuple(args.classes),
        train_per_class=args.train_per_class or defaults["train_per_class"],
        val_per_class=args.val_per_class or defaults["val_per_class"],
        image_size=args.image_size,
        seed=args.seed,
        exclusive=args.exclusive,
        dataset_dir=args.dataset_dir or defaults["dataset_dir"],
        workers=args.workers,
        nets=tuple(dict.fromkeys(args.nets)),
        batch_size=args.batch_size,
        epochs=args.epochs or defaults["epochs"],
        lr=args.lr,
        betas=tuple(args.betas),
        device=args.device,
        threads=args.threads,
        jobs=args.jobs,
        seeds=args.seeds,
        out=args.out or defaults["out"],
        dry_run=args.dry_run,
        resume=args.resume,
        download=args.download,
        coco_url_base=args.coco_url_base,
        download_workers=args.download_workers,
        download_timeout=args.download_timeout,
        download_retries=args.download_retries,
    )


def prepare_demo(cfg: Config, args: argparse.Namespace) -> None:
    """Generate enough demo images for the requested subset (10% of them show two classes)."""
    if args.ann_file or args.image_dir:
        return
    per_class = math.ceil(1.2 * (cfg.train_per_class + cfg.val_per_class)) + 10
    ensure_demo_data(Path(DEMO_DATA_DIR), per_class)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["predict"]:
            return predict_main(argv[1:])
        args = build_parser().parse_args(argv)
        cfg = config_from_args(args)
        if cfg.device != "auto" and not args.build_only:
            pick_device(cfg.device)  # fail before a long build, not after it
        if args.demo:
            prepare_demo(cfg, args)
        coco = download_subset_images(cfg) if cfg.download and reusable_manifest(cfg) is None else None
        manifest = build_subset(cfg, coco)
        if args.build_only:
            print(f"dataset ready in {cfg.dataset_dir}")
            return 0
        stop = StopRequest()
        stop.install()
        run_experiment(cfg, manifest, stop)
        print(f"results are in {cfg.out}/ (REPORT.md, metrics.json, results*.pkl, net*.pt, *.png)")
        return 0
    except UserError as exc:
        print(f"hw4: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt) as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"hw4: interrupted{detail}. Finished nets are kept; to continue, rerun the same command "
              f"with --resume.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
