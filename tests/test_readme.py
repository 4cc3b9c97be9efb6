"""Every command of the README, CONTRIBUTING, results/README and hw4.py's docstring that needs no network
and no COCO runs as printed on a fresh clone: the demo (at a tiny size), predict with the committed
weights, --help, and `report` on a copy of a committed run, which must rewrite its REPORT.md byte for byte."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import shlex

import hw4
from conftest import ROOT, cli, skip_rendering

DOCS = ("README.md", "CONTRIBUTING.md", "results/README.md")
NEEDS_MORE = ("DIR", "--download", "--image-folders", "--data_dir", "--ann-file", "git ", "pip ", "pytest",
              "gpu_check")  # network, COCO, a clone of another repository, or the suite itself
TINY_DEMO = ["--epochs", "1", "--dry-run", "--train-per-class", "10", "--val-per-class", "5", "--image-size", "16",
             "--threads", "1", "--device", "cpu", "--workers", "1"]


def documented_commands() -> list[str]:
    """The hw4.py commands of the docs' fenced bash blocks and of the module docstring, as printed."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("&&")[-1].strip()
                if "hw4.py" in command:
                    found.append(command)
    found += [line.split("#")[0].strip() for line in hw4.__doc__.splitlines() if line.strip().startswith("python hw4.py")]
    return list(dict.fromkeys(found))


def after_script(command: str) -> tuple[str, ...]:
    argv = shlex.split(command)
    return tuple(argv[argv.index("hw4.py") + 1:])


# one run per distinct command line: the README's `.venv/bin/python hw4.py X` and the docstring's `python hw4.py X`
RUNNABLE = list({after_script(c): c for c in documented_commands() if not any(w in c for w in NEEDS_MORE)}.values())


def test_the_docs_have_the_commands_a_newcomer_needs():
    assert any("--demo" in c for c in RUNNABLE) and any(" predict " in c for c in RUNNABLE)
    assert any(" report " in c for c in RUNNABLE)
    assert len((ROOT / "README.md").read_bytes()) < 12_000
    assert "--demo" in "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    committed_docs = "".join(p.read_text(errors="replace") for p in (ROOT / "results").rglob("*.md"))
    assert "../" not in committed_docs, "results/ names no folder outside the repository"


@pytest.mark.parametrize("command", [c for c in RUNNABLE if after_script(c)[:1] != ("report",)])
def test_a_documented_command_runs_as_printed(command, tmp_path):
    argv, cwd = list(after_script(command)), ROOT
    if "--demo" in argv:  # the same command at a tiny size, in an empty folder
        argv, cwd = argv + TINY_DEMO + ["--out", str(tmp_path / "demo")], tmp_path
    ran = subprocess.run([sys.executable, str(ROOT / "hw4.py"), *argv], cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    assert ran.returncode == 0, f"{command}\n{ran.stdout}\n{ran.stderr}"
    if "predict" in argv:
        assert "chelsea.png: " in ran.stdout


@pytest.mark.parametrize("command", [c for c in RUNNABLE if after_script(c)[:1] == ("report",)])
def test_a_documented_report_rewrites_the_committed_run_byte_for_byte(command, tmp_path, monkeypatch):
    """`report` on a copy of a committed run gives its REPORT.md files and metrics.json back byte for byte, and
    redraws every committed figure that shows no pictures. In-process and without rendering: over 10 seeds,
    rendering is about 100 figures, and the figures' code is checked by the tests that draw them."""
    committed = ROOT / after_script(command)[1]
    for beside in committed.parent.glob("*/metrics.json"):  # with the runs beside it that its report draws on
        shutil.copytree(beside.parent, tmp_path / beside.parent.name,
                        ignore=shutil.ignore_patterns("*.png", "*.pt", "*.pkl", "checkpoints"))
    run = tmp_path / committed.name
    rendered = skip_rendering(monkeypatch)
    ran = cli("report", run)
    assert ran.returncode == 0, f"{command}\n{ran.stdout}\n{ran.stderr}"
    for name in ("REPORT.md", "metrics.json"):
        for original in committed.rglob(name):
            assert (run / original.relative_to(committed)).read_bytes() == original.read_bytes(), \
                f"{original} is not what `report` writes"
    pictures = {"samples.png"} | {f"hardest_{net}.png" for net in hw4.NETS}
    drawn = {p.relative_to(run) for p in rendered}
    assert {p.relative_to(committed) for p in committed.rglob("*.png") if p.name not in pictures} == drawn
    # a seed whose own report is not committed gets it on demand, figures and all
    bare = next(s for s in sorted(run.glob("seed_*")) if not (committed / s.name / "REPORT.md").exists())
    rendered.clear()
    assert cli("report", bare).returncode == 0 and (bare / "REPORT.md").is_file()
    claims = {"claims.png"} if (committed / "claims.png").exists() else set()  # a learn-rate run claims nothing
    assert {p.name for p in rendered} >= {"curves_epoch.png", "confusion_val.png", *claims}


def test_help_names_every_flag():
    ran = subprocess.run([sys.executable, str(ROOT / "hw4.py"), "--help"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0
    for flag in ("--image-folders", "--overwrite", "--resume", "--seeds", "--demo"):
        assert flag in ran.stdout
