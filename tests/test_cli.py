"""The command line: bad output folders fail at once, before any build or training, and --help."""
from __future__ import annotations

import pytest

import hw4
from conftest import VISION_SYNTH, run_cli

VS_ANN = VISION_SYNTH / "_annotations.coco.json"


def base_args(tmp_path):
    return ["--ann-file", VS_ANN, "--image-dir", VISION_SYNTH, "--classes", "elephant", "giraffe",
            "--train-per-class", "4", "--val-per-class", "2", "--image-size", "32", "--epochs", "1",
            "--threads", "1"]


def assert_one_line_exit_2(result, *messages: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    for message in messages:
        assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["--out", "--dataset-dir"])
def test_folder_flag_that_is_a_file_fails_before_any_work(tmp_path, flag):
    a_file = tmp_path / "taken"
    a_file.write_text("keep me")
    folders = {"--out": tmp_path / "out", "--dataset-dir": tmp_path / "ds", flag: a_file}
    result = run_cli(*base_args(tmp_path), "--out", folders["--out"], "--dataset-dir", folders["--dataset-dir"])
    assert_one_line_exit_2(result, f"{flag} {a_file} is a file", "pass a folder path")
    assert a_file.read_text() == "keep me"
    assert "epoch" not in result.stdout and "train" not in result.stdout, "nothing may be built or trained first"
    assert not (tmp_path / "ds").exists() and not (tmp_path / "out").exists()


def test_folder_below_a_file_fails_before_any_work(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    result = run_cli(*base_args(tmp_path), "--out", a_file / "results", "--dataset-dir", tmp_path / "ds")
    assert_one_line_exit_2(result, f"--out {a_file / 'results'} cannot be created: {a_file} is a file")
    assert not (tmp_path / "ds").exists()


def test_build_only_does_not_check_the_output_folder(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    result = run_cli(*base_args(tmp_path), "--out", a_file, "--dataset-dir", tmp_path / "ds", "--build-only")
    assert result.returncode == 0, result.stderr


def test_help_states_every_default_from_the_config():
    text = hw4.build_parser().format_help()
    for flag in ("--epochs", "--lr", "--nets", "--seeds", "--train-per-class", "--download-retries"):
        assert flag in text
    assert text.count("(default:") >= 25
    assert "(default: 15; 5 with --demo)" in " ".join(text.split())
    assert "net3bn" in text and "net1aug" in text


def test_nets_all_expands_to_the_whole_table():
    cfg = hw4.config_from_args(hw4.build_parser().parse_args(["--nets", "all"]))
    assert cfg.nets == tuple(hw4.NETS)
    cfg = hw4.config_from_args(hw4.build_parser().parse_args(["--demo"]))
    assert (cfg.epochs, cfg.out, cfg.train_seed, cfg.training_seed) == (5, "results/demo", None, 5)
