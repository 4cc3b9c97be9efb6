"""Shared helpers: the hw4 module, the third-party fixtures, generated demo COCO data, the CLI in-process
and as a process, and one reference run that several tests compare against."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import filelock
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hw4  # noqa: E402
import hw4_compare  # noqa: E402
import hw4_records  # noqa: E402
import hw4_report  # noqa: E402

hw4_report.use(hw4.exercise())  # what hw4.py's CLI hands over before any report, for tests that call the report directly

FIXTURES = ROOT / "tests" / "fixtures"  # copied in: a clone must pass with nothing beside it
VISION_SYNTH = FIXTURES / "vision-synth" / "train"
VS_ANN = VISION_SYNTH / "_annotations.coco.json"
KWCOCO = FIXTURES / "kwcoco-shapes"
PHOTOS = FIXTURES / "photos"
# Every test that trains pins the CPU: the byte-for-byte comparisons hold on the CPU (README).
CPU = ("--device", "cpu", "--threads", "1")


@dataclasses.dataclass
class Ran:
    """What a CLI run left: its exit code and its output (like subprocess.CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args) -> Ran:
    """`python hw4.py ARGS` in this process: the same main(), exit code and streams, without the ~2 s
    of a new interpreter importing torch. argparse's own exit is caught as the exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = hw4.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return Ran(code, out.getvalue(), err.getvalue())


def run_cli(*args, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python hw4.py ARGS` as a new process, as a user runs it (for signals and process-level behaviour)."""
    return subprocess.run([sys.executable, str(ROOT / "hw4.py"), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def start_cli(*args) -> subprocess.Popen:
    """A running `python hw4.py ARGS`, unbuffered, so that a test can watch it and signal it."""
    return subprocess.Popen([sys.executable, str(ROOT / "hw4.py"), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def assert_one_line_exit_2(result, *messages: str) -> None:
    """Bad input: exit code 2 and one line on stderr that says what is wrong, never a traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    for message in messages:
        assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr


def skip_rendering(monkeypatch) -> list[Path]:
    """From here on, figures are neither drawn nor rendered: every figure function of hw4.FIGURES and
    hw4_report.draw_claims and draw_rates return None, and hw4.savefig_atomic records the path it is given and
    writes nothing. Building and rendering figures is most of a report's time; tests whose assertions are about text
    and JSON use this, and the tests that check figures draw them."""
    saved: list[Path] = []
    monkeypatch.setattr(hw4, "FIGURES", tuple(dataclasses.replace(p, draw=lambda *_: None) for p in hw4.FIGURES))
    monkeypatch.setattr(hw4_report, "draw_claims", lambda *_: None)
    monkeypatch.setattr(hw4_report, "draw_rates", lambda *_: None)
    for module in (hw4, hw4_report, hw4_compare):
        monkeypatch.setattr(module, "savefig_atomic", lambda fig, path: saved.append(Path(path)))
    return saved


def patch_everywhere(monkeypatch, name: str, value) -> None:
    """Set a table (METRICS, say) in every hw4 module that holds it: hw4_records defines it, and hw4 and its
    siblings import it by name."""
    for module in (hw4, hw4_records, hw4_report, hw4_compare, sys.modules["hw4_sources"]):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)


def claim(words: str):
    """The claim of hw4_report.CLAIMS whose words begin so: tests name a claim, never its place in the table."""
    found = [c for c in hw4_report.CLAIMS if c.words.startswith(words)]
    assert len(found) == 1, f"{len(found)} claims begin {words!r}"
    return found[0]


def per_sample_top2(logits, labels):
    return (logits.topk(2, dim=1).indices == labels[:, None]).any(1).double()


# the metric the extension tests add: one Metric, as CONTRIBUTING says a new metric is
TOP2 = hw4_records.Metric("top2_acc", "top2", "top-2 accuracy", per_sample_top2, "top-2 accuracy", hw4_records.POINTS,
                          percent=True)


@pytest.fixture
def with_top2(monkeypatch):
    """METRICS with TOP2 added, in every module that holds the table."""
    patch_everywhere(monkeypatch, "METRICS", (*hw4_records.METRICS, TOP2))
    return TOP2


def make_config(ann_file, image_dir, dataset_dir, **overrides) -> hw4.Config:
    """A Config for tests: one build worker and one thread unless overridden."""
    base = hw4.Config(ann_file=str(ann_file), image_dir=str(image_dir), dataset_dir=str(dataset_dir), workers=1,
                      threads=1, device="cpu")
    return dataclasses.replace(base, **overrides)


SHARED = "HW4_TESTS_SHARED"  # environment: where the session's shared data is made (tests/shared_data.py)


def pytest_configure(config) -> None:
    """In the controller, before the xdist workers start (they inherit the environment): the folder where the one
    background process that makes the shared data writes. It starts when a test first needs that data (shared),
    so that a run of tests that need none of it trains nothing."""
    if hasattr(config, "workerinput"):
        return
    os.environ[SHARED] = tempfile.mkdtemp(prefix="hw4-tests-")


def pytest_unconfigure(config) -> None:
    if hasattr(config, "workerinput") or SHARED not in os.environ:
        return
    folder = Path(os.environ.pop(SHARED))
    with contextlib.suppress(OSError, ValueError):
        os.killpg(int((folder / "started").read_text()), signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def start_shared_data(folder: Path) -> None:
    """The background process that makes the shared data, started once whichever worker asks first."""
    with filelock.FileLock(folder / ".start.lock"):
        if not (folder / "started").exists():
            proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "shared_data.py"), str(folder)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            (folder / "started").write_text(str(proc.pid))


def shared(step: str, timeout: float = 900) -> Path:
    """The folder of a shared step, once the background process has finished it."""
    folder = Path(os.environ[SHARED])
    start_shared_data(folder)
    deadline = time.time() + timeout
    while not (folder / f"{step}.done").exists():
        if (folder / "failed").exists():
            pytest.fail(f"making the shared test data failed:\n{(folder / 'failed').read_text()}")
        assert time.time() < deadline, f"the shared {step} was not made in {timeout} s"
        time.sleep(0.1)
    return folder / step


@pytest.fixture(scope="session")
def demo_coco() -> Path:
    """A generated COCO-format set: 110 images per class, ~10% grayscale, ~10% with two classes. Shared by
    every worker: read it, never change it."""
    return shared("demo_coco")


def demo_paths(root: Path) -> tuple[Path, Path]:
    return root / "coco" / "annotations" / "instances_train2014.json", root / "coco" / "images"


def tiny_config(demo_root: Path, dataset_dir: Path) -> hw4.Config:
    """The demo set at 16x16 with 85 train + 15 val per class: 107 iterations per epoch, so one
    100-iteration window per epoch."""
    ann, images = demo_paths(demo_root)
    return make_config(ann, images, dataset_dir, train_per_class=85, val_per_class=15, image_size=16, epochs=2)


@pytest.fixture(scope="session")
def tiny_built(demo_coco):
    """The tiny build (tiny_config) and its manifest. Shared by every worker: copy it before changing it."""
    cfg = tiny_config(demo_coco, shared("tiny") / "ds")
    with contextlib.redirect_stdout(io.StringIO()):
        return cfg, hw4.build_subset(cfg)  # reused as it is: this reads the manifest and checks the pictures


REFERENCE_NETS = ("net1", "net1drop", "net1aug", "net1noise", "net3bn")  # every RNG stream, BatchNorm statistics


def reference_args(tiny_built, out: Path) -> list:
    """The CLI arguments of the reference run: tiny data, 2 epochs, nets that draw from every RNG stream
    (order, augmentation, dropout, noise) and that keep running statistics (BatchNorm)."""
    cfg, _ = tiny_built
    return ["--ann-file", cfg.ann_file, "--image-dir", cfg.image_dir, "--train-per-class", "85", "--val-per-class",
            "15", "--image-size", "16", "--epochs", "2", "--dataset-dir", cfg.dataset_dir, "--out", out,
            "--nets", *REFERENCE_NETS, *CPU]


@pytest.fixture(scope="session")
def reference(tiny_built) -> Path:
    """One uninterrupted run, as a user starts it; resume, --jobs and predict tests compare against it.
    Shared by every worker: copy it before changing it."""
    return shared("reference")


def copy_build(tiny_built, tmp_path) -> tuple[hw4.Config, Path]:
    cfg, _ = tiny_built
    ds = tmp_path / "ds"
    shutil.copytree(cfg.dataset_dir, ds)
    return dataclasses.replace(cfg, dataset_dir=str(ds)), ds


def run_copy(tmp_path: Path, seeds=(5, 6, 7)) -> Path:
    """The committed run's metrics.json files for a few seeds, as a run folder of its own."""
    run = tmp_path / "run"
    for s in seeds:
        (run / f"seed_{s}").mkdir(parents=True)
        shutil.copy(COMMITTED / f"seed_{s}" / "metrics.json", run / f"seed_{s}" / "metrics.json")
    return run


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


COMMITTED = ROOT / "results" / "exercise"
