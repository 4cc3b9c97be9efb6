"""hw4_records: a run's records on disk, and the machinery under them. Imports no other hw4 module.

What it holds, bottom up: the limits and the one-line error of every hw4 command; fingerprints, atomic
writes and the text helpers that make untrusted strings inert; the OS locks; the worker pools; a net's spec as a
record (NetSpec) and the metrics a run records (METRICS); the typed per-net record (Results) and the machine
it trained on; metrics.json's one reader, its schema and migration; the measures and the figure helpers that the
report and compare share. Imported by hw4.py at its top, and by hw4_report.py and hw4_compare.py, which see a
run only through these records.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# =============================================================================
# Limits and the one-line error every command shares
# =============================================================================

DEFAULT_NETS = ("net1", "net2", "net3")  # the exercise's three nets, which the original's claims are about
SPLITS = ("train", "val")


MIN_IMAGE_SIZE = 10  # Net1 (no padding, two conv+pool blocks) needs 10x10 to keep one pixel


MAX_IMAGE_SIZE = 1024  # the largest --image-size: predict accepts every net the table builds at this size


MAX_SEED = 2 ** 32 - 1  # numpy's seeding takes 32 bits


MAX_PER_CLASS = 100_000  # COCO's largest class has ~45k train2014 images


NAME_MAX = 255  # bytes in one path component on common file systems


class UserError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, never a traceback."""


def path_argument(text: str) -> str:
    """An argparse type for paths: not empty (it would mean the current folder), and every component must fit
    the file system's 255-byte limit."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; pass a folder or file name ('.' for this folder)")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise argparse.ArgumentTypeError(f"path component {part[:40]!r}... is {len(os.fsencode(part))} "
                                             f"bytes long; file systems allow {NAME_MAX}")
    return text


EXIT_USAGE = 2  # bad input: one line, never a traceback
EXIT_INTERRUPTED = 130


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line (and exit code 2) instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"hw4: error: {message} (see `python {self.prog} --help`)\n")


# =============================================================================
# Files: fingerprints, atomic writes, folder checks, one walk over nested data, text made inert
# =============================================================================

def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of a settings dict."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


TMP_TAG = "hw4-tmp-"  # in every temporary file's name: cleanup deletes only these


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: Path) -> UserError:
    """The one message for a full disk, wherever a write meets it: it is never the network's or the picture's."""
    return UserError(f"no space left on the device of {path.parent} while writing {path.name}; free some space and "
                     "rerun the same command (with --resume after training)")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds, so a kill
    never leaves a half-written file under the real name (remove_partial_writes cleans '.NAME.hw4-tmp-*', a
    name only hw4 uses). A full disk is one line that names the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{TMP_TAG}{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, blob: bytes) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(blob)


def save_torch_atomic(obj: Any, path: Path) -> None:
    """torch.save into memory, then one plain write: a full disk is then an OSError with its errno, where torch's
    own zip writer would report it as a RuntimeError known only by its text."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def quiet_torch_load(path: Path, max_bytes: int | None = None) -> Any:
    """torch.load(weights_only=True) onto the CPU, with torch's warnings kept off the user's stderr;
    weights and Adam's moments move to the device when they are loaded into the net. With max_bytes, a file
    (a zip, as torch writes it) whose entries inflate beyond it is refused before anything is inflated."""
    if max_bytes is not None and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
        if inflated > max_bytes:
            raise ValueError(f"{inflated:,} bytes once inflated, more than any net of the table")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def map_leaves(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """A copy of nested dicts, lists and tuples with `leaf` applied to everything else (keys too)."""
    if isinstance(obj, dict):
        return {map_leaves(k, leaf): map_leaves(v, leaf) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_leaves(v, leaf) for v in obj)
    return leaf(obj)


def json_leaf(value: Any) -> Any:
    """numpy values become Python ones; NaN and infinities become null (JSON has no token for them)."""
    if isinstance(value, np.ndarray):
        return map_leaves(value.tolist(), json_leaf)
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value


# a JSON list of numbers (and nulls), one per line; it starts with a raw newline, which no JSON string holds
NUMBER_LIST = re.compile(r"\[\n\s*([-+.\deEnul,\s]*?)\n\s*\]")


def write_json_atomic(path: Path, data: Any) -> None:
    """Strictly valid JSON (a diverged run's NaN is written as null), indented, with every list of numbers on one
    line: a seed's per-picture predictions would otherwise take a line a picture."""
    text = json.dumps(map_leaves(data, json_leaf), indent=1, allow_nan=False)
    write_bytes_atomic(path, NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text).encode())


def check_folder_creatable(path: str | Path, flag: str) -> None:
    """Fail before any work unless `flag`'s folder is writable or can be created, proven by making (and
    removing) a probe folder in its deepest existing ancestor: /proc, read-only mounts and permissions
    answer for themselves."""
    path = existing = Path(path)
    while not existing.exists():
        if existing.is_symlink():  # it is there but leads nowhere: dangling, or a loop
            raise UserError(f"{flag} {path} cannot be created: {existing} is a broken symlink or a symlink loop; "
                            "pass another folder")
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise UserError(f"{flag} {path} {what}; pass a folder path")
    probe = existing / f".hw4-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise UserError(f"{flag} {path} cannot be created or written: making a folder in {existing} failed "
                        f"({exc.strerror or exc}); pass a folder you can write to") from None


MARKUP = set("<>|[]`*#\\")  # Markdown and HTML that REPORT.md would act on
NOT_IN_CLASS_NAMES = MARKUP | {"/"}  # and a path separator: a class name is a folder name too


def is_class_name(name: Any) -> bool:
    """A class name hw4 accepts (from --classes or a metrics.json): a folder name that is plain text in Markdown."""
    return (isinstance(name, str) and name not in ("", ".", "..") and name.isprintable()
            and not set(name) & NOT_IN_CLASS_NAMES)


def is_plain_text(text: Any, longest: int = 200) -> bool:
    """A short string that is inert in Markdown and on a terminal: printable, no markup characters."""
    return isinstance(text, str) and len(text) <= longest and text.isprintable() and not set(text) & MARKUP


def path_text(path: Path | str) -> str:
    """A path as a message may show it: control characters and undecodable bytes escaped."""
    return terminal_text(os.fsdecode(path))


def terminal_text(text: str) -> str:
    """Text from a file or a file name, safe to print: control characters (ANSI escapes, newlines) escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text)).encode(
        "utf-8", "backslashreplace").decode("utf-8")


def markdown_text(text: str) -> str:
    """Text from data, safe inside a Markdown table cell: printable, with |, <, >, [, ] and ` escaped."""
    return re.sub(r"([|<>\[\]`*_#\\])", r"\\\1", terminal_text(text))


# =============================================================================
# Locks: the operating system's lock on a folder, with the holder's pid beside it
# =============================================================================

RUN_LOCK = ".hw4-run.lock"  # in a folder while a command writes into it: the operating system's lock on this file


RUN_PID = ".hw4-run.pid"  # beside it while held: the holder's process id, for the message


@contextlib.contextmanager
def held_lock(lock_file: Path, what: str, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold the operating system's lock on lock_file, with this process's id beside it (the same name, .pid) for the
    message of whoever finds it taken: busy(' (process N)'). The kernel holds the lock (filelock: fcntl on Linux and
    macOS, msvcrt on Windows) and drops it when its holder dies: a killed command's lock is free at once, two can
    never both take it over, and a recycled process id cannot keep it. what: the folder, for a lock that cannot be
    taken at all."""
    from filelock import FileLock, Timeout

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file, lock = lock_file.with_suffix(".pid"), FileLock(lock_file, timeout=0)
    for path in (lock_file, pid_file):  # filelock truncates its file: through a link it would empty the target
        if path.is_symlink() or path.exists() and not path.is_file():
            raise UserError(f"{path} is {'a link' if path.is_symlink() else 'not a file'}: hw4 keeps a lock there and "
                            "never writes through a link; remove it and rerun")
    try:
        lock.acquire()
    except Timeout:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (process {int(pid_file.read_text()[:20])})"
        raise UserError(busy(holder)) from None
    except OSError as exc:
        raise UserError(f"{what}: its lock {lock_file} cannot be taken ({exc.strerror or exc}); pass a folder you can "
                        "write to") from None
    try:
        write_pid(pid_file)
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        lock.release()


def write_pid(pid_file: Path) -> None:
    """This process's id into pid_file, never through a link that appeared there since the check (O_NOFOLLOW)."""
    fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))


def run_lock(out: Path, flag: str = "--out") -> contextlib.AbstractContextManager:
    """One command at a time writes into a folder (a training run, `report`, `compare --out`), so that two never
    mix their files."""
    return held_lock(out / RUN_LOCK, f"{flag} {out}", lambda holder: f"another hw4 command{holder} is writing into "
                     f"{flag} {out}; wait for it to end, or pass another folder")


# =============================================================================
# Worker pools: processes for the build and for training
# =============================================================================

def worker_init(parent_pid: int) -> None:
    """Start-up of every pool worker: ignore Ctrl-C (the parent decides and stops the workers), and die
    with the parent, even a SIGKILLed one, instead of running on as an orphan (Linux's PR_SET_PDEATHSIG)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 is /dev/null inside the block. Processes started here keep that stderr for life,
    so a Ctrl-C that reaches a worker while it still imports torch prints no traceback; workers report
    through their results (exceptions included), and the parent prints."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def build_start_method() -> str:
    """fork where the platform has it (the decoders need no torch, and a fork starts in milliseconds),
    else spawn (Windows)."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def run_in_processes(fn: Callable, tasks: list[tuple], workers: int, start_method: str,
                     on_result: Callable[[int, Any], None]) -> None:
    """fn(*task) for every task in `workers` processes; on_result(index, result) as each finishes.

    Stopping is safe at any moment: on any exception here (Ctrl-C, SIGTERM, a failed task) every
    worker is SIGKILLed, which loses at most each one's unfinished task, and the exception goes on.
    """
    pool = None
    try:
        with stderr_silenced():  # the workers start in submit(), multiprocessing's resource tracker before them
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method),
                                       initializer=worker_init, initargs=(os.getpid(),))
            futures = {pool.submit(fn, *task): k for k, task in enumerate(tasks)}
        for future in as_completed(futures):
            on_result(futures[future], future.result())
    except BaseException:
        for child in multiprocessing.active_children():
            child.kill()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# =============================================================================
# A net's spec as a record: NetSpec, and what a spec alone tells (sizes, parameter count)
# =============================================================================

@dataclass(frozen=True)
class NetSpec:
    """One row of the net table. A variant of an existing structure is one new row."""

    label: str                       # how figures and the report name it
    padding: int = 0                 # of conv1 and conv2
    channels: tuple[int, int] = (16, 32)  # out channels of conv1 and conv2
    extra_convs: int = 0             # the chain of 3x3 convs after the second pool
    block: str = "plain"             # chain block, one of CHAIN_BLOCKS: plain, bn (BatchNorm), res (residual)
    init: str = "default"            # one of INITS: default (torch's), xavier_all, he (see HW4Net.initialise)
    hidden: tuple[int, ...] = (64,)  # hidden fully connected layers before the output layer
    dropout: float = 0.0             # dropout rate before fc1 and after every hidden layer
    augment: bool = False            # seeded random flip + 4-pixel-padded random crop while training
    train_fraction: float = 1.0      # train on this fixed, class-stratified share of the training set
    noise_std: float = 0.0           # seeded additive Gaussian noise on the training inputs (their [0, 1] scale)
    input_scale: float = 1.0         # the net sees its pictures area-averaged down to this share of their side
    pickle_name: str | None = None   # the original's results{k}.pkl; others get results_<name>.pkl
    base: str | None = None          # the net it differs from; the report compares the two
    remedy: str | None = None        # the original's Q5 remedy it measures (a REMEDIES key)
    about: str = ""                  # one line for the net table and the report

    DESCRIPTIVE = ("label", "pickle_name", "base", "remedy", "about")  # fields that change no number
    # The fields every run fingerprint has hashed, defaults included, since fingerprints began. A field added
    # later enters a fingerprint only when it differs from its default, so that adding one keeps every
    # existing fingerprint, and --resume still takes the committed runs as finished.
    ALWAYS_HASHED = ("padding", "channels", "extra_convs", "block", "init", "hidden", "dropout", "augment",
                     "train_fraction")

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "NetSpec":
        """Back from Results.spec (JSON lists in place of tuples), once check_spec has checked it."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})

    def pickle_file(self, name: str) -> str:
        """The pickle this net's results go to: the original's results{k}.pkl, else results_<name>.pkl."""
        return self.pickle_name or f"results_{name}.pkl"

    def trained(self) -> dict[str, Any]:
        """The fields that decide what the net computes."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.DESCRIPTIVE}

    def fingerprinted(self) -> dict[str, Any]:
        """What the run fingerprint hashes of the spec: ALWAYS_HASHED, and any later field off its default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {k: v for k, v in self.trained().items() if k in self.ALWAYS_HASHED or v != defaults[k]}


def scaled_side(image_size: int, scale: float) -> int | None:
    """The side a net with NetSpec.input_scale sees its image_size pictures at, never under MIN_IMAGE_SIZE (so every
    net of the table fits every --image-size); None at full size."""
    side = max(MIN_IMAGE_SIZE, round(image_size * scale))
    return None if side >= image_size else side


def is_chain_layer(layer: str) -> bool:
    """A ReLU layer of the extra conv chain (chain1, chain2, ...), by the name HW4Net gives it."""
    return layer.startswith("chain")


def spec_conv_side(spec: NetSpec, image_size: int) -> int:
    """The side of the feature map that fc1 flattens: conv 3x3 with the spec's padding, then pool 2, twice."""
    side = scaled_side(image_size, spec.input_scale) or image_size
    for _ in range(2):
        side = (side + 2 * spec.padding - 2) // 2
    if side < 1:
        raise ValueError(f"a net that does not fit its {image_size}x{image_size} pictures")
    return side


def spec_conv_output_size(spec: NetSpec, image_size: int) -> int:
    """fc1's input size (HW4Net.conv_output_size) from the spec alone; a test holds the two equal."""
    return spec.channels[1] * spec_conv_side(spec, image_size) ** 2


def spec_parameter_count(spec: NetSpec, image_size: int, classes: int) -> int:
    """A net's parameter count from its spec alone, so that predict sizes an untrusted weights file's net before
    building anything (a build on the meta device would do, but its first use imports seconds of torch).
    Mirrors HW4Net layer by layer; a test holds it equal to count_parameters of every net of the table."""
    c1, c2 = spec.channels
    chain_block = 9 * c2 * c2 + (2 * c2 if spec.block == "bn" else c2)  # bn: no conv bias, BatchNorm's weight, bias
    widths = [spec_conv_output_size(spec, image_size), *spec.hidden, classes]
    return ((27 * c1 + c1) + (9 * c1 * c2 + c2) + spec.extra_convs * chain_block
            + sum(a * b + b for a, b in zip(widths, widths[1:])))


@dataclass(frozen=True)
class Exercise:
    """What the report and compare need of the exercise in hw4.py, handed to them by its CLI (hw4.exercise) so
    that neither imports hw4: the net table, the figures a run has (FIGURES) and their writers, and whether a
    Results was trained under an earlier row of the table than today's."""

    nets: Mapping[str, NetSpec]
    figures: Sequence[Any] = ()
    write_run_figures: Callable[..., None] | None = None
    write_net_figures: Callable[..., None] | None = None
    spec_changed: Callable[[Any], bool] = lambda r: False

    def label(self, name: str) -> str:
        """How figures and the report name a net: its table label."""
        return self.nets[name].label if name in self.nets else name


# =============================================================================
# Metrics: what a run records per epoch and per 100 iterations
# =============================================================================

@dataclass(frozen=True)
class Unit:
    """How a difference of a metric prints and which axis draws it: stored values times scale, at digits
    decimals, followed by suffix ('+1.2 points', '+0.117 nats')."""

    name: str      # the axis a difference is drawn on ("accuracy points"); one panel of claims.png per unit
    scale: float
    digits: int
    suffix: str


POINTS = Unit("accuracy points", 100.0, 1, " points")


NATS = Unit("nats", 1.0, 3, " nats")


@dataclass(frozen=True)
class Metric:
    """One metric, defined once: its key (the pickles' train_<key>/val_<key>), how it prints on
    the epoch line, its axis label, its words and unit in the report, and its per-sample value from
    (logits, labels). An epoch value or a 100-iteration point is the mean of the per-sample values."""

    key: str
    short: str
    axis: str
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    words: str = ""                # how the report names it ("best val accuracy")
    unit: Unit = NATS              # a difference of it, as the report prints and draws it
    percent: bool = False          # the report prints it as a percentage
    picks_best: bool = False       # its val value picks the best epoch (one metric has it)
    higher_is_better: bool = True


def per_sample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def per_sample_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == labels).double()


CROSS_ENTROPY = Metric("cross_entropy", "loss", "cross-entropy", per_sample_cross_entropy, "cross-entropy", NATS,
                       higher_is_better=False)


ACCURACY = Metric("class_acc", "acc", "classification accuracy", per_sample_accuracy, "accuracy", POINTS, percent=True,
                  picks_best=True)


METRICS = (CROSS_ENTROPY, ACCURACY)


WINDOW_STEPS = 100  # the original logged every 100 iterations of batch 4


VAL_CHUNK = 256  # validation has no optimizer step, so it runs in large chunks


DEAD_UNIT_IMAGES = VAL_CHUNK  # dead units are counted on the first (class-mixed) val chunk


def series_key(split: str, metric: Metric, clean: bool = False) -> str:
    """The one place a series is named: train_<key> and val_<key> (the original's pickle keys), and
    train_clean_<key> for the training images measured in eval mode at an epoch's end."""
    return f"{split}_{'clean_' if clean else ''}{metric.key}"


def metric_keys() -> list[str]:
    """train_<key> and val_<key> of every metric: the histories' and the pickles' series."""
    return [series_key(split, m) for split in SPLITS for m in METRICS]


def clean_train_keys() -> list[str]:
    """train_clean_<key> of every metric: the training images measured like val, at each epoch's end."""
    return [series_key("train", m, clean=True) for m in METRICS]


def diverged_epoch(epoch_values: dict[str, list[float]]) -> int | None:
    """The first epoch (1-based) in which a training metric stopped being a finite number."""
    train = [epoch_values[k] for k in (series_key("train", m) for m in METRICS) if k in epoch_values]
    for e, row in enumerate(zip(*train), 1):
        if not all(math.isfinite(v) for v in row):
            return e
    return None


# =============================================================================
# Results: one typed record per net and training seed, and the machine that made it
# =============================================================================

HARDEST_PER_CLASS = 4


CHANCE_FACTOR = 1.5  # a net whose train accuracy never passes 1.5 x chance did not learn


def learned_in(train_acc: Sequence[float], classes: int) -> bool:
    """The one rule for whether a net learned: its train accuracy passed CHANCE_FACTOR x chance at some epoch."""
    return max((v for v in train_acc if math.isfinite(v)), default=0.0) >= CHANCE_FACTOR / classes


HARD_IMAGE_FIELDS = {"label": str, "predicted": str, "loss": (int, float), "image_id": int, "path": str,
                     "also_shows": list, "val_position": int}


@dataclass
class HardImage:
    """A val image with one of the highest losses of its class at the best epoch."""

    label: str
    predicted: str
    loss: float
    image_id: int
    path: str
    also_shows: list[str]
    val_position: int  # where it sits in SubsetTensors.val_x

    def to_original(self) -> dict:
        return {"class": self.label, "predicted": self.predicted, "loss": self.loss, "image_id": self.image_id,
                "path": self.path, "also_shows": list(self.also_shows)}


@dataclass
class Results:
    """One net's results for one training seed.

    Nothing time-dependent goes into the pickle, so that a resumed run's pickle is
    byte-identical to an uninterrupted one's; train_time_s goes to metrics.json only.
    """

    net: str
    label: str
    classes: list[str]
    config: dict[str, Any]  # the settings that made these numbers: results_config()
    steps100: dict[str, list[float]]
    epoch: dict[str, list[float]]
    train_clean: dict[str, list[float]]
    train_confusion: np.ndarray
    val_confusion: np.ndarray
    best_epoch: int
    grad_norms: dict[str, list[float]]
    grad_norms_steps100: dict[str, list[float]]
    dead_units: dict[str, list[float]]
    fc1_in_features: int
    params: int
    n_train: int
    n_val: int
    hardest: list[HardImage]
    train_time_s: float = 0.0
    infrastructure: dict[str, Any] = field(default_factory=dict)  # where it trained: infrastructure()
    fingerprint: str = ""  # the run fingerprint it trained under: --resume takes it as finished when it matches
    # per val image (class-mixed val order): its label and the class predicted at the best and the final epoch,
    # for the picture-level tests of a one-seed run; {} for a run saved before hw4 recorded them
    val_predictions: dict[str, list[int]] = field(default_factory=dict)
    # per GRAD_LAYERS layer, Adam's relative update per epoch and per 100 iterations; {} for a run saved before
    update_sizes: dict[str, list[float]] = field(default_factory=dict)
    update_sizes_steps100: dict[str, list[float]] = field(default_factory=dict)
    # the row of the net table it trained under (dataclasses.asdict of its NetSpec): the report names and pairs
    # nets from it, so that a run reads back whatever the table holds today
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def net_spec(self) -> "NetSpec":
        return NetSpec.from_record(self.spec)

    @classmethod
    def from_json(cls, blob: dict) -> "Results":
        """Back from a net entry of metrics.json (dataclasses.asdict of a Results) that read_metrics_json has
        upgraded to the current format and check_results_entry has checked, for `hw4.py report` and --resume."""
        fields = {f.name: blob[f.name] for f in dataclasses.fields(cls) if f.name in blob}
        for key in ("train_confusion", "val_confusion"):
            fields[key] = np.asarray(blob[key], dtype=np.int64)
        fields["hardest"] = [HardImage(**{k: h[k] for k in HARD_IMAGE_FIELDS}) for h in blob["hardest"]]
        restore_nan = lambda v: math.nan if v is None else v  # noqa: E731 (JSON wrote NaN as null)
        for key in ("steps100", "epoch", "train_clean", "grad_norms", "grad_norms_steps100", "dead_units",
                    "update_sizes", "update_sizes_steps100"):
            fields[key] = map_leaves(blob[key], restore_nan)
        return cls(**fields)

    def val_correct(self, epoch: str) -> np.ndarray | None:
        """Per val image, whether the net got it right at the "best" or "final" epoch; None when not recorded."""
        if epoch not in self.val_predictions:
            return None
        return np.asarray(self.val_predictions[epoch]) == np.asarray(self.val_predictions["labels"])

    @property
    def clean_train_recorded(self) -> bool:
        return bool(self.train_clean)

    def series(self, split: str, metric: Metric, clean: bool = False) -> list[float] | None:
        """One per-epoch series (series_key), or None when this run did not record it (a metric added to
        METRICS after it trained). A run saved before train_clean existed answers the eval-mode train
        series with the running one."""
        if clean and not self.train_clean:
            clean = False
        found = (self.train_clean if clean else self.epoch).get(series_key(split, metric, clean))
        return found if found else None

    def missing_series(self) -> list[str]:
        """The per-epoch series the current code records and this run lacks (it trained before they existed)."""
        wanted = [*metric_keys(), *(clean_train_keys() if self.train_clean else [])]
        return [k for k in wanted if not self.epoch.get(k) and not self.train_clean.get(k)]

    def best(self, split: str, metric: Metric, clean: bool = False) -> float:
        """A series' best finite value over the epochs (the highest, or the lowest for a loss); NaN when the
        run did not record it."""
        values = [v for v in self.series(split, metric, clean) or () if math.isfinite(v)]
        return (max if metric.higher_is_better else min)(values, default=math.nan)

    def final(self, split: str, metric: Metric, clean: bool = False) -> float:
        """A series' last finite value; NaN when the run did not record it."""
        return next((v for v in reversed(self.series(split, metric, clean) or ()) if math.isfinite(v)), math.nan)

    @property
    def gap(self) -> float:
        """Final train minus final val accuracy, both in eval mode."""
        return self.final("train", ACCURACY, clean=True) - self.final("val", ACCURACY)

    @property
    def train_seed(self) -> int:
        return self.config["train_seed"]

    @property
    def machine(self) -> str | None:
        return machine_of(self.infrastructure)

    @property
    def epochs(self) -> int:
        return len(self.epoch[series_key("val", ACCURACY)])

    @property
    def at_chance(self) -> bool:
        """Train accuracy never rose clearly above chance: the net did not learn."""
        return not learned_in(self.series("train", ACCURACY) or (), len(self.classes))

    @property
    def diverged_epoch(self) -> int | None:
        return diverged_epoch(self.epoch)



def hw4_commit() -> str | None:
    """hw4's git commit, with '-dirty' when any of its programs (hw4*.py) differs from it; None outside a git
    checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "hw4*.py"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_identity() -> dict[str, Any]:
    """The CPU type as precisely as the OS and torch tell it: the model name, the vendor's family and model
    numbers (Linux: /proc/cpuinfo; two EPYC types share the name "AMD EPYC" and differ here) and the vector
    kernels torch picked. Where the OS does not say, platform's answer and None for the numbers."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block is enough: one machine, one CPU type
            fields.setdefault(key.strip(), value.strip())
    number = lambda key: int(fields[key]) if fields.get(key, "").isdigit() else None  # noqa: E731
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine() or "unknown",
            "cpu_family": number("cpu family"), "cpu_model": number("model"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


@functools.lru_cache(maxsize=None)
def infrastructure(device: torch.device, threads: int) -> dict[str, Any]:
    """Where the numbers were made: CPU float summation order, kernels and library versions change them
    (another x86 CPU gives other digits from epoch 1). Saved at training, never at `report`. On a GPU the
    CUDA and cuDNN versions too: their kernels decide the digits there."""
    gpu = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()} if device.type == "cuda" else {}
    return {"device": device.type, **cpu_identity(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": str(torch.__version__), "python": platform.python_version(), "os": platform.system(),
            "threads": threads, "hw4_commit": hw4_commit(), **gpu}


def machine_of(infra: dict[str, Any]) -> str | None:
    """The machine type that decides a net's floating-point digits, beside its settings: the CPU model and
    torch build, or the GPU model with its CUDA and cuDNN versions; None when the run did not record it.
    Two nets of one seed are paired in the report only when this is the same for both."""
    if not infra:
        return None
    if infra.get("gpu"):
        return (f"{infra['gpu']} (CUDA {infra.get('cuda') or '?'}, cuDNN {infra.get('cudnn') or '?'}), "
                f"torch {infra.get('torch')}")
    return f"CPU {cpu_type_text(infra)}, torch {infra.get('torch')}"


def cpu_type_text(infra: dict[str, Any], *extra: str) -> str:
    """The CPU type as recorded, extra facts inside its parentheses: 'AMD EPYC (family 25, model 17, AVX512)',
    or the model name alone for runs saved before hw4 recorded the numbers (two types of one name look alike)."""
    facts = ([f"family {infra['cpu_family']}", f"model {infra.get('cpu_model')}", str(infra.get("cpu_capability"))]
             if infra.get("cpu_family") is not None else []) + list(extra)
    return f"{infra.get('cpu')} ({', '.join(facts)})" if facts else str(infra.get("cpu"))


@dataclass(frozen=True)
class DatasetFacts:
    """What the report needs of the dataset, saved in every run's metrics.json so that `hw4.py report`
    needs neither the dataset nor the checkpoints."""

    source: str                            # "coco" (annotations) or "image_folders"
    classes: list[str]
    counts: dict[str, dict[str, int]]      # split -> class -> images
    exclusive: bool                        # shared or multi-class pictures were left out
    shared: dict[str, Any] | None          # image_folders: pictures in two class folders or in both splits
    val_also_shows: dict[str, dict[str, int]]  # val class -> other class -> its val images that also show it

    @classmethod
    def from_manifest(cls, manifest: dict) -> "DatasetFacts":
        classes = list(manifest["classes"])
        also = {a: {b: 0 for b in classes if b != a} for a in classes}
        for e in manifest["entries"]:
            if e["split"] == "val":
                for b in e.get("also_shows") or ():
                    also[e["class"]][b] = also[e["class"]].get(b, 0) + 1
        shared = manifest.get("shared_pictures")
        return cls(manifest.get("source", "coco"), classes, manifest["counts"], bool(manifest["config"]["exclusive"]),
                   {k: v for k, v in shared.items() if k != "pictures"} if shared else None, also)

    @classmethod
    def from_json(cls, blob: dict) -> "DatasetFacts":
        return cls(**{f.name: blob[f.name] for f in dataclasses.fields(cls)})


# =============================================================================
# Reading a run back: metrics.json's one reader, its schema and migration, a finished run's seeds
# =============================================================================

MAX_EPOCHS = 10_000  # far above any run hw4 is meant for; bounds what report draws
METRICS_MAX_BYTES = 64 * 2 ** 20  # a seed of all 18 nets at 15 epochs, predictions included, is about 1 MB


def nesting_depth(obj: Any, limit: int) -> int:
    """How deep containers nest (iteratively, shared and cyclic parts counted once), stopping past limit."""
    deepest, seen, stack = 0, set(), [(obj, 1)]
    while stack and deepest <= limit:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple, set, frozenset)) and id(item) not in seen:
            seen.add(id(item))
            deepest = max(deepest, depth)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


JSON_MAX_DEPTH = 32  # hw4's metrics.json nests 5 deep; every reader below walks it recursively


def read_metrics_json(path: Path) -> dict:
    """The one reader of a metrics.json that hw4 wrote (or that came with a cloned run): bounded in size, parsed,
    and of METRICS_FORMAT (check_format). Any fault is one line that names the file."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UserError(f"{path} is not a regular file; pass the --out folder of a finished hw4 run")
        if size > METRICS_MAX_BYTES:
            raise UserError(f"{path} is {size / 2 ** 20:.0f} MB, over the {METRICS_MAX_BYTES // 2 ** 20} MB an hw4 "
                            "metrics.json can reach; pass the --out folder of a finished hw4 run")
        blob = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path} not found: pass the --out folder of a finished hw4 run") from None
    except (OSError, ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise UserError(f"{path} is not readable JSON ({why}); pass the --out folder of a finished hw4 run") from None
    if nesting_depth(blob, JSON_MAX_DEPTH) > JSON_MAX_DEPTH:
        raise UserError(f"{path} nests deeper than {JSON_MAX_DEPTH} levels, and hw4 writes 5; pass the --out folder of "
                        "a finished hw4 run")
    if not isinstance(blob, dict) or not isinstance(blob.get("nets"), dict) or not blob["nets"]:
        raise UserError(f"{path} is not the metrics.json of a finished hw4 run (no nets); pass another folder")
    return check_format(blob, path)


def check_format(blob: dict, path: Path) -> dict:
    """A metrics.json of another format is refused in one line: every committed run is of METRICS_FORMAT, and a
    run of an older one is retrained (finished_results then trains its nets again) or reported by the hw4 that
    wrote it; a newer one needs a newer hw4."""
    version = blob.get("format", 1)
    if type(version) is not int or version > METRICS_FORMAT or version < 1:
        raise UserError(f"{path}: format {str(version)[:20]} is not the one this hw4 reads ({METRICS_FORMAT}); "
                        "update hw4")
    if version < METRICS_FORMAT:
        raise UserError(f"{path}: format {version} is an earlier hw4's, which this one no longer reads (it reads "
                        f"{METRICS_FORMAT}); rerun its training command with --resume into a new --out, or report it "
                        "with the hw4 commit that trained it")
    return blob


class SchemaError(ValueError):
    """A field of an untrusted metrics.json that is not what hw4 writes: its dotted name and what is wrong."""


def schema(ok: bool, field: str, what: str) -> None:
    if not ok:
        raise SchemaError(f"{field} {what}")


def is_int(v: Any) -> bool:
    return type(v) is int


def is_number(v: Any) -> bool:
    return type(v) in (int, float)


COUNT_MAX = 2 ** 53  # above it a count is no longer exact as a float; far above any run's pictures
NORM_MAX = 1e30  # a gradient norm or update size: finite, non-negative, below what float32 training can reach
Range = tuple[float, float]
FRACTION: Range = (0.0, 1.0)
NON_NEGATIVE: Range = (0.0, NORM_MAX)


def metric_ranges() -> dict[str, Range]:
    """The valid range of each metric's series, by its series keys: a fraction for a percentage (accuracy),
    else non-negative (a loss)."""
    return {series_key(split, m, clean): FRACTION if m.percent else NON_NEGATIVE
            for m in METRICS for split in SPLITS for clean in (False, True) if not (clean and split == "val")}


def check_series(value: Any, field: str, length: int | None, valid: Range | None = None) -> int:
    """A list of numbers (null for a NaN JSON could not hold), of `length` when given, each finite and in the
    valid range when one is given; its length."""
    schema(isinstance(value, list), field, "is not a list")
    schema(length is None or len(value) == length, field, f"has {len(value)} values, not {length}")
    for v in value:
        schema(v is None or is_number(v), field, "holds something other than numbers")
        schema(valid is None or v is None or math.isfinite(v) and valid[0] <= v <= valid[1], field,
               f"holds {v}, outside {valid[0]:g}..{valid[1]:g}" if valid else "")
    return len(value)


def check_series_dict(value: Any, field: str, length: int | None, required: Sequence[str] = (),
                      valid: Range | dict[str, Range] | None = None) -> None:
    """An object of series: valid is one range for all, or the range per key (a key without one is unchecked)."""
    schema(isinstance(value, dict), field, "is not an object")
    for key in required:
        schema(key in value, f"{field}.{key}", "is missing")
    for key, series in value.items():
        check_series(series, f"{field}.{str(key)[:40]}", length, valid.get(key) if isinstance(valid, dict) else valid)


WATCHED_LAYERS = ("conv1", "last_conv", "fc1")  # the layers whose gradients and updates a run records (GRAD_LAYERS)


def check_same_lengths(series: dict, keys: Sequence[str], field: str) -> None:
    """The series of these keys that are present hold one value each at the same points: equally long."""
    lengths = {k: len(series[k]) for k in keys if k in series}
    schema(len(set(lengths.values())) <= 1, field, "has series of different lengths ("
           + ", ".join(f"{k} {n}" for k, n in lengths.items()) + ") where they share their points")


def check_confusion(value: Any, field: str, classes: int) -> None:
    schema(isinstance(value, list) and len(value) == classes and all(
        isinstance(row, list) and len(row) == classes and all(is_int(v) and 0 <= v <= COUNT_MAX for v in row)
        for row in value),
        field, f"is not a {classes}x{classes} matrix of counts (one row and column per class)")


INFRASTRUCTURE_FIELDS = {"device": str, "cpu": str, "cpus": (int, type(None)), "gpu": (str, type(None)),
                         "torch": str, "python": str, "os": str, "threads": int, "hw4_commit": (str, type(None))}


INFRASTRUCTURE_OPTIONAL = {"cpu_family": (int, type(None)), "cpu_model": (int, type(None)),  # since format 4
                           "cpu_capability": (str, type(None))}


CONFIG_FIELDS = {"train_seed": int, "image_size": int, "batch_size": int, "epochs": int, "lr": (int, float),
                 "betas": list}




def check_fields(value: Any, field: str, types: dict[str, Any], optional: bool = False) -> None:
    schema(isinstance(value, dict), field, "is not an object")
    for key, kind in types.items():
        if optional and key not in value:
            continue
        schema(key in value, f"{field}.{key}", "is missing")
        v = value[key]
        schema(isinstance(v, bool) if kind is bool else isinstance(v, kind) and not isinstance(v, bool),
               f"{field}.{key}", "has the wrong type")


def check_infrastructure(value: Any, field: str) -> None:
    """An infrastructure() record, as metrics.json and a checkpoint hold it: its fields and types, and plain text
    only (REPORT.md shows it as it is)."""
    check_fields(value, field, INFRASTRUCTURE_FIELDS)
    check_fields(value, field, INFRASTRUCTURE_OPTIONAL, optional=True)
    for key, v in value.items():
        schema(not isinstance(v, str) or is_plain_text(v), f"{field}.{str(key)[:40]}",
               "is not plain text (printable, no Markdown or HTML)")


def is_net_name(name: str) -> bool:
    """A key of the net table: what a file name (results_<name>.pkl, <name>.pt) and --nets can hold."""
    return re.fullmatch(r"[a-z][a-z0-9]{0,39}", name) is not None


SPEC_WIDTH_MAX = 4096  # channels and hidden widths a recorded spec may hold: far above any row, bounds the count
SPEC_DEPTH_MAX = 64    # extra convs and hidden layers


def check_spec(value: Any, field: str) -> NetSpec:
    """A recorded NetSpec: fields of today's NetSpec only, each of its type and in a range a net can be built
    with; names plain text. Returned typed. A field that NetSpec gained after the run trained is absent and takes
    its default (a new field enters the table at its default, which keeps every committed net's numbers)."""
    schema(isinstance(value, dict) and "label" in value and set(value) <= {f.name for f in dataclasses.fields(NetSpec)},
           field, "does not hold the fields of a net spec")
    width = lambda v: is_int(v) and 1 <= v <= SPEC_WIDTH_MAX  # noqa: E731
    checks = {
        "label": is_plain_text, "about": is_plain_text,
        "padding": lambda v: is_int(v) and 0 <= v <= 16,
        "channels": lambda v: isinstance(v, list) and len(v) == 2 and all(map(width, v)),
        "extra_convs": lambda v: is_int(v) and 0 <= v <= SPEC_DEPTH_MAX,
        "block": lambda v: isinstance(v, str) and re.fullmatch(r"[a-z_0-9]{1,20}", v) is not None,
        "init": lambda v: isinstance(v, str) and re.fullmatch(r"[a-z_0-9]{1,20}", v) is not None,
        "hidden": lambda v: isinstance(v, list) and len(v) <= SPEC_DEPTH_MAX and all(map(width, v)),
        "dropout": lambda v: is_number(v) and 0 <= v < 1,
        "augment": lambda v: type(v) is bool,
        "train_fraction": lambda v: is_number(v) and 0 < v <= 1,
        "noise_std": lambda v: is_number(v) and 0 <= v <= 10,
        "input_scale": lambda v: is_number(v) and 0 < v <= 1,
        "pickle_name": lambda v: v is None or isinstance(v, str) and re.fullmatch(r"results\d{1,2}\.pkl", v),
        "base": lambda v: v is None or isinstance(v, str) and is_net_name(v),
        "remedy": lambda v: v is None or is_plain_text(v),
    }
    for name, v in value.items():
        schema(bool(checks[name](v)), f"{field}.{name}", "is not what a net spec holds")
    return NetSpec.from_record(value)


def check_results_entry(key: str, entry: Any) -> None:
    """One net's entry as Results writes it: types, shapes, lengths and their consistency (the classes against
    the confusion matrices, the epochs across every per-epoch series, the parameter count against its recorded
    spec)."""
    field = f"nets.{key}"
    schema(is_net_name(key), field, "is not a net name (lower-case letters and digits)")
    schema(isinstance(entry, dict) and entry.get("net") == key, f"{field}.net", "does not name the same net")
    spec = check_spec(entry.get("spec"), f"{field}.spec")
    classes = entry.get("classes")
    schema(isinstance(classes, list) and 2 <= len(classes) <= 1000 and all(map(is_class_name, classes))
           and len(set(classes)) == len(classes), f"{field}.classes", "is not a list of 2 to 1,000 distinct names "
           "(plain text: no control characters, /, <, >, |, [, ], `, * or #)")
    check_fields(entry.get("config"), f"{field}.config", CONFIG_FIELDS)
    for name in ("image_folders", "ann_file", "image_dir"):  # shown in REPORT.md inside `...`
        value = entry["config"].get(name)
        schema(value is None or isinstance(value, str) and value.isprintable() and "`" not in value,
               f"{field}.config.{name}", "is not a plain path")
    ranges = metric_ranges()
    epochs = check_series(entry["epoch"].get("val_class_acc") if isinstance(entry.get("epoch"), dict) else None,
                          f"{field}.epoch.val_class_acc", None, FRACTION)
    schema(epochs <= MAX_EPOCHS, f"{field}.epoch", f"has {epochs:,} epochs, more than the {MAX_EPOCHS:,} hw4 trains")
    schema(epochs >= 1, f"{field}.epoch", "has no epochs")
    check_series_dict(entry["epoch"], f"{field}.epoch", epochs, ("train_class_acc", "train_cross_entropy",
                                                                 "val_cross_entropy"), ranges)
    check_series_dict(entry.get("steps100"), f"{field}.steps100", None, (), ranges)
    for split in SPLITS:  # one split's series are measured at the same iterations
        check_same_lengths(entry["steps100"], [series_key(split, m) for m in METRICS], f"{field}.steps100")
    if entry.get("train_clean"):
        check_series_dict(entry["train_clean"], f"{field}.train_clean", epochs, (), ranges)
    check_series_dict(entry.get("grad_norms"), f"{field}.grad_norms", epochs, WATCHED_LAYERS, NON_NEGATIVE)
    check_series_dict(entry.get("grad_norms_steps100"), f"{field}.grad_norms_steps100", None, (), NON_NEGATIVE)
    check_same_lengths(entry["grad_norms_steps100"], list(entry["grad_norms_steps100"]), f"{field}.grad_norms_steps100")
    check_series_dict(entry.get("dead_units"), f"{field}.dead_units", epochs, ("conv1",), FRACTION)
    if entry.get("update_sizes"):
        check_series_dict(entry["update_sizes"], f"{field}.update_sizes", epochs, WATCHED_LAYERS, NON_NEGATIVE)
    check_series_dict(entry.get("update_sizes_steps100", {}), f"{field}.update_sizes_steps100", None, (), NON_NEGATIVE)
    check_same_lengths(entry.get("update_sizes_steps100", {}), list(entry.get("update_sizes_steps100", {})),
                       f"{field}.update_sizes_steps100")
    for split in SPLITS:
        check_confusion(entry.get(f"{split}_confusion"), f"{field}.{split}_confusion", len(classes))
    schema(is_int(entry.get("best_epoch")) and 1 <= entry["best_epoch"] <= epochs, f"{field}.best_epoch",
           f"is not an epoch from 1 to {epochs}")
    for name in ("fc1_in_features", "params", "n_train", "n_val"):
        schema(is_int(entry.get(name)) and 0 <= entry[name] <= COUNT_MAX, f"{field}.{name}", "is not a count")
    for split in SPLITS:  # a confusion matrix counts every picture the run says it evaluated, once
        schema(sum(map(sum, entry[f"{split}_confusion"])) == entry[f"n_{split}"], f"{field}.{split}_confusion",
               f"does not count the {entry[f'n_{split}']:,} pictures n_{split} says the run evaluated")
    size = entry["config"]["image_size"]
    schema(MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE, f"{field}.config.image_size", "is out of range")
    schema(entry["params"] == spec_parameter_count(spec, size, len(classes)), f"{field}.params",
           f"is not {spec.label}'s parameter count at {size}x{size}")
    schema(isinstance(entry.get("hardest"), list), f"{field}.hardest", "is not a list")
    for k, hard in enumerate(entry["hardest"]):
        check_fields(hard, f"{field}.hardest[{k}]", HARD_IMAGE_FIELDS)
    time_s = entry.get("train_time_s", 0.0)
    schema(is_number(time_s) and 0 <= time_s < NORM_MAX, f"{field}.train_time_s", "is not a time in seconds")
    config = entry["config"]
    schema(1 <= config["batch_size"] <= COUNT_MAX and 1 <= config["epochs"] <= MAX_EPOCHS, f"{field}.config",
           "has a batch size or epoch count no run trains with")
    schema(math.isfinite(config["lr"]) and config["lr"] > 0 and len(config["betas"]) == 2
           and all(is_number(b) and 0 <= b < 1 for b in config["betas"]), f"{field}.config",
           "has a learning rate or Adam betas no run trains with")
    schema(0 <= config["train_seed"] <= MAX_SEED, f"{field}.config.train_seed", "is not a training seed")
    if entry.get("infrastructure"):
        check_infrastructure(entry["infrastructure"], f"{field}.infrastructure")
    schema(is_plain_text(entry.get("label")), f"{field}.label", "is not plain text (printable, no Markdown or HTML)")
    schema(isinstance(entry.get("fingerprint", ""), str), f"{field}.fingerprint", "is not a string")
    check_val_predictions(entry.get("val_predictions", {}), f"{field}.val_predictions", entry["n_val"], len(classes))
    check_predictions_agree(entry, f"{field}.val_predictions")


def check_val_predictions(value: Any, field: str, n_val: int, classes: int) -> None:
    """{} (not recorded), or labels and best-epoch classes (and final-epoch ones) of every val image."""
    schema(isinstance(value, dict), field, "is not an object")
    if not value:
        return
    for key in ("labels", "best"):
        schema(key in value, f"{field}.{key}", "is missing")
    for key, series in value.items():
        schema(key in ("labels", "best", "final"), f"{field}.{str(key)[:40]}", "is not labels, best or final")
        schema(isinstance(series, list) and len(series) == n_val and all(is_int(v) and 0 <= v < classes
                                                                         for v in series),
               f"{field}.{key}", f"is not one class index (0..{classes - 1}) per val image ({n_val})")


def check_predictions_agree(entry: dict, field: str) -> None:
    """The per-picture predictions are the numbers the entry records: at the best epoch they count up to its val
    confusion matrix, at the final one to its last val accuracy. Forged labels or predictions fail here."""
    preds = entry.get("val_predictions") or {}
    if not preds:
        return
    labels, classes = np.asarray(preds["labels"]), len(entry["classes"])
    counted = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counted, (labels, np.asarray(preds["best"])), 1)
    schema(counted.tolist() == entry["val_confusion"], f"{field}.best",
           "does not count up to val_confusion, the best epoch's matrix it must give")
    if "final" in preds:
        final = float(np.mean(np.asarray(preds["final"]) == labels))
        last = entry["epoch"]["val_class_acc"][-1]
        schema(last is not None and abs(final - last) < 1e-9, f"{field}.final",
               "does not give the final val accuracy recorded in epoch.val_class_acc")


def check_same_val_labels(entries: dict[str, Any]) -> None:
    """Every net of one seed saw the same val pictures in the same order: their recorded labels agree."""
    recorded = {key: e["val_predictions"]["labels"] for key, e in entries.items() if e.get("val_predictions")}
    first = next(iter(recorded), None)
    for key, labels in recorded.items():
        schema(labels == recorded[first], f"nets.{key}.val_predictions.labels",
               f"differ from nets.{first}'s: every net of a seed is evaluated on the same val pictures")


def check_dataset_facts(value: Any, classes: list[str]) -> None:
    check_fields(value, "dataset", {"source": str, "classes": list, "counts": dict, "exclusive": bool,
                                    "val_also_shows": dict})
    schema(value["classes"] == classes, "dataset.classes", "are not the nets' classes")
    schema(all(isinstance(value["counts"].get(s), dict)
               and all(is_int(n) and 0 <= n <= COUNT_MAX for n in value["counts"][s].values()) for s in SPLITS),
           "dataset.counts", "is not a count per split and class")
    schema(is_plain_text(value["source"]), "dataset.source", "is not plain text (printable, no Markdown or HTML)")
    schema(value.get("shared") is None or isinstance(value["shared"], dict), "dataset.shared", "is not an object")


def seed_results(path: Path) -> tuple[dict[str, Results], DatasetFacts | None]:
    """A seed's (or a one-seed run's) metrics.json as typed Results and DatasetFacts, every field checked."""
    blob = read_metrics_json(path)
    try:
        for key, entry in blob["nets"].items():
            check_results_entry(str(key), entry)
        check_same_val_labels(blob["nets"])
        classes = next(iter(blob["nets"].values()))["classes"]
        schema(all(e["classes"] == classes for e in blob["nets"].values()), "nets", "disagree on the classes")
        if blob.get("dataset"):
            check_dataset_facts(blob["dataset"], classes)
    except SchemaError as exc:
        raise UserError(f"{path}: {exc}; it is not what hw4 writes (rerun the training command with --resume to "
                        "rewrite it)") from None
    facts = DatasetFacts.from_json(blob["dataset"]) if blob.get("dataset") else None
    return {name: Results.from_json(entry) for name, entry in blob["nets"].items()}, facts


def is_seed_folder(path: Path) -> bool:
    """seed_<s> as hw4 names it (seed_0005 is not a second seed 5), a real folder: a symlink is refused, so
    that `report` never writes through one to somewhere else."""
    digits = path.name[5:]
    if not (path.name.startswith("seed_") and digits.isascii() and digits.isdigit() and digits == str(int(digits))):
        return False
    if path.is_symlink():
        raise UserError(f"{path} is a symlink; a run's seed folders must be real folders inside it (copy it in)")
    return path.is_dir()


def check_pooled_settings(seed_outs: Sequence[Path], runs_by_seed: Sequence[dict[str, Results]]) -> None:
    """Seeds are pooled only when every setting but the training seed is the same (the dataset's digest
    included), and each seed_<s> folder holds nets trained with seed s."""
    first: tuple[Path, dict] | None = None
    for out, runs in zip(seed_outs, runs_by_seed):
        for name, r in runs.items():
            if out.name.startswith("seed_") and r.train_seed != int(out.name[5:]):
                raise UserError(f"{out / 'metrics.json'}: {name} was trained with seed {r.train_seed}, not "
                                f"{out.name[5:]}; put each seed's nets in its own seed_<s> folder")
            settings = {k: r.config.get(k) for k in (*OWN_SETTINGS, "dataset")}  # what changes numbers
            if first is None:
                first = (out, settings)
            elif settings != first[1]:
                keys = sorted(k for k in {*settings, *first[1]} if settings.get(k) != first[1].get(k))
                raise UserError(f"{out / 'metrics.json'}: {name} was trained with other settings than "
                                f"{first[0]} ({', '.join(map(str, keys[:4]))}); a run pools only seeds of one setting, "
                                "so move that folder out")
    shapes: dict[str, tuple[Path, dict]] = {}  # per net: where its 100-iteration series were first seen, their lengths
    for out, runs in zip(seed_outs, runs_by_seed):
        for name, r in runs.items():
            lengths = {k: len(v) for k, v in (*r.steps100.items(), *r.grad_norms_steps100.items())}
            seen = shapes.setdefault(name, (out, lengths))
            if lengths != seen[1]:
                raise UserError(f"{out / 'metrics.json'}: {name}'s 100-iteration series are not as long as in "
                                f"{seen[0]}, though both trained with one setting; it is not what hw4 writes (rerun "
                                "the training command with --resume to rewrite it)")


def finished_seed_folders(out: Path) -> list[Path]:
    """The seed_<s> folders of an interrupted --seeds run in which every net of the run finished, in seed
    order; the others are named on the console and left out."""
    folders = sorted((p for p in out.glob("seed_*") if is_seed_folder(p)), key=lambda p: int(p.name[5:]))
    nets = {}
    for folder in folders:  # metrics.json is written whole (atomically): absent is unfinished, unreadable an error
        if (folder / "metrics.json").exists():
            nets[folder] = list(read_metrics_json(folder / "metrics.json")["nets"])
    if not nets:
        return []
    most = max(nets.values(), key=len)
    done = [f for f in folders if nets.get(f) == most]
    for folder in folders:
        if folder not in done:
            lacking = ", ".join(n for n in most if n not in nets.get(folder, []))
            print(f"note: {folder} is unfinished (it lacks {lacking}); the report leaves it out")
    return done


def load_finished_run(out: Path) -> tuple[list[Path], list[dict[str, Results]], DatasetFacts | None]:
    """The seed folders of a finished run, its Results per seed and net, and its dataset facts. A --seeds run
    that was stopped before its summary was written, or that a stopped `--seeds N --resume` grew after it, is
    reported over the seeds in which every net finished."""
    finished = finished_seed_folders(out)
    if not (out / "metrics.json").exists() and len(finished) > 1:
        seed_outs = finished
    else:
        top = read_metrics_json(out / "metrics.json")
        seeded = isinstance(top.get("seeds"), int) and not isinstance(top.get("seeds"), bool)
        seed_outs = [out]
        if seeded:  # the seeds the summary lists, as folders of this run only: never a path taken from the file
            first = next(iter(top["nets"].values()))
            listed = first.get("seeds") if isinstance(first, dict) else None
            if (not isinstance(listed, list) or not all(type(s) is int and 0 <= s <= MAX_SEED for s in listed)
                    or len(set(listed)) != len(listed)):  # a seed listed twice would be pooled twice
                raise UserError(f"{out / 'metrics.json'}: its seeds are not a list of distinct training seeds; rerun "
                                "the training command with --resume to rewrite it")
            seed_outs = [out / f"seed_{s}" for s in listed]
            for folder in seed_outs:
                is_seed_folder(folder)
        if seeded and set(seed_outs) < set(finished):  # seeds that finished after the summary was written
            seed_outs = finished
    runs_by_seed, facts = [], None
    for seed_out in seed_outs:
        runs, facts = seed_results(seed_out / "metrics.json")
        runs_by_seed.append(runs)
    check_pooled_settings(seed_outs, runs_by_seed)
    names = list(runs_by_seed[0])
    if any(list(runs) != names for runs in runs_by_seed):
        raise UserError(f"the seed folders of {out} hold different nets; rerun the training command with --resume")
    return seed_outs, runs_by_seed, facts


def recorded(seeds: list[Results], split: str, metric: Metric, steps100: bool = False) -> list[list[float]] | None:
    """One series of every seed (per epoch, or per 100 iterations), or None when a seed did not record it."""
    found = [r.steps100.get(series_key(split, metric)) if steps100 else r.series(split, metric) for r in seeds]
    return found if all(f is not None for f in found) else None


def shown_metrics(runs: Mapping[str, Sequence["Results"]]) -> tuple[Metric, ...]:
    """The METRICS that some net of the run recorded: a metric added after a run trained gets no column or panel in
    that run's report and figures, which stay as they were; one that some nets recorded is shown, and said to be
    not recorded for the others."""
    return tuple(m for m in METRICS if any(r.series("val", m) is not None for seeds in runs.values() for r in seeds))


METRICS_FORMAT = 5  # a run's metrics.json: what `hw4.py report` reads back; bump when Results changes


OWN_SETTINGS = ("batch_size", "epochs", "lr", "betas", "threads", "dry_run", "image_size", "classes")


# =============================================================================
# Measures and wording that the figures, the report and compare share
# =============================================================================

@dataclass(frozen=True)
class Measure:
    """One number per Results that the report compares over seeds: the best or final value of a series
    (kind "best" or "final"), the eval-mode train - val accuracy gap ("gap") or the best epoch ("best_epoch")."""

    kind: str
    split: str = "val"
    metric: Metric = ACCURACY
    clean: bool = False  # the training images measured in eval mode at an epoch's end

    def of(self, r: Results) -> float:
        if self.kind == "gap":
            return r.gap
        if self.kind == "best_epoch":
            return r.best_epoch
        return (r.best if self.kind == "best" else r.final)(self.split, self.metric, self.clean)

    def recorded(self, r: Results) -> bool:
        return self.kind in ("gap", "best_epoch") or r.series(self.split, self.metric, self.clean) is not None

    @property
    def name(self) -> str:
        """Its key in a seeds summary's metrics.json: best_val_class_acc, final_train_cross_entropy, gap, ..."""
        if self.kind in ("gap", "best_epoch"):
            return self.kind
        return f"{self.kind}_{series_key(self.split, self.metric, self.clean)}"

    @property
    def words(self) -> str:
        return f"{self.kind} {self.split} {self.metric.words}"

    @property
    def unit(self) -> Unit:
        return POINTS if self.kind == "gap" else self.metric.unit


BEST_VAL, BEST_TRAIN = Measure("best"), Measure("best", "train")


GAP, BEST_EPOCH = Measure("gap"), Measure("best_epoch")


FINAL_TRAIN_CLEAN_ACC = Measure("final", "train", ACCURACY, True)


FINAL_TRAIN_LOSS = Measure("final", "train", CROSS_ENTROPY)


def mean_std(values: Sequence) -> tuple[Any, Any]:
    """Mean and sample standard deviation over the first axis (seeds); std 0 for a single value."""
    arr = np.asarray(values, dtype=np.float64)
    return arr.mean(0), (arr.std(0, ddof=1) if len(arr) > 1 else np.zeros_like(arr[0]))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def seeds_text(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def seed_list_text(seeds: Sequence[int]) -> str:
    """'seed 5', 'seeds 5–7' for a run of consecutive seeds, else 'seeds 5, 7, 9'."""
    seeds = sorted(seeds)
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


# =============================================================================
# Figures: the figure and its atomic write, shared by every figure writer
# =============================================================================

def savefig_atomic(fig, path: Path) -> None:
    """Render to memory, then write with a rename, so no truncated PNG is ever left. Stored with a 256-colour
    palette: a plot of a few line and fill colours reads the same, at about a third of the RGBA bytes (the committed
    runs' figures went from 79 MB to about 27 MB)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with Image.open(buf) as rendered:
        palette = rendered.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    write_bytes_atomic(path, out.getvalue())


def new_figure(*args, **kwargs):
    """A figure on the Agg canvas: no pyplot, no window, works headless. MPLBACKEND is set to agg before
    matplotlib is imported (a bogus value would fail the import after training), and mathtext is off, so a
    class name with '$' or '\\' is drawn as written instead of failing to parse."""
    os.environ["MPLBACKEND"] = "agg"
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["text.parse_math"] = False
    return Figure(*args, **kwargs)
