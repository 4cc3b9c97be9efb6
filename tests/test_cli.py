"""The command line: bad input is one line and exit 2 before any work, interrupts stop cleanly, --help."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import hw4
import hw4_records
from test_resume import assert_same_outputs, wait_for
from conftest import (CPU, ROOT, VISION_SYNTH, VS_ANN, assert_one_line_exit_2, cli, reference_args, run_cli,
                      run_copy, skip_rendering, start_cli)


def base_args(tmp_path):
    return ["--ann-file", VS_ANN, "--image-dir", VISION_SYNTH, "--classes", "elephant", "giraffe",
            "--train-per-class", "4", "--val-per-class", "2", "--image-size", "32", "--epochs", "1",
            "--workers", "1", "--dataset-dir", tmp_path / "ds", "--out", tmp_path / "out", *CPU]


def nothing_done(tmp_path) -> bool:
    return not (tmp_path / "ds").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--out", "--dataset-dir"])
def test_folder_flag_that_is_a_file_fails_before_any_work(tmp_path, flag):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    result = cli(*base_args(tmp_path), flag, a_file)
    assert_one_line_exit_2(result, f"{flag} {a_file} is a file", "pass a folder path")
    assert a_file.read_text() == "keep me" and nothing_done(tmp_path)


def test_folder_below_a_file_fails_before_any_work(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    result = cli(*base_args(tmp_path), "--out", a_file / "results")
    assert_one_line_exit_2(result, f"--out {a_file / 'results'} cannot be created: {a_file} is a file")
    assert nothing_done(tmp_path)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_out_that_cannot_be_created_fails_before_any_work(tmp_path):
    assert_one_line_exit_2(cli(*base_args(tmp_path), "--out", "/proc/hw4-results"),
                           "--out /proc/hw4-results cannot be created or written")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert_one_line_exit_2(cli(*base_args(tmp_path), "--out", loop / "r"), "is a broken symlink or a symlink loop")
    assert nothing_done(tmp_path)


@pytest.mark.parametrize("flag", ["--out", "--dataset-dir", "--ann-file", "--image-dir", "--data_dir"])
def test_a_path_component_longer_than_the_file_system_allows(tmp_path, flag):
    assert_one_line_exit_2(cli(*base_args(tmp_path), flag, tmp_path / ("n" * 300)),
                           f"argument {flag}", "path component", "is 300 bytes long; file systems allow 255")


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "argument --seed: must be in [0, 4.29497e+09], got -1"),
    (["--seed", "4294967296"], "argument --seed: must be in [0, 4.29497e+09], got 4294967296"),
    (["--seed", "4294967295", "--seeds", "2"], "--seed 4294967295 with --seeds 2 runs past the largest seed"),
    (["--lr", "0"], "argument --lr: must be > 0, got 0"),
    (["--lr", "nan"], "argument --lr: must be > 0, got nan"),
    (["--train-per-class", "100000000"], "argument --train-per-class: must be in [1, 100000], got 100000000"),
    (["--workers", "0"], "argument --workers: must be in [1, 512], got 0"),
    (["--jobs", "0"], "argument --jobs: must be in [1, 256], got 0"),
    (["--seeds", "x"], "argument --seeds: expected an integer, got 'x'"),
    (["--download-timeout", "0"], "argument --download-timeout: must be in (0, 86400], got 0"),
])
def test_every_numeric_flag_is_checked_when_parsed(tmp_path, args, message):
    assert_one_line_exit_2(cli(*base_args(tmp_path), *args), message)
    assert nothing_done(tmp_path)


def test_results_inside_the_dataset_folder_are_refused_before_any_work(tmp_path):
    """A rebuild replaces the dataset folder, so results there would be deleted: the layout is refused."""
    for out in (tmp_path / "ds", tmp_path / "ds" / "results"):
        assert_one_line_exit_2(cli(*base_args(tmp_path), "--out", out), f"--out {out} lies inside --dataset-dir")
    assert nothing_done(tmp_path)


def test_build_only_does_not_check_the_output_folder(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert cli(*base_args(tmp_path), "--out", a_file, "--build-only").returncode == 0


def test_demo_sizes_are_bounded_before_the_demo_data_is_touched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keep = tmp_path / "demo_data" / "coco" / "demo.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("earlier demo data")
    assert_one_line_exit_2(cli("--demo", "--train-per-class", "100000000"), "must be in [1, 100000]")
    assert_one_line_exit_2(cli("--demo", "--train-per-class", "4000", "--val-per-class", "2000"),
                           "--demo generates at most 5000 images per class")
    assert keep.read_text() == "earlier demo data"


def test_one_command_at_a_time_generates_the_demo_data(tmp_path, monkeypatch):
    """While another live process generates the demo data, a command that needs another demo set is one line that
    names it and touches nothing; one that finds its set ready reads it without waiting; a killed generation's
    leftover folder goes with the next one."""
    root = tmp_path / "demo_data"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    leftover = root / f".coco.generating-{sleeper.pid}"  # a killed generation's, whose pid now runs something else
    leftover.mkdir(parents=True)
    try:
        hw4.ensure_demo_data(root, 2)
    finally:
        sleeper.kill()
        sleeper.wait()
    marker = root / "coco" / "demo.json"
    assert json.loads(marker.read_text())["images_per_class"] == 2 and not leftover.exists()
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        import hw4_records
        held = hw4_records.held_lock(Path({str(root / ".demo.lock")!r}), "demo", lambda holder: holder)
        held.__enter__()
        print("held", flush=True)
        time.sleep(300)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        hw4.ensure_demo_data(root, 2)  # ready: no lock needed
        monkeypatch.chdir(tmp_path)  # --demo's data lives in ./demo_data, the folder held here
        assert_one_line_exit_2(cli("--demo", "--train-per-class", "3", "--val-per-class", "2"),
                               f"another hw4 command (process {holder.pid}) is generating the demo data in demo_data;")
        assert json.loads(marker.read_text())["images_per_class"] == 2
    finally:
        holder.kill()
        holder.wait()


def test_an_interrupt_before_training_does_not_talk_about_resuming(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(hw4, "build_subset", interrupted)
    result = cli(*base_args(tmp_path))
    assert result.returncode == 130
    assert result.stderr.strip() == ("hw4: interrupted while building the dataset; nothing was trained. Rerun the same "
                                     "command to start that again.")


def test_a_damaged_thumbnail_is_one_line_before_any_figure(tmp_path):
    assert cli(*base_args(tmp_path), "--build-only").returncode == 0
    victim = next((tmp_path / "ds" / "train_data").iterdir())
    victim.write_bytes(b"no longer an image")
    result = cli(*base_args(tmp_path))
    assert_one_line_exit_2(result, f"cannot read {victim}", "rebuild")
    assert not list(tmp_path.rglob("*.png")), "the decoding check comes before any figure"


def stop(proc, sig, when: str) -> None:
    """Signal a run once `when` ('start': its net table is printed and its workers start right after;
    else a file that must exist first), then expect exit 130 with one line and no traceback."""
    if when == "start":
        while "fc1 in" not in proc.stdout.readline():
            assert proc.poll() is None
    else:
        wait_for(Path(when), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.startswith("hw4: interrupted.") and "--resume" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_jobs_2_stop_at_any_moment_with_130_and_resume_exactly(tiny_built, reference, tmp_path):
    """With --jobs 2: Ctrl-C or SIGTERM while the workers start, and Ctrl-C while they train, stop the run
    with exit 130 and one line; --resume then ends equal to the uninterrupted sequential run, so parallel
    workers give exactly the sequential results. Two of the reference's nets, one per worker: the BatchNorm
    net is listed first and finishes last, and the dropout net is stopped after its first epoch."""
    out, nets = tmp_path / "r", ["net3bn", "net1drop"]
    args = [*reference_args(tiny_built, out), "--jobs", "2", "--nets", *nets]
    stop(start_cli(*args), signal.SIGINT, "start")
    stop(start_cli(*args, "--resume"), signal.SIGTERM, "start")
    stop(start_cli(*args, "--resume"), signal.SIGINT, str(out / "checkpoints" / "net1drop_last.pt"))
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(reference, out, nets)
    assert list(json.loads((out / "metrics.json").read_text())["nets"]) == nets, \
        "metrics.json lists the nets in --nets order, whichever worker finishes first"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path):
    """A SIGKILLed run must not leave its decoders or trainers running as orphans."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import hw4
        hw4.run_in_processes(time.sleep, [(60,), (60,)], 2, "fork", print)
    """))
    parent = subprocess.Popen([sys.executable, str(script)])
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    deadline = time.time() + 30
    while len(pids := children.read_text().split()) < 2:
        assert time.time() < deadline
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
              for pid in pids):
        assert time.time() < deadline, "the workers outlived their parent"
        time.sleep(0.05)


def test_help_states_every_default_from_the_config():
    text = " ".join(hw4.build_parser().format_help().split())
    for flag in ("--epochs", "--lr", "--nets", "--seeds", "--train-per-class", "--download-retries"):
        assert flag in text
    assert text.count("(default:") >= 25 and "(default: 15; 5 with --demo)" in text
    assert all(name in text for name in hw4.NETS)


def test_nets_all_expands_to_the_whole_table():
    cfg = hw4.config_from_args(hw4.build_parser().parse_args(["--nets", "all"]))
    assert cfg.nets == tuple(hw4.NETS)
    cfg = hw4.config_from_args(hw4.build_parser().parse_args(["--demo"]))
    assert (cfg.epochs, cfg.out, cfg.train_seed, cfg.training_seed) == (5, "results/demo", None, 5)


def test_main_leaves_the_signal_handlers_as_it_found_them(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    cli(*base_args(tmp_path), "--epochs", "0")
    assert signal.getsignal(signal.SIGTERM) is before


def hold_locks(*folders: Path) -> subprocess.Popen:
    """Another process that holds hw4's lock on each folder until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        import hw4
        held = [hw4.run_lock(Path(f)) for f in {[str(f) for f in folders]!r}]
        for lock in held:
            lock.__enter__()
        print("held", flush=True)
        time.sleep(300)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_one_command_at_a_time_writes_into_a_folder(tiny_built, tmp_path, monkeypatch):
    """While a live process holds a folder, training, report and compare --out are each refused in one line that
    names it, and write nothing; once it is killed (SIGKILL: no clean-up ran), its lock is free at once."""
    skip_rendering(monkeypatch)
    run, train_out = tmp_path / "run", tmp_path / "train"
    shutil.copytree(ROOT / "results" / "exercise" / "seed_5", run, ignore=shutil.ignore_patterns("*.png", "*.pt"))
    holder = hold_locks(run, train_out)
    try:
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        refused = f"another hw4 command (process {holder.pid}) is writing into"
        assert_one_line_exit_2(cli("report", run), refused, f"report: {run}")
        assert_one_line_exit_2(cli("compare", run, "--reference", ROOT / "results" / "exercise", "--out", run), refused)
        assert_one_line_exit_2(cli(*reference_args(tiny_built, train_out)), refused, f"--out {train_out}")
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
        assert sorted(p.name for p in train_out.iterdir()) == [hw4_records.RUN_LOCK, hw4_records.RUN_PID]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / hw4_records.RUN_PID).exists(), "a killed holder leaves its pid file: the lock, not the file, decides"
    ran = cli("report", run)
    assert ran.returncode == 0, ran.stderr
    assert not (run / hw4_records.RUN_PID).exists()


def test_out_keeps_what_the_user_made(tiny_built, reference, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "REPORT.md").write_text("my own report")
    assert_one_line_exit_2(cli(*reference_args(tiny_built, out)), "REPORT.md is not an hw4 run's", "--overwrite")
    assert (out / "REPORT.md").read_text() == "my own report"
    (out / ".notes.tmp-1").write_text("keep me")
    hw4.remove_partial_writes(out)
    assert (out / ".notes.tmp-1").read_text() == "keep me"
    # an unfinished run is not restarted silently
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    ckpt = torch.load(run / "checkpoints" / "net1_last.pt", weights_only=True)
    torch.save({**ckpt, "epoch": 1}, run / "checkpoints" / "net1_last.pt")
    assert_one_line_exit_2(cli(*reference_args(tiny_built, run)), "holds an unfinished run (epoch 1 of 2)", "--resume")
    # the same command twice over a finished run is allowed (the demo twice), and --overwrite lets through
    args = hw4.build_parser().parse_args([str(a) for a in reference_args(tiny_built, reference)])
    hw4.check_out_folder(hw4.config_from_args(args))
    args = hw4.build_parser().parse_args([str(a) for a in reference_args(tiny_built, run)] + ["--overwrite"])
    hw4.check_out_folder(hw4.config_from_args(args))


def test_a_full_disk_is_one_line_that_names_the_folder(tmp_path, monkeypatch):
    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(hw4.UserError, match=f"no space left on the device of {tmp_path} while writing x.json"):
        hw4.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("thing, kind", [("checkpoints", "file"), ("net1.pt", "folder"), ("seed_5", "file")])
def test_a_file_or_folder_in_the_way_is_refused_before_work(tiny_built, tmp_path, thing, kind):
    out = tmp_path / "out"
    out.mkdir()
    (out / thing).mkdir() if kind == "folder" else (out / thing).write_text("mine")
    seeds = ["--seeds", "2"] if thing == "seed_5" else []
    result = cli(*reference_args(tiny_built, out), *seeds)
    assert_one_line_exit_2(result, str(out / thing), "move it away")
    assert " epoch " not in result.stdout


def handles(pid: int, sig: int) -> bool:
    """The process has installed a handler for sig (Linux: the SigCgt mask of /proc/PID/status)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_an_interrupt_while_torch_imports_is_one_line_and_130(tmp_path):
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, str(ROOT / "hw4.py"), "--help"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 30
        while not handles(proc.pid, signal.SIGTERM) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)  # the first lines of hw4.py have run: torch is importing now
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0:  # the machine imported torch in under 0.3 s: nothing to interrupt
            continue
        assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_path_that_is_not_utf8_does_not_crash_the_last_print(tiny_built, tmp_path):
    cfg, _ = tiny_built
    odd = os.fsdecode(bytes(tmp_path) + b"/ds\xff")
    shutil.copytree(cfg.dataset_dir, odd)
    ran = subprocess.run([sys.executable, str(ROOT / "hw4.py"), "--ann-file", cfg.ann_file, "--image-dir",
                          cfg.image_dir, "--train-per-class", "85", "--val-per-class", "15", "--image-size", "16",
                          "--dataset-dir", odd, "--build-only"], capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert ran.returncode == 0 and b"Traceback" not in ran.stderr, ran.stderr


def test_device_auto_never_picks_a_path_that_has_not_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)  # an MPS or XPU machine
    assert hw4.pick_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", [".", "", "..", "a/b", "bad\x1bname"])
def test_a_class_name_that_is_no_folder_name_is_refused(name, tmp_path):
    ran = cli("--classes", "cat", name, "--demo", "--out", tmp_path / "o")
    assert_one_line_exit_2(ran, "is not a class name")
    assert "\x1b" not in ran.stderr


@pytest.mark.parametrize("mine", ["samples.png", "curves_epoch.png", "confusion_net1_val.png", "hardest_net1.png",
                                  "seed_6/samples.png"])
def test_a_users_own_figures_in_out_are_not_overwritten(mine, tiny_built, tmp_path):
    out = tmp_path / "out"
    (out / mine).parent.mkdir(parents=True)
    (out / mine).write_bytes(b"my own figure")
    args = ["--seeds", "2"] if mine.startswith("seed_") else []
    ran = cli(*reference_args(tiny_built, out), *args)
    assert_one_line_exit_2(ran, f"{mine} is not an hw4 run's (no hw4 metrics.json beside it)", "--overwrite")
    assert (out / mine).read_bytes() == b"my own figure" and sorted(p.name for p in out.rglob("*")) == sorted(
        Path(mine).parts)


def test_an_empty_out_and_a_large_picture_say_nothing_misleading(tmp_path, monkeypatch):
    import warnings
    from PIL import Image
    assert_one_line_exit_2(cli("--demo", "--out", ""), "--out: an empty path")
    Image.new("RGB", (40, 40), "red").save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the warning limit, under the error's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hw4.decode_rgb_thumbnail(tmp_path / "big.png", 16).size == (16, 16)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("name", ["## Verdict: reproduced", "<img src=x>", "a|b", "`code`"])
def test_class_names_that_markdown_or_html_would_act_on_are_refused(name, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    assert_one_line_exit_2(cli("--classes", "cat", name, "--demo", "--out", tmp_path / "o"), "is not a class name")
    run = run_copy(tmp_path, seeds=(5, 6))
    blob = json.loads((run / "seed_6" / "metrics.json").read_text())
    blob["nets"]["net1"]["classes"][0] = name
    (run / "seed_6" / "metrics.json").write_text(json.dumps(blob))
    assert_one_line_exit_2(cli("report", run), "nets.net1.classes is not a list of 2 to 1,000 distinct names")


@pytest.mark.parametrize("kind", ["link", "folder"])
@pytest.mark.parametrize("name", [hw4_records.RUN_PID, hw4_records.RUN_LOCK])
def test_a_lock_file_that_is_a_link_or_a_folder_is_refused_and_its_target_kept(tmp_path, kind, name):
    """The lock and its pid file are never written through a link (the --out lock of report shown here; the build
    and demo locks are the same held_lock): one line, exit 2, the link's target untouched."""
    run = run_copy(tmp_path, seeds=(5, 6))
    victim = tmp_path / "victim"
    victim.write_text("PRECIOUS")
    if kind == "link":
        (run / name).symlink_to(victim)
    else:
        (run / name).mkdir()
    ran = cli("report", run)
    assert_one_line_exit_2(ran, str(run / name), "remove it")
    assert victim.read_text() == "PRECIOUS" and not (run / "REPORT.md").exists()
    for lock in ("build", "demo"):
        pid = tmp_path / lock / ".x.pid"
        pid.parent.mkdir()
        pid.symlink_to(victim)
        with pytest.raises(hw4_records.UserError, match="is a link"):
            with hw4_records.held_lock(pid.with_suffix(".lock"), lock, lambda holder: holder):
                pass
        assert victim.read_text() == "PRECIOUS"


def test_hw4_without_its_layers_or_siblings_is_one_line_before_any_work(tmp_path):
    """hw4.py copied alone, or with a broken sibling: one line and exit 2, before any data is made."""
    def copied_hw4(*args):
        return subprocess.run([sys.executable, str(tmp_path / "hw4.py"), *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    shutil.copy(ROOT / "hw4.py", tmp_path / "hw4.py")
    assert_one_line_exit_2(copied_hw4("--demo", "--epochs", "1"), "hw4_records", "copy the whole folder")
    for name in ("hw4_records.py", "hw4_sources.py", "hw4_report.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "hw4_compare.py").write_text("def broken(:\n")
    for args in (("--demo", "--epochs", "1"), ("report", tmp_path)):
        assert_one_line_exit_2(copied_hw4(*args), "copy the whole folder")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == [
        "hw4.py", "hw4_compare.py", "hw4_records.py", "hw4_report.py", "hw4_sources.py"], "nothing was made"


@pytest.mark.parametrize("module", ["hw4_report.py", "hw4_compare.py"])
def test_a_sibling_run_as_a_program_names_the_command(module):
    ran = subprocess.run([sys.executable, str(ROOT / module), "results/exercise"], capture_output=True, text=True,
                         timeout=120)
    assert_one_line_exit_2(ran, "python hw4.py")
