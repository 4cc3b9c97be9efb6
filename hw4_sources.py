"""hw4_sources: where pictures come from besides a local COCO. Imports hw4_records only.

What it holds: the checks of hostile pictures and the thumbnail writer; the built folder's manifest and its
build lock; class folders (--image-folders); the HTTP download of COCO's files (--download); the offline
demo data (--demo). hw4.py imports it at its top; choosing the subset with pycocotools stays in hw4.py.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import threading
import time
import urllib.parse
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from hw4_records import (NAME_MAX, SPLITS, TMP_TAG, UserError, atomic_write, build_start_method, disk_full, held_lock,
                         is_disk_full, path_text, run_in_processes, write_json_atomic)

Config = Any  # hw4.Config, the run's frozen settings: this module reads its fields and never imports hw4

# =============================================================================
# Pictures: hostile files checked, thumbnails written
# =============================================================================

IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what a bad image file raises


BUILD_FILES = ("train_data", "val_data", "manifest.json", "tensors-*.pt", f".tensors-*.pt.{TMP_TAG}*")


def source_path(image_dir: str | Path, file_name: str) -> Path:
    """Where an annotation's image lives: a relative file_name without '..' (sub-folders are fine), so
    it is always inside image_dir."""
    rel = PurePosixPath(file_name.replace("\\", "/"))
    if (not file_name or not rel.parts or rel.name in ("", ".") or rel.is_absolute() or ".." in rel.parts
            or ":" in rel.parts[0] or "\0" in file_name):
        raise UserError(f"unsafe file_name {file_name!r} in the annotations: it must be a path relative to the "
                        "image dir without '..'; fix the annotation file")
    return Path(image_dir) / rel


def output_name(class_name: str, file_name: str, taken: set[str], image_id: int, lossless: bool = False) -> str:
    """'<class>_<basename>' as the original named them, made unique within a split and short enough
    for the file system (a long COCO name plus the class prefix can pass 255 bytes). lossless: the picture
    is written as an RGB PNG (write_thumbnail), so the name ends in .png."""
    stem, ext = os.path.splitext(PurePosixPath(file_name.replace("\\", "/")).name)
    ext = ext if ext.lower() in (".jpg", ".jpeg", ".png") and not lossless else ".png"
    cls = "".join("-" if c in "/\\\0" else c for c in class_name)
    short = os.fsencode(cls)[:64].decode(errors="ignore")
    for name in (f"{cls}_{stem}{ext}", f"{cls}_{image_id}_{stem}{ext}", f"{short}_{image_id}{ext}"):
        if name not in taken and len(os.fsencode(name)) <= NAME_MAX:
            break
    taken.add(name)
    return name


@contextlib.contextmanager
def open_picture(path: str | Path) -> Iterator[Image.Image]:
    """Image.open without PIL's DecompressionBombWarning on stderr: a picture past PIL's limit raises (and is
    refused as a bomb); one below it is only large, and decodes quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            yield img


def decode_rgb_thumbnail(src: str | Path, size: int) -> Image.Image:
    """Open any image, convert it to RGB and resize it to size x size (bicubic).

    JPEGs are decoded in draft mode, which downsamples by 1/2..1/8 inside the DCT and so skips most
    of the decoding; draft keeps at least the target size, so the final resize still averages real
    pixels (the benchmark measures the difference to a full decode).
    """
    with open_picture(src) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))
        rgb = (img.convert("RGBA") if img.mode == "P" else eight_bit(img)).convert("RGB")  # palette alpha via RGBA
    return rgb.resize((size, size), Image.Resampling.BICUBIC)


def eight_bit(img: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit grayscale picture scaled to 8 bits (PIL's convert would clip it: 99.6% white for a
    16-bit gradient); any other mode as it is."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N") or (img.mode == "I" and img.getextrema()[1] > 255):
        values = np.asarray(img, dtype=np.float64) / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    return img


def is_gray_at_size(src: str | Path, size: int) -> bool:
    """The picture is 8-bit grayscale and already size x size (read from its header only): the build writes it
    as an RGB PNG, which keeps every pixel, where an RGB JPEG would change them (output_name's lossless)."""
    try:
        with open_picture(src) as img:
            return img.size == (size, size) and img.mode == "L"
    except IMAGE_ERRORS:
        return False  # write_thumbnail reports what is wrong with it


def write_thumbnail(src: str, dst: str, size: int) -> None:
    """Write one picture at size x size, always as 3-channel RGB, as the original wrote its thumbnails (its own
    loader does not convert): its bytes as they are when it is already an RGB picture of that size in the
    destination's format, so a ready-made 64x64 set keeps every pixel; a grayscale one of that size converted
    to RGB and saved as PNG (every pixel kept); else decoded to RGB, resized and saved as JPEG quality 95 or
    PNG, by the destination's extension."""
    as_jpeg = dst.lower().endswith((".jpg", ".jpeg"))
    with open_picture(src) as img:
        at_size = img.size == (size, size)
        if at_size:
            img.load()  # the whole file must decode: a truncated one is refused here, not while training
        if at_size and img.mode == "L" and not as_jpeg:
            img.convert("RGB").save(dst, format="PNG")
            return
        fits = at_size and img.mode == "RGB" and img.format == ("JPEG" if as_jpeg else "PNG")
    if fits:
        shutil.copyfile(src, dst)
        return
    decode_rgb_thumbnail(src, size).save(dst, **({"format": "JPEG", "quality": 95} if as_jpeg else {"format": "PNG"}))


def write_thumbnails(jobs: list[tuple[str, str, int]]) -> list[str | None]:
    """write_thumbnail for each (source, destination, size). Returns, per image, None or why it failed.
    Only regular files are opened: a FIFO named x.jpg would block the read forever."""
    reasons = []
    for src, dst, size in jobs:
        try:
            if not os.path.isfile(src):
                reasons.append("not a regular file" if os.path.lexists(src) else "missing")
                continue
            write_thumbnail(src, dst, size)
            reasons.append(None)
        except FileNotFoundError:
            reasons.append("missing")
        except IMAGE_ERRORS as exc:
            if is_disk_full(exc):  # the destination is full, not the picture bad
                raise disk_full(Path(dst)) from None
            reasons.append(f"unreadable ({type(exc).__name__}: {exc})")
    return reasons


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
        return {"split": self.split, "path": f"{self.split}_data/{self.out_name}", "class": self.class_name,
                "label": self.label, "image_id": self.image_id, "file_name": self.file_name}


def run_write_jobs(jobs: list[WriteJob], source_root: str | Path, cfg: Config, root: Path,
                   desc: str) -> list[str | None]:
    """Write a batch of thumbnails, in worker processes when --workers > 1. Order is kept."""
    from tqdm import tqdm

    args = [(str(source_path(source_root, j.file_name)), str(root / f"{j.split}_data" / j.out_name),
             cfg.image_size) for j in jobs]
    size = max(1, len(args) // (cfg.workers * 8))  # few round trips, yet an even spread
    chunks = [args[k:k + size] for k in range(0, len(args), size)]
    done: list[list[str | None]] = [[] for _ in chunks]
    with tqdm(total=len(args), desc=desc, unit="img", disable=None, leave=False) as bar:
        def collect(k: int, reasons: list[str | None]) -> None:
            done[k] = reasons
            bar.update(len(reasons))

        if cfg.workers == 1 or len(chunks) < 2:
            for k, chunk in enumerate(chunks):
                collect(k, write_thumbnails(chunk))
        else:
            run_in_processes(write_thumbnails, [(c,) for c in chunks], cfg.workers, build_start_method(), collect)
    return [reason for chunk in done for reason in chunk]


def make_job(split: str, name: str, label: int, img_id: int, coco, taken: dict[str, set[str]],
             slot: int) -> WriteJob:
    file_name = coco.imgs[img_id]["file_name"]
    source_path("", file_name)  # refuse an unsafe name before anything is written
    return WriteJob(split, name, label, img_id, file_name, output_name(name, file_name, taken[split], img_id), slot)


# =============================================================================
# The built folder: its manifest and its build lock
# =============================================================================

MANIFEST_VERSION = 6  # bump whenever the build writes different files (selection, decoding, naming)


def manifest_is_valid(m: Any) -> bool:
    """The shape the build writes: what loading, training and the report read, with labels in range."""
    try:
        classes = m["classes"]
        ok = (m["version"] == MANIFEST_VERSION and isinstance(m["fingerprint"], str) and isinstance(m["config"], dict)
              and isinstance(classes, list) and len(classes) >= 2 and isinstance(m["entries"], list)
              and isinstance(m["config"]["image_size"], int) and isinstance(m["config"]["seed"], int)
              and all(isinstance(m["counts"][split][c], int) for split in SPLITS for c in classes))
        return ok and all(
            e["split"] in SPLITS and isinstance(e["path"], str) and e["class"] in classes
            and isinstance(e["label"], int) and classes[e["label"]] == e["class"]
            and PurePosixPath(e["path"]).parts[:1] == (f"{e['split']}_data",)
            and ".." not in PurePosixPath(e["path"]).parts for e in m["entries"])
    except (KeyError, TypeError, IndexError, AttributeError):
        return False


def read_manifest(dataset_dir: str | Path) -> dict | None:
    """The finished build's manifest, or None when there is none, it is damaged or it is not hw4's."""
    try:
        manifest = json.loads((Path(dataset_dir) / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return manifest if manifest_is_valid(manifest) else None


def reusable_manifest(cfg: Config) -> dict | None:
    """The manifest of a finished build with this exact config, if its files are all there."""
    manifest = read_manifest(cfg.dataset_dir)
    if not manifest or manifest.get("fingerprint") != cfg.build_fingerprint():
        return None
    if not isinstance(manifest.get("content"), str):  # built before the content digest: rebuilt (same files)
        return None
    return manifest if all((Path(cfg.dataset_dir) / e["path"]).is_file() for e in manifest["entries"]) else None


def content_digest(root: Path, classes: Sequence[str], entries: list[dict]) -> str:
    """What training sees, and nothing about where the source sits or when it was copied: the classes and
    each picture's split, path, label and bytes. The build fingerprint (paths, mtimes) only decides whether a
    dataset folder is up to date; runs are keyed by this digest, so a fresh `git clone` of the same pictures
    on another machine resumes and extends a committed run."""
    digest = hashlib.sha256(json.dumps(list(classes)).encode())
    for e in sorted(entries, key=lambda e: e["path"]):
        picture = hashlib.sha256((root / e["path"]).read_bytes()).hexdigest()
        digest.update(f"{e['split']}\0{e['path']}\0{e['label']}\0{picture}\n".encode())
    return digest.hexdigest()[:16]


def check_dataset_dir_is_ours(dataset_dir: Path) -> None:
    """A rebuild replaces the folder as a whole, so it must hold nothing but a build: results, notes or
    another project there would be deleted with it."""
    import fnmatch

    if not dataset_dir.is_dir():
        return  # absent (a file was refused before any work)
    entries = sorted(p.name for p in dataset_dir.iterdir())
    if not entries:
        return
    manifest = read_manifest(dataset_dir)
    if manifest is None:
        raise UserError(f"--dataset-dir {dataset_dir} exists and is not an hw4 dataset (no hw4 manifest.json); "
                        "choose another --dataset-dir or remove it")
    written = {e["path"] for e in manifest["entries"]}  # the only files a build puts in train_data/ and val_data/
    foreign = [e for e in entries if not any(fnmatch.fnmatch(e, pattern) for pattern in BUILD_FILES)]
    for split in SPLITS:
        folder = dataset_dir / f"{split}_data"
        if folder.is_dir():
            foreign += [p.relative_to(dataset_dir).as_posix() for p in sorted(folder.rglob("*"))
                        if p.relative_to(dataset_dir).as_posix() not in written]
    if foreign:
        raise UserError(f"--dataset-dir {dataset_dir} holds files the build did not write ({', '.join(foreign[:3])}"
                        f"{' ...' if len(foreign) > 3 else ''}), which a rebuild would delete; move them out or "
                        "choose another --dataset-dir")


def build_lock(target: Path, shown: str) -> contextlib.AbstractContextManager:
    """One build at a time into a dataset folder. Its lock lies beside the folder (.NAME.build.lock), because a
    build replaces the folder itself; shown: the folder as the user named it."""
    return held_lock(target.with_name(f".{target.name}.build.lock"), f"--dataset-dir {shown}", lambda holder:
                     f"another build into --dataset-dir {shown} is running{holder}; wait for it to finish, or build "
                     "into another --dataset-dir")


def swap_into_place(tmp: Path, target: Path) -> None:
    """Replace target by tmp with renames, so a reader never sees half a build."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


# =============================================================================
# Class folders (--image-folders): the pictures as given, ROOT/{train,val}/<class>/<file>
# =============================================================================

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


COCO_FILE_ID = re.compile(r"COCO_(?:train|val|test)\d{4}_0*(\d+)\.")


@dataclass(frozen=True)
class FolderPicture:
    """One picture file of the class folders; the same image_id (picture_id) in two folders is one picture."""

    split: str
    class_name: str
    file_name: str  # relative to ROOT, with '/'
    image_id: int


def picture_id(path: Path) -> int:
    """Which picture a file is: the COCO id when its name carries one (COCO_train2014_<id>.jpg), else a 48-bit
    id from its bytes, so that one picture copied into two class folders under any name is found as one.
    (On the exercise's pictures the COCO ids and the bytes group the files alike: 181 shared pictures.)"""
    found = COCO_FILE_ID.search(path.name)
    if found:
        return int(found.group(1))
    try:
        return int(hashlib.sha256(path.read_bytes()).hexdigest()[:12], 16)
    except OSError as exc:
        raise UserError(f"{path_text(path)} cannot be read ({exc.strerror or exc}); check the class folders") from None


def image_files(folder: Path) -> list[Path]:
    """The picture files under a folder (sub-folders too), sorted. Hidden files and folders (.DS_Store) and
    other extensions are skipped; something that is not a regular file (a FIFO, a broken link) is refused."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath) / name
            if not path.is_file():
                raise UserError(f"{path} is not a regular file (a FIFO, socket or broken link); remove it from the "
                                "class folder")
            found.append(path)
    return sorted(found)


def folder_listing_digest(root: Path) -> str:
    """Every file's relative path, size and mtime under ROOT/{train,val}: an edited folder is another build."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for dirpath, dirnames, filenames in sorted(os.walk(root / split)):
            dirnames.sort()
            for name in sorted(filenames):
                with contextlib.suppress(OSError):
                    st = os.stat(Path(dirpath) / name)
                    digest.update(f"{Path(dirpath, name).relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def scan_class_folders(root: Path, classes: Sequence[str]) -> list[FolderPicture]:
    """Every picture of ROOT/{train,val}/<class>/, after checking the layout against --classes."""
    if not root.is_dir():
        raise UserError(f"--image-folders {root} is not a folder; pass the folder that holds train/ and val/")
    pictures = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"--image-folders {root} has no {split}/ folder; it needs ROOT/train/<class>/ and "
                            "ROOT/val/<class>/ (torchvision's ImageFolder layout, once per split)")
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if entry.suffix.lower() in IMAGE_EXTENSIONS:
                    raise UserError(f"{entry} is not inside a class folder; move it into {split}/<class>/")
                continue
            if entry.name not in classes:
                closest = difflib.get_close_matches(entry.name, classes, n=1, cutoff=0)
                raise UserError(f"class folder {entry} is not one of --classes ({' '.join(classes)}); the closest "
                                f"is {closest[0]!r}: rename the folder, or name it in --classes")
        for name in classes:
            files = image_files(split_dir / name) if (split_dir / name).is_dir() else []
            if not files:
                raise UserError(f"class {name!r} has no images in {split_dir / name}; add them, or leave {name!r} "
                                "out of --classes")
            for path in files:
                rel = path.relative_to(root).as_posix()
                pictures.append(FolderPicture(split, name, rel, picture_id(path)))
    return pictures


def folders_by_picture(pictures: Sequence[FolderPicture]) -> dict[int, list[FolderPicture]]:
    by_id: dict[int, list[FolderPicture]] = {}
    for p in pictures:
        by_id.setdefault(p.image_id, []).append(p)
    return by_id


def is_shared(copies: Sequence[FolderPicture]) -> bool:
    """A picture in two class folders, or in both splits."""
    return len({p.class_name for p in copies}) > 1 or len({p.split for p in copies}) > 1


def choose_folder_pictures(pictures: list[FolderPicture], cfg: Config) -> list[FolderPicture]:
    """The pictures as given: all of them, without shared ones with --exclusive, and at most
    --train-per-class / --val-per-class per class when given (a draw seeded by --seed)."""
    if cfg.exclusive:
        shared = {i for i, copies in folders_by_picture(pictures).items() if is_shared(copies)}
        pictures = [p for p in pictures if p.image_id not in shared]
    rng, chosen = random.Random(cfg.seed), []
    for split, cap in (("train", cfg.train_per_class), ("val", cfg.val_per_class)):
        for name in cfg.classes:
            group = [p for p in pictures if p.split == split and p.class_name == name]
            if cap is not None and len(group) < cap:
                raise UserError(f"class {name!r} has {len(group)} {split} pictures in --image-folders"
                                f"{' without shared ones (--exclusive)' if cfg.exclusive else ''} but --{split}-per-"
                                f"class asks for {cap}; lower it, or leave it out to take them all")
            chosen += group if cap is None else sorted(rng.sample(group, cap), key=lambda p: p.file_name)
    return chosen


def shared_pictures_summary(chosen: Sequence[FolderPicture], cfg: Config) -> dict[str, Any]:
    """The pictures of the dataset that sit in two class folders or in both splits: counted, by class pair,
    and listed, with whether they were kept (the exercise's data) or dropped (--exclusive)."""
    shared = {i: copies for i, copies in folders_by_picture(chosen).items() if is_shared(copies)}
    pairs: dict[str, int] = {}
    for copies in shared.values():
        names = [c for c in cfg.classes if c in {p.class_name for p in copies}]
        for k, a in enumerate(names):
            for b in names[k + 1:]:
                pairs[f"{a}/{b}"] = pairs.get(f"{a}/{b}", 0) + 1
    return {"kept": not cfg.exclusive,
            "in_two_classes": sum(len({p.class_name for p in c}) > 1 for c in shared.values()),
            "in_both_splits": sum(len({p.split for p in c}) > 1 for c in shared.values()),
            "class_pairs": dict(sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))),
            "pictures": [{"image_id": i, "files": [p.file_name for p in c]} for i, c in sorted(shared.items())]}


def write_folder_subset(chosen: list[FolderPicture], pictures: list[FolderPicture], cfg: Config,
                        root: Path) -> list[dict]:
    """Write the chosen pictures (resized only if they are not image_size already). A picture that does not
    decode stops the build: the folders are the data, so nothing is swapped in for it."""
    taken: dict[str, set[str]] = {"train": set(), "val": set()}
    root_in = Path(cfg.image_folders)
    jobs = [WriteJob(p.split, p.class_name, cfg.classes.index(p.class_name), p.image_id, p.file_name,
                     output_name(p.class_name, p.file_name, taken[p.split], p.image_id,
                                 is_gray_at_size(root_in / p.file_name, cfg.image_size)), k)
            for k, p in enumerate(chosen)]
    failures = [(job, why) for job, why in zip(jobs, run_write_jobs(jobs, cfg.image_folders, cfg, root,
                                                                     "writing images")) if why]
    if failures:
        job, why = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise UserError(f"{Path(cfg.image_folders) / job.file_name} is not a readable image{more}: {why}; remove "
                        "it from the class folder or replace it")
    shows = {i: {p.class_name for p in copies} for i, copies in folders_by_picture(pictures).items()}
    return [{**job.entry(), "also_shows": sorted(shows[job.image_id] - {job.class_name})} for job in jobs]


# =============================================================================
# COCO download (--download): only the files the subset needs, with retries
# =============================================================================

DEFAULT_COCO_URL_BASE = "http://images.cocodataset.org"


ANNOTATIONS_ZIP = "annotations/annotations_trainval2014.zip"


ANNOTATIONS_MEMBER = "annotations/instances_train2014.json"


CONNECT_TIMEOUT_S, BACKOFF_BASE_S, BACKOFF_CAP_S = 10.0, 0.5, 20.0


class RetryableError(Exception):
    """A timeout, a reset, a cut body, a 5xx or a 429: worth another try after a pause."""


class PermanentError(Exception):
    """A 404 or another 4xx, or a URL we refuse: trying again will not help."""


def checked_url(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"refusing URL {url!r}: only http and https are allowed")
    return parts


IMAGE_MAX_BYTES = 64 * 2 ** 20  # a COCO train2014 picture is under 1 MB; an endless body stops here


ANNOTATIONS_MAX_BYTES = 2 * 2 ** 30  # annotations_trainval2014.zip is 241 MB


DOWNLOAD_STOP = threading.Event()  # set on Ctrl-C or SIGTERM: download threads stop at their next chunk


def http_get(url: str, dest: Path, read_timeout: float, max_bytes: int = IMAGE_MAX_BYTES,
             deadline_s: float | None = None, redirects: int = 3) -> None:
    """GET url into dest with separate connect and read timeouts, a byte cap and, when given, a deadline for
    the whole body (a read timeout alone lets a server trickle a byte a second for ever); classifies every
    failure. A full disk is the disk's error, never retried as the network's."""
    started = time.monotonic()
    parts = checked_url(url)
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=CONNECT_TIMEOUT_S)
    try:
        conn.connect()
        conn.sock.settimeout(read_timeout)
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     headers={"User-Agent": "hw4"})
        resp = conn.getresponse()
        if resp.status in (301, 302, 303, 307, 308) and redirects and resp.getheader("Location"):
            return http_get(urllib.parse.urljoin(url, resp.getheader("Location")), dest, read_timeout, max_bytes,
                            deadline_s, redirects - 1)
        if resp.status == 429 or resp.status >= 500:
            raise RetryableError(f"HTTP {resp.status} {resp.reason}")
        if resp.status != 200:
            raise PermanentError(f"HTTP {resp.status} {resp.reason}")
        expected, size = resp.getheader("Content-Length"), 0
        if expected is not None and expected.isdigit() and int(expected) > max_bytes:
            raise PermanentError(f"the file is {int(expected):,} bytes, over the {max_bytes:,} it can be")
        try:
            f = open(dest, "wb")
        except OSError as exc:
            raise (disk_full(dest) if is_disk_full(exc) else exc) from None
        with f:
            while chunk := resp.read1(1 << 16):  # what has arrived: read() would wait for the whole 64 KiB
                if DOWNLOAD_STOP.is_set():
                    raise PermanentError("stopped")
                if deadline_s is not None and time.monotonic() - started > deadline_s:
                    raise RetryableError(f"too slow: not complete after {deadline_s:.0f} s")
                if size + len(chunk) > max_bytes:
                    raise PermanentError(f"the body runs past {max_bytes:,} bytes, more than the file can be")
                try:
                    size += f.write(chunk)
                except OSError as exc:
                    raise (disk_full(dest) if is_disk_full(exc) else exc) from None
        if expected is not None and size != int(expected):
            raise RetryableError(f"body cut off: {size} of {expected} bytes")
    except (http.client.HTTPException, OSError) as exc:  # timeouts, resets, cut bodies, DNS
        raise RetryableError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    finally:
        conn.close()


def is_valid_image(path: Path) -> bool:
    """The file decodes completely (a truncated JPEG fails here); draft mode keeps it cheap."""
    try:
        with open_picture(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (64, 64))
            img.load()
        return True
    except IMAGE_ERRORS:
        return False


def fetch_with_retries(url: str, dest: Path, cfg: Config, check=is_valid_image, max_bytes: int = IMAGE_MAX_BYTES,
                       deadline_s: float | None = -1.0) -> tuple[str, int, str]:
    """Fetch url to dest; returns (status, retries, reason). The body goes to a temporary file renamed
    into place only once it is complete and passes `check`, so an interrupted run never leaves a file
    that looks done."""
    reason, attempt = "", 0
    for attempt in range(cfg.download_retries + 1):
        try:
            with atomic_write(dest) as tmp:  # -1: a picture's whole body gets 4 read timeouts, at least a minute
                http_get(url, tmp, cfg.download_timeout, max_bytes,
                         max(60.0, 4 * cfg.download_timeout) if deadline_s == -1.0 else deadline_s)
                if not check(tmp):
                    raise RetryableError("the body is not a readable image")
            return "downloaded", attempt, ""
        except PermanentError as exc:
            return "failed", attempt, str(exc)
        except RetryableError as exc:
            reason = str(exc)
            if attempt < cfg.download_retries:  # exponential backoff with jitter, so threads do not retry in step
                time.sleep(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** attempt) * random.uniform(0.5, 1.5))
    return "failed", attempt, reason


def image_url(image: dict, base: str | None) -> str:
    """URL of one COCO image: the mirror's train2014/<file_name>, or the annotation's coco_url."""
    if base:
        return f"{base.rstrip('/')}/train2014/{urllib.parse.quote(str(source_path('', image['file_name'])))}"
    if not image.get("coco_url"):
        raise PermanentError(f"image {image['id']} has no coco_url (pass --coco-url-base)")
    return image["coco_url"]


def fetch_annotations(cfg: Config) -> None:
    """Fetch the 2014 annotations zip and extract instances_train2014.json to --ann-file."""
    ann = Path(cfg.ann_file)
    archive = ann.with_name(".annotations_trainval2014.zip")
    url = f"{(cfg.coco_url_base or DEFAULT_COCO_URL_BASE).rstrip('/')}/{ANNOTATIONS_ZIP}"
    print(f"fetching the annotations from {url} ...")
    status, _, reason = fetch_with_retries(url, archive, cfg, check=zipfile.is_zipfile,
                                           max_bytes=ANNOTATIONS_MAX_BYTES, deadline_s=None)  # 241 MB: no deadline
    if status == "failed":
        raise UserError(f"could not download {url} ({reason}); check the network or --coco-url-base")
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(ANNOTATIONS_MEMBER) as src, atomic_write(ann) as tmp:
            tmp.write_bytes(src.read())
    except KeyError:
        raise UserError(f"{url} has no {ANNOTATIONS_MEMBER}; check --coco-url-base") from None
    finally:
        archive.unlink(missing_ok=True)


def fetch_images(ids: list[int], coco, cfg: Config) -> dict[int, tuple[str, int, str]]:
    """Fetch the images with these ids in parallel threads; returns id -> (status, retries, reason)."""
    from tqdm import tqdm

    image_dir = Path(cfg.image_dir)

    def one(img_id: int) -> tuple[str, int, str]:
        image = coco.imgs[img_id]
        dest = source_path(image_dir, image["file_name"])
        try:
            if not dest.parent.resolve().is_relative_to(image_dir.resolve()):  # a symlink on the way
                raise PermanentError(f"{image['file_name']} would be written outside {image_dir}")
            if dest.is_file() and is_valid_image(dest):  # checked before the URL: a present image needs none
                return "present", 0, ""
            return fetch_with_retries(image_url(image, cfg.coco_url_base), dest, cfg)
        except PermanentError as exc:
            return "failed", 0, str(exc)

    pool = ThreadPoolExecutor(max_workers=cfg.download_workers)
    try:
        return dict(zip(ids, tqdm(pool.map(one, ids), total=len(ids), desc="downloading", unit="img", disable=None)))
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: the threads stop at their next chunk, none waits
        DOWNLOAD_STOP.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=False)


# =============================================================================
# Demo data (--demo): an offline COCO-format set with learnably different classes
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


def demo_image(rng: np.random.Generator, names: list[str]) -> tuple[Image.Image, list[tuple[str, tuple]]]:
    """One demo photo with the given classes drawn in it at random places, and their boxes."""
    w, h = int(rng.integers(160, 321)), int(rng.integers(120, 241))
    img = demo_background(rng, w, h)
    draw = ImageDraw.Draw(img)
    objects = []
    frac = 0.75 if len(names) == 1 else 0.5
    for name in names:
        bw, bh = int(w * frac * rng.uniform(0.8, 1.0)), int(h * frac * rng.uniform(0.8, 1.0))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        draw_demo_object(draw, name, (x0, y0, x0 + bw, y0 + bh), rng)
        objects.append((name, (x0, y0, x0 + bw, y0 + bh)))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), objects


def make_demo_coco(root: Path, images_per_class: int, seed: int = 0) -> None:
    """Write root/coco/annotations/instances_train2014.json and root/coco/images/*.jpg; about 10% of
    the images are grayscale and about 10% show two classes, as in COCO."""
    rng = np.random.default_rng(seed)
    names = list(DEMO_CATEGORIES)
    image_dir = root / "coco" / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
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
    write_json_atomic(root / "coco" / "annotations" / "instances_train2014.json",
                      {"info": {"description": "hw4 demo data"}, "images": images, "annotations": annotations,
                       "categories": categories})


def ensure_demo_data(root: Path, images_per_class: int) -> None:
    """Generate the demo COCO set once (a marker records its size). A new set is generated beside the
    old one and swapped in when complete: a failed generation leaves the previous demo data as it was. One
    command generates at a time (the OS lock on ROOT/.demo.lock), so that no second one swaps the set while the
    first reads it; a killed one's leftover folder goes with the next generation."""
    marker = root / "coco" / "demo.json"
    want = {"images_per_class": images_per_class, "version": 1}

    def ready() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(marker.read_text()) == want
        return False

    if ready():
        return
    with held_lock(root / ".demo.lock", f"the demo data in {root}", lambda holder: f"another hw4 command{holder} is "
                   f"generating the demo data in {root}; wait for it to end, then rerun"):
        if ready():  # generated by another command between the check above and the lock
            return
        for other in root.glob(".coco.generating-*"):
            shutil.rmtree(other, ignore_errors=True)
        print(f"generating demo COCO data in {root}/coco ...")
        tmp = root / f".coco.generating-{os.getpid()}"
        try:
            make_demo_coco(tmp, images_per_class)
            write_json_atomic(tmp / "coco" / "demo.json", want)
            swap_into_place(tmp / "coco", root / "coco")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
