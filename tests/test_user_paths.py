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


# -- provenance: which checkpoint an export, a served model and a resumed run came from --------------------------
def test_a_served_model_names_its_checkpoint_and_verify_refuses_another(tiny_export, tmp_path):
    from tft.manifest import weights_fingerprint
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository
    from tft.verify import VerificationError, check_provenance

    export = tiny_export()
    manifest = json.loads((export / "manifest.json").read_text())
    trained = {"tokenizer.json": "a" * 64, "model.safetensors": "b" * 64}
    manifest["checkpoint_manifest"]["files"] = trained
    (export / "manifest.json").write_text(json.dumps(manifest))
    repo = tmp_path / "repo"
    build_repository(export, repo, BuildOptions(name="m"))
    config = (repo / "m" / "config.pbtxt").read_text()
    fingerprint = weights_fingerprint(trained)
    assert fingerprint in config
    check_provenance("ckpt", {"files": trained}, "m", {"weights_sha256": fingerprint})  # the same: no error
    check_provenance("ckpt", {}, "m", {"weights_sha256": fingerprint})  # an older checkpoint records nothing
    other = {**trained, "model.safetensors": "c" * 64}
    with pytest.raises(VerificationError, match="m was exported from another checkpoint than ckpt"):
        check_provenance("ckpt", {"files": other}, "m", {"weights_sha256": fingerprint})


@pytest.mark.slow
def test_another_runs_tokenizer_in_a_checkpoint_is_refused_by_export_and_eval(trained_pair, trained_ner, tmp_path):
    import shutil

    checkpoint = tmp_path / "best"
    shutil.copytree(trained_pair / "best", checkpoint)
    shutil.copy(trained_ner / "best" / "tokenizer.json", checkpoint / "tokenizer.json")
    for args in (("export", "--checkpoint", checkpoint, "--output-dir", tmp_path / "export"),
                 ("eval", "--checkpoint", checkpoint)):
        line = one_line_error(run_tft("--quiet", *args))
        assert "tokenizer.json: is not the tokenizer this checkpoint was trained with" in line
    assert not (tmp_path / "export").exists()


@pytest.mark.slow  # trains a model
def test_resume_after_the_training_file_changed_is_refused(afqmc_dir, tmp_path):
    out = tmp_path / "run"
    args = ("train", "--task", "afqmc", "--data-dir", afqmc_dir, "--model", "scratch:tiny", "--output-dir", out,
            "--max-steps", 2, "--eval-every", 1, "--batch-size", 2, "--no-plot")
    assert run_tft(*args).returncode == 0
    marker = json.loads((out / "tft-run.json").read_text())
    marker["finished"] = False  # as a run killed after its checkpoints
    (out / "tft-run.json").write_text(json.dumps(marker))
    with open(afqmc_dir / "train.json", "a", encoding="utf-8") as f:
        f.write('{"sentence1": "新的问题", "sentence2": "新的回答", "label": "0"}\n')
    line = one_line_error(run_tft(*args, "--resume", "auto"))
    assert "train.json changed since this run started" in line and "--overwrite" in line


@pytest.mark.slow
def test_infer_resume_against_another_model_is_refused(served, afqmc_sample, tmp_path):
    out = tmp_path / "answers.jsonl"
    (tmp_path / "answers.jsonl.partial").write_text("")
    (tmp_path / "answers.jsonl.partial.by.json").write_text(json.dumps({"url": served.url, "model": "cluener",
                                                                       "weights_sha256": None}))
    line = one_line_error(run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", afqmc_sample / "dev.json",
                                  "-o", out, "--resume"))
    assert "was answered by another server or model (model 'cluener' then, 'afqmc' now, weights_sha256 None then" in line
    assert not out.exists()


# -- answers that say what they are -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_long_ner_text_is_read_in_windows_served_and_offline_or_cut_and_marked(served, trained_ner, ner_export,
                                                                                tmp_path):
    """Under the character cap but past the model's 128 tokens: the text is read in overlapping windows and merged
    (entities to its end, served = ONNX Runtime = PyTorch, no "truncated"), as the major NER toolkits do; with
    --no-windows it is cut, and the answer says so (it used to lose its tail silently)."""
    text = "张三在北京大学工作，" * 30  # 300 characters, one token each
    proc = run_tft("infer", "--url", served.url, "--model", "cluener", text, "张三在北京")
    assert proc.returncode == 0, proc.stderr[-2000:]
    long, short = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "truncated" not in long and "truncated" not in short and "longer than the model reads" not in proc.stderr
    assert long["entities"] and max(e["end"] for e in long["entities"]) > 250  # the tail is read
    (tmp_path / "in.txt").write_text(text + "\n张三在北京\n", encoding="utf-8")
    answers = {}
    for name, source, extra in (("pytorch", ("--checkpoint", trained_ner / "best"), ()),
                                ("onnxruntime", ("--export", ner_export), ()),
                                ("cut", ("--checkpoint", trained_ner / "best"), ("--no-windows",))):
        out = tmp_path / f"{name}.jsonl"
        proc = run_tft("predict", *source, tmp_path / "in.txt", "-o", out, *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        answers[name] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert answers["pytorch"][0]["entities"] == answers["onnxruntime"][0]["entities"] == long["entities"]
    cut = answers["cut"][0]
    assert cut["truncated"] is True and max(e["end"] for e in cut["entities"]) <= 128
    assert len(cut["entities"]) < len(long["entities"])
    assert "truncated" not in answers["cut"][1]


def test_windows_merge_each_word_from_the_window_it_is_most_central_in():
    from tft.predictions import word_labels_from_windows

    # words 0-5; window 1 starts inside word 3 (its first token is a later sub-token of word 3: not used)
    first = ([-1, 0, 1, 2, 3, -1], [0, 1, 1, 1, 1, 0])
    second = ([-1, 3, 4, 5, -1], [0, 2, 2, 2, 0])
    assert word_labels_from_windows([first, second]) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2}
    # a word in both windows takes the label of the window where it has more context on both sides
    first = ([-1, 0, 1, 2, 3, 4, -1], [0, 1, 1, 1, 1, 1, 0])
    second = ([-1, 2, 3, 4, 5, 6, -1], [0, 2, 2, 2, 2, 2, 0])
    merged = word_labels_from_windows([first, second])
    assert (merged[1], merged[2], merged[3], merged[4], merged[5]) == (1, 1, 1, 2, 2)
    assert word_labels_from_windows([first]) == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}  # one window: the plain rule


def test_native_backends_and_no_windows_builds_cut_long_ner_texts(tiny_export, tmp_path):
    """Only a model step that runs windows reads them (the python backend's): --backend onnxruntime and
    --no-windows record and configure cutting, which verify then compares offline too."""
    from tft.serve.layout import Layout
    from tft.serve.options import BuildOptions

    export = tiny_export(task="cluener", kind="token_classification", labels=("O", "B-name", "I-name"))
    manifest = json.loads((export / "manifest.json").read_text(encoding="utf-8"))
    windows = {}
    for name, opts in (("python", BuildOptions()), ("no-windows", BuildOptions(windows=False)),
                       ("onnxruntime", BuildOptions(backend="onnxruntime"))):
        layout = Layout(manifest, opts.for_export(manifest))
        windows[name] = (layout.windows, layout.tokenizer_settings()["windows"], layout.postprocess_settings()["windows"])
    assert windows == {"python": (True, True, True), "no-windows": (False, False, False),
                       "onnxruntime": (False, False, False)}


@pytest.mark.slow
def test_infer_answers_a_live_pipe_line_by_line(served):
    """`-i -` reads stdin as it arrives: each line is answered while the producer is still writing (it used to wait
    for 32 lines or the end of the pipe), and --resume, which reads its input twice, is refused for stdin."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "tft", "infer", "--url", served.url, "--model", "cluener", "-i", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for text in ("张三在北京大学", "李四去了上海"):
            start = time.monotonic()
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())  # the pipe is still open
            assert answer["text"] == text and "entities" in answer and time.monotonic() - start < 20
        proc.stdin.close()
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    line = one_line_error(run_tft("infer", "--url", served.url, "--model", "cluener", "-i", "-", "-o", "x.jsonl",
                                  "--resume"), code=2)
    assert "stdin (-i -) cannot be read twice" in line


def test_a_port_that_is_not_triton_grpc_gets_a_line_that_says_what_was_found(tmp_path):
    """An HTTP server where gRPC was expected, --ssl against a plain server, nothing listening: one line each,
    saying what to change, and none of gRPC's C-core log lines."""
    import http.server
    import socket

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"127.0.0.1:{server.server_address[1]}"
    try:
        line = one_line_error(run_tft("infer", "--url", url, "--model", "m", "hello"))
        assert "something answers there, but not gRPC" in line and "8001" in line
        line = one_line_error(run_tft("infer", "--url", url, "--model", "m", "--ssl", "hello"))
        assert "it does not speak TLS" in line and "drop --ssl" in line
    finally:
        server.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    line = one_line_error(run_tft("infer", "--url", f"127.0.0.1:{free}", "--model", "m", "hello"))
    assert "nothing listens there (connection refused)" in line


# -- rollback follows what was served ----------------------------------------------------------------------------
def test_rollback_never_returns_to_a_build_the_user_rolled_back_from(tiny_export, tmp_path):
    """v1, v2; rollback to v1 (v2 was bad); a new v3; the next rollback goes to v1, the build served before v3,
    not back to v2 (it used to pick the newest earlier version)."""
    from tft.serve.options import BuildOptions
    from tft.serve.records import read_serve_manifests
    from tft.serve.repository import build_repository

    repo = tmp_path / "repo"
    for name in ("a", "b"):
        build_repository(tiny_export(name), repo, BuildOptions())
    assert run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc").returncode == 0
    build_repository(tiny_export("c"), repo, BuildOptions())
    record = read_serve_manifests(repo)["afqmc"]
    assert (record["version"], record["served_before"], record["rolled_back"]) == (3, [1], [2])
    proc = run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc")
    assert proc.returncode == 0 and "rolled back from v3 to v1" in proc.stdout, proc.stderr
    line = one_line_error(run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc"))
    assert "every build served before v1 was rolled back from; --to V chooses one anyway" in line
    assert run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc", "--to", 2).returncode == 0
    assert read_serve_manifests(repo)["afqmc"]["rolled_back"] == [1, 3]  # v2 chosen again: no longer refused


@pytest.mark.slow
def test_a_live_server_follows_builds_and_rollbacks_into_its_repository(tiny_export, tmp_path):
    """`tft serve start` runs Triton in explicit model control: a build or rollback into its repository used to
    leave it answering the old version ("rolled back from v2 to v1" while v2 answered). It now loads what the
    repository commits within its health interval."""
    import time

    from helpers import ServeProcess
    from tft.serve.client import Client
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    repo = tmp_path / "repo"
    build_repository(tiny_export("a", labels=("0", "1")), repo, BuildOptions())
    (tmp_path / "s").mkdir()
    server = ServeProcess(repo, tmp_path / "s", health_interval=0.5).wait_ready()
    try:
        def label() -> str:
            answers, _ = Client(server.url).infer("afqmc", [{"text": "good film", "text_pair": "bad film"}])
            return answers[0]["label"]

        def becomes(expected: str) -> float:
            start = time.monotonic()
            while label() != expected:
                assert time.monotonic() - start < 30, server.output()[-2000:]
                time.sleep(0.2)
            return time.monotonic() - start

        first = label()
        flipped = "0" if first == "1" else "1"
        build_repository(tiny_export("b", labels=("1", "0")), repo, BuildOptions())  # the same graph, labels swapped
        becomes(flipped)
        proc = run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc")
        assert proc.returncode == 0 and "loads it within its --health-interval" in proc.stdout
        becomes(first)
        assert "the repository commits v1 now (v2 was served): loaded it" in server.output()
    finally:
        server.stop()


def test_the_current_folder_and_a_full_disk_are_refused_before_the_work(tmp_path, monkeypatch):
    """`--output-dir .` was an internal error after the whole export (a folder cannot be renamed onto the current
    one); a disk without room failed after the work with no path."""
    import collections
    import shutil as shutil_mod

    from tft.fsutil import OutputError, check_free_space, check_output_dir

    (tmp_path / "ckpt").mkdir()
    for out in (".", "sub/.."):
        line = one_line_error(run_tft("export", "--checkpoint", tmp_path / "ckpt", "--output-dir", out, cwd=tmp_path))
        assert f"--output-dir {out}: is the current folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    with pytest.raises(OutputError, match="is the current folder"):
        check_output_dir("/", what="export", marker="manifest.json")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda _: usage(10 << 30, 10 << 30, 5 << 20))
    with pytest.raises(OutputError, match=r"--output-dir .*out/deeper: 5 MiB free on its disk, this export needs about "
                                          r"100 MiB"):
        check_free_space(tmp_path / "out" / "deeper", 100 << 20, what="this export")
    check_free_space(tmp_path / "out", 1 << 20)  # room enough: nothing said


@pytest.mark.slow
def test_serve_start_runs_where_the_home_and_cache_cannot_be_written(tiny_export, tmp_path):
    """Kubernetes' readOnlyRootFilesystem, a read-only home: the cache tft writes while serving (the Python
    backend's links, Triton's log) falls back to the temporary folder with one line, and TFT_CACHE chooses."""
    from helpers import ServeProcess
    from tft.serve.client import Client
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    repo = tmp_path / "repo"
    build_repository(tiny_export(), repo, BuildOptions())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")  # nothing can be made under it, whoever runs (root included)
    (tmp_path / "s").mkdir()
    server = ServeProcess(repo, tmp_path / "s", env={"TFT_CACHE": str(blocker / "cache"), "HOME": str(blocker)})
    try:
        server.wait_ready()
        answers, _ = Client(server.url).infer("afqmc", [{"text": "good film", "text_pair": "bad film"}])
        assert answers[0]["label"] in ("0", "1")
        assert "cannot be written (a read-only home or cache?): using" in server.output()
    finally:
        server.stop()


def test_a_folder_inside_or_around_one_another_command_writes_is_refused(tmp_path):
    """One writer per real folder, nested ones included: `tft train --overwrite runs/x` while an export writes
    runs/x/export (or the other way round) is refused in one line naming the other command; a command's own
    children (a pipeline's training) are not others."""
    import json
    import os
    import subprocess

    from tft.fsutil import OutputError, hold

    other = subprocess.Popen(["sleep", "60"])
    try:
        run = tmp_path / "runs" / "x"
        (run / "best").mkdir(parents=True)
        lock = tmp_path / "runs" / ".x.tft-lock"  # what `hold(runs/x)` writes while another command trains there
        lock.write_text(json.dumps({"pid": other.pid, "command": "tft train --output-dir runs/x"}))
        with pytest.raises(OutputError, match=r"export: inside .*runs/x, which pid \d+ \(tft train --output-dir "
                                               r"runs/x\) is writing"):
            with hold(run / "export", option="--output-dir"):
                pass
        assert not (run / ".export.tft-lock").exists()  # refused before any lock file was made
        # around: a folder holding one being written
        with pytest.raises(OutputError, match=r"holds .*runs/x, which pid \d+"):
            with hold(tmp_path / "runs"):
                pass
        # through a symlinked name of the folder
        (tmp_path / "link").symlink_to(run)
        with pytest.raises(OutputError, match="inside"):
            with hold(tmp_path / "link" / "export"):
                pass
        # this process's own lineage (a pipeline and the training it launched) is not another writer
        lock.write_text(json.dumps({"pid": os.getppid(), "command": "tft pipeline"}))
        with hold(run / "export"):
            pass
        # a holder that died, or a reader (`tft serve start`), holds nothing against a writer
        other.kill()
        other.wait()
        lock.write_text(json.dumps({"pid": other.pid, "command": "tft train"}))
        with hold(run / "export"):
            pass
    finally:
        if other.poll() is None:
            other.kill()


def test_a_real_writer_of_the_outer_folder_refuses_the_inner_one(tmp_path):
    import subprocess
    import sys
    import time

    from tft.fsutil import OutputError, hold

    run = tmp_path / "run"
    run.mkdir()
    code = ("import sys, time; from tft.fsutil import hold\n"
            f"with hold({str(run)!r}):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"inside {run}, which pid {holder.pid} "):
            with hold(run / "best"):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    with hold(run / "best"):  # the kernel let go with the holder: the inner folder is free
        pass
