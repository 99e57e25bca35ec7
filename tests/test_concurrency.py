"""Nothing lost when two commands run at once or when `--overwrite` meets a user's file: one writer per
destination, ownership that `--overwrite` respects, repositories nobody writes into by accident, interrupted
builds cleared, rollback, and no silent wrong answers (docs/reliability.md, "Concurrency and ownership")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ServeProcess, one_line_error, run_tft, tree_hashes, write

HOLD = """
import sys, time
from tft.fsutil import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- one writer per destination ---------------------------------------------------------------------------

def test_a_second_writer_is_told_who_holds_the_destination_or_waits(tmp_path, caplog):
    from tft.errors import TftError
    from tft.fsutil import hold

    target = tmp_path / "export"
    first = holder(target, 3)
    try:
        with pytest.raises(TftError, match=rf"--output-dir .*export: in use by pid {first.pid} \(.*\); wait for it to "
                                           "finish, or add --wait"):
            with hold(target):
                pass
        start = time.monotonic()
        with hold(target, wait=True):
            assert time.monotonic() - start > 1  # it waited for the first holder to let go
        assert first.wait(timeout=30) == 0
    finally:
        first.kill()
        first.wait()


def test_a_lock_left_by_a_killed_holder_is_taken_over_with_a_line(tmp_path, caplog):
    from tft.fsutil import hold

    target = tmp_path / "runs" / "r"
    first = holder(target, 60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with caplog.at_level("WARNING", logger="tft"), hold(target):
        pass
    assert f"took over the lock of pid {first.pid}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="tft"), hold(target):  # released cleanly: nothing to take over
        pass
    assert "took over" not in caplog.text


def test_two_builds_at_once_one_waits_and_both_versions_are_whole(tiny_export, tmp_path):
    from tft.serve.records import check_integrity, read_serve_manifests

    export, repo = tiny_export(), tmp_path / "repo"
    args = [sys.executable, "-m", "tft", "serve", "build", "--export", str(export), "--repository", str(repo)]
    procs = [subprocess.Popen(args + ["--wait"], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    record = read_serve_manifests(repo)["afqmc"]
    assert record["version"] == 2 and check_integrity(repo) == len(record["files"])
    # without --wait, a build that finds the repository held stops at once, naming the holder
    first = holder(repo, 30)
    try:
        msg = one_line_error(run_tft("serve", "build", "--export", export, "--repository", repo))
        assert f"in use by pid {first.pid}" in msg and "add --wait" in msg
    finally:
        first.kill()
        first.wait()
    assert read_serve_manifests(repo)["afqmc"]["version"] == 2


@pytest.mark.slow
def test_two_trainings_into_one_folder_never_both_succeed(afqmc_dir, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tft", "train", "--task", "afqmc", "--data-dir", str(afqmc_dir), "--model",
            "scratch:tiny", "--output-dir", str(out), "--max-steps", 40, "--batch-size", 2]
    procs = [subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "in use by pid" in refused or "holds a finished training run" in refused, refused


# -- ownership: --overwrite removes only what tft wrote -------------------------------------------------

def test_overwrite_beside_a_users_file_or_over_a_foreign_marker_changes_nothing(tiny_export, tmp_path):
    from tft.fsutil import mark_owned

    checkpoint = tmp_path / "ckpt"  # never read: the destination is refused first
    checkpoint.mkdir()
    earlier = tiny_export("earlier")
    mark_owned(earlier, "export")
    write(earlier / "NOTES.md", "my notes about this export\n")
    webapp = write(tmp_path / "webapp" / "manifest.json", '{"name": "my web app", "start_url": "/"}').parent
    write(webapp / "index.html", "<html></html>")
    before = tree_hashes(earlier, webapp)
    says = one_line_error(run_tft("export", "--checkpoint", checkpoint, "--output-dir", earlier, "--overwrite"))
    assert "holds NOTES.md, which tft did not write" in says
    says = one_line_error(run_tft("export", "--checkpoint", checkpoint, "--output-dir", webapp, "--overwrite"))
    assert "without .tft-owned.json" in says
    # a data sample beside the user's annotations
    sample = tmp_path / "sample"
    assert run_tft("data", "sample", "--out", sample, "--train", 10, "--dev", 5, "--test", 2).returncode == 0
    write(sample / "annotations.txt", "mine\n")
    before.update(tree_hashes(sample))
    says = one_line_error(run_tft("data", "sample", "--out", sample, "--train", 10, "--overwrite"))
    assert "holds annotations.txt, which tft did not write" in says
    # a file of tft's that the user edited is theirs now
    (sample / "annotations.txt").unlink()
    write(sample / "dev.json", '{"sentence1": "edited", "sentence2": "by hand", "label": "1"}\n')
    says = one_line_error(run_tft("data", "sample", "--out", sample, "--train", 10, "--overwrite"))
    assert "dev.json was changed after tft wrote it" in says
    del before[str(sample / "annotations.txt")], before[str(sample / "dev.json")]
    now = tree_hashes(earlier, webapp, sample)
    assert {k: v for k, v in now.items() if k in before} == before
    # and its own, untouched, it replaces
    (sample / "dev.json").unlink()
    sample2 = tmp_path / "sample2"
    assert run_tft("data", "sample", "--out", sample2, "--train", 10, "--dev", 5, "--test", 2).returncode == 0
    assert run_tft("data", "sample", "--out", sample2, "--train", 12, "--dev", 5, "--test", 2,
                   "--overwrite").returncode == 0
    owned = json.loads((sample2 / ".tft-owned.json").read_text())
    assert owned["tool"] == "tft" and set(owned["files"]) == {"train.json", "dev.json", "test.json", "tft-sample.json"}


def test_no_writer_writes_inside_a_model_repository(tiny_export, tmp_path):
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    repo = tmp_path / "repo"
    build_repository(tiny_export(), repo, BuildOptions())
    before = tree_hashes(repo)
    says = one_line_error(run_tft("serve", "deploy", "--repository", repo, "--chart-values",
                                  repo / "afqmc" / "config.pbtxt", "--overwrite"))
    assert "is inside the model repository" in says
    for args in (("data", "sample", "--out", repo / "afqmc_model" / "data"),
                 ("export", "--checkpoint", tmp_path, "--output-dir", repo / "exports")):
        assert "is inside the model repository" in one_line_error(run_tft(*args))
    assert tree_hashes(repo) == before
    # the records cover every config.pbtxt: a hand edit is caught before Triton starts
    record = json.loads((repo / "afqmc" / "tft-serve.json").read_text())
    assert {f"{m}/config.pbtxt" for m in ("afqmc", "afqmc_tokenizer", "afqmc_model", "afqmc_postprocess")} <= set(
        record["files"])


# -- builds: interrupted, full disk, rolled back ---------------------------------------------------------

KILL_AT = """
import os, signal, sys
from tft.serve import repository
from tft.serve.options import BuildOptions

def die(step):
    if step == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)

repository.checkpoint = die
repository.build_repository(sys.argv[1], sys.argv[2], BuildOptions())
"""


@pytest.mark.parametrize("step", ["staged", "placed afqmc_model", "both versions of afqmc_postprocess"])
def test_the_next_build_clears_what_a_killed_build_left(tiny_export, tmp_path, step):
    from tft.serve.options import BuildOptions
    from tft.serve.records import check_integrity, read_serve_manifests
    from tft.serve.repository import build_repository, recover_interrupted

    export, repo = tiny_export(), tmp_path / "repo"
    build_repository(export, repo, BuildOptions())
    killed = subprocess.run([sys.executable, "-c", KILL_AT, str(export), str(repo), step])
    assert killed.returncode == -signal.SIGKILL
    # what `tft serve start` does first: the interrupted build is cleared, the committed one is whole
    assert recover_interrupted(repo) == (["afqmc"] if step != "staged" else [])
    assert read_serve_manifests(repo)["afqmc"]["version"] == 1 and check_integrity(repo)
    record = build_repository(export, repo, BuildOptions())
    leftovers = [p.name for p in repo.rglob(".*") if not p.name.endswith(".tft-lock")]
    assert leftovers == [] and check_integrity(repo) == len(record["files"])
    for model, version in record["model_versions"].items():  # no version the killed build placed is left over
        assert sorted(p.name for p in (repo / model).iterdir() if p.is_dir()) == ["1", str(version)]


def test_a_build_on_a_full_disk_names_the_repository_and_leaves_nothing(tiny_export, tmp_path, monkeypatch):
    import errno

    from tft.errors import TftError
    from tft.serve import repository
    from tft.serve.options import BuildOptions

    export, repo = tiny_export(), tmp_path / "repo"
    repository.build_repository(export, repo, BuildOptions())
    before = tree_hashes(repo)

    def full(src, dest):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(repository, "_place_file", full)
    with pytest.raises(TftError) as e:
        repository.build_repository(export, repo, BuildOptions())
    assert e.value.format_message() == (f"{repo.resolve()}: cannot write the new version (No space left on device); "
                                        "the served version is unchanged")
    assert tree_hashes(repo) == before and not [p for p in repo.rglob(".*") if p.is_dir()]


def test_rollback_serves_the_previous_build_in_one_step(tiny_export, tmp_path):
    from tft.serve.layout import parse_pbtxt
    from tft.serve.options import BuildOptions
    from tft.serve.records import check_integrity, read_serve_manifests
    from tft.serve.repository import build_repository

    repo = tmp_path / "repo"
    build_repository(tiny_export("a"), repo, BuildOptions(instances=1))
    build_repository(tiny_export("b"), repo, BuildOptions(instances=2))
    proc = run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc")
    assert proc.returncode == 0, proc.stderr
    assert "afqmc: rolled back from v2 to v1" in proc.stdout and "afqmc/1/tft-serve.json" in proc.stdout
    record = read_serve_manifests(repo)["afqmc"]
    assert record["version"] == 1 and record["rolled_back_from"] == 2 and check_integrity(repo)
    ensemble = parse_pbtxt((repo / "afqmc" / "config.pbtxt").read_text())
    assert {s.model_name: s.model_version for s in ensemble.ensemble_scheduling.step} == {
        "afqmc_tokenizer": 1, "afqmc_model": 1, "afqmc_postprocess": 1}
    model = parse_pbtxt((repo / "afqmc_model" / "config.pbtxt").read_text())
    assert list(model.version_policy.specific.versions) == [1] and model.instance_group[0].count == 1
    assert (repo / "afqmc_model" / "2").is_dir()  # versions are kept: forward again with --to 2
    assert run_tft("serve", "rollback", "--repository", repo, "--name", "afqmc", "--to", 2).returncode == 0
    assert read_serve_manifests(repo)["afqmc"]["version"] == 2 and check_integrity(repo)
    single = tmp_path / "single"
    build_repository(tiny_export("c"), single, BuildOptions())
    assert "v1 is its first build; nothing to roll back to" in one_line_error(
        run_tft("serve", "rollback", "--repository", single, "--name", "afqmc"))


# -- no silent wrong answers ---------------------------------------------------------------------------

def test_a_checkpoint_without_its_tokenizer_is_refused(tiny_bert_dir, tmp_path):
    import shutil

    checkpoint = tmp_path / "best"
    shutil.copytree(tiny_bert_dir, checkpoint)
    (checkpoint / "tokenizer.json").unlink()
    write(checkpoint / "tft.json", json.dumps({
        "format": "tft.checkpoint/1", "task": "sst2", "kind": "sequence_classification", "labels": ["0", "1"],
        "max_seq_length": 32, "text_field": "sentence", "text_pair_field": None,
        "model_input_names": ["input_ids", "attention_mask"], "main_metric": "accuracy", "data_dir": "data"}))
    text = write(tmp_path / "in.txt", "good film\n")
    for args in (("export", "--checkpoint", checkpoint, "--output-dir", tmp_path / "e"),
                 ("eval", "--checkpoint", checkpoint),
                 ("predict", "--checkpoint", checkpoint, text, "-o", tmp_path / "o.jsonl")):
        assert "has no tokenizer.json, the tokenizer the model was trained with" in one_line_error(run_tft(*args))
    assert not (tmp_path / "e").exists() and not (tmp_path / "o.jsonl").exists()


def test_a_recorded_data_dir_is_never_relative_to_the_current_folder(tmp_path):
    from tft.manifest import read_checkpoint_manifest

    checkpoint = tmp_path / "run" / "best"
    write(checkpoint / "tft.json", json.dumps({
        "format": "tft.checkpoint/1", "task": "sst2", "kind": "sequence_classification", "labels": ["0", "1"],
        "max_seq_length": 32, "text_field": "sentence", "text_pair_field": None,
        "model_input_names": ["input_ids"], "main_metric": "accuracy", "data_dir": "../../data"}))
    here = os.getcwd()
    try:
        os.chdir(tmp_path / "run")
        assert read_checkpoint_manifest(checkpoint)["data_dir"] == str((tmp_path / "data").resolve())
    finally:
        os.chdir(here)


def test_a_duplicate_yaml_key_is_one_line(tmp_path):
    config = write(tmp_path / "c.yaml", "task: afqmc\nepochs: 3\nlr: 1e-4\nepochs: 1\n")
    says = one_line_error(run_tft("train", "--config", config))
    assert says == f"Error: {config}:4: option 'epochs' is given twice (first on line 2); keep one"


def test_serve_start_refuses_a_path_the_stub_cannot_take_at_once(tiny_export, tmp_path):
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    for name in ("with space", "naïve"):
        repo = tmp_path / name / "repo"
        build_repository(tiny_export(f"export-{len(name)}"), repo, BuildOptions())
        start = time.monotonic()
        says = one_line_error(run_tft("serve", "start", "--repository", repo, "--grpc-port", 1, "--http-port", 2,
                                      "--metrics-port", 3))
        assert "cannot start models from a path with spaces or non-ASCII characters" in says
        assert time.monotonic() - start < 60


@pytest.mark.slow
def test_an_ensemble_that_cannot_load_is_named_in_seconds_and_the_log_is_in_the_cache(tiny_export, tmp_path):
    from tft.errors import TftError
    from tft.fsutil import cache_root
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository
    from tft.serve.server import Ports, TritonServer

    repo = tmp_path / "repo"
    build_repository(tiny_export(), repo, BuildOptions())
    config = repo / "afqmc" / "config.pbtxt"  # what two unlocked builds once left: a step version not loaded
    config.write_text(config.read_text().replace("model_version: 1", "model_version: 2"))
    server = TritonServer(repo, Ports.free())
    start = time.monotonic()
    with pytest.raises(TftError, match="ensemble 'afqmc' depends on 'afqmc_.*' whose required version 2 is not loaded"):
        with server:
            pass
    assert time.monotonic() - start < 60
    assert server.log_file.parent == cache_root() / "logs" and server.log_file.name.startswith("tritonserver-")


@pytest.mark.slow
def test_truncated_answers_are_marked_and_counted(served, tmp_path):
    from tft.serve.client import Client

    info = Client(served.url).info("cluener")
    cap = info.tft["max_chars"]
    answers, stats = Client(served.url).infer("cluener", ["张三在北京", "张三在北京" * (cap // 5 + 1)])
    assert "truncated" not in answers[0] and answers[1]["truncated"] is True and stats.truncated == 1
    proc = run_tft("infer", "--url", served.url, "--model", "cluener", "张" * (cap + 1))
    assert proc.returncode == 0 and json.loads(proc.stdout)["truncated"] is True
    assert "1 texts longer than the model reads (answers marked truncated)" in proc.stderr


@pytest.mark.slow
def test_infer_streams_a_hundred_thousand_lines_in_flat_memory(served, tmp_path):
    """The client's peak memory does not grow with the input: 100,000 texts under a fixed bound (its own
    ru_maxrss: the server is another process)."""
    source = tmp_path / "in.txt"
    with open(source, "w", encoding="utf-8") as f:
        for i in range(100_000):
            f.write(f"张三{i % 97}在北京{i % 13}\n")
    out = tmp_path / "out.jsonl"
    # VmHWM: this process's own peak (ru_maxrss would carry the forking pytest's over exec)
    code = ("import re, sys\nfrom tft.cli import main\nsys.argv = sys.argv[1:]\ntry:\n    main()\nfinally:\n"
            "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "    print('peak_kb', hwm, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, "tft", "--quiet", "infer", "--url", served.url, "--model",
                           "cluener", "-i", str(source), "-o", str(out), "--batch-size", "64", "--concurrency", "8"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_mb = int(proc.stderr.split("peak_kb")[-1].split()[0]) / 1024
    with open(out, encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines == 100_000 and peak_mb < 150, peak_mb  # 1.2 GB before answers were streamed


@pytest.mark.slow
def test_two_builds_at_once_leave_a_repository_that_loads_and_answers(pair_export, afqmc_sample, tmp_path):
    """Before locks, two builds at once left an ensemble pinned to a step version its policy did not load (4 of 4
    trials): now the second waits, and the repository both leave loads on Triton and answers."""
    from tft.serve.client import Client

    repo = tmp_path / "repo"
    args = [sys.executable, "-m", "tft", "serve", "build", "--export", str(pair_export), "--repository", str(repo),
            "--name", "two", "--max-batch", "16", "--wait"]
    procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    server = ServeProcess(repo, tmp_path).wait_ready()
    try:
        rows = [json.loads(line) for line in (afqmc_sample / "dev.json").read_text().splitlines()[:20]]
        answers, stats = Client(server.url).infer("two", [{"text": r["sentence1"], "text_pair": r["sentence2"]}
                                                          for r in rows])
        assert stats.answered == 20 and all(a["label"] in ("0", "1") for a in answers)
    finally:
        server.stop()


@pytest.mark.slow
def test_eval_from_another_folder_scores_the_checkpoints_data(trained_pair, afqmc_sample, tmp_path):
    """A tft.json whose data_dir is relative is read against the checkpoint, never the current folder: run from a
    folder holding another `data/` of the same name, eval still scores the checkpoint's dev split."""
    import os
    import shutil

    checkpoint = tmp_path / "ckpt" / "best"
    shutil.copytree(trained_pair / "best", checkpoint)
    shutil.copytree(afqmc_sample, tmp_path / "ckpt" / "data")
    manifest = json.loads((checkpoint / "tft.json").read_text())
    manifest["data_dir"] = os.path.join("..", "data")  # relative, as an older tft could record it
    (checkpoint / "tft.json").write_text(json.dumps(manifest))
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "data" / "dev.json", '{"sentence1": "a", "sentence2": "b", "label": "1"}\n')
    proc = run_tft("eval", "--checkpoint", checkpoint, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["examples"] == 300 and result["file"] == str((tmp_path / "ckpt" / "data" / "dev.json").resolve())
