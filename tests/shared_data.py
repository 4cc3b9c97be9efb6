"""The data that every test worker shares, made once per test session by one background process, which
conftest.pytest_configure starts before the xdist workers: the demo COCO set, the tiny build and the
reference run. Each worker made its own before, about 40 s of CPU each; now the workers run other tests
while this runs. Each step ends with a marker file `<step>.done`; a failure leaves `failed` with its
traceback. Run: python tests/shared_data.py FOLDER
"""
from __future__ import annotations

import contextlib
import io
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def make(folder: Path) -> None:
    # imported here, inside the try below, so that an import error also leaves `failed` for the waiting tests
    from conftest import hw4, reference_args, tiny_config
    import hw4_sources
    demo = folder / "demo_coco"
    hw4_sources.make_demo_coco(demo, images_per_class=110, seed=0)
    (folder / "demo_coco.done").touch()
    cfg = tiny_config(demo, folder / "tiny" / "ds")
    with contextlib.redirect_stdout(io.StringIO()):
        hw4.build_subset(cfg)
    (folder / "tiny.done").touch()
    out, err = io.StringIO(), io.StringIO()  # the reference run: hw4's main() in a fresh process, as a user runs it
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = hw4.main([str(a) for a in reference_args((cfg, None), folder / "reference")])
    if code != 0:
        raise RuntimeError(f"the reference run exited with {code}:\n{out.getvalue()}\n{err.getvalue()}")
    (folder / "reference.done").touch()


if __name__ == "__main__":
    target = Path(sys.argv[1])
    try:
        make(target)
    except BaseException:
        (target / "failed").write_text(traceback.format_exc())
        raise
