"""The layers: hw4.py (the exercise) stands on hw4_sources.py and hw4_records.py, which never import it; it loads
hw4_report.py and hw4_compare.py only in the commands that need them, and they see a run only through its records.
A change to any of them marks the commit that a run records as dirty."""
from __future__ import annotations

import ast
import graphlib
import shutil
import subprocess
import sys

from conftest import ROOT

SIBLINGS = ("hw4_records", "hw4_sources", "hw4_report", "hw4_compare")


def python(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


MODULES = ("hw4", *SIBLINGS)


def imports_of(module: str) -> set[str]:
    """The project modules a module imports anywhere in its file, imports inside functions included."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found & set(MODULES)


def test_the_import_graph_has_no_circle_and_only_hw4_imports_hw4():
    graph = {m: imports_of(m) for m in MODULES}
    assert all("hw4" not in graph[m] for m in SIBLINGS), graph
    assert graph["hw4_records"] == set() and graph["hw4_sources"] == {"hw4_records"}, graph
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a circle
    assert order[-1] == "hw4"


def test_importing_hw4_loads_its_layers_but_neither_report_nor_compare():
    ran = python("-c", "import sys, hw4; print(sorted(m for m in sys.modules if m.startswith('hw4')))")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "['hw4', 'hw4_records', 'hw4_sources']"


def test_as_a_script_hw4_hands_the_report_the_records_it_writes(tmp_path):
    """Run as __main__, hw4.py and the report share one Results class: the one of hw4_records."""
    code = ("import runpy, sys; sys.argv = ['hw4.py', '--help']\n"
            "try:\n    runpy.run_path('hw4.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import hw4_report, hw4_records\n"
            "print('hw4' in sys.modules, hw4_report.Results is hw4_records.Results)")
    ran = python("-c", code)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "False True", "the script's run imports no second hw4"


def test_a_changed_sibling_marks_the_commit_dirty(tmp_path):
    for name in ("hw4.py", *(f"{s}.py" for s in SIBLINGS)):
        shutil.copy(ROOT / name, tmp_path / name)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for step in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        assert subprocess.run(git + step, capture_output=True).returncode == 0
    commit = "import hw4_records; print(hw4_records.hw4_commit())"
    clean = python("-c", commit, cwd=tmp_path).stdout.strip()
    assert len(clean) == 40 and not clean.endswith("-dirty")
    with open(tmp_path / "hw4_report.py", "a") as f:
        f.write("\n# an edit\n")
    assert python("-c", commit, cwd=tmp_path).stdout.strip() == clean + "-dirty"
