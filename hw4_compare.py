"""hw4's grading tool: `hw4.py compare PATH...` holds a student's or a TA's numbers (the original's pickles, read
through an allowlisted unpickler, or an hw4 run) against a committed reference run, and writes COMPARE.md, a CSV
and a figure.

Loaded by `hw4.py` only for the compare command. It reads runs through hw4_records and never imports hw4;
the net table reaches it through hw4_report's handed-over Exercise.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hw4_records import (ACCURACY, EXIT_USAGE, MAX_PER_CLASS, OneLineErrorParser, Results, UserError,
                         check_folder_creatable, learned_in, markdown_text, nesting_depth, new_figure, path_argument,
                         path_text, pct, run_lock, savefig_atomic, seeds_text, series_key, terminal_text,
                         write_bytes_atomic)
from hw4_report import (NET1, NET2, NET3, clopper_pearson, load_finished_run, names_text, net_label, net_table,
                        pair_share, recalls, t_quantile_975)

# =============================================================================
# Compare: `hw4.py compare PATH...` holds a submission's numbers (the original's pickles, or an hw4 run)
# against a committed multi-seed reference run, with a stated rule per number, and says what to look at.
# It never trains and reads no dataset. Untrusted pickles go through an allowlist, never pickle.load.
# =============================================================================

DEFAULT_REFERENCE = "results/exercise"
ORIGINAL_PICKLES = {"results1.pkl": NET1, "results2.pkl": NET2, "results3.pkl": NET3}  # the original's file names
SUBMISSION_MAX_BYTES = 64 * 2 ** 20  # a results pickle of 15 epochs is a few kB; hw4's own are under 1 MB
SUBMISSION_MAX_DEPTH = 32  # the original's layout is 3 deep
SUBMISSION_MAX_ELEMENTS = 10 ** 6  # of any array a pickle builds (a 1,000-class confusion matrix), checked first
SERIES_MAX = 10 ** 6  # values in a series: far above any run's epochs or 100-iteration windows
CONFUSION_TOLERANCE = 0.002  # trace/sum against the recorded accuracy: a mean of per-batch accuracies differs a little
CURVE_OUTSIDE_SHARE = 1 / 3  # a curve outside the per-epoch band in over a third of its epochs is a finding


class Refused(pickle.UnpicklingError):
    """An allowlisted global called with what no results pickle holds: its words say what it asked for."""


def bounded_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's array rebuild, for at most SUBMISSION_MAX_ELEMENTS elements: a pickle of a few bytes may not ask for
    gigabytes (the array's own data, which must be in the file, comes after)."""
    from numpy._core import multiarray
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape) \
            or math.prod(shape) > SUBMISSION_MAX_ELEMENTS:
        raise Refused(f"an array of shape {str(shape)[:40]}")
    return multiarray._reconstruct(subtype, shape, dtype)


def real_dtype(*args: Any) -> np.dtype:
    """np.dtype for plain numbers only: no objects, structures or complex numbers (a complex count is no count)."""
    dtype = np.dtype(*args)
    if dtype.kind not in "biuf":
        raise Refused(f"an array of {dtype}")
    return dtype


def latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call as _codecs.encode to carry bytes; only its latin-1 form is allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


@functools.cache
def allowed_pickle_globals() -> dict[tuple[str, str], Any]:
    """The only globals a submission's pickle may name: containers, and numpy arrays, dtypes and scalars
    (under numpy 1's and numpy 2's module names). None of them runs code or allocates beyond the file."""
    import builtins
    import collections
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {("builtins", n): getattr(builtins, n)
                                           for n in ("dict", "list", "tuple", "set", "frozenset")}
    allowed |= {("collections", "OrderedDict"): collections.OrderedDict,
                ("collections", "defaultdict"): collections.defaultdict, ("_codecs", "encode"): latin1_bytes,
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): real_dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed |= {(f"{package}.multiarray", "_reconstruct"): bounded_reconstruct,
                    (f"{package}.multiarray", "scalar"): multiarray.scalar,
                    (f"{package}.numeric", "_frombuffer"): numeric._frombuffer}
    return allowed


class SubmissionUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves a global only from allowed_pickle_globals: anything else (os.system,
    a class's __reduce__, torch's tensor rebuild) is refused before it is looked up, so nothing of it runs."""

    def __init__(self, file: io.BytesIO, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = allowed_pickle_globals().get((module, name))
        if found is None:
            raise UserError(f"{path_text(self.path)}: refused: it asks for {module}.{name}, and a results pickle may "
                            "hold only numbers, strings, lists, dicts and numpy arrays (nothing of it ran); save "
                            "tensors as numbers (.item(), .tolist()) or numpy arrays")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UserError(f"{path_text(self.path)}: refused: it refers to objects outside the file (persistent ids)")


def read_submission_pickle(path: Path) -> Any:
    """A submission's pickle through SubmissionUnpickler, bounded in size and depth; one line on any fault."""
    try:
        if not path.is_file():
            raise UserError(f"{path_text(path)} is not a file; pass results pickles or the folders that hold them")
        with path.open("rb") as f:
            blob = f.read(SUBMISSION_MAX_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path_text(path)} cannot be read ({exc.strerror or exc}); check the path") from None
    if len(blob) > SUBMISSION_MAX_BYTES:
        raise UserError(f"{path_text(path)} is over {SUBMISSION_MAX_BYTES // 2 ** 20} MB, too large for a results "
                        "pickle; pass the pickles the training wrote")
    try:
        obj = SubmissionUnpickler(io.BytesIO(blob), path).load()
    except UserError:
        raise
    except Refused as exc:
        raise UserError(f"{path_text(path)}: refused: it builds {exc}, which no results pickle holds (numbers, at most "
                        f"{SUBMISSION_MAX_ELEMENTS:,} to an array); pass the pickles the training wrote") from None
    except Exception as exc:  # noqa: BLE001 (a malformed pickle raises anything; none of it may escape as a traceback)
        raise UserError(f"{path_text(path)} is not a readable pickle ({type(exc).__name__}); pass the results "
                        "pickles the training wrote") from None
    if nesting_depth(obj, SUBMISSION_MAX_DEPTH) > SUBMISSION_MAX_DEPTH:
        raise UserError(f"{path_text(path)} nests deeper than {SUBMISSION_MAX_DEPTH} levels; a results pickle is "
                        "3 deep")
    return obj


@dataclass(frozen=True, eq=False)
class NetRun:
    """One net of one training run, as compare reads it from an original-format pickle or from hw4's Results:
    per-epoch accuracies and the confusion matrices (rows: true class, columns: predicted)."""

    net: str
    source: str
    train_acc: tuple[float, ...]  # the running accuracy over each epoch's training steps (the original's)
    val_acc: tuple[float, ...]
    clean_train_acc: tuple[float, ...] | None = None  # eval mode after each epoch (hw4's train_clean)
    train_confusion: np.ndarray | None = None
    val_confusion: np.ndarray | None = None
    diverged: int | None = None  # the first epoch whose loss is no longer a finite number

    @classmethod
    def from_results(cls, r: Results, source: str) -> "NetRun":
        clean = r.train_clean.get("train_clean_class_acc")
        return cls(r.net, source, tuple(r.series("train", ACCURACY)), tuple(r.series("val", ACCURACY)),
                   tuple(clean) if clean else None, r.train_confusion, r.val_confusion, r.diverged_epoch)

    @property
    def epochs(self) -> int:
        return len(self.val_acc)

    @property
    def best_val(self) -> float:
        return max((v for v in self.val_acc if math.isfinite(v)), default=math.nan)

    def learned(self, classes: int) -> bool:
        """Results.at_chance's rule: train accuracy rose clearly above chance at some epoch."""
        return learned_in(self.train_acc, classes)

    def gap(self, clean: bool) -> float:
        """Final train minus final val accuracy; train in eval mode (clean) or as the running accuracy."""
        train = self.clean_train_acc if clean else self.train_acc
        return train[-1] - self.val_acc[-1]

    def cat_dog_share(self, classes: Sequence[str]) -> float | None:
        """The share of val errors that are cat taken for dog or dog for cat (the report's pair_share)."""
        m = self.val_confusion
        if m is None or not {"cat", "dog"} <= set(classes) or m.sum() == np.trace(m):
            return None
        return pair_share(m, list(classes), {"cat", "dog"})[0]

    def recalls(self) -> list[float] | None:
        return None if self.val_confusion is None else [float(v) for v in recalls(self.val_confusion)]


def plain_key(key: Any) -> str:
    """A pickle key as the original's code spells it either way: 'val class acc' and 'val_class_acc' agree."""
    return re.sub(r"[\s_]+", "_", str(key).strip().lower())


def plain_dict(obj: Any) -> dict[str, Any] | None:
    return {plain_key(k): v for k, v in obj.items()} if isinstance(obj, dict) else None


def number_series(value: Any, where: str) -> tuple[float, ...]:
    """A per-epoch list of numbers (NaN and infinities kept), of at most SERIES_MAX, counted before any is read."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.size > SERIES_MAX or value.dtype.kind not in "biuf":
            raise UserError(f"{where} is not a list of numbers per epoch")
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value or len(value) > SERIES_MAX:
        raise UserError(f"{where} is not a list of numbers per epoch")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{where} holds something other than numbers") from None


def accuracy_series(value: Any, where: str, unmeasured: bool = False) -> tuple[float, ...]:
    """A per-epoch series of fractions in [0, 1]. No run writes a NaN or infinite accuracy (a diverged run's
    logits still have an argmax); only hw4's eval-mode train series (unmeasured) holds NaN, where not measured."""
    series = number_series(value, where)
    if any(not 0 <= v <= 1 for v in series if not (unmeasured and math.isnan(v))):
        raise UserError(f"{where} holds values outside 0..1 (or not numbers): compare reads accuracies as fractions, "
                        "as the original writes them (divide percentages by 100)")
    return series


def first_non_finite(series: Sequence[float]) -> int | None:
    """The first epoch (1-based) whose value is NaN or infinite: where a loss says the run diverged."""
    return next((e for e, v in enumerate(series, 1) if not math.isfinite(v)), None)


MAX_COUNT = MAX_PER_CLASS * 1000  # more pictures in one cell than any run of up to 1,000 classes evaluates


def confusion_of(value: Any, where: str, classes: int, pictures: int | None) -> np.ndarray | None:
    """A classes x classes matrix of whole, non-negative counts (that add up to `pictures` where the pickle says how
    many it evaluated), or None when the pickle has none."""
    if value is None:
        return None
    square = (value.shape == (classes, classes) and value.dtype.kind in "biuf" if isinstance(value, np.ndarray) else
              isinstance(value, (list, tuple)) and len(value) == classes
              and all(isinstance(row, (list, tuple, np.ndarray)) and len(row) == classes for row in value))
    if not square:  # its shape, before numpy turns a list of shared rows into gigabytes
        raise UserError(f"{where} is not a {classes}x{classes} matrix of whole, non-negative picture counts; pass the "
                        "matrix the training counted")
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where} is not a matrix of counts") from None
    if (m.shape != (classes, classes) or not np.all(np.isfinite(m)) or (m < 0).any() or (m > MAX_COUNT).any()
            or (m != np.rint(m)).any()):
        raise UserError(f"{where} is not a {classes}x{classes} matrix of whole, non-negative picture counts; pass the "
                        "matrix the training counted")
    if pictures is not None and int(m.sum()) != pictures:
        raise UserError(f"{where} counts {int(m.sum()):,} pictures, not the {pictures:,} its pickle says the run "
                        "evaluated; pass the matrix the training counted")
    return m.astype(np.int64)


def picture_count(value: Any) -> int | None:
    """hw4's pickles say how many pictures each split's matrix counts (n_train, n_val); the original's do not."""
    return value if type(value) is int and value >= 0 else None


def net_run_from_pickle(blob: Any, path: Path, net: str, classes: int) -> NetRun:
    """The original's layout ("100steps", "epoch", "confusion matrix"; keys with spaces or underscores), as
    the original's code or hw4 writes it; hw4's pickles add "train_clean" (train accuracy in eval mode)."""
    top, where = plain_dict(blob), path_text(path)
    epoch = plain_dict(top.get("epoch")) if top else None
    if epoch is None or "val_class_acc" not in epoch or "train_class_acc" not in epoch:
        raise UserError(f"{where} is not a results pickle in the original's format (a dict whose \"epoch\" holds "
                        "\"train class acc\" and \"val class acc\"); pass the pickles the training wrote")
    train = accuracy_series(epoch["train_class_acc"], f"{where}: epoch/train class acc")
    val = accuracy_series(epoch["val_class_acc"], f"{where}: epoch/val class acc")
    if len(train) != len(val):
        raise UserError(f"{where}: epoch/train class acc has {len(train)} epochs and val class acc {len(val)}")
    steps = plain_dict(top.get("100steps")) or {}
    for key in ("train_class_acc", "val_class_acc"):  # not compared, but no run writes an accuracy outside 0..1
        if key in steps:
            accuracy_series(steps[key], f"{where}: 100steps/{key.replace('_', ' ')}")
    clean = (plain_dict(top.get("train_clean")) or {}).get(series_key("train", ACCURACY, clean=True))
    clean = accuracy_series(clean, f"{where}: train_clean", unmeasured=True) if clean is not None else None
    losses = [number_series(epoch[key], f"{where}: epoch/{key.replace('_', ' ')}")
              for key in ("train_cross_entropy", "val_cross_entropy") if key in epoch]
    diverged = min((e for e in map(first_non_finite, losses) if e), default=None)
    confusion = plain_dict(top.get("confusion_matrix")) or {}
    return NetRun(net, os.fsdecode(path), train, val, clean if clean and len(clean) == len(val) else None,
                  *(confusion_of(confusion.get(f"{split}_confusion"), f"{where}: {split} confusion", classes,
                                 picture_count(top.get(f"n_{split}"))) for split in ("train", "val")), diverged)


@dataclass(frozen=True)
class Submission:
    """One submission: a name (its folder or file) and its nets; refused: why a submission of a TA's folder could not
    be read (its row says so, and the others are graded)."""

    name: str
    runs: dict[str, NetRun]
    refused: str = ""


def nets_for_pickles(files: Sequence[Path], nets: Sequence[str] | None) -> list[str]:
    """Which net each pickle is: --nets in the files' order, else the original's names (results1.pkl is
    Net1) or hw4's (results_<net>.pkl)."""
    if nets:
        if len(nets) != len(files):
            raise UserError(f"--nets names {len(nets)} nets for {len(files)} pickles "
                            f"({', '.join(path_text(f.name) for f in files)}); name one per pickle, in that order")
        return list(nets)
    named = []
    for f in files:
        net = ORIGINAL_PICKLES.get(f.name) or next(
            (n for n, spec in net_table().items() if spec.pickle_file(n) == f.name), None)
        if net is None:
            raise UserError(f"{path_text(f)}: which net is it? Name the pickles results1.pkl, results2.pkl, "
                            "results3.pkl as the original does, or pass --nets in the pickles' order")
        named.append(net)
    return named


def submission_from_pickles(name: str, files: Sequence[Path], nets: Sequence[str] | None, classes: int) -> Submission:
    runs = {}
    for f, net in zip(files, nets_for_pickles(files, nets)):
        if net in runs:
            raise UserError(f"{path_text(f)} and {path_text(runs[net].source)} are both {net}; pass one pickle per net")
        runs[net] = net_run_from_pickle(read_submission_pickle(f), f, net, classes)
    return Submission(name, runs)


def submissions_from_run(folder: Path) -> list[Submission]:
    """An hw4 run folder: one submission per training seed."""
    seed_outs, runs_by_seed, _ = load_finished_run(folder)
    return [Submission(path_text(out), {n: NetRun.from_results(r, os.fsdecode(out / "metrics.json"))
                                        for n, r in runs.items()}) for out, runs in zip(seed_outs, runs_by_seed)]


def folder_pickles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".pkl" and p.is_file())


def load_submissions(paths: Sequence[Path], nets: Sequence[str] | None, classes: int) -> list[Submission]:
    """PATH arguments as submissions: pickle files (together, one submission), a folder of pickles (one), an
    hw4 run folder (one per seed), or a folder of such folders (one each: a TA's submissions/<name>/)."""
    files = [p for p in paths if not p.is_dir()]
    subs = [submission_from_pickles(path_text(files[0].parent if len(files) > 1 else files[0]), files, nets,
                                    classes)] if files else []
    for folder in (p for p in paths if p.is_dir()):
        if (folder / "metrics.json").is_file():
            subs += submissions_from_run(folder)
        elif folder_pickles(folder):
            subs.append(submission_from_pickles(path_text(folder), folder_pickles(folder), nets, classes))
        else:
            inner = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                           and ((p / "metrics.json").is_file() or folder_pickles(p)))
            if not inner:
                raise UserError(f"{path_text(folder)} holds no results pickles, no metrics.json and no submission "
                                "folders; pass a submission's folder or its pickles")
            subs += [sub for p in inner for sub in submissions_or_refusal(p, nets, classes)]
    return subs


def submissions_or_refusal(folder: Path, nets: Sequence[str] | None, classes: int) -> list[Submission]:
    """One folder of a TA's folder of submissions, or its refusal: one bad submission never stops the others."""
    try:
        return load_submissions([folder], nets, classes)
    except UserError as exc:
        return [Submission(path_text(folder), {}, refused=str(exc))]


@dataclass(frozen=True)
class Reference:
    """A committed multi-seed hw4 run: per net, its NetRun per training seed, and what its runs saw."""

    where: str
    runs: dict[str, list[NetRun]]
    classes: list[str]
    n_train: int
    n_val: int
    epochs: int

    @classmethod
    def from_results(cls, where: str, runs_by_seed: Sequence[dict[str, Results]]) -> "Reference":
        first = next(iter(runs_by_seed[0].values()))
        runs = {name: [NetRun.from_results(seed[name], where) for seed in runs_by_seed] for name in runs_by_seed[0]}
        return cls(where, runs, list(first.classes), first.n_train, first.n_val, first.epochs)

    @property
    def seeds(self) -> int:
        return len(next(iter(self.runs.values())))

    def regimes(self, net: str) -> tuple[list[NetRun], list[NetRun]]:
        """(the seeds that learned, the seeds at chance)."""
        k = len(self.classes)
        return [r for r in self.runs[net] if r.learned(k)], [r for r in self.runs[net] if not r.learned(k)]


MIN_REFERENCE_SEEDS = 3


def load_reference(given: str | None) -> Reference:
    """The --reference run; by default the committed one beside hw4.py, wherever compare runs from. A refusal
    names the flag."""
    folder = Path(given) if given is not None else Path(__file__).resolve().parent / DEFAULT_REFERENCE
    name = path_text(given) if given is not None else DEFAULT_REFERENCE
    try:
        seed_outs, runs_by_seed, _ = load_finished_run(folder)
    except UserError as exc:
        raise UserError(f"--reference {name}: {exc}") from None
    if len(runs_by_seed) < MIN_REFERENCE_SEEDS:
        raise UserError(f"--reference {name} has {seeds_text(len(runs_by_seed))}; a reference needs "
                        f"{MIN_REFERENCE_SEEDS} or more, like the committed {DEFAULT_REFERENCE}")
    return Reference.from_results(name, runs_by_seed)


@dataclass(frozen=True)
class Band:
    """One number over the reference seeds: the 95% prediction interval for one new seed,
    mean ± t(0.975, n-1)·s·√(1 + 1/n), and the seeds' min and max."""

    values: tuple[float, ...]

    @property
    def interval(self) -> tuple[float, float] | None:
        n = len(self.values)
        if n < 2:
            return None
        mean, sd = float(np.mean(self.values)), float(np.std(self.values, ddof=1))
        half = t_quantile_975(n - 1) * sd * math.sqrt(1 + 1 / n)
        return mean - half, mean + half

    def place(self, x: float) -> str:
        """'above', 'below' or 'inside' the interval."""
        low, high = self.interval or (min(self.values), max(self.values))
        return "above" if x > high else "below" if x < low else "inside"


@dataclass(frozen=True)
class Check:
    """One number of a submission's net held against the reference band of the seeds in its regime."""

    net: str
    measure: str  # its words
    value: float
    band: Band
    scope: str  # which reference seeds: 'the 10 seeds', 'the 4 seeds that learned'
    difference: bool = False  # a difference of accuracies (shown in points), not an accuracy or a share
    best_val: bool = False  # it is the best val accuracy, which gets its own finding

    @property
    def place(self) -> str:
        return self.band.place(self.value)

    def shown(self, v: float) -> str:
        return f"{100 * v:+.1f} points" if self.difference else pct(v)


@dataclass(frozen=True)
class Finding:
    net: str
    kind: str  # above, below, chance, collapsed, learned, confusion, setup, curve
    text: str
    setup: tuple = ()  # a setup finding's differences as values: the nets of a submission that share them, merge


@dataclass(frozen=True)
class NetComparison:
    net: str
    learned: bool
    checks: tuple[Check, ...]
    findings: tuple[Finding, ...]


def seeds_scope(group: Sequence[NetRun], all_seeds: int) -> str:
    return f"the {seeds_text(len(group))}" + (" that learned" if len(group) < all_seeds else "")


def regime_findings(run: NetRun, ref: Reference) -> tuple[list[NetRun], list[Finding]]:
    """The reference seeds to hold the run against (those of its own regime), and what its regime says."""
    learned, stuck = ref.regimes(run.net)
    label, n, k = net_label(run.net), ref.seeds, len(learned)
    chance = 1 / len(ref.classes)
    if not run.learned(len(ref.classes)):
        if not stuck:
            return [], [Finding(run.net, "chance", f"{label} stayed at chance (best train accuracy "
                                f"{pct(max(run.train_acc))}; chance is {pct(chance)}), while every reference seed "
                                "learned: check the learning rate (the exercise's Adam lr 1e-3, betas (0.9, 0.99)), "
                                "that the labels parsed from the file names match the pictures, and the input "
                                "scaling (ToTensor to 0..1, then Normalize)")]
        low, high = clopper_pearson(k, n)
        return [], [Finding(run.net, "collapsed", f"{label} stayed at chance, as {n - k} of the {n} reference seeds "
                               f"did (a seed learns in {k} of {n}: 95% Clopper–Pearson {pct(low)} to {pct(high)}); "
                               "not "
                               "rare in this exercise, so not by itself a bug in the code")]
    if not learned:
        return [], [Finding(run.net, "learned", f"{label} learned, while every one of the {n} reference seeds stayed "
                            "at chance: another dataset, other settings or another architecture?")]
    return learned, []


def setup_findings(run: NetRun, ref: Reference) -> list[Finding]:
    """How the run's setup differs from the reference's (epochs, train and val pictures): said first, since it
    explains what follows before any guess at a bug does."""
    differs, values = [], []
    if run.epochs != ref.epochs:
        values.append(("epochs", run.epochs))
        differs.append(f"{run.epochs} of the reference's {ref.epochs} epochs (curves compared over the first "
                       f"{min(run.epochs, ref.epochs)})")
    for split, m, size in (("train", run.train_confusion, ref.n_train), ("val", run.val_confusion, ref.n_val)):
        if m is not None and int(m.sum()) != size:
            values.append((split, int(m.sum())))
            differs.append(f"{int(m.sum()):,} {split} pictures in its confusion matrix against the reference's "
                           f"{size:,} "
                           f"(another dataset size, or a matrix not taken on the whole {split} set in one epoch)")
    if not differs:
        return []
    return [Finding(run.net, "setup", "; ".join(differs), tuple(values))]


def submission_findings(comparisons: Sequence[NetComparison]) -> list[Finding]:
    """A submission's findings, its setup first and said once: the nets that ran the same other setup share one
    finding (a 3-epoch submission is one setup difference, not three)."""
    setups: dict[tuple, list[Finding]] = {}
    for f in (f for c in comparisons for f in c.findings if f.kind == "setup"):
        setups.setdefault(f.setup, []).append(f)
    merged = [Finding("+".join(f.net for f in same), "setup",
                      f"{names_text([f.net for f in same])} ran another setup than the reference: {same[0].text}. "
                      "Differences from the reference below may come from the setup alone; rerun with the "
                      "reference's before reading them as a bug", key) for key, same in setups.items()]
    return merged + [f for c in comparisons for f in c.findings if f.kind != "setup"]


def confusion_findings(run: NetRun, ref: Reference) -> list[Finding]:
    """A val confusion matrix that cannot be the best epoch's the run's numbers describe."""
    m = run.val_confusion
    if m is None or not m.sum() or abs(np.trace(m) / m.sum() - run.best_val) <= CONFUSION_TOLERANCE:
        return []
    return [Finding(run.net, "confusion", f"{net_label(run.net)}'s val confusion matrix has accuracy (trace/sum) "
                    f"{pct(np.trace(m) / m.sum())}, not the best epoch's val accuracy {pct(run.best_val)}: it was not "
                    "taken at the best epoch, or not on the whole val set")]


def measure_checks(run: NetRun, group: Sequence[NetRun], scope: str, classes: Sequence[str]) -> list[Check]:
    """Best val accuracy, the final train − val gap (in eval mode where both recorded it), the cat/dog share of
    val errors and each class's val recall, against the same numbers of the reference group."""
    net = run.net
    checks = [Check(net, "best val accuracy", run.best_val, Band(tuple(r.best_val for r in group)), scope,
                    best_val=True)]
    clean = run.clean_train_acc is not None and all(r.clean_train_acc is not None for r in group)
    checks.append(Check(net, f"final train ({'eval mode' if clean else 'running, as the original records it'}) − val "
                        "accuracy gap", run.gap(clean), Band(tuple(r.gap(clean) for r in group)), scope, True))
    share, shares = run.cat_dog_share(classes), [r.cat_dog_share(classes) for r in group]
    if share is not None and None not in shares:
        checks.append(Check(net, "cat/dog share of val errors", share, Band(tuple(shares)), scope))
    recalls, ref_recalls = run.recalls(), [r.recalls() for r in group]
    if recalls is not None and None not in ref_recalls:
        checks += [Check(net, f"val recall of {c}", recalls[k], Band(tuple(r[k] for r in ref_recalls)), scope)
                   for k, c in enumerate(classes)]
    return checks


def curve_finding(run: NetRun, group: Sequence[NetRun], ref: Reference) -> list[Finding]:
    """Epochs compared one by one over the epochs both ran."""
    found, label = [], net_label(run.net)
    common = min(run.epochs, ref.epochs)
    if len(group) < 2:
        return found
    places = [Band(tuple(r.val_acc[e] for r in group)).place(run.val_acc[e]) for e in range(common)]
    outside = [p for p in places if p != "inside"]
    if len(outside) > CURVE_OUTSIDE_SHARE * common:
        found.append(Finding(run.net, "curve", f"{label}'s val accuracy lies outside the reference's per-epoch "
                             f"interval in {len(outside)} of {common} epochs ({outside.count('above')} above, "
                             f"{outside.count('below')} below)"))
    return found


def band_text(check: Check) -> str:
    """'59.1% to 62.9% (seeds 59.6% to 62.0%)': the interval, then the reference seeds' range."""
    band, show = check.band, check.shown
    low, high = band.interval or (min(band.values), max(band.values))
    return f"{show(low)} to {show(high)} (seeds {show(min(band.values))} to {show(max(band.values))})"


def out_of_band_finding(check: Check, setup: bool = False) -> Finding | None:
    """What to look at when best val accuracy falls outside the band of its regime; with another setup than the
    reference's (setup), that setup first."""
    label, place = net_label(check.net), check.place
    if not check.best_val or place == "inside":
        return None
    where = f"{label}'s best val accuracy {pct(check.value)} is {place} the reference's 95% prediction interval for "\
            f"one seed ({band_text(check)}, over {check.scope})"
    if place == "above":
        beyond = " and above every reference seed" if check.value > max(check.band.values) else ""
        if setup:
            return Finding(check.net, "above", where + beyond + ": see its setup above")
        return Finding(check.net, "above", where + beyond + ": were train and val pictures disjoint? The original's "
                       "per-class np.random.choice puts some pictures into two classes and into both splits. Or was "
                       "it another dataset, more epochs or other settings?")
    if setup:
        return Finding(check.net, "below", where + ": its setup above explains a lower value before a bug does")
    return Finding(check.net, "below", where + ": check the learning rate (the exercise's Adam lr 1e-3, betas "
                   "(0.9, 0.99)), the labels parsed from the file names, and the input scaling (ToTensor to 0..1, "
                   "then Normalize)")


def compare_net(run: NetRun, ref: Reference) -> NetComparison:
    if run.diverged:  # its numbers from that epoch on mean nothing: never placed inside or outside an interval
        return NetComparison(run.net, run.learned(len(ref.classes)), (), (Finding(
            run.net, "diverged", f"{net_label(run.net)} diverged in epoch {run.diverged} (its loss is no longer a "
            "finite number), so its accuracies are not compared: lower the learning rate (the exercise's Adam lr "
            "1e-3) and train it again"),))
    setup = setup_findings(run, ref)
    group, findings = regime_findings(run, ref)
    findings = setup + findings
    checks = measure_checks(run, group, seeds_scope(group, ref.seeds), ref.classes) if len(group) >= 2 else []
    findings += [f for f in (out_of_band_finding(c, bool(setup)) for c in checks) if f]
    outside = [c for c in checks if c.place != "inside" and not c.best_val]
    if outside:
        findings.append(Finding(run.net, "outside", f"{net_label(run.net)}: outside the reference's interval: "
                                + "; ".join(f"{c.measure} {c.shown(c.value)} ({c.place} {band_text(c)})"
                                            for c in outside)))
    findings += curve_finding(run, group, ref) + confusion_findings(run, ref)
    return NetComparison(run.net, run.learned(len(ref.classes)), tuple(checks), tuple(findings))


def compare_submission(sub: Submission, ref: Reference) -> list[NetComparison]:
    missing = [n for n in sub.runs if n not in ref.runs]
    if missing:
        raise UserError(f"{terminal_text(sub.name)} has {', '.join(missing)}, which the reference {ref.where} lacks; "
                        "pass a --reference run that trained it")
    return [compare_net(sub.runs[n], ref) for n in ref.runs if n in sub.runs]


def graded(sub: Submission, ref: Reference, alone: bool) -> tuple[Submission, list[NetComparison]]:
    """A submission and its comparisons; one of several that cannot be compared is refused in its own row."""
    if sub.refused:
        return sub, []
    try:
        return sub, compare_submission(sub, ref)
    except UserError as exc:
        if alone:
            raise
        return dataclasses.replace(sub, refused=str(exc)), []


def net_summary(c: NetComparison, sub: Submission) -> str:
    """'Net1 61.2% inside' or 'Net3 at chance'."""
    best = c.checks[0] if c.checks else None
    run = sub.runs[c.net]
    if run.diverged:
        return f"{net_label(c.net)} diverged in epoch {run.diverged}"
    return (f"{net_label(c.net)} {pct(run.best_val)}" + ("" if c.learned else " (at chance)")
            + (f" {best.place}" if best else ""))


def compare_lines(ref: Reference, results: Sequence[tuple[Submission, list[NetComparison]]]) -> list[str]:
    """The terminal screen: per submission one line of nets and its findings (all of them for one submission,
    a count each for many, whose details COMPARE.md has)."""
    lines = [f"reference: {ref.where} ({seeds_text(ref.seeds)}; {', '.join(map(net_label, ref.runs))}; "
             f"{ref.epochs} epochs; {ref.n_val:,} val pictures). Inside: within the 95% prediction interval of one "
             "new seed, over the reference seeds of the same regime."]
    for sub, comparisons in results:
        if sub.refused:
            lines.append(f"{terminal_text(sub.name)}: refused: {terminal_text(sub.refused)}")
            continue
        findings = submission_findings(comparisons)
        lines.append(f"{terminal_text(sub.name)}: " + " | ".join(net_summary(c, sub) for c in comparisons)
                     + (f" | {len(findings)} finding{'s' * (len(findings) != 1)}" if len(results) > 1 else ""))
        if len(results) == 1:
            lines += [f"  - {terminal_text(f.text)}" for f in findings] or ["  - nothing outside the reference"]
    return lines


def compare_markdown(ref: Reference, results: Sequence[tuple[Submission, list[NetComparison]]]) -> str:
    lines = [COMPARE_HEADING.strip(), "",
             f"Reference: `{markdown_text(ref.where)}`, {seeds_text(ref.seeds)} of "
             f"{', '.join(map(net_label, ref.runs))} ({ref.epochs} epochs, {ref.n_train:,} train and {ref.n_val:,} val "
             "pictures). Each number of a submission's net is held against the 95% prediction interval for one new "
             "seed, mean ± t·s·√(1 + 1/n), over the reference seeds of the net's own regime: a net that stayed at "
             "chance is compared with the rate at which reference seeds stay there, one that learned with the "
             "seeds that learned.", "",
             "What this cannot tell: it does not detect copying; a different dataset, image size or settings moves "
             "every number, so a finding is a question to look into, not a verdict on the code."]
    for sub, comparisons in results:
        if sub.refused:
            lines += ["", f"## {markdown_text(sub.name)}", "", f"Refused: {markdown_text(sub.refused)}"]
            continue
        lines += ["", f"## {markdown_text(sub.name)}", "", "| net | measure | submission | reference interval (seeds' "
                  "range) | over | place |", "|---|---|---|---|---|---|"]
        for c in comparisons:
            run = sub.runs[c.net]
            if not c.checks:
                lines.append(f"| {net_label(c.net)} | best val accuracy | {pct(run.best_val)}"
                             f"{'' if c.learned else ' (at chance)'} | — | — | see the findings |")
            lines += [f"| {net_label(k.net)} | {k.measure} | {k.shown(k.value)} | {band_text(k)} | {k.scope} | "
                      f"{k.place} |" for k in c.checks]
        findings = submission_findings(comparisons)
        lines += ["", *(f"- {markdown_text(f.text)}" for f in findings)] if findings else\
            ["", "Nothing outside the reference."]
    lines += ["", "![the submissions' val accuracy per epoch over the reference's band](compare.png)"]
    return "\n".join(lines) + "\n"


def inert_cell(text: str) -> str:
    """A CSV cell a spreadsheet never runs: one that starts like a formula (=, +, -, @, tab or carriage return,
    OWASP's list) gets a leading apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def compare_csv(ref: Reference, results: Sequence[tuple[Submission, list[NetComparison]]]) -> str:
    """One row per submission, for a grading spreadsheet."""
    import csv
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    nets = list(ref.runs)
    writer.writerow(["submission", *(f"{n}_{k}" for n in nets for k in ("best_val", "learned", "place")),
                     "findings", "finding_kinds"])
    for sub, comparisons in results:
        by_net = {c.net: c for c in comparisons}
        cells = []
        for n in nets:
            c = by_net.get(n)
            cells += (["", "", ""] if c is None else
                      [f"{sub.runs[n].best_val:.4f}", str(c.learned).lower(), c.checks[0].place if c.checks else ""])
        findings = submission_findings(comparisons)
        kinds = (f"refused: {terminal_text(sub.refused)}" if sub.refused else
                 " ".join(f"{f.net}:{f.kind}" for f in findings))
        writer.writerow([inert_cell(terminal_text(sub.name)), *cells, len(findings), inert_cell(kinds)])
    return buf.getvalue()


def draw_compare(ref: Reference, subs: Sequence[Submission]):
    """Per net, the reference's val accuracy per epoch (mean and 95% prediction band of one seed; for a net
    with both regimes, each regime apart, with its count) and every submission's curve over it."""
    nets = [n for n in ref.runs if any(n in s.runs for s in subs)]
    fig = new_figure(figsize=(4.2 * len(nets), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(nets), squeeze=False)[0])
    for ax, net in zip(axes, nets):
        learned, stuck = ref.regimes(net)
        for group, name, shade in ((learned, "learned", "tab:blue"), (stuck, "at chance", "tab:grey")):
            if not group:
                continue
            x = np.arange(1, ref.epochs + 1)
            per_epoch = [Band(tuple(r.val_acc[e] for r in group)) for e in range(ref.epochs)]
            mean = [100 * np.mean(b.values) for b in per_epoch]
            ax.plot(x, mean, color=shade, linewidth=1.5, label=f"reference, {name} ({len(group)} of {ref.seeds})")
            if len(group) > 1:
                ax.fill_between(x, [max(0.0, 100 * b.interval[0]) for b in per_epoch],  # accuracies: 0..100
                                [min(100.0, 100 * b.interval[1]) for b in per_epoch], color=shade, alpha=0.2,
                                linewidth=0)
        for k, sub in enumerate(s for s in subs if net in s.runs):
            run = sub.runs[net]
            ax.plot(np.arange(1, run.epochs + 1), [100 * v for v in run.val_acc], color="tab:red", alpha=0.8,
                    linewidth=1, label="submission" + ("s" if len(subs) > 1 else "") if k == 0 else None)
        ax.set_title(net_label(net), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val accuracy (%)")
        ax.grid(linewidth=0.4)
        ax.legend(fontsize=7)
    fig.suptitle(f"Val accuracy per epoch against {ref.where} (shaded: 95% prediction interval of one seed)",
                 fontsize=10)
    return fig


COMPARE_FILES = ("COMPARE.md", "compare.png", "compare.csv")  # every file compare writes into --out
COMPARE_HEADING = "# hw4 compare\n"  # the first line of every COMPARE.md compare writes
COMPARE_RECORD = ".hw4-compare.json"  # beside them: the digest of each file compare wrote, which makes it compare's


def file_digest(path: Path) -> str | None:
    """sha256 of a plain file (never through a link); None for anything else."""
    if path.is_symlink() or not path.is_file():
        return None
    with contextlib.suppress(OSError):
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def compare_owned(out: Path) -> set[str]:
    """The files of --out that compare wrote and nobody changed since: their digests are the ones its record holds."""
    record = out / COMPARE_RECORD
    try:
        if record.is_symlink() or record.stat().st_size > 2 ** 16:
            return set()
        written = json.loads(record.read_text())["files"]
    except (OSError, ValueError, TypeError, KeyError):
        return set()
    if not isinstance(written, dict):
        return set()
    return {name for name in COMPARE_FILES if isinstance(written.get(name), str) and
            written[name] == file_digest(out / name)}


def check_compare_out(out: Path, overwrite: bool) -> None:
    """compare owns only what it wrote, like training: --out's COMPARE.md, compare.png and compare.csv are written
    over only where they are compare's own, as its record of them says (or with --overwrite)."""
    check_folder_creatable(out, "--out")
    if overwrite or not out.is_dir():
        return
    found = [name for name in COMPARE_FILES if (out / name).exists() or (out / name).is_symlink()]
    theirs = [name for name in found if name not in compare_owned(out)]
    if theirs:
        raise UserError(f"--out {path_text(out)} holds {', '.join(theirs)} that compare did not write; pass another "
                        "--out, or --overwrite to replace them")


def write_compare_outputs(out: Path, ref: Reference, results: list[tuple[Submission, list[NetComparison]]],
                          overwrite: bool) -> None:
    check_compare_out(out, overwrite)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {path_text(out)} cannot be created ({exc.strerror or exc}); pass another "
                        "folder") from None
    with run_lock(out):
        check_compare_out(out, overwrite)  # again, now that no other command writes there
        write_bytes_atomic(out / "COMPARE.md", compare_markdown(ref, results).encode())
        if len(results) > 1:
            write_bytes_atomic(out / "compare.csv", compare_csv(ref, results).encode())
        savefig_atomic(draw_compare(ref, [s for s, _ in results]), out / "compare.png")
        digests = {name: file_digest(out / name) for name in COMPARE_FILES if (out / name).is_file()}
        write_bytes_atomic(out / COMPARE_RECORD, json.dumps({"files": digests}, indent=1).encode())


def compare_main(argv: Sequence[str]) -> int:
    parser = OneLineErrorParser(prog="hw4.py compare", description="Hold a student's run (the original's results "
                                "pickles, or an hw4 run folder) against a committed multi-seed reference run, and say "
                                "what to look at. Never trains, reads no dataset; pickles are read through an "
                                "allowlist (numbers, lists, dicts, numpy arrays), never unpickled freely.")
    parser.add_argument("paths", nargs="+", type=path_argument, metavar="PATH",
                        help="results pickles (results1.pkl ... as the original names them), a folder of them, an hw4 "
                             "run folder, or a folder of submission folders (one row each)")
    parser.add_argument("--reference", type=path_argument, default=None,
                        help=f"a finished hw4 run of {MIN_REFERENCE_SEEDS} or more seeds "
                             f"(default: {DEFAULT_REFERENCE} beside hw4.py)")
    parser.add_argument("--nets", nargs="+", choices=list(net_table()), metavar="NET",
                        help="which net each pickle is, in order, when their names are not the original's")
    parser.add_argument("--out", type=path_argument, help="also write COMPARE.md, compare.png and, for several "
                        "submissions, compare.csv here (default: print only)")
    parser.add_argument("--overwrite", action="store_true", help="write over COMPARE.md, compare.png and "
                        "compare.csv in --out that compare did not write (default: refuse)")
    args = parser.parse_args(argv)
    if args.out:  # before reading anything: a folder compare may not write into is one line at once
        check_compare_out(Path(args.out), args.overwrite)
    for p in args.paths:
        if not os.path.lexists(p):
            raise UserError(f"{path_text(p)} not found; pass results pickles or the folders that hold them")
    ref = load_reference(args.reference)
    subs = load_submissions([Path(p) for p in args.paths], args.nets, len(ref.classes))
    results = [graded(sub, ref, alone=len(subs) == 1) for sub in subs]
    refused = [sub for sub, _ in results if sub.refused]
    if len(refused) == len(subs):  # nothing to grade: the first reason is the one line
        raise UserError(refused[0].refused)
    print("\n".join(compare_lines(ref, results)))
    if args.out:
        write_compare_outputs(Path(args.out), ref, results, args.overwrite)
        print(f"wrote {path_text(Path(args.out) / 'COMPARE.md')}")
    if refused:
        print(f"hw4: error: {len(refused)} of {len(subs)} submissions were refused ({terminal_text(refused[0].name)} "
              "first); their rows say why, and the others are graded", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":  # a module of hw4.py's, not a program of its own
    sys.stderr.write("hw4: error: hw4_compare.py is loaded by hw4.py; run `python hw4.py compare PATH` instead\n")
    sys.exit(2)
