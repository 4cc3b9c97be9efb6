"""The data stage: choosing the COCO subset, writing it, the manifest, reuse and errors."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hw4
import hw4_sources
from conftest import (KWCOCO, PHOTOS, ROOT, VISION_SYNTH, VS_ANN, assert_one_line_exit_2, cli, copy_build,
                      demo_paths, make_config)

VS_ARGS = ["--ann-file", VS_ANN, "--image-dir", VISION_SYNTH, "--classes", "elephant", "giraffe", "kite",
           "--val-per-class", "2", "--build-only", "--workers", "1"]


def pixels_digest(path: Path) -> str:
    with Image.open(path) as img:
        return hashlib.sha256(np.asarray(img).tobytes()).hexdigest()


def check_build(dataset_dir: Path, manifest: dict, cfg: hw4.Config) -> None:
    """Counts, uniqueness by COCO id and by content, RGB at size, manifest == files on disk."""
    entries = manifest["entries"]
    per = {"train": cfg.train_per_class, "val": cfg.val_per_class}
    for split, n in per.items():
        for name in cfg.classes:
            assert sum(e["split"] == split and e["class"] == name for e in entries) == n
    ids = [e["image_id"] for e in entries]
    assert len(ids) == len(set(ids)), "a COCO image was used twice"
    sources = [(Path(cfg.image_dir) / e["file_name"]).read_bytes() for e in entries]
    assert len({hashlib.sha256(s).hexdigest() for s in sources}) == len(entries), "same source content twice"
    assert len({pixels_digest(dataset_dir / e["path"]) for e in entries}) == len(entries)
    for e in entries:
        with Image.open(dataset_dir / e["path"]) as img:
            assert img.mode == "RGB" and img.size == (cfg.image_size, cfg.image_size)
        assert e["label"] == list(cfg.classes).index(e["class"])
    on_disk = {f"{s}_data/{p.name}" for s in ("train", "val") for p in (dataset_dir / f"{s}_data").iterdir()}
    assert on_disk == {e["path"] for e in entries}
    assert manifest["fingerprint"] == cfg.build_fingerprint()
    assert manifest["config"]["ann_file"] == cfg.ann_file, "paths are recorded as given, not resolved"


def test_issue_command_on_vision_synth(tmp_path):
    out = tmp_path / "x"
    first = cli(*VS_ARGS, "--train-per-class", "6", "--dataset-dir", out)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    cfg = make_config(VS_ANN, VISION_SYNTH, out, classes=("elephant", "giraffe", "kite"), train_per_class=6,
                      val_per_class=2)
    check_build(out, manifest, cfg)
    assert len(manifest["entries"]) == 24
    assert sorted(p.name for p in (out / "train_data").iterdir())[0].startswith("elephant_img_")

    again = cli(*VS_ARGS, "--train-per-class", "6", "--dataset-dir", out)
    assert again.returncode == 0 and "reusing" in again.stdout

    too_many = cli(*VS_ARGS, "--train-per-class", "30", "--dataset-dir", out)
    assert_one_line_exit_2(too_many, "'elephant'", "17", "32")
    assert json.loads((out / "manifest.json").read_text()) == manifest, "a failed run must not touch the build"


def test_kwcoco_multilabel_subfolders(tmp_path):
    cfg = make_config(KWCOCO / "instances.json", KWCOCO, tmp_path / "ds", classes=("airplane", "cat", "dog"),
                      train_per_class=10, val_per_class=4)
    manifest = hw4.build_subset(cfg)
    check_build(tmp_path / "ds", manifest, cfg)
    assert all(e["file_name"].startswith("_assets/images/") for e in manifest["entries"])


def test_demo_data_grayscale_and_two_class_images(demo_coco, tmp_path):
    ann, images = demo_paths(demo_coco)
    cfg = make_config(ann, images, tmp_path / "ds", train_per_class=80, val_per_class=20)
    manifest = hw4.build_subset(cfg)
    check_build(tmp_path / "ds", manifest, cfg)
    coco = hw4.load_coco(ann)
    modes = {Image.open(images / e["file_name"]).mode for e in manifest["entries"]}
    assert "L" in modes, "the demo subset should include grayscale sources"
    multi = [e for e in manifest["entries"] if len({a["category_id"] for a in coco.imgToAnns[e["image_id"]]}) > 1]
    assert multi, "the default policy keeps images that show two classes"
    name_of = {cid: name for name, cid in hw4_sources.DEMO_CATEGORIES.items()}
    for e in manifest["entries"]:  # each under the class it was drawn for; the others are noted
        shown = {name_of[a["category_id"]] for a in coco.imgToAnns[e["image_id"]]}
        assert e["class"] in shown
        assert e["also_shows"] == sorted(shown - {e["class"]})


def test_demo_sizes_vary(demo_coco):
    ann, _ = demo_paths(demo_coco)
    data = json.loads(ann.read_text())
    assert len({(i["width"], i["height"]) for i in data["images"]}) > 20
    assert {c["id"] for c in data["categories"]} >= {5, 6, 17, 18, 59}


def test_exclusive_skips_images_with_two_classes(demo_coco, tmp_path):
    ann, images = demo_paths(demo_coco)
    cfg = make_config(ann, images, tmp_path / "ds", train_per_class=60, val_per_class=20, exclusive=True)
    manifest = hw4.build_subset(cfg)
    check_build(tmp_path / "ds", manifest, cfg)
    coco = hw4.load_coco(ann)
    wanted = set(hw4_sources.DEMO_CATEGORIES.values())
    for e in manifest["entries"]:
        assert len({a["category_id"] for a in coco.imgToAnns[e["image_id"]]} & wanted) == 1


def test_exclusive_too_few_names_the_option(tmp_path):
    result = cli(*VS_ARGS, "--train-per-class", "6", "--exclusive", "--dataset-dir", tmp_path / "x")
    assert_one_line_exit_2(result, "'elephant' has 6 images with only this class (--exclusive) but needs 8")


def test_same_seed_same_subset_other_seed_differs(demo_coco, tmp_path):
    ann, images = demo_paths(demo_coco)
    builds = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        cfg = make_config(ann, images, tmp_path / name, train_per_class=30, val_per_class=10, seed=seed)
        builds.append(hw4.build_subset(cfg)["entries"])
    assert builds[0] == builds[1]
    assert [e["image_id"] for e in builds[0]] != [e["image_id"] for e in builds[2]]
    digests = [sorted(pixels_digest(tmp_path / n / e["path"]) for e in b) for n, b in zip("ab", builds)]
    assert digests[0] == digests[1]


def test_pool_workers_write_the_same_files(demo_coco, tmp_path):
    ann, images = demo_paths(demo_coco)
    one = hw4.build_subset(make_config(ann, images, tmp_path / "one", train_per_class=20, val_per_class=5))
    two = hw4.build_subset(make_config(ann, images, tmp_path / "two", train_per_class=20, val_per_class=5,
                                       workers=2))
    assert one["entries"] == two["entries"]
    for e in one["entries"]:
        assert (tmp_path / "one" / e["path"]).read_bytes() == (tmp_path / "two" / e["path"]).read_bytes()


def test_reuse_skips_the_json_and_a_new_config_rebuilds(demo_coco, tmp_path, monkeypatch):
    ann, images = demo_paths(demo_coco)
    cfg = make_config(ann, images, tmp_path / "ds", train_per_class=20, val_per_class=5)
    first = hw4.build_subset(cfg)

    def no_json(*args):
        raise AssertionError("the annotation JSON was loaded again")

    monkeypatch.setattr(hw4, "load_coco", no_json)
    assert hw4.build_subset(cfg) == first
    monkeypatch.undo()
    (tmp_path / "ds" / first["entries"][0]["path"]).unlink()  # an incomplete build is not reused
    assert hw4.build_subset(cfg)["entries"] == first["entries"]
    other = hw4.build_subset(make_config(ann, images, tmp_path / "ds", train_per_class=20, val_per_class=5,
                                         seed=99))
    assert other["fingerprint"] != first["fingerprint"]
    on_disk = {f"{s}_data/{p.name}" for s in ("train", "val") for p in (tmp_path / "ds" / f"{s}_data").iterdir()}
    assert on_disk == {e["path"] for e in other["entries"]}, "the rebuild left files of the old build"


def test_reuse_from_the_cli_never_reads_the_annotations(tmp_path):
    """Reuse is decided by the fingerprint (path, size, mtime) alone: garbage of the same size and
    mtime in the annotation file must go unread. (Its speed is measured, not asserted here.)"""
    ann = tmp_path / "instances.json"
    shutil.copy(VS_ANN, ann)
    args = [*VS_ARGS, "--train-per-class", "4", "--dataset-dir", tmp_path / "x", "--ann-file", ann]
    assert cli(*args).returncode == 0
    stat = ann.stat()
    ann.write_bytes(b"x" * stat.st_size)
    os.utime(ann, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = cli(*args)
    assert again.returncode == 0 and "reusing" in again.stdout, again.stderr


def test_interrupted_build_is_never_reused_and_keeps_the_old_one(demo_coco, tmp_path, monkeypatch):
    ann, images = demo_paths(demo_coco)
    cfg = make_config(ann, images, tmp_path / "ds", train_per_class=20, val_per_class=5)
    old = hw4.build_subset(cfg)
    real = hw4.run_write_jobs

    def dies_midway(jobs, *args):
        real(jobs[:10], *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(hw4, "run_write_jobs", dies_midway)
    new_cfg = make_config(ann, images, tmp_path / "ds", train_per_class=20, val_per_class=5, seed=7)
    with pytest.raises(KeyboardInterrupt):
        hw4.build_subset(new_cfg)
    assert hw4_sources.read_manifest(tmp_path / "ds") == old, "the finished build must survive"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.build.lock", "ds"], \
        "no temporary folder may be left behind (only the build's lock file, which the kernel holds, not its name)"
    monkeypatch.undo()
    assert hw4.reusable_manifest(new_cfg) is None
    assert hw4.build_subset(new_cfg)["fingerprint"] == new_cfg.build_fingerprint()


def copy_vision_synth(tmp_path: Path) -> tuple[Path, Path, dict]:
    folder = tmp_path / "vs"
    shutil.copytree(VISION_SYNTH, folder)
    ann = folder / "_annotations.coco.json"
    return ann, folder, json.loads(ann.read_text())


def test_missing_and_corrupt_images_are_replaced(tmp_path):
    ann, folder, _ = copy_vision_synth(tmp_path)
    cfg = make_config(ann, folder, tmp_path / "a", classes=("elephant", "giraffe", "kite"), train_per_class=4,
                      val_per_class=2)
    first = hw4.build_subset(cfg)
    gone, broken = first["entries"][0], first["entries"][-1]
    (folder / gone["file_name"]).unlink()
    (folder / broken["file_name"]).write_bytes(b"not a jpeg at all")
    result = cli("--ann-file", ann, "--image-dir", folder, "--classes", "elephant", "giraffe", "kite",
                 "--train-per-class", "4", "--val-per-class", "2", "--dataset-dir", tmp_path / "b", "--build-only")
    assert result.returncode == 0, result.stderr
    assert f"replaced {gone['file_name']} (missing)" in result.stdout
    assert f"replaced {broken['file_name']} (unreadable" in result.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    reasons = {r["file_name"]: r["reason"] for r in manifest["replacements"]}
    assert reasons[gone["file_name"]] == "missing" and reasons[broken["file_name"]].startswith("unreadable")
    check_build(tmp_path / "b", manifest, cfg)
    assert {gone["image_id"], broken["image_id"]}.isdisjoint(e["image_id"] for e in manifest["entries"])


def test_wrong_image_dir_is_named(tmp_path):
    result = cli(*VS_ARGS, "--train-per-class", "4", "--image-dir", tmp_path / "nowhere", "--dataset-dir",
                 tmp_path / "x")
    assert_one_line_exit_2(result, "probably wrong", str(tmp_path / "nowhere"))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad_name", ["/etc/passwd", "../outside.jpg", "sub/../../outside.jpg"])
def test_unsafe_file_names_are_rejected(tmp_path, bad_name):
    ann, folder, data = copy_vision_synth(tmp_path)
    for img in data["images"]:
        img["file_name"] = bad_name if img["id"] % 2 == 0 else img["file_name"]
    ann.write_text(json.dumps(data))
    result = cli("--ann-file", ann, "--image-dir", folder, "--classes", "elephant", "giraffe", "kite",
                 "--train-per-class", "4", "--val-per-class", "2", "--dataset-dir", tmp_path / "x", "--build-only")
    assert_one_line_exit_2(result, "unsafe file_name", bad_name)


def test_unknown_class_lists_close_matches(tmp_path):
    result = cli(*VS_ARGS, "--classes", "elephnt", "giraffe", "--train-per-class", "4", "--dataset-dir", tmp_path / "x")
    assert_one_line_exit_2(result, "unknown class 'elephnt'", "did you mean 'elephant'")


@pytest.mark.parametrize("args, message", [
    (["--ann-file", "/nonexistent/instances.json"], "annotation file not found: /nonexistent/instances.json"),
    (["--epochs", "0"], "argument --epochs: must be in [1, 10000], got 0"),
    (["--image-size", "5"], "argument --image-size: must be in [10, 1024], got 5"),
    (["--classes", "kite", "kite"], "--classes lists a class twice"),
    (["--betas", "0.9", "1.5"], "argument --betas: must be in [0, 1), got 1.5"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    base = ["--ann-file", VS_ANN, "--image-dir", VISION_SYNTH, "--classes", "elephant", "giraffe",
            "--train-per-class", "4", "--val-per-class", "2", "--dataset-dir", tmp_path / "x", "--build-only"]
    assert_one_line_exit_2(cli(*base, *args), message)


def test_annotation_file_that_is_not_coco(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_exit_2(cli(*VS_ARGS, "--train-per-class", "4", "--ann-file", bad, "--dataset-dir",
                               tmp_path / "x"), str(bad))


def test_foreign_dataset_dir_is_not_replaced(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    assert_one_line_exit_2(cli(*VS_ARGS, "--train-per-class", "4", "--dataset-dir", precious), "not an hw4 dataset")
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_a_rebuild_never_deletes_files_it_did_not_write(tmp_path):
    """Results that ended up inside a dataset folder (an older hw4 allowed --out there) survive a
    rebuild: the rebuild is refused before any work, naming the files."""
    ds = tmp_path / "ds"
    assert cli(*VS_ARGS, "--train-per-class", "4", "--dataset-dir", ds).returncode == 0
    (ds / "REPORT.md").write_text("results of a week")
    (ds / "net1.pt").write_bytes(b"weights")
    rebuild = cli(*VS_ARGS, "--train-per-class", "4", "--seed", "6", "--dataset-dir", ds)
    assert_one_line_exit_2(rebuild, "holds files the build did not write (REPORT.md, net1.pt)")
    assert (ds / "REPORT.md").read_text() == "results of a week" and (ds / "manifest.json").is_file()


def test_class_names_with_spaces_and_underscores(demo_coco, tmp_path):
    ann, images = demo_paths(demo_coco)
    data = json.loads(ann.read_text())
    renamed = {"cat": "hot dog", "dog": "teddy_bear"}
    for cat in data["categories"]:
        cat["name"] = renamed.get(cat["name"], cat["name"])
    new_ann = tmp_path / "instances.json"
    new_ann.write_text(json.dumps(data))
    cfg = make_config(new_ann, images, tmp_path / "ds", classes=("teddy_bear", "hot dog", "pizza"),
                      train_per_class=10, val_per_class=3, image_size=16)
    manifest = hw4.build_subset(cfg)
    check_build(tmp_path / "ds", manifest, cfg)
    data = hw4.load_dataset_tensors(cfg.dataset_dir, manifest)
    train = [e for e in manifest["entries"] if e["split"] == "train"]
    assert data.train_y.tolist() == [e["label"] for e in train]
    assert sorted(set(data.train_y.tolist())) == [0, 1, 2]
    val = [e for e in manifest["entries"] if e["split"] == "val"]
    assert data.val_y.tolist() == [val[k]["label"] for k in data.val_entry.tolist()]


def cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(path)
    return path


def la_png(path: Path) -> Path:
    Image.new("LA", (40, 30), (120, 90)).save(path)
    return path


@pytest.mark.parametrize("source", ["camera.png", "logo.png", "no_time_for_that_tiny.gif", "chelsea.png",
                                    "cmyk", "la"])
def test_every_image_mode_ends_as_rgb(tmp_path, source):
    path = {"cmyk": lambda: cmyk_jpeg(tmp_path / "c.jpg"), "la": lambda: la_png(tmp_path / "la.png")}.get(
        source, lambda: PHOTOS / source)()
    with Image.open(path) as img:
        original_mode = img.mode
    thumb = hw4.decode_rgb_thumbnail(path, 64)
    assert thumb.mode == "RGB" and thumb.size == (64, 64)
    assert np.asarray(thumb).shape == (64, 64, 3)
    assert original_mode in {"L", "RGBA", "P", "RGB", "CMYK", "LA"}


def test_file_names_too_long_for_the_file_system_get_a_short_output_name(tmp_path):
    """A 250-byte source name plus hw4's '<class>_' prefix would pass 255 bytes: hw4 shortens its own
    output name instead of failing (and blaming --image-dir)."""
    ann, folder, data = copy_vision_synth(tmp_path)
    long = "x" * 250 + ".jpg"
    first = data["images"][0]
    (folder / first["file_name"]).rename(folder / long)
    first["file_name"] = long
    ann.write_text(json.dumps(data))
    cfg = make_config(ann, folder, tmp_path / "ds", classes=("elephant", "giraffe", "kite"), train_per_class=6,
                      val_per_class=2)
    manifest = hw4.build_subset(cfg)
    check_build(tmp_path / "ds", manifest, cfg)
    entry = next(e for e in manifest["entries"] if e["file_name"] == long)
    assert len(Path(entry["path"]).name.encode()) <= 255 and str(first["id"]) in entry["path"]
    assert hw4_sources.output_name("cat", "a.jpg", {"cat_a.jpg"}, 7) == "cat_7_a.jpg", "a repeated basename stays unique"


def test_draft_decoding_stays_close_to_a_full_decode(tmp_path):
    """Draft mode (DCT downscaling) must not change the 64x64 result much: mean |diff| < 3 of 255."""
    diffs = []
    for name in ("chelsea.png", "astronaut.png", "coffee.png"):
        jpg = tmp_path / f"{name}.jpg"
        Image.open(PHOTOS / name).convert("RGB").resize((640, 480)).save(jpg, quality=90)
        fast = np.asarray(hw4.decode_rgb_thumbnail(jpg, 64), dtype=np.int16)
        full = np.asarray(Image.open(jpg).convert("RGB").resize((64, 64), Image.Resampling.BICUBIC), dtype=np.int16)
        diffs.append(np.abs(fast - full).mean())
    assert max(diffs) < 3, diffs


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("categories"), "has no 'categories' list"),
    (lambda d: d.pop("images"), "has no 'images' list"),
    (lambda d: d.pop("annotations"), "has no 'annotations' list"),
    (lambda d: d["images"][3].pop("file_name"), "images entry #3 has no 'file_name'"),
    (lambda d: d["images"][0].pop("id"), "images entry #0 has no 'id'"),
    (lambda d: d["images"][2].update(file_name=17), "images entry #2 (id 2) has a file_name that is not a string"),
    (lambda d: d["annotations"][1].pop("category_id"), "annotations entry #1 has no 'category_id'"),
    # the same id twice: one photo could land in train under one class and in val under another
    (lambda d: d["images"][5].update(id=d["images"][3]["id"]), "images entries #3 and #5 share the id 3"),
    (lambda d: d["annotations"][2].update(image_id=999_999), "annotations entry #2 has image_id 999999, which no "
                                                              "images entry has"),
    (lambda d: d["annotations"][0].update(category_id="1"), "annotations entry #0 has category_id '1'"),
    (lambda d: d["categories"][0].update(name=7), "categories entry #0 (id 1) has a name that is not a string (7)"),
    (lambda d: d["categories"][1].update(name=d["categories"][2]["name"]), "categories entries #1 and #2 are both "
                                                                           "named"),
    (lambda d: d["images"][0].update(id=[1]), "images entry #0 has an id that is not an integer ([1])"),
])
def test_malformed_annotation_json_is_one_line(tmp_path, edit, message):
    data = json.loads(VS_ANN.read_text())
    edit(data)
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps(data))
    result = cli(*VS_ARGS, "--train-per-class", "4", "--ann-file", bad, "--dataset-dir", tmp_path / "x")
    assert_one_line_exit_2(result, f"annotation file {bad}", message)
    assert not (tmp_path / "x").exists()


def test_a_rebuild_never_deletes_files_inside_the_dataset_folders(tiny_built, tmp_path):
    cfg, ds = copy_build(tiny_built, tmp_path)
    (ds / "train_data" / "NOTES.txt").write_text("notes")
    (ds / "val_data" / "my_extra").mkdir()
    Image.new("RGB", (16, 16)).save(ds / "val_data" / "my_extra" / "mine.png")
    with pytest.raises(hw4.UserError, match="holds files the build did not write .*train_data/NOTES.txt"):
        hw4.build_subset(dataclasses.replace(cfg, seed=6))
    assert (ds / "train_data" / "NOTES.txt").read_text() == "notes" and (ds / "val_data/my_extra/mine.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "my other project"}))
    with pytest.raises(hw4.UserError, match="is not an hw4 dataset"):
        hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(other)))
    assert json.loads((other / "manifest.json").read_text()) == {"name": "my other project"}


def test_a_running_build_is_not_deleted_by_a_second_one(tiny_built, tmp_path):
    """A live build holds the folder's lock: a second build is one line that names its process, and deletes
    nothing of it; once the first is killed (no clean-up ran), the lock is free and its leftovers go."""
    cfg, _ = tiny_built
    target = tmp_path / "ds"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        import hw4
        held = hw4.build_lock(Path({str(target)!r}), "ds")
        held.__enter__()
        Path({str(tmp_path)!r}, ".ds.building-" + str(__import__("os").getpid())).mkdir()
        print("held", flush=True)
        time.sleep(300)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    running = tmp_path / f".ds.building-{holder.pid}"
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_one_line_exit_2(cli(*VS_ARGS, "--dataset-dir", target),
                               f"another build into --dataset-dir {target} is running (process {holder.pid})")
        assert running.is_dir() and not target.exists()
    finally:
        holder.kill()
        holder.wait()
    hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(target)))
    assert hw4_sources.read_manifest(target) and not running.exists()


def test_a_recycled_pid_does_not_block_a_build(tiny_built, tmp_path):
    """A killed build's leftover folder names its process id; a live process that now has that id is no build."""
    cfg, _ = tiny_built
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftover = tmp_path / f".ds.building-{sleeper.pid}"
        leftover.mkdir()
        hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(tmp_path / "ds")))
        assert not leftover.exists() and hw4_sources.read_manifest(tmp_path / "ds")
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("name", [".", "./", ""])
def test_an_annotation_file_name_of_dot_is_unsafe(name):
    with pytest.raises(hw4.UserError, match="unsafe file_name"):
        hw4.source_path("images", name)


@pytest.mark.parametrize("tamper", [[1, 2], "text", {"entries": []}, "drop:config", "label:9", "classes:short",
                                    "path:../x.jpg"])
def test_a_tampered_manifest_is_not_trusted(tiny_built, tmp_path, tamper):
    cfg, ds = copy_build(tiny_built, tmp_path)
    manifest = json.loads((ds / "manifest.json").read_text())
    if isinstance(tamper, str) and ":" in tamper:
        what, value = tamper.split(":")
        if what == "drop":
            del manifest[value]
        elif what == "label":
            manifest["entries"][0]["label"] = int(value)
        elif what == "classes":
            manifest["classes"] = manifest["classes"][:3]
        else:
            manifest["entries"][0]["path"] = value
    else:
        manifest = tamper
    (ds / "manifest.json").write_text(json.dumps(manifest))
    assert hw4_sources.read_manifest(ds) is None
    with pytest.raises(hw4.UserError, match="is not an hw4 dataset"):
        hw4.build_subset(cfg)


@pytest.mark.parametrize("cache", [{}, [1, 2], "labels", "size", "short"])
def test_a_wrong_tensor_cache_is_rebuilt(tiny_built, tmp_path, cache):
    cfg, ds = copy_build(tiny_built, tmp_path)
    manifest = hw4_sources.read_manifest(ds)
    good = hw4.decoded_splits(ds, manifest)
    bad = {k: v.clone() for k, v in good.items()}
    if cache == "labels":
        bad["train_y"][0] = 99
    elif cache == "size":
        bad["train_x"] = bad["train_x"][:, :, :8, :8]
    elif cache == "short":
        bad = {k: v[:7] for k, v in bad.items()}
    else:
        bad = cache
    torch.save(bad, ds / f"tensors-{manifest['fingerprint']}.pt")
    again = hw4.decoded_splits(ds, manifest)
    assert all(torch.equal(again[k], good[k]) for k in good)


def test_a_symlinked_dataset_dir_stays_a_link(tiny_built, tmp_path):
    cfg, ds = copy_build(tiny_built, tmp_path)
    link = tmp_path / "ds_link"
    link.symlink_to(ds)
    with contextlib.redirect_stdout(None):
        hw4.build_subset(dataclasses.replace(cfg, dataset_dir=str(link), seed=6))
    assert link.is_symlink() and (link / "manifest.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".building-" in p.name]


def test_a_full_dataset_disk_is_not_blamed_on_the_pictures(tmp_path, monkeypatch):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(hw4_sources, "write_thumbnail", full)
    with pytest.raises(hw4.UserError, match=f"no space left on the device of {re.escape(str(tmp_path))} while "
                                            "writing b.jpg") as caught:
        hw4_sources.write_thumbnails([(str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), 16)])
    assert "picture" not in str(caught.value)


@pytest.mark.parametrize("damage", ["zeroed images", "labels shifted by one"])
def test_a_tensor_cache_that_does_not_match_its_digest_is_decoded_again(damage, tiny_built, tmp_path):
    cfg, _ = tiny_built
    ds = tmp_path / "ds"
    shutil.copytree(cfg.dataset_dir, ds)
    manifest = hw4_sources.read_manifest(ds)
    good = hw4.decoded_splits(ds, manifest)
    cache = ds / f"tensors-{manifest['fingerprint']}.pt"
    saved = torch.load(cache, weights_only=True)
    assert saved["digest"] == hw4.tensors_digest(good)
    if damage == "zeroed images":
        saved["train_x"].zero_()
    else:
        labels = [e["label"] for e in manifest["entries"] if e["split"] == "train"]
        saved["train_y"] = torch.tensor([(v + 1) % len(manifest["classes"]) for v in labels])
    torch.save(saved, cache)  # the digest kept as it was
    again = hw4.decoded_splits(ds, manifest)
    assert all(torch.equal(again[k], good[k]) for k in good) and "digest" not in again


def test_sixteen_bit_pictures_are_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image
    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(gradient).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
    rgb = np.asarray(hw4.decode_rgb_thumbnail(tmp_path / "deep.png", 64))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, -1].tolist() == [255, 255, 255]
    assert abs(int(rgb[0, 32, 0]) - round(gradient[0, 32] / 257)) <= 2 and (rgb == 255).mean() < 0.05


def test_the_originals_loader_stacks_every_picture_hw4_built(tmp_path):
    """The original's Dataset opens each thumbnail without converting it and stacks a batch: a one-channel file
    fails with 'stack expects each tensor to be equal size'. A grayscale picture that already has the size is
    written as an RGB PNG, every pixel kept (an RGB JPEG would re-encode it)."""
    from PIL import Image
    import torchvision.transforms as tvt
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for k, mode in enumerate(("RGB", "L", "RGB")):
                (tmp_path / "pics" / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert(mode).save(
                    tmp_path / "pics" / split / name / f"COCO_train2014_{100 * c + 10 * (split == 'val') + k:012d}.jpg")
    cfg = hw4.Config(image_folders=str(tmp_path / "pics"), classes=("cat", "dog"), image_size=16, workers=1,
                     train_per_class=None, val_per_class=None, dataset_dir=str(tmp_path / "ds"))
    manifest = hw4.build_subset(cfg)
    for split in ("train_data", "val_data"):  # the original's MyCOCODataset and its default collate
        folder = tmp_path / "ds" / split
        batch = torch.stack([tvt.ToTensor()(Image.open(folder / f)) for f in os.listdir(folder)])
        assert batch.shape == (6, 3, 16, 16)
    grey = [e for e in manifest["entries"] if e["file_name"].endswith("1.jpg")]
    assert len(grey) == 4 and all(e["path"].endswith(".png") for e in grey)
    for e in grey:
        with Image.open(tmp_path / "ds" / e["path"]) as built, Image.open(tmp_path / "pics" / e["file_name"]) as src:
            assert built.mode == "RGB" and np.array_equal(np.asarray(built), np.asarray(src.convert("RGB")))
