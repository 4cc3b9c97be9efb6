"""The three programs: hw4.py (the exercise) loads hw4_report.py and hw4_compare.py only in the commands that need
them, run as a script it is the one hw4 module its siblings import, and a change to any of them marks the commit
that a run records as dirty."""
from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import ROOT

SIBLINGS = ("hw4_report", "hw4_compare")


def python(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_importing_hw4_loads_neither_sibling():
    ran = python("-c", "import sys, hw4; print(sorted(m for m in sys.modules if m.startswith('hw4')))")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "['hw4']"


def test_as_a_script_hw4_is_the_module_its_siblings_import(tmp_path):
    """Run as __main__, a second `import hw4` would build a second Results class, and the report's isinstance
    checks and dataclass fields would see two kinds of Results."""
    code = ("import runpy, sys; sys.argv = ['hw4.py', '--help']; sys.modules.pop('hw4', None)\n"
            "try:\n    runpy.run_path('hw4.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import hw4_report, hw4\n"
            "print(hw4.__name__, hw4_report.hw4 is hw4, hw4_report.Results is hw4.Results)")
    ran = python("-c", code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "__main__ True True", "hw4 is the module that ran as the script"


def test_a_changed_sibling_marks_the_commit_dirty(tmp_path):
    for name in ("hw4.py", *(f"{s}.py" for s in SIBLINGS)):
        shutil.copy(ROOT / name, tmp_path / name)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for step in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        assert subprocess.run(git + step, capture_output=True).returncode == 0
    commit = "import hw4; print(hw4.hw4_commit())"
    clean = python("-c", commit, cwd=tmp_path).stdout.strip()
    assert len(clean) == 40 and not clean.endswith("-dirty")
    with open(tmp_path / "hw4_report.py", "a") as f:
        f.write("\n# an edit\n")
    assert python("-c", commit, cwd=tmp_path).stdout.strip() == clean + "-dirty"
