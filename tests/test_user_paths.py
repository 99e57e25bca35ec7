"""A user's own paths: the same folder under another name, device nodes, named pipes and symlinks as outputs.
Nothing is written twice at once, nothing special is replaced by a regular file (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from helpers import one_line_error, run_tft
from test_concurrency import holder


def test_a_symlinked_name_of_a_folder_shares_its_lock(tmp_path):
    from tft.errors import TftError
    from tft.fsutil import hold

    real = tmp_path / "runs" / "r"
    real.mkdir(parents=True)
    link = tmp_path / "alias"
    link.symlink_to(tmp_path / "runs")
    first = holder(real, 30)
    try:
        for name in (link / "r", tmp_path / "runs" / ".." / "runs" / "r"):
            with pytest.raises(TftError, match=f"in use by pid {first.pid}"):
                with hold(name):
                    pass
    finally:
        first.kill()
        first.wait()


def test_the_lock_line_advises_wait_only_where_the_command_has_it(tmp_path):
    target = tmp_path / "sample"
    first = holder(target, 30)
    try:
        line = one_line_error(run_tft("data", "sample", "--out", target, "--train", 10, "--dev", 2, "--test", 2))
        assert f"in use by pid {first.pid}" in line and "--wait" not in line
    finally:
        first.kill()
        first.wait()


def test_a_fifo_and_a_character_device_are_written_in_place_never_replaced(tmp_path):
    from tft.fsutil import atomic_write_text, check_output_file, hold

    fifo = tmp_path / "answers.pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, encoding="utf-8").read()))
    reader.start()
    check_output_file(fifo, overwrite=False)  # a pipe is written into, not "an existing file"
    with hold(fifo, option="-o"):
        atomic_write_text(fifo, "one line\n")
    reader.join(10)
    assert got == ["one line\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.pipe"]  # no lock file, no temp, no rename
    before = os.stat("/dev/null")
    check_output_file("/dev/null", overwrite=True)
    atomic_write_text("/dev/null", "discarded\n")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_a_symlinked_output_keeps_its_link_and_writes_its_target(tmp_path):
    from tft.fsutil import atomic_write_text, check_output_file

    target = tmp_path / "store" / "answers.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "answers.jsonl"
    link.symlink_to(target)
    check_output_file(link, overwrite=True)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(target) and target.read_text() == "new\n"


@pytest.mark.slow
def test_infer_into_a_pipe_and_through_a_symlink(served, afqmc_sample, tmp_path):
    """`tft infer -o` onto a named pipe streams into it (no OUTPUT.partial beside it, no rename over it); onto a
    symlink with --overwrite it writes the link's target and leaves the link."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, encoding="utf-8").read()))
    reader.start()
    proc = run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", afqmc_sample / "dev.json", "-o", fifo)
    reader.join(60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(got[0].splitlines()) == 300 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    assert "--resume" in one_line_error(run_tft("infer", "--url", served.url, "--model", "afqmc", "-i",
                                                afqmc_sample / "dev.json", "-o", fifo, "--resume"), code=2)
    target = tmp_path / "kept" / "answers.jsonl"
    target.parent.mkdir()
    target.write_text("earlier\n")
    link = tmp_path / "answers.jsonl"
    link.symlink_to(target)
    proc = run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", afqmc_sample / "dev.json", "-o", link,
                   "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert link.is_symlink() and len(target.read_text().splitlines()) == 300
    assert all("label" in json.loads(line) for line in target.read_text().splitlines())


def test_a_copied_sample_without_its_hidden_record_is_replaced_only_if_unchanged(tmp_path):
    """`cp sample/* mine/` skips the hidden .tft-owned.json: the copy is replaced with --overwrite only while every
    file is what the marker regenerates; an annotated dev.json is named and kept."""
    from helpers import tree_hashes

    sample = tmp_path / "sample"
    assert run_tft("data", "sample", "--out", sample, "--train", 10, "--dev", 5, "--test", 2).returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    for f in sample.iterdir():
        if not f.name.startswith("."):
            (mine / f.name).write_bytes(f.read_bytes())
    (mine / "dev.json").write_text((mine / "dev.json").read_text().replace('"label": "1"', '"label": "0"', 1))
    before = tree_hashes(mine)
    line = one_line_error(run_tft("data", "sample", "--out", mine, "--train", 10, "--dev", 5, "--test", 2,
                                  "--overwrite"))
    assert "dev.json was changed after tft wrote it" in line and "can prove" in line
    assert tree_hashes(mine) == before
    (mine / "dev.json").write_bytes((sample / "dev.json").read_bytes())  # as tft wrote it: provably tft's
    assert run_tft("data", "sample", "--out", mine, "--train", 12, "--dev", 5, "--test", 2,
                   "--overwrite").returncode == 0
    assert (mine / ".tft-owned.json").exists()


def test_a_copied_export_without_its_record_is_proven_by_its_manifest_hashes(tiny_export, tmp_path):
    from tft.export.pipeline import earlier_export
    from tft.fsutil import OutputError, check_output_dir

    export = tiny_export()
    entries = sorted(p.name for p in export.iterdir())
    assert earlier_export(export, entries) is None
    assert check_output_dir(export, what="export", marker="manifest.json", overwrite=True, legacy=earlier_export)
    (export / "dev.json").write_text("{}\n")  # the user's file beside it
    with pytest.raises(OutputError, match="dev.json is not a file of this export.*can prove"):
        check_output_dir(export, what="export", marker="manifest.json", overwrite=True, legacy=earlier_export)
    (export / "dev.json").unlink()
    with open(export / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(OutputError, match="model.onnx was changed after tft wrote it"):
        check_output_dir(export, what="export", marker="manifest.json", overwrite=True, legacy=earlier_export)
