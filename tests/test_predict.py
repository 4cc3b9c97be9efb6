"""`hw4.py predict`: classify pictures with a weights file hw4 wrote."""
from __future__ import annotations

import shutil

from conftest import PHOTOS, assert_one_line_exit_2, cli


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
