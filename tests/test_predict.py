"""`hw4.py predict`: classify pictures with a weights file hw4 wrote."""
from __future__ import annotations

import contextlib
import dataclasses
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hw4
from conftest import PHOTOS, assert_one_line_exit_2, cli

CLASSES = ["airplane", "bus", "cat", "dog", "pizza"]  # the reference run's classes


def test_a_folder_is_its_pictures_in_name_order(reference, tmp_path):
    folder = tmp_path / "my pictures"
    folder.mkdir()
    names = ["b_coffee.png", "a_chelsea.png", "c_logo.PNG"]
    for name, photo in zip(names, ("coffee.png", "chelsea.png", "logo.png")):
        shutil.copy(PHOTOS / photo, folder / name)
    (folder / ".DS_Store").write_bytes(b"\0Bud1")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "inner").mkdir()
    shutil.copy(PHOTOS / "astronaut.png", folder / "inner" / "astronaut.png")  # sub-folders are not entered
    weights = reference / "net1.pt"
    ran = cli("predict", "--weights", weights, folder)
    assert ran.returncode == 0, ran.stderr
    one_by_one = cli("predict", "--weights", weights, *(folder / n for n in sorted(names)))
    assert ran.stdout == one_by_one.stdout and len(ran.stdout.splitlines()) == 3
    assert [line.split(": ")[0] for line in ran.stdout.splitlines()] == [str(folder / n) for n in sorted(names)]


def test_an_empty_folder_is_one_line(reference, tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"\0Bud1")
    assert_one_line_exit_2(cli("predict", "--weights", reference / "net1.pt", tmp_path),
                           f"{tmp_path} holds no pictures")


def test_a_crafted_weights_file_is_refused_before_the_net_is_built(reference, tmp_path):
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"]["spec"]["extra_convs"] = 200_000
    torch.save(state, tmp_path / "huge.pt")
    started = time.perf_counter()
    with pytest.raises(hw4.UserError, match="not hw4 weights .*out of bounds"):
        hw4.predict_images(tmp_path / "huge.pt", [PHOTOS / "chelsea.png"])
    assert time.perf_counter() - started < 10
    state["_extra_state"]["spec"].update(extra_convs=10, channels=[4096, 4096])
    torch.save(state, tmp_path / "wide.pt")
    with pytest.raises(hw4.UserError, match="parameters"):
        hw4.predict_images(tmp_path / "wide.pt", [PHOTOS / "chelsea.png"])


def test_predict_runs_in_chunks(reference, monkeypatch):
    monkeypatch.setattr(hw4, "PREDICT_CHUNK", 2)
    seen = []
    original = hw4.to_input
    monkeypatch.setattr(hw4, "to_input", lambda x: seen.append(len(x)) or original(x))
    rows = hw4.predict_images(reference / "net1.pt", [PHOTOS / "chelsea.png"] * 5)
    assert len(rows) == 5 and seen == [2, 2, 1]
    assert all(r["probs"] == pytest.approx(rows[0]["probs"], abs=1e-5) for r in rows)


def test_predict_and_messages_say_what_is_wrong(tmp_path, demo_coco):
    torch.save(torch.zeros(3), tmp_path / "bare.pt")
    result = cli("predict", "--weights", tmp_path / "bare.pt", PHOTOS / "chelsea.png")
    assert_one_line_exit_2(result, "is not hw4 weights")
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path, PHOTOS / "chelsea.png"), "is a folder")
    assert_one_line_exit_2(cli("--ann-file", tmp_path, "--image-dir", tmp_path, "--dataset-dir", tmp_path / "d",
                               "--build-only"), f"--ann-file {tmp_path} is a folder")
    assert_one_line_exit_2(cli("--demo", "--data_dir", tmp_path), "--data_dir has no use with it")
    assert_one_line_exit_2(cli("--data_dir", tmp_path / "none", "--build-only", "--dataset-dir", tmp_path / "d"),
                           "python hw4.py --demo")
    assert_one_line_exit_2(cli("--lr", "-1"), "argument --lr: must be > 0, got -1")
    assert cli("--lr", "-1").stderr.startswith("hw4: error:") and cli("predict").stderr.startswith("hw4: error:")
    note = cli("--threads", "1000", "--build-only", "--data_dir", tmp_path / "none", "--dataset-dir", tmp_path / "d")
    assert "note: --threads 1000 is more than" not in note.stdout, "--build-only trains nothing"
    args = hw4.build_parser().parse_args(["--threads", "1000", "--out", str(tmp_path / "o")])
    with contextlib.redirect_stdout(buffer := __import__("io").StringIO()):
        hw4.check_before_work(hw4.config_from_args(args), args)
    assert "note: --threads 1000 is more than" in buffer.getvalue()


def nan_weights(reference: Path, tmp_path: Path) -> Path:
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    return tmp_path / "diverged.pt"


def test_predict_refuses_nan_weights_and_duplicate_classes(reference, tmp_path):
    assert_one_line_exit_2(cli("predict", "--weights", nan_weights(reference, tmp_path), PHOTOS / "chelsea.png"),
                           "holds NaN or infinite weights: the training diverged")
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"]["classes"] = ["cat", "cat", "dog", "dog", "pizza"]
    torch.save(state, tmp_path / "dup.pt")
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path / "dup.pt", PHOTOS / "chelsea.png"),
                           "is not hw4 weights (ValueError: a net spec out of bounds)")


def test_predict_accepts_every_size_training_accepts_and_sizes_its_batch(reference):
    meta = torch.load(reference / "net1.pt", weights_only=True)["_extra_state"]
    for name in ("net1", "net2", "net1fc"):
        spec = dataclasses.asdict(hw4.NETS[name])
        assert hw4.spec_from_weights({**meta, "spec": spec, "image_size": 640}) == hw4.NETS[name]
        assert hw4.spec_from_weights({**meta, "spec": spec, "image_size": hw4.MAX_IMAGE_SIZE}) == hw4.NETS[name]
    assert hw4.predict_chunk(hw4.NETS["net1"], 64) == hw4.PREDICT_CHUNK
    assert 1 <= hw4.predict_chunk(hw4.NETS["net1"], hw4.MAX_IMAGE_SIZE) < 4


def test_a_device_file_as_weights_is_not_called_missing():
    assert_one_line_exit_2(cli("predict", "--weights", "/dev/zero", PHOTOS / "chelsea.png"),
                           "--weights /dev/zero is not a regular file")


def test_class_names_from_weights_are_escaped_on_the_terminal(reference, tmp_path):
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"]["classes"] = ["\x1b[2Jairplane", "bus\nfake.png: cat (1.000)", "cat", "dog", "pizza"]
    torch.save(state, tmp_path / "escapes.pt")
    ran = cli("predict", "--weights", tmp_path / "escapes.pt", PHOTOS / "chelsea.png")
    assert ran.returncode == 0, ran.stderr
    assert "\x1b" not in ran.stdout and len(ran.stdout.strip().splitlines()) == 1
    assert "\\x1b[2Jairplane" in ran.stdout and "bus\\nfake.png" in ran.stdout


def test_a_crafted_net_whose_activations_cannot_fit_is_refused(reference, tmp_path):
    state = torch.load(reference / "net1.pt", weights_only=True)
    state["_extra_state"].update(image_size=1024)
    state["_extra_state"]["spec"].update(channels=[1024, 1], hidden=[1])  # few parameters, 12 GB a picture
    torch.save(state, tmp_path / "wide.pt")
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path / "wide.pt", PHOTOS / "chelsea.png"),
                           "a net whose activations take 12,884,901,888 bytes a picture")


def test_a_weights_file_that_inflates_beyond_any_net_is_refused_before_inflating(tmp_path, monkeypatch):
    import zipfile
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", b"\0" * (8 * 2 ** 20))  # 8 MB of zeros: a few kB on disk
    monkeypatch.setattr(hw4, "max_predict_params", lambda classes: 2 ** 20)  # so that 8 MB is beyond any net
    assert_one_line_exit_2(cli("predict", "--weights", tmp_path / "bomb.pt", PHOTOS / "chelsea.png"),
                           "bytes once inflated, more than any net of the table")
    assert (tmp_path / "bomb.pt").stat().st_size < 100_000


@pytest.fixture(scope="module")
def trained_weights(reference):
    return reference / "net1.pt"


def test_predict_on_fixture_photos(trained_weights):
    photos = sorted(PHOTOS.iterdir())
    rows = hw4.predict_images(trained_weights, photos)
    assert len(rows) == len(photos)
    for row in rows:
        probs = np.array(list(row["probs"].values()))
        assert list(row["probs"]) == CLASSES and (probs >= 0).all() and probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert row["class"] == CLASSES[int(probs.argmax())]
    result = cli("predict", "--weights", trained_weights, *photos)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == len(photos) and "chelsea.png: " in result.stdout


def decompression_bomb(path):
    """A tiny PNG whose header claims 15000 x 15000 pixels: PIL refuses it as a decompression bomb."""
    import struct
    import zlib
    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    blob = bytearray(path.read_bytes())
    blob[16:24] = struct.pack(">II", 15000, 15000)
    blob[29:33] = struct.pack(">I", zlib.crc32(bytes(blob[12:29])))
    path.write_bytes(bytes(blob))
    return path


def test_predict_errors_are_clean(trained_weights, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    bogus = tmp_path / "bogus.pt"
    torch.save({"weight": torch.zeros(3)}, bogus)
    results_pickle = tmp_path / "results2.pkl"  # a likely mix-up; torch warns about its protocol
    results_pickle.write_bytes(pickle.dumps({"epoch": {}}, protocol=4))
    cases = [
        ((results_pickle, PHOTOS / "chelsea.png"), "is not hw4 weights"),
        ((trained_weights, text), f"cannot read {text} as an image"),
        ((trained_weights, decompression_bomb(tmp_path / "bomb.png")), "cannot read"),
        ((trained_weights, tmp_path / "missing.jpg"), "image not found"),
        ((trained_weights, tmp_path / ("y" * 300 + ".jpg")), "is 304 bytes long; file systems allow 255"),
        ((tmp_path / "none.pt", PHOTOS / "chelsea.png"), "weights file not found"),
        ((bogus, PHOTOS / "chelsea.png"), "is not hw4 weights"),
        ((text, PHOTOS / "chelsea.png"), "is not hw4 weights"),
    ]
    for (weights, image), message in cases:
        assert_one_line_exit_2(cli("predict", "--weights", weights, image), message)
