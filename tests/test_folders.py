"""Class folders as input (--image-folders): the layout checked, the pictures taken as given, shared
pictures counted, and every bad input refused in one line before anything is written."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hw4
import hw4_sources
from conftest import CPU, assert_one_line_exit_2, cli, skip_rendering

CLASSES = ("airplane", "bus", "cat")
PER_SPLIT = {"train": 4, "val": 2}


def picture(path: Path, seed: int, size: int = 16, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, quality=90)


def class_folders(root: Path) -> Path:
    """3 classes, 4 train + 2 val pictures each, COCO-named; picture 1001 sits in train/airplane and
    train/bus (two classes), picture 1002 in train/cat and val/bus (two classes, both splits); macOS junk
    and a README are there too. One 32x32 grayscale picture needs resizing."""
    for c, name in enumerate(CLASSES):
        for split, n in PER_SPLIT.items():
            for k in range(n):
                image_id = 100 * (c + 1) + 10 * (split == "val") + k
                picture(root / split / name / f"COCO_train2014_{image_id:012d}.jpg", image_id)
    for split in PER_SPLIT:
        (root / split / ".DS_Store").write_bytes(b"\0Bud1")
    (root / "train" / "cat" / "notes.txt").write_text("not a picture")
    shared = {1001: ["train/airplane", "train/bus"], 1002: ["train/cat", "val/bus"]}
    for image_id, folders in shared.items():
        for folder in folders:
            picture(root / folder / f"COCO_train2014_{image_id:012d}.jpg", image_id)
    picture(root / "val" / "cat" / "grey_one.jpg", 7, size=32, mode="L")
    return root


@pytest.fixture
def folders(tmp_path) -> Path:
    return class_folders(tmp_path / "pics")


def build(folders: Path, tmp_path: Path, **overrides) -> dict:
    settings = {"train_per_class": None, "val_per_class": None, "workers": 1, **overrides}
    cfg = hw4.Config(image_folders=str(folders), classes=CLASSES, image_size=16, dataset_dir=str(tmp_path / "ds"),
                     threads=1, **settings)
    return hw4.build_subset(cfg)


def test_the_folders_decide_split_and_class_and_shared_pictures_are_counted(folders, tmp_path):
    manifest = build(folders, tmp_path)
    assert manifest["source"] == "image_folders"
    assert manifest["counts"] == {"train": {"airplane": 5, "bus": 5, "cat": 5}, "val": {"airplane": 2, "bus": 3,
                                                                                       "cat": 3}}
    shared = manifest["shared_pictures"]
    assert (shared["kept"], shared["in_two_classes"], shared["in_both_splits"]) == (True, 2, 1)
    assert shared["class_pairs"] == {"airplane/bus": 1, "bus/cat": 1}
    assert [p["image_id"] for p in shared["pictures"]] == [1001, 1002]
    by_file = {e["file_name"]: e for e in manifest["entries"]}
    assert not any(".DS_Store" in f or f.endswith(".txt") for f in by_file)
    assert by_file["val/bus/COCO_train2014_000000001002.jpg"]["also_shows"] == ["cat"]
    assert by_file["train/airplane/COCO_train2014_000000001001.jpg"]["also_shows"] == ["bus"]
    assert by_file["train/airplane/COCO_train2014_000000000100.jpg"]["image_id"] == 100
    grey = by_file["val/cat/grey_one.jpg"]
    assert grey["image_id"] == hw4_sources.picture_id(folders / "val/cat/grey_one.jpg") > 10 ** 6  # from its bytes, stable
    ds = tmp_path / "ds"
    # a picture of the right size keeps its bytes; the 32x32 one is resized to 16x16 RGB
    same = by_file["train/bus/COCO_train2014_000000000200.jpg"]
    assert (ds / same["path"]).read_bytes() == (folders / same["file_name"]).read_bytes()
    with Image.open(ds / grey["path"]) as img:
        assert img.size == (16, 16) and img.mode == "RGB"
    facts = hw4.DatasetFacts.from_manifest(manifest)
    assert facts.val_also_shows["bus"]["cat"] == 1 and facts.shared["in_two_classes"] == 2


def test_caps_draw_a_seeded_subset_and_exclusive_drops_shared_pictures(folders, tmp_path):
    capped = build(folders, tmp_path, train_per_class=3, val_per_class=2)
    assert capped["counts"]["train"] == {"airplane": 3, "bus": 3, "cat": 3}
    again = build(folders, tmp_path / "again", train_per_class=3, val_per_class=2)
    assert [e["file_name"] for e in again["entries"]] == [e["file_name"] for e in capped["entries"]]
    exclusive = build(folders, tmp_path / "x", exclusive=True)
    assert exclusive["shared_pictures"]["kept"] is False
    assert exclusive["shared_pictures"]["in_two_classes"] == 0
    assert not {1001, 1002} & {e["image_id"] for e in exclusive["entries"]}
    with pytest.raises(hw4.UserError, match="class 'airplane' has 2 val pictures .* asks for 3"):
        build(folders, tmp_path / "y", val_per_class=3)


def test_runs_are_keyed_by_content_so_a_fresh_copy_elsewhere_matches_and_an_edit_does_not(folders, tmp_path):
    """A clone on another machine has other paths and mtimes: another build fingerprint (the dataset folder
    is rebuilt), but the same content digest, so run fingerprints match and --resume extends a committed run."""
    first = build(folders, tmp_path / "a")
    copy = tmp_path / "elsewhere" / "pics"
    shutil.copytree(folders, copy)  # copytree keeps mtimes: move them, as a clone would
    for path in copy.rglob("*"):
        os.utime(path, (1e9, 1e9))
    second = build(copy, tmp_path / "b")
    assert second["fingerprint"] != first["fingerprint"] and second["content"] == first["content"]
    cfg = hw4.Config(classes=CLASSES)
    cpu = torch.device("cpu")
    assert hw4.run_fingerprint(cfg, first, "net1", cpu) == hw4.run_fingerprint(cfg, second, "net1", cpu)
    picture(copy / "train" / "bus" / "COCO_train2014_000000000200.jpg", 99)  # one picture's pixels change
    assert build(copy, tmp_path / "c")["content"] != first["content"]


def test_a_build_from_before_the_content_digest_is_rebuilt_not_refused(folders, tmp_path):
    manifest = build(folders, tmp_path)
    path = tmp_path / "ds" / "manifest.json"
    old = json.loads(path.read_text())
    del old["content"]
    path.write_text(json.dumps(old))
    assert build(folders, tmp_path)["content"] == manifest["content"]
    assert "content" in json.loads(path.read_text())


def folder_cli(folders: Path, tmp_path: Path, *extra) -> list:
    return ["--image-folders", folders, "--classes", *CLASSES, "--image-size", "16", "--dataset-dir",
            tmp_path / "ds", "--out", tmp_path / "out", "--workers", "1", *extra]


def test_bad_folders_get_one_line_before_anything_is_written(folders, tmp_path):
    (folders / "val" / "cat").rename(folders / "val" / "cats")
    assert_one_line_exit_2(cli(*folder_cli(folders, tmp_path, "--build-only")), "cats", "closest is 'cat'")
    (folders / "val" / "cats").rename(folders / "val" / "cat")

    for f in (folders / "val" / "bus").iterdir():
        f.rename(folders / f.name)  # the class folder is left empty (and the pictures sit beside train/)
    assert_one_line_exit_2(cli(*folder_cli(folders, tmp_path, "--build-only")), "class 'bus' has no images")
    for f in folders.glob("*.jpg"):
        f.rename(folders / "val" / "bus" / f.name)

    fake = folders / "train" / "cat" / "COCO_train2014_000000009999.jpg"
    fake.write_text("<html>not a jpeg</html>")
    assert_one_line_exit_2(cli(*folder_cli(folders, tmp_path, "--build-only")), str(fake), "not a readable image")
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.building-*"))
    fake.unlink()

    os.mkfifo(folders / "train" / "cat" / "pipe.jpg")  # would block a reader forever
    assert_one_line_exit_2(cli(*folder_cli(folders, tmp_path, "--build-only")), "pipe.jpg", "not a regular file")
    (folders / "train" / "cat" / "pipe.jpg").unlink()

    os.rename(folders / "val", folders / "validation")
    assert_one_line_exit_2(cli(*folder_cli(folders, tmp_path, "--build-only")), "has no val/ folder")
    os.rename(folders / "validation", folders / "val")

    assert_one_line_exit_2(cli(*folder_cli(folders, tmp_path, "--build-only", "--download")), "--download")
    assert_one_line_exit_2(cli("--image-folders", tmp_path / "nowhere", "--build-only",
                               "--dataset-dir", tmp_path / "ds"), "is not a folder")
    assert not (tmp_path / "ds").exists()


def test_a_run_on_class_folders_reports_the_shared_pictures(folders, tmp_path, monkeypatch):
    skip_rendering(monkeypatch)  # the manifest's counts and the report's text are the point
    ran = cli(*folder_cli(folders, tmp_path, "--nets", "net1", "--epochs", "1", "--dry-run", *CPU))
    assert ran.returncode == 0, ran.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["dataset"]["shared"]["in_two_classes"] == 2
    assert metrics["config"]["image_folders"] == str(folders)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "2 pictures sit in two class folders" in text and "1 in both splits" in text
    assert "the class folders of" in text
    rerun = cli(*folder_cli(folders, tmp_path, "--nets", "net1", "--epochs", "1", "--dry-run", "--build-only"))
    assert "reusing the dataset" in rerun.stdout  # the same folders: the same build
    picture(folders / "train" / "cat" / "COCO_train2014_000000005555.jpg", 5555)
    rebuilt = cli(*folder_cli(folders, tmp_path, "--build-only"))
    assert rebuilt.returncode == 0 and "reusing" not in rebuilt.stdout  # an edited folder is another build


def test_the_build_works_with_spawn_where_fork_is_missing(folders, tmp_path, monkeypatch):
    """Windows has no fork: the build's worker pool then spawns, with the same result."""
    forked = build(folders, tmp_path / "fork", workers=2)
    monkeypatch.setattr(hw4_sources, "build_start_method", lambda: "spawn")
    spawned = build(folders, tmp_path / "spawn", workers=2)
    assert spawned["entries"] == forked["entries"]
    for entry in spawned["entries"]:
        assert (tmp_path / "spawn" / "ds" / entry["path"]).read_bytes() == \
            (tmp_path / "fork" / "ds" / entry["path"]).read_bytes()


def test_a_fifo_among_the_images_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "x.jpg")
    assert hw4_sources.write_thumbnails([(str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg"), 16)]) == ["not a regular file"]


def test_a_file_name_that_is_not_utf8_gets_an_id(tmp_path):
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg"))  # as os.walk gives it: surrogate-escaped
    odd.write_bytes(b"a picture's bytes")
    (tmp_path / "plain.jpg").write_bytes(b"another picture's bytes")
    assert hw4_sources.picture_id(odd) == hw4_sources.picture_id(odd) != hw4_sources.picture_id(tmp_path / "plain.jpg")


def test_one_picture_in_several_class_folders_is_found_by_its_bytes(tmp_path):
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for folder in ("train/cat", "train/dog", "val/cat", "val/dog"):
        (tmp_path / folder).mkdir(parents=True)
    for folder in ("train/cat", "train/dog", "val/dog"):
        Image.fromarray(pixels).save(tmp_path / folder / "dup.jpg")
    for k, folder in enumerate(("train/cat", "train/dog", "val/cat", "val/dog")):
        Image.fromarray(np.full((16, 16, 3), 40 * k, np.uint8)).save(tmp_path / folder / f"own{k}.jpg")
    pictures = hw4.scan_class_folders(tmp_path, ["cat", "dog"])
    cfg = hw4.Config(image_folders=str(tmp_path), classes=("cat", "dog"), train_per_class=None, val_per_class=None)
    summary = hw4.shared_pictures_summary(pictures, cfg)
    assert (summary["in_two_classes"], summary["in_both_splits"]) == (1, 1)
    kept = hw4.choose_folder_pictures(pictures, dataclasses.replace(cfg, exclusive=True))
    assert "dup.jpg" not in {Path(p.file_name).name for p in kept} and len(kept) == 4


@pytest.mark.parametrize("inside", ["dataset", "out"])
def test_no_output_folder_lies_inside_the_class_folders(inside, tmp_path):
    pics = tmp_path / "pics"
    (pics / "train" / "cat").mkdir(parents=True)
    (pics / "val" / "cat").mkdir(parents=True)
    within = pics / "train" / "cat" / "hw4_out"
    ds, out = (within, tmp_path / "out") if inside == "dataset" else (tmp_path / "ds", within)
    ran = cli("--image-folders", pics, "--classes", "cat", "dog", "--dataset-dir", ds, "--out", out)
    assert_one_line_exit_2(ran, f"{'--dataset-dir' if inside == 'dataset' else '--out'} {within} lies inside "
                                f"--image-folders {pics}")
    assert not within.exists()
