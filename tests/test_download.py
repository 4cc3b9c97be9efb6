"""--download against a real HTTP server on 127.0.0.1 that injects faults."""
from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import struct

import hw4
import hw4_sources
from conftest import ROOT, VISION_SYNTH, assert_one_line_exit_2, cli

CLASSES = ["elephant", "giraffe", "kite"]


class LocalServer:
    """An HTTP server on 127.0.0.1 in a thread of this process, serving `handler`; close() stops it."""

    def serve(self, handler: type[BaseHTTPRequestHandler], path: str = "") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Mirror(LocalServer):
    """A COCO-like mirror: /train2014/<file> and /annotations/annotations_trainval2014.zip.

    faults maps a URL path to the behaviour of each successive request
    ('503', 'cut', 'reset', '404', 'slow'); once the list is used up, requests succeed.
    """

    def __init__(self, files: dict[str, bytes], delay: float = 0.0):
        self.files = files
        self.faults: dict[str, list[str]] = {}
        self.requests: Counter = Counter()
        self.delay = delay
        self.slow_seconds = 3.0
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests[self.path] += 1
                plan = mirror.faults.get(self.path, [])
                fault = plan.pop(0) if plan else None
                if fault == "404" and plan == []:
                    plan.append("404")  # a lasting 404
                body = mirror.files.get(self.path)
                if mirror.delay:
                    time.sleep(mirror.delay)
                if fault == "slow":
                    time.sleep(mirror.slow_seconds)
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault in ("503", "404") or body is None:
                    code = 404 if body is None or fault == "404" else 503
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the 'slow' fault): expected

        self.serve(Handler)


def annotations_zip(ann: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("annotations/instances_train2014.json", json.dumps(ann))
        zf.writestr("annotations/instances_val2014.json", "{}")
    return buf.getvalue()


@pytest.fixture()
def mirror():
    ann = json.loads((VISION_SYNTH / "_annotations.coco.json").read_text())
    files = {f"/train2014/{img['file_name']}": (VISION_SYNTH / img["file_name"]).read_bytes()
             for img in ann["images"]}
    files["/annotations/annotations_trainval2014.zip"] = annotations_zip(ann)
    m = Mirror(files)
    m.ann = ann
    yield m
    m.close()


def cli_args(data_dir: Path, mirror: Mirror, *extra) -> list:
    return ["--data_dir", data_dir, "--download", "--coco-url-base", mirror.url, "--classes", *CLASSES,
            "--train-per-class", "4", "--val-per-class", "2", "--dataset-dir", data_dir / "ds", "--build-only",
            "--download-timeout", "1", "--download-retries", "3", "--workers", "1", *extra]


def chosen_files(data_dir: Path) -> list[str]:
    return [e["file_name"] for e in json.loads((data_dir / "ds" / "manifest.json").read_text())["entries"]]


def no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".part-" in p.name or ".hw4-tmp-" in p.name]


def test_from_an_empty_data_dir_to_a_finished_subset(mirror, tmp_path):
    result = cli(*cli_args(tmp_path, mirror))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "coco" / "annotations" / "instances_train2014.json").is_file()
    chosen = chosen_files(tmp_path)
    assert len(chosen) == 18
    fetched = sorted(p.name for p in (tmp_path / "coco" / "images").iterdir())
    assert fetched == sorted(chosen), "exactly the chosen images are downloaded"
    assert "download: 18 downloaded, 0 already present, 0 retries, 0 failed for good" in result.stdout
    assert no_partial_files(tmp_path)
    again = cli(*cli_args(tmp_path, mirror))
    assert again.returncode == 0 and "reusing" in again.stdout
    assert all(n == 1 for path, n in mirror.requests.items() if path.startswith("/train2014/"))


def test_faults_end_in_correct_files_and_a_reported_replacement(mirror, tmp_path):
    # which images will be chosen: a first (fault-free) selection tells us
    cfg = hw4.Config(ann_file=str(VISION_SYNTH / "_annotations.coco.json"), image_dir=str(VISION_SYNTH),
                     classes=tuple(CLASSES), train_per_class=4, val_per_class=2)
    coco = hw4.load_coco(cfg.ann_file)
    picks = hw4.select_subset(coco, cfg).picks
    names = [coco.imgs[i]["file_name"] for ids in picks.values() for i in ids]
    plan = {names[0]: ["503"], names[1]: ["cut"], names[2]: ["reset"], names[3]: ["slow"], names[4]: ["404"],
            names[5]: ["503", "cut", "reset"]}
    for name, faults in plan.items():
        mirror.faults[f"/train2014/{name}"] = list(faults)
    result = cli(*cli_args(tmp_path, mirror))
    assert result.returncode == 0, result.stderr
    images = tmp_path / "coco" / "images"
    for name in names[:4] + names[5:6]:
        assert (images / name).read_bytes() == (VISION_SYNTH / name).read_bytes(), name
    assert not (images / names[4]).exists()
    assert f"failed: {names[4]}: HTTP 404" in result.stdout
    assert "1 failed for good" in result.stdout and "7 retries" in result.stdout
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert names[4] not in chosen_files(tmp_path)
    assert [r["file_name"] for r in manifest["replacements"]] == [names[4]]
    assert len(manifest["entries"]) == 18
    assert no_partial_files(tmp_path)


def test_coco_url_is_used_without_a_base_and_bad_schemes_are_refused(mirror, tmp_path):
    ann = json.loads(json.dumps(mirror.ann))
    for img in ann["images"]:
        img["coco_url"] = f"{mirror.url}/train2014/{img['file_name']}"
    ann["images"][0]["coco_url"] = "file:///etc/passwd"
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(ann))
    result = cli("--ann-file", ann_file, "--image-dir", tmp_path / "img", "--download", "--classes", *CLASSES,
                 "--train-per-class", "4", "--val-per-class", "2", "--dataset-dir", tmp_path / "ds", "--build-only",
                 "--download-timeout", "1", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert len(chosen_files(tmp_path)) == 18
    assert ann["images"][0]["file_name"] not in chosen_files(tmp_path)
    assert not Path("/etc/passwd").read_bytes().startswith(b"\xff\xd8")

    bad = cli(*cli_args(tmp_path / "other", mirror), "--coco-url-base", "ftp://127.0.0.1/")
    assert_one_line_exit_2(bad, "only http and https")


def test_unsafe_names_never_leave_the_image_dir(mirror, tmp_path):
    ann = json.loads(json.dumps(mirror.ann))
    for img in ann["images"]:
        if img["id"] % 2 == 0:
            img["file_name"] = "../../escape.jpg"
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(ann))
    result = cli("--ann-file", ann_file, "--image-dir", tmp_path / "img", "--download", "--coco-url-base",
                 mirror.url, "--classes", *CLASSES, "--train-per-class", "4", "--val-per-class", "2",
                 "--dataset-dir", tmp_path / "ds", "--build-only")
    assert_one_line_exit_2(result, "unsafe file_name '../../escape.jpg'")
    assert not list(tmp_path.parent.glob("escape.jpg")) and not (tmp_path / "escape.jpg").exists()


def test_killed_download_resumes_without_refetching(mirror, tmp_path):
    mirror.delay = 0.15
    args = [sys.executable, str(ROOT / "hw4.py"), *map(str, cli_args(tmp_path, mirror, "--download-workers", "2"))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    images = tmp_path / "coco" / "images"
    deadline = time.time() + 60
    while len([p for p in images.glob("*.jpg")]) < 5:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = {p.name for p in images.glob("*.jpg")}
    assert 5 <= len(done_before) < 18
    mirror.delay = 0.0
    result = cli(*cli_args(tmp_path, mirror))
    assert result.returncode == 0, result.stderr
    assert f"{len(done_before)} already present" in result.stdout
    for name in done_before:
        assert mirror.requests[f"/train2014/{name}"] == 1, name
    for name in chosen_files(tmp_path):
        assert (images / name).read_bytes() == (VISION_SYNTH / name).read_bytes()


def test_truncated_file_from_an_earlier_tool_is_fetched_again(mirror, tmp_path):
    cfg = hw4.Config(ann_file=str(VISION_SYNTH / "_annotations.coco.json"), image_dir=str(VISION_SYNTH),
                     classes=tuple(CLASSES), train_per_class=4, val_per_class=2)
    coco = hw4.load_coco(cfg.ann_file)
    first = coco.imgs[hw4.select_subset(coco, cfg).picks["elephant"][0]]["file_name"]
    images = tmp_path / "coco" / "images"
    images.mkdir(parents=True)
    (images / first).write_bytes((VISION_SYNTH / first).read_bytes()[:500])  # like COCO.download's leftovers
    result = cli(*cli_args(tmp_path, mirror))
    assert result.returncode == 0, result.stderr
    assert (images / first).read_bytes() == (VISION_SYNTH / first).read_bytes()
    assert mirror.requests[f"/train2014/{first}"] == 1


def test_unreachable_mirror_is_a_clean_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("--data_dir", tmp_path, "--download", "--coco-url-base", f"http://127.0.0.1:{port}",
                 "--build-only", "--download-retries", "0")
    assert_one_line_exit_2(result, "could not download")


def test_present_images_need_no_url(mirror, tmp_path):
    """Images already in --image-dir are used even when the annotations give no coco_url and no mirror
    is named: only a missing image needs a URL."""
    ann = json.loads(json.dumps(mirror.ann))
    images = tmp_path / "img"
    images.mkdir()
    for img in ann["images"]:
        img.pop("coco_url", None)
        (images / img["file_name"]).write_bytes((VISION_SYNTH / img["file_name"]).read_bytes())
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(ann))
    result = cli("--ann-file", ann_file, "--image-dir", images, "--download", "--classes", *CLASSES,
                 "--train-per-class", "4", "--val-per-class", "2", "--dataset-dir", tmp_path / "ds", "--build-only",
                 "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "0 downloaded, 18 already present" in result.stdout and not mirror.requests


class Trickle(LocalServer):
    """A local server whose body never ends: `rate` bytes at a time, every `pause` seconds."""

    def __init__(self, rate: int, pause: float):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"x" * rate)
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:
                    pass

        self.serve(Handler, "/x.jpg")


def test_a_trickling_or_endless_body_and_a_full_disk_end_each_download(tmp_path):
    slow, endless = Trickle(1, 0.05), Trickle(1 << 16, 0)
    try:
        started = time.monotonic()
        with pytest.raises(hw4_sources.RetryableError, match="too slow: not complete after 1 s"):
            hw4_sources.http_get(slow.url, tmp_path / "a", read_timeout=5, deadline_s=1)
        assert time.monotonic() - started < 4
        with pytest.raises(hw4.PermanentError, match="runs past 1,000,000 bytes"):
            hw4_sources.http_get(endless.url, tmp_path / "b", read_timeout=5, max_bytes=1_000_000)
        assert (tmp_path / "b").stat().st_size <= 1_000_000
        with pytest.raises(hw4.UserError, match="no space left on the device of /dev while writing full"):
            hw4_sources.http_get(endless.url, Path("/dev/full"), read_timeout=5)
        hw4.DOWNLOAD_STOP.set()  # what Ctrl-C or SIGTERM sets: every thread stops at its next chunk
        try:
            with pytest.raises(hw4.PermanentError, match="stopped"):
                hw4_sources.http_get(slow.url, tmp_path / "c", read_timeout=5)
        finally:
            hw4.DOWNLOAD_STOP.clear()
    finally:
        slow.close()
        endless.close()
