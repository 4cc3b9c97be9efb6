"""`hw4.py compare`: a student's pickles or run against the committed reference, leave-one-out on the committed
seeds, pickles written by the original's code path, doctored and malicious pickles, and a TA's folder."""
from __future__ import annotations

import csv
import io
import json
import math
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import hw4
import hw4_compare
import hw4_records
from conftest import ROOT, assert_one_line_exit_2, cli, skip_rendering

EXERCISE = ROOT / "results" / "exercise"


@pytest.fixture(scope="module")
def committed():
    """The committed run's Results per seed (read once: ten metrics.json files)."""
    return hw4_records.load_finished_run(EXERCISE)[1]


@pytest.fixture(scope="module")
def reference(committed) -> hw4_compare.Reference:
    return hw4_compare.Reference.from_results("results/exercise", committed)


def original_style_pickle(epochs: int, per_class: int, val_acc: float, rng: np.random.Generator) -> dict:
    """What the original report's train() returns, written as its own code writes it (not hw4's): keys with
    spaces, lists of floats, float64 confusion matrices of np.zeros((5, 5)) incremented per picture."""
    val = list(np.clip(np.linspace(0.45, val_acc, epochs) + rng.normal(0, 0.005, epochs), 0, 1))
    confusion = np.zeros((5, 5))
    correct = round(val_acc * per_class)
    for k in range(5):
        confusion[k, k] = correct
        confusion[k, (k + 1) % 5] = per_class - correct
    confusion_train = confusion * 3
    return {"100steps": {"train cross entropy": [1.2] * 10, "train class acc": [0.5] * 10,
                         "val cross entropy": [1.1] * 3, "val class acc": [0.55] * 3},
            "epoch": {"train cross entropy": list(np.linspace(1.3, 0.2, epochs)),
                      "train class acc": list(np.linspace(0.45, 0.95, epochs)),
                      "val_cross_entropy": [1.0] * epochs, "val class acc": val},
            "confusion matrix": {"train confusion": confusion_train, "val confusion": confusion}}


def test_every_committed_seed_left_out_fits_the_other_nine(committed):
    """Leave-one-out on the committed files: Net1 and Net2 of a seed lie inside the prediction interval of the
    other seeds in all but one of 10 (all but two of 20); every Net3 seed gets the finding of its own regime."""
    inside = {"net1": 0, "net2": 0}
    learned = sum(not runs["net3"].at_chance for runs in committed)
    for k, runs in enumerate(committed):
        ref = hw4_compare.Reference.from_results("loo", committed[:k] + committed[k + 1:])
        sub = hw4_compare.Submission(f"seed {k}", {n: hw4_compare.NetRun.from_results(r, "x") for n, r in runs.items()})
        by_net = {c.net: c for c in hw4_compare.compare_submission(sub, ref)}
        for net in inside:
            assert by_net[net].checks[0].measure == "best val accuracy"
            inside[net] += by_net[net].checks[0].place == "inside"
        kinds = {f.kind for f in by_net["net3"].findings}
        if runs["net3"].at_chance:
            assert "collapsed" in kinds and not by_net["net3"].checks and not by_net["net3"].learned
        else:
            assert "collapsed" not in kinds and by_net["net3"].learned
            assert f"the {learned - 1} seeds that learned" in by_net["net3"].checks[0].scope  # this one left out
    allowed = len(committed) // 10  # a 95% prediction interval misses about 1 seed in 20
    assert min(inside.values()) >= len(committed) - allowed, inside


def test_pickles_from_the_originals_code_path_are_read_and_their_differences_named(tmp_path, monkeypatch, committed):
    skip_rendering(monkeypatch)
    rng = np.random.default_rng(0)
    sub = tmp_path / "student"
    sub.mkdir()
    for k, acc in enumerate((0.60, 0.61, 0.20), 1):  # 3 epochs, 200 val pictures per class; Net3 at chance
        blob = original_style_pickle(3, 200, acc, rng)
        if acc == 0.20:
            blob["epoch"]["train class acc"] = [0.2] * 3
        (sub / f"results{k}.pkl").write_bytes(pickle.dumps(blob))
    ran = cli("compare", sub, "--reference", EXERCISE, "--out", tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    text = ran.stdout
    # the setup difference leads, said once for the three nets: it explains what follows before a bug does
    setup = "Net1, Net2 and Net3 ran another setup than the reference: 3 of the reference's 15 epochs"
    assert text.count("ran another setup") == 1 and setup in text
    findings = text[text.index("  - "):]
    assert findings.index(setup) == 4, "the setup is the first finding"
    assert "3,000 train pictures in its confusion matrix against the reference's 7,500" in text
    assert "1,000 val pictures in its confusion matrix against the reference's 2,500" in text
    assert "check the learning rate" not in text, "no guessed cause while the setup explains the gap"
    stuck = sum(seed["net3"].at_chance for seed in committed)
    assert f"Net3 stayed at chance, as {stuck} of the" in text and "not rare" in text
    assert (tmp_path / "out" / "COMPARE.md").is_file() and not (tmp_path / "out" / "compare.csv").exists()


def test_a_doctored_pickle_gets_both_findings_with_numbers(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    blob = hw4_compare.read_submission_pickle(EXERCISE / "seed_5" / "results1.pkl")  # hw4's own pickle, then doctored
    blob["epoch"]["val_class_acc"][4] = 0.95
    (tmp_path / "results1.pkl").write_bytes(pickle.dumps(blob))
    ran = cli("compare", tmp_path / "results1.pkl", "--reference", EXERCISE)
    assert ran.returncode == 0, ran.stderr
    assert "Net1's best val accuracy 95.0% is above the reference's 95% prediction interval for one seed" in ran.stdout
    assert "and above every reference seed: were train and val pictures disjoint?" in ran.stdout
    assert "not the best epoch's val accuracy 95.0%" in ran.stdout


def doctored_pickle(tmp_path: Path, change) -> Path:
    """hw4's own results1.pkl of a committed seed, changed by change(blob), written to tmp_path."""
    blob = hw4_compare.read_submission_pickle(EXERCISE / "seed_5" / "results1.pkl")
    change(blob)
    (tmp_path / "results1.pkl").write_bytes(pickle.dumps(blob))
    return tmp_path / "results1.pkl"


def set_val_confusion(blob: dict, matrix) -> None:
    for spelling in ("confusion matrix", "confusion_matrix"):  # hw4 writes both key spellings: doctor every one
        blob[spelling]["val confusion"] = blob[spelling]["val_confusion"] = matrix


@pytest.mark.parametrize("matrix, why", [
    (lambda m: np.full(m.shape, 1e300), "whole, non-negative picture counts"),
    (lambda m: m * 0.8, "whole, non-negative picture counts"),
    (lambda m: np.eye(len(m), dtype=m.dtype), "counts 5 pictures, not the 2,500"),
])
def test_a_confusion_matrix_that_holds_no_counts_is_refused(tmp_path, matrix, why):
    """Counts are whole, not negative, and add up to the pictures the run says it evaluated (n_val)."""
    path = doctored_pickle(tmp_path, lambda b: set_val_confusion(b, matrix(b["confusion matrix"]["val confusion"])))
    assert_one_line_exit_2(cli("compare", path, "--reference", EXERCISE, "--out", tmp_path / "out"),
                           "results1.pkl: val confusion", why)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_an_accuracy_no_run_can_write_is_refused(tmp_path, value):
    path = doctored_pickle(tmp_path, lambda b: b["epoch"].update(val_class_acc=[value] * 15))
    assert_one_line_exit_2(cli("compare", path, "--reference", EXERCISE), "epoch/val class acc holds values outside "
                                                                           "0..1 (or not numbers)")


def test_a_diverged_run_is_said_and_never_placed(tmp_path, monkeypatch):
    """A NaN loss can come from a run: it diverged. Its accuracies are neither inside nor outside an interval."""
    skip_rendering(monkeypatch)

    def diverge(blob):
        blob["epoch"]["train_cross_entropy"][6:] = [float("nan")] * 9

    ran = cli("compare", doctored_pickle(tmp_path, diverge), "--reference", EXERCISE, "--out", tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    assert "Net1 diverged in epoch 7" in ran.stdout and "its accuracies are not compared" in ran.stdout
    assert not any(word in ran.stdout for word in (" inside", " above", " below")), ran.stdout
    assert "nan" not in (tmp_path / "out" / "COMPARE.md").read_text().lower()


def test_compare_out_never_writes_over_a_users_own_files(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    (out / "COMPARE.md").write_text("my own notes")
    (out / "compare.png").write_bytes(b"my own figure")
    args = ("compare", EXERCISE / "seed_6", "--reference", EXERCISE, "--out", out)
    assert_one_line_exit_2(cli(*args), f"--out {out} holds COMPARE.md, compare.png that compare did not write",
                           "--overwrite")
    assert (out / "COMPARE.md").read_text() == "my own notes" and (out / "compare.png").read_bytes() == b"my own figure"
    assert sorted(p.name for p in out.iterdir()) == ["COMPARE.md", "compare.png"]
    assert cli(*args, "--overwrite").returncode == 0
    assert (out / "COMPARE.md").read_text().startswith("# hw4 compare\n")
    assert cli(*args).returncode == 0, "its own COMPARE.md is compare's to write again"
    (out / "COMPARE.md").write_text("# hw4 compare\n\nmy own notes, under compare's heading")
    assert_one_line_exit_2(cli(*args), "holds COMPARE.md that compare did not write")  # its record decides, not text


class WritesAFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("payload", ["reduce", "tensor"])
def test_a_malicious_pickle_is_refused_and_nothing_of_it_runs(tmp_path, payload):
    victim = tmp_path / "written_by_the_pickle"
    if payload == "reduce":
        obj = {"epoch": {"val class acc": [0.5]}, "x": WritesAFile(str(victim))}
        refused = "io.open"
    else:
        import torch
        obj = {"epoch": {"val class acc": torch.zeros(3)}}
        refused = "torch._utils._rebuild_tensor_v2"
    (tmp_path / "results1.pkl").write_bytes(pickle.dumps(obj))
    ran = cli("compare", tmp_path / "results1.pkl", "--reference", EXERCISE)
    assert_one_line_exit_2(ran, "results1.pkl: refused: it asks for " + refused, "nothing of it ran")
    assert not victim.exists()


def test_bad_submissions_get_one_line(tmp_path):
    (tmp_path / "results1.pkl").write_bytes(b"\x80\x04not a pickle")
    assert_one_line_exit_2(cli("compare", tmp_path / "results1.pkl", "--reference", EXERCISE),
                           "results1.pkl is not a readable pickle")
    (tmp_path / "net_a.pkl").write_bytes(pickle.dumps({"epoch": {"train class acc": [0.5], "val class acc": [0.5]}}))
    assert_one_line_exit_2(cli("compare", tmp_path / "net_a.pkl", "--reference", EXERCISE), "which net is it?")
    nested: list = []
    for _ in range(100):
        nested = [nested]
    (tmp_path / "results2.pkl").write_bytes(pickle.dumps({"epoch": nested}))
    assert_one_line_exit_2(cli("compare", tmp_path / "results2.pkl", "--reference", EXERCISE), "nests deeper than")
    (tmp_path / "results3.pkl").write_bytes(pickle.dumps({"epoch": {"train class acc": [55.0], "val class acc": [50.]}}))
    assert_one_line_exit_2(cli("compare", tmp_path / "results3.pkl", "--reference", EXERCISE), "outside 0..1")
    assert_one_line_exit_2(cli("compare", tmp_path / "missing", "--reference", EXERCISE), "missing not found")
    assert_one_line_exit_2(cli("compare", tmp_path / "results3.pkl", "--reference", EXERCISE / "seed_5"),
                           "a reference needs 3 or more")


def test_a_folder_of_three_submissions_gives_three_rows_and_a_csv(tmp_path, monkeypatch, committed):
    saved = skip_rendering(monkeypatch)
    root = tmp_path / "submissions"
    stuck = next(k for k, seed in enumerate(committed) if seed["net3"].at_chance)  # a seed at chance goes second
    learned = [k for k, seed in enumerate(committed) if not seed["net3"].at_chance][:2]
    chosen = [committed[k] for k in (learned[0], stuck, learned[1])]
    for k, seed in enumerate(f"seed_{runs['net1'].train_seed}" for runs in chosen):
        folder = root / f"student{k}\x1b[2J"  # a name with an ANSI escape: shown escaped, never raw
        folder.mkdir(parents=True)
        for name in ("results1.pkl", "results2.pkl", "results3.pkl"):
            (folder / name).write_bytes((EXERCISE / seed / name).read_bytes())
    ran = cli("compare", root, "--reference", EXERCISE, "--out", tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    rows = [line for line in ran.stdout.splitlines() if "student" in line]
    assert len(rows) == 3 and "\x1b" not in ran.stdout and "student0\\x1b[2J" in rows[0], ran.stdout
    assert "Net3 20.0% (at chance)" in rows[1] and f"Net1 {100 * hw4.BEST_VAL.of(chosen[1]['net1']):.1f}% " in rows[1]
    table = list(csv.reader(io.StringIO((tmp_path / "out" / "compare.csv").read_text())))
    assert len(table) == 4 and table[0][:2] == ["submission", "net1_best_val"]
    assert table[2][table[0].index("net3_learned")] == "false" and "net3:collapsed" in table[2][-1]
    assert saved == [tmp_path / "out" / "compare.png"]
    assert "\x1b" not in (tmp_path / "out" / "COMPARE.md").read_text()


def test_an_hw4_run_folder_is_one_submission_per_seed(reference):
    subs = hw4_compare.load_submissions([EXERCISE / "seed_8"], None, 5)
    assert [s.name for s in subs] == [hw4.path_text(EXERCISE / "seed_8")] and set(subs[0].runs) == {"net1", "net2",
                                                                                                     "net3"}
    comparisons = hw4_compare.compare_submission(subs[0], reference)
    clean_gap = next(c for c in comparisons[0].checks if "gap" in c.measure)
    assert clean_gap.measure.startswith("final train (eval mode)") and clean_gap.difference


def test_compare_figure_draws_each_regime(reference):
    sub = hw4_compare.Submission("s", {n: runs[0] for n, runs in reference.runs.items()})
    fig = hw4_compare.draw_compare(reference, [sub])
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    stuck, seeds = sum(not r.learned(5) for r in reference.runs["net3"]), len(reference.runs["net3"])
    assert f"reference, learned ({seeds - stuck} of {seeds})" in labels
    assert f"reference, at chance ({stuck} of {seeds})" in labels
    for ax in fig.axes:
        assert ax.get_ylim()[0] >= -5 and ax.get_ylim()[1] <= 105


def test_nets_names_pickles_whose_names_are_not_the_originals(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    for k, name in enumerate(("a.pkl", "b.pkl"), 1):
        (tmp_path / name).write_bytes((EXERCISE / "seed_9" / f"results{k}.pkl").read_bytes())
    ran = cli("compare", tmp_path / "a.pkl", tmp_path / "b.pkl", "--nets", "net1", "net2", "--reference", EXERCISE)
    assert ran.returncode == 0, ran.stderr
    seed_9 = hw4_records.load_finished_run(EXERCISE / "seed_9")[1][0]
    assert f"Net1 {hw4.pct(hw4.BEST_VAL.of(seed_9['net1']))} inside | Net2" in ran.stdout and "Net3" not in \
        ran.stdout.splitlines()[1]
    assert_one_line_exit_2(cli("compare", tmp_path / "a.pkl", tmp_path / "b.pkl", "--nets", "net1", "--reference",
                               EXERCISE), "--nets names 1 nets for 2 pickles")


def test_a_csv_cell_that_a_spreadsheet_would_run_is_made_inert(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    names = ("=1+1", "@SUM(1+1)", "+2+3", "plain")
    for name in names:
        (tmp_path / name).mkdir()
        shutil.copy(EXERCISE / "seed_5" / "results1.pkl", tmp_path / name / "results1.pkl")
    monkeypatch.chdir(tmp_path)  # each submission named as given: a name a spreadsheet would read as a formula
    ran = cli("compare", *names, "--reference", EXERCISE, "--out", tmp_path / "out")
    assert ran.returncode == 0, ran.stderr
    firsts = [row[0] for row in csv.reader(io.StringIO((tmp_path / "out" / "compare.csv").read_text()))]
    assert firsts == ["submission", "'=1+1", "'@SUM(1+1)", "'+2+3", "plain"]


def test_the_default_reference_is_the_one_beside_hw4_and_a_bad_one_names_the_flag(tmp_path, monkeypatch):
    pickle_file = tmp_path / "results1.pkl"
    shutil.copy(EXERCISE / "seed_5" / "results1.pkl", pickle_file)
    monkeypatch.chdir(tmp_path)  # no results/ here: the default still finds the committed run
    ran = cli("compare", pickle_file)
    assert ran.returncode == 0 and "Net1" in ran.stdout, ran.stderr
    assert_one_line_exit_2(cli("compare", pickle_file, "--reference", tmp_path / "nowhere"), "--reference")


def test_a_seed_listed_twice_is_never_pooled_twice(tmp_path):
    ref = tmp_path / "ref"
    shutil.copytree(EXERCISE, ref)
    top = json.loads((ref / "metrics.json").read_text())
    for entry in top["nets"].values():
        entry["seeds"] = entry["seeds"] + [5] * 20
    (ref / "metrics.json").write_text(json.dumps(top))
    assert_one_line_exit_2(cli("compare", EXERCISE / "seed_5" / "results1.pkl", "--reference", ref),
                           "--reference", "distinct training seeds")
    assert_one_line_exit_2(cli("report", ref), "distinct training seeds")


class HugeArray:
    """Pickles as numpy's array rebuild asked for 20 million elements: a few hundred bytes on disk."""

    def __reduce__(self):
        from numpy._core import multiarray
        return (multiarray._reconstruct, (np.ndarray, (20_000_000,), b"b"))


@pytest.mark.parametrize("change, words", [
    (lambda b: b["epoch"].update(train_class_acc=HugeArray()), "refused: it builds an array of shape (20000000,)"),
    (lambda b: set_val_confusion(b, [[0] * 20_000] * 20_000), "is not a 5x5 matrix"),
    (lambda b: set_val_confusion(b, b["confusion matrix"]["val confusion"] * (1 + 0j)), "refused: it builds an array of complex"),
    (lambda b: b["100steps"].update(train_class_acc=[math.inf] * len(b["100steps"]["train_class_acc"])),
     "100steps/train class acc holds values outside 0..1"),
])
def test_a_small_pickle_never_takes_much_memory_nor_passes_a_value_no_run_writes(tmp_path, change, words):
    """A crafted array, a matrix of one shared row, a complex matrix, an infinite 100-step accuracy: each one line,
    before numpy allocates what the file does not hold, and no warning on stderr."""
    path = doctored_pickle(tmp_path, change)
    assert path.stat().st_size < 2 ** 20
    ran = cli("compare", path, "--reference", EXERCISE)
    assert_one_line_exit_2(ran, words)
    assert "Warning" not in ran.stderr


def test_one_refused_submission_in_a_tas_folder_gets_its_row_and_the_others_are_graded(tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    root = tmp_path / "submissions"
    for name in ("alice", "bob"):
        (root / name).mkdir(parents=True)
        shutil.copy(EXERCISE / "seed_5" / "results1.pkl", root / name / "results1.pkl")
    bad = doctored_pickle(tmp_path, lambda b: set_val_confusion(b, np.eye(5, dtype=np.int64)))
    shutil.copy(bad, root / "bob" / "results1.pkl")
    ran = cli("compare", root, "--reference", EXERCISE, "--out", tmp_path / "out")
    assert_one_line_exit_2(ran, "1 of 2 submissions were refused", "the others are graded")
    assert "alice: Net1" in ran.stdout and re.search(r"bob: refused: .*val confusion counts 5 pictures", ran.stdout)
    table = list(csv.reader(io.StringIO((tmp_path / "out" / "compare.csv").read_text())))
    assert [row[0].rsplit("/", 1)[-1] for row in table[1:]] == ["alice", "bob"]
    assert table[2][-1].startswith("refused: ") and table[1][1]
    assert "Refused: " in (tmp_path / "out" / "COMPARE.md").read_text()
