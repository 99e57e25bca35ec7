"""Dataset download through the real code path, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import threading
import zipfile

import pytest

from tft.data.dataset import load_dataset
from tft.errors import DownloadError, TaskError
from tft.tasks import Archive, get_task


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _afqmc_zip(inner="afqmc_public/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split in ("train", "dev"):
            rows = [{"sentence1": f"花呗{i}", "sentence2": "借呗", "label": str(i % 2)} for i in range(4)]
            zf.writestr(f"{inner}{split}.json", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        zf.writestr(f"{inner}test.json", json.dumps({"id": 0, "sentence1": "a", "sentence2": "b"}) + "\n")
    return buf.getvalue()


def test_download_unpacks_into_cache_and_is_reused(http_dir, tmp_path, monkeypatch):
    root, url = http_dir
    data = _afqmc_zip()
    (root / "afqmc_public.zip").write_bytes(data)
    monkeypatch.setenv("TFT_CACHE", str(tmp_path / "cache"))
    task = dataclasses.replace(get_task("afqmc"), archive=Archive(f"{url}/afqmc_public.zip",
                                                                  sha256=hashlib.sha256(data).hexdigest()))
    ds = load_dataset(task, None, ("train", "dev", "test"))
    assert ds.data_dir == tmp_path / "cache" / "datasets" / "afqmc"
    assert [len(ds[s].examples) for s in ("train", "dev", "test")] == [4, 4, 1]
    (root / "afqmc_public.zip").unlink()  # second call must not touch the network
    assert len(load_dataset(task, None, ("dev",))["dev"].examples) == 4
    leftovers = [p.name for p in (tmp_path / "cache" / "datasets").iterdir()]
    assert leftovers == ["afqmc"]


def test_checksum_mismatch_leaves_nothing(http_dir, tmp_path, monkeypatch):
    root, url = http_dir
    (root / "a.zip").write_bytes(_afqmc_zip())
    monkeypatch.setenv("TFT_CACHE", str(tmp_path / "cache"))
    task = dataclasses.replace(get_task("afqmc"), archive=Archive(f"{url}/a.zip", sha256="0" * 64))
    with pytest.raises(DownloadError, match="sha256 .* does not match"):
        load_dataset(task, None, ("train",))
    assert list((tmp_path / "cache" / "datasets").iterdir()) == []


def test_missing_archive_is_one_line_error(http_dir, tmp_path, monkeypatch):
    _, url = http_dir
    monkeypatch.setenv("TFT_CACHE", str(tmp_path / "cache"))
    task = dataclasses.replace(get_task("afqmc"), archive=Archive(f"{url}/nope.zip"))
    with pytest.raises(DownloadError, match="download failed .*--data-dir"):
        load_dataset(task, None, ("train",))


@pytest.mark.parametrize("name", ["../evil.json", "/abs/evil.json", "a/../../evil.json"])
def test_path_traversal_in_zip_is_refused(http_dir, tmp_path, monkeypatch, name):
    root, url = http_dir
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train.json", "{}\n")
        zf.writestr(name, "owned\n")
    (root / "evil.zip").write_bytes(buf.getvalue())
    monkeypatch.setenv("TFT_CACHE", str(tmp_path / "cache"))
    task = dataclasses.replace(get_task("afqmc"), archive=Archive(f"{url}/evil.zip"))
    with pytest.raises(DownloadError, match="refusing unsafe path"):
        load_dataset(task, None, ("train",))
    assert not (tmp_path / "evil.json").exists() and not (tmp_path / "cache" / "evil.json").exists()
    assert list((tmp_path / "cache" / "datasets").iterdir()) == []


def test_task_without_archive_requires_data_dir():
    with pytest.raises(TaskError, match="conll2003.*--data-dir is required"):
        load_dataset(get_task("conll2003"), None, ("train",))


def test_concurrent_ranks_download_once_and_all_get_the_data(tmp_path):
    """Four processes (the ranks of one node) ask for the same dataset at once: one download, one folder."""
    import os
    import subprocess
    import sys

    data = _afqmc_zip()
    gets = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            gets.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/afqmc_public.zip"
    code = ("import dataclasses; from tft.tasks import Archive, get_task; from tft.data.dataset import "
            f"resolve_data_dir; t = dataclasses.replace(get_task('afqmc'), archive=Archive('{url}')); "
            "print(resolve_data_dir(t, None))")
    env = {**os.environ, "TFT_CACHE": str(tmp_path / "cache")}
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env) for _ in range(4)]
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        server.shutdown()
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outputs]
    assert len({o[0].strip() for o in outputs}) == 1 and gets == ["/afqmc_public.zip"]
    folder = tmp_path / "cache" / "datasets"
    assert sorted(p.name for p in folder.iterdir()) == ["afqmc"]
    assert (folder / "afqmc" / "train.json").exists()
