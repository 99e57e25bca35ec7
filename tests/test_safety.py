"""Nothing lost, nothing stale, nothing silent: every command's output policy, transactional repository
builds on a live server, integrity checks, validated settings, honest re-runs, process hygiene,
recovery from crashed stubs on a repository served before (and read-only), memory limits, and output
for people and logs. Each bad input must end in one line and a non-zero exit, with every earlier
file byte-identical (hashes compared before and after)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ServeProcess, one_line_error, run_tft, tree_hashes, write
from test_pipeline import flip_logits


# -- 1. one output policy ----------------------------------------------------------------------------------

def test_export_never_replaces_a_folder_it_did_not_write(trained_pair, tmp_path):
    user = write(tmp_path / "mine" / "notes.txt", "my notes\n").parent
    before = tree_hashes(user, trained_pair)
    for target, says in ((user, "is not a export written by tft"), (trained_pair, "an input of this command"),
                         (trained_pair / "best", "an input of this command")):
        proc = run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", target, "--parity-samples", 8)
        assert says in one_line_error(proc)
    assert tree_hashes(user, trained_pair) == before


def test_export_replaces_an_earlier_export_only_with_overwrite(trained_pair, tmp_path):
    out = tmp_path / "exp"
    args = ("export", "--checkpoint", trained_pair / "best", "--output-dir", out, "--parity-samples", 8,
            "--max-batch", 4)
    assert run_tft(*args).returncode == 0
    before = tree_hashes(out)
    assert "holds an earlier export; add --overwrite" in one_line_error(run_tft(*args))
    assert tree_hashes(out) == before
    assert run_tft(*args, "--overwrite").returncode == 0
    assert json.loads((out / "manifest.json").read_text())["format"] == "tft.export/1"


def test_data_sample_keeps_a_data_folder_and_replaces_its_own_only_with_overwrite(afqmc_dir, tmp_path):
    before = tree_hashes(afqmc_dir)
    for extra in ((), ("--overwrite",)):
        assert "is not a data sample written by tft" in one_line_error(
            run_tft("data", "sample", "--out", afqmc_dir, "--train", 10, *extra))
    assert tree_hashes(afqmc_dir) == before
    out = tmp_path / "s"
    assert run_tft("data", "sample", "--out", out, "--train", 10, "--dev", 5, "--test", 2).returncode == 0
    assert "holds an earlier data sample" in one_line_error(run_tft("data", "sample", "--out", out, "--train", 10))
    assert run_tft("data", "sample", "--out", out, "--train", 12, "--dev", 5, "--test", 2, "--overwrite").returncode == 0
    assert len((out / "train.json").read_text().splitlines()) == 12


def test_train_refuses_a_run_folder_and_a_foreign_best(afqmc_sample, trained_pair, tmp_path):
    # a folder holding a best/ and nothing else of a run: not silently overwritten
    odd = tmp_path / "odd"
    write(odd / "best" / "model.safetensors", b"weights someone cares about")
    before = tree_hashes(odd, trained_pair)
    common = ("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny", "--max-steps", 2)
    assert "is not a tft run folder" in one_line_error(run_tft(*common, "--output-dir", odd))
    assert "holds a finished training run; add --resume auto" in one_line_error(
        run_tft(*common, "--output-dir", trained_pair))
    assert tree_hashes(odd, trained_pair) == before


def test_outputs_are_never_the_inputs(trained_pair, afqmc_sample, tmp_path):
    text = write(tmp_path / "in.txt", "花呗怎么还款\t花呗如何还款\n")
    before = tree_hashes(text)
    assert "is the input file" in one_line_error(
        run_tft("predict", "--checkpoint", trained_pair / "best", text, "-o", text))
    assert "is the input file" in one_line_error(
        run_tft("infer", "--model", "afqmc", "--url", "127.0.0.1:1", "-i", text, "-o", text))
    assert tree_hashes(text) == before


def test_created_files_follow_the_umask(pair_export, tmp_path):
    repo = tmp_path / "repo"
    proc = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o022); from tft.cli import main; "
                           "sys.argv=['tft','serve','build','--export',sys.argv[1],'--repository',sys.argv[2],"
                           "'--name','m']; main()", str(pair_export), str(repo)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for path in [repo, *repo.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    for path in [pair_export, *pair_export.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path  # readable by a Triton container's user


# -- 2. transactional builds on a live server ----------------------------------------------------------------

def _flipped_export(export: Path, out: Path) -> Path:
    """A second, different model: the same export with negated logits (every binary answer flips)."""
    from tft.fsutil import file_sha256

    shutil.copytree(export, out)
    flip_logits(out / "model.onnx")
    manifest = json.loads((out / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["file"] == "model.onnx":
            art["sha256"] = file_sha256(out / "model.onnx")
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


class Boom(Exception):
    pass


def test_a_build_failing_at_any_step_leaves_the_old_or_the_new_model_never_a_mix(pair_export, afqmc_sample,
                                                                                     tmp_path, monkeypatch):
    import tritonclient.grpc as grpcclient

    from tft.serve import repository
    from tft.serve.client import text_inputs

    new_export = _flipped_export(pair_export, tmp_path / "new-export")
    repo = tmp_path / "repo"
    opts = repository.BuildOptions(name="tx", max_batch=16)
    repository.build_repository(pair_export, repo, opts)
    rows = [json.loads(line) for line in (afqmc_sample / "dev.json").read_text().splitlines()[:16]]
    texts, pairs = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]
    server = ServeProcess(repo, tmp_path, health_interval=0).wait_ready()
    client = grpcclient.InferenceServerClient(server.url)

    def ask() -> tuple:
        result = client.infer("tx", text_inputs(grpcclient, texts, pairs))
        return tuple(v.decode() for v in result.as_numpy("LABEL").reshape(-1))

    def reload_all():  # what a restart or a health-loop reload makes Triton read from disk
        for model in ("tx_tokenizer", "tx_model", "tx_postprocess", "tx"):
            client.load_model(model)

    old = ask()
    new = tuple("1" if a == "0" else "0" for a in old)
    seen, errors, stop, current = [], [], threading.Event(), ["start"]

    def traffic():
        own = grpcclient.InferenceServerClient(server.url)
        while not stop.is_set():
            try:
                result = own.infer("tx", text_inputs(grpcclient, texts, pairs))
                seen.append(tuple(v.decode() for v in result.as_numpy("LABEL").reshape(-1)))
            except Exception as e:  # any error here is a failure of the transaction
                errors.append((current[0], str(e)[:200]))
            time.sleep(0.05)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        phases = ["staged", "placed tx_tokenizer", "placed tx_model", "placed tx_postprocess",
                  "both versions of tx_tokenizer", "both versions of tx_model", "both versions of tx_postprocess",
                  "committed"]
        for phase in phases:
            def fail_at(step, phase=phase):
                if step == phase:
                    raise Boom(phase)

            monkeypatch.setattr(repository, "checkpoint", fail_at)
            current[0] = f"build {phase}"
            with pytest.raises(Boom):
                repository.build_repository(new_export, repo, opts)
            current[0] = f"reload {phase}"
            reload_all()
            assert ask() == (new if phase == "committed" else old), phase
        monkeypatch.undo()
        stop.set()
        worker.join(30)
        server.stop()
        server = ServeProcess(repo, tmp_path, health_interval=0).wait_ready()  # a fresh start reads it all
        client = grpcclient.InferenceServerClient(server.url)
        assert ask() == new
    finally:
        stop.set()
        worker.join(30)
        server.stop()
    assert not errors, errors[:3]
    assert seen and set(seen) <= {old, new}
    assert not list(repo.rglob(".*tmp-*"))


# -- 3. integrity end to end ---------------------------------------------------------------------------------

def test_a_swapped_export_file_is_refused_by_build_predict_and_verify(pair_export, ner_export, trained_pair,
                                                                      afqmc_sample, tmp_path):
    export = tmp_path / "exp"
    shutil.copytree(pair_export, export)
    shutil.copy(ner_export / "model.onnx", export / "model.onnx")  # another task's model under the same name
    repo = tmp_path / "repo"
    msg = one_line_error(run_tft("serve", "build", "--export", export, "--repository", repo))
    assert f"{export / 'model.onnx'}: its sha256 differs" in msg and not repo.exists()
    msg = one_line_error(run_tft("predict", "--onnx", export, afqmc_sample / "test.json", "-o", tmp_path / "o.jsonl"))
    assert "sha256 differs" in msg and not (tmp_path / "o.jsonl").exists()


def test_label_count_must_match_the_model(tiny_export, tmp_path):
    export = tmp_path / "exp"
    shutil.copytree(tiny_export(), export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["labels"] = ["0", "1", "2"]  # labels edited by hand
    (export / "manifest.json").write_text(json.dumps(manifest))
    msg = one_line_error(run_tft("serve", "build", "--export", export, "--repository", tmp_path / "repo"))
    assert "the model has 2 outputs but" in msg and "lists 3 labels" in msg


def test_wrong_shape_manifests_are_one_line(tiny_export, tmp_path):
    pair_export = tiny_export()
    for name, change in (("not an object", []), ("missing field", {"format": "tft.export/1"}),
                         ("wrong type", "labels")):
        export = tmp_path / name.replace(" ", "-")
        shutil.copytree(pair_export, export)
        manifest = json.loads((export / "manifest.json").read_text())
        data = change if not isinstance(change, str) else {**manifest, change: "0,1"}
        (export / "manifest.json").write_text(json.dumps(data))
        msg = one_line_error(run_tft("serve", "build", "--export", export, "--repository", tmp_path / "r"))
        assert "manifest.json" in msg, msg


def test_serve_start_refuses_a_repository_whose_files_changed(pair_export, tmp_path):
    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "m").returncode == 0
    flip_logits(repo / "m_model" / "1" / "model.onnx")
    msg = one_line_error(run_tft("serve", "start", "--repository", repo, "--grpc-port", 1))
    assert f"{repo / 'm_model' / '1' / 'model.onnx'}: differs from what `tft serve build` wrote" in msg


# -- 4. validated settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,says", [
    (("--lr", "-1"), "--lr -1: must be greater than 0"),
    (("--lr", "fast"), "--lr fast: expected a number"),
    (("--epochs", "0"), "--epochs 0: must be greater than 0"),
    (("--max-steps", "0"), "--max-steps 0: must be at least 1"),
    (("--batch-size", "0"), "--batch-size 0: must be at least 1"),
    (("--max-seq-length", "1"), "--max-seq-length 1: must be at least 8"),
    (("--max-seq-length", "100000"), "--max-seq-length 100000: must be at most 8192"),
    (("--warmup", "-0.5"), "--warmup -0.5: must be at least 0"),
    (("--seed", "1.5"), "--seed 1.5: expected a whole number"),
    (("--resume", "auto", "--overwrite"), "--resume and --overwrite exclude each other"),
    (("--master-port", "70000"), "70000 is not in the range"),
    (("--nnodes", "2", "--node-rank", "2"), "--node-rank 2: must be below --nnodes 2"),
])
def test_bad_training_options_are_one_line_naming_the_option(afqmc_sample, tmp_path, args, says):
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", tmp_path / "r", *args)
    assert says in one_line_error(proc, proc.returncode if proc.returncode in (1, 2) else 1)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # trains a model
def test_yaml_values_are_typed_like_flags(afqmc_sample, tmp_path):
    good = write(tmp_path / "good.yaml", f"task: afqmc\ndata_dir: {afqmc_sample}\nmodel: scratch:tiny\nlr: 3e-5\n"
                                         "max_steps: 2\nlimit_eval: 8\nfp16: false\n")
    proc = run_tft("--quiet", "train", "--config", good, "--output-dir", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r" / "best" / "tft.json").read_text())["train_config"]["lr"] == 3e-5
    for text, says in (('fp16: "yes please"\n', "fp16: yes please: expected true or false"),
                       ("epochs: 0\n", "epochs: 0: must be greater than 0"),
                       ("batch_size: [1, 2]\n", "batch_size: [1, 2]: expected a number")):
        bad = write(tmp_path / "bad.yaml", "task: afqmc\n" + text)
        assert f"{bad}: {says}" in one_line_error(run_tft("train", "--config", bad))


def test_max_seq_length_beyond_the_models_positions(tiny_bert_dir, afqmc_sample, tmp_path):
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", tiny_bert_dir,
                   "--max-seq-length", 512, "--output-dir", tmp_path / "r")
    assert f"--max-seq-length 512: model '{tiny_bert_dir}' has 128 positions" in one_line_error(proc)


def test_garbage_checkpoint_for_resume(afqmc_sample, tmp_path):
    bad = tmp_path / "checkpoint-3"
    write(bad / ".tft-complete", "{}")
    write(bad / "trainer_state.json", "not json")
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", tmp_path / "r", "--resume", bad)
    assert "trainer_state.json is missing or unreadable" in one_line_error(proc)


@pytest.mark.parametrize("args,says", [
    (("serve", "start", "--grpc-port", "70000"), "70000 is not in the range 1<=x<=65535"),
    (("infer", "--model", "m", "--timeout", "0", "x"), "0.0 is not in the range 0<x<=86400"),
    (("infer", "--model", "m", "--batch-size", "0", "x"), "0 is not in the range 1<=x<=4096"),
    (("export", "--checkpoint", ".", "--opt-batch", "0"), "0 is not in the range"),
    (("serve", "build", "--export", ".", "--instances", "0"), "0 is not in the range"),
])
def test_bad_serving_and_export_options_are_one_line(args, says):
    assert says in one_line_error(run_tft(*args), 2)


def test_export_shapes_are_checked_before_any_work(trained_pair, tmp_path):
    out = tmp_path / "e"
    msg = one_line_error(run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", out,
                                 "--max-batch", 4, "--opt-batch", 8), 2)
    assert "--opt-batch 8: must not exceed --max-batch 4" in msg and not out.exists()


def test_a_missing_extra_names_the_install_that_fixes_it(tmp_path):
    code = ("import sys; sys.modules['tritonclient'] = None; sys.argv = ['tft', 'infer', '--model', 'm', 'x'];"
            "from tft.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'tft-toolchain[serve]'" in one_line_error(proc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_for_any_option_is_a_config_or_one_line_naming_it(data):
    from tft.errors import TftError
    from tft.train.config import RULES, TrainConfig, flag, merge, parse

    name = data.draw(st.sampled_from(sorted(RULES)))
    value = data.draw(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                                st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                                st.lists(st.integers(), max_size=3), st.sampled_from(["3e-5", "1e3", "true", "0"])))
    from_file = data.draw(st.booleans())
    try:
        if from_file:
            cfg = TrainConfig(**{name: parse(name, value, "c.yaml")})
        else:
            cfg = merge({}, {name: value if value is None or isinstance(value, str) else str(value)})
    except TftError as e:
        message = e.format_message()
        assert "\n" not in message
        assert (f"c.yaml: {name}:" in message) if from_file else (flag(name) in message or "exclude" in message)
        return
    assert isinstance(cfg, TrainConfig)


# -- 5. honest re-runs ---------------------------------------------------------------------------------------

def test_resume_of_a_finished_run_reports_it_and_changes_nothing(trained_pair, afqmc_sample):
    before = tree_hashes(trained_pair)
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", trained_pair, "--epochs", 8, "--batch-size", 32, "--lr", "3e-4", "--resume", "auto")
    assert proc.returncode == 0, proc.stderr
    assert "already finished training (dev accuracy" in proc.stderr
    assert tree_hashes(trained_pair) == before
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", trained_pair, "--max-seq-length", 64, "--resume", "auto")
    assert "was trained with --max-seq-length 128, this run asks for 64" in one_line_error(proc)


@pytest.mark.slow  # trains a model
def test_pipeline_never_reports_an_old_run_under_new_settings(afqmc_sample, tmp_path):
    out = tmp_path / "p"
    base = ("pipeline", "--task", "afqmc", "--data-dir", afqmc_sample, "--output-dir", out, "--model", "scratch:tiny",
            "--max-steps", 4, "--limit-eval", 16, "--max-batch", 8, "--no-int8")
    assert run_tft(*base).returncode == 0
    before = tree_hashes(out / "run", out / "report.json")
    assert "holds an earlier pipeline; add --resume auto" in one_line_error(run_tft(*base))
    assert "ran with --lr 5e-05, this run asks for 0.001" in one_line_error(
        run_tft(*base, "--lr", "1e-3", "--resume", "auto"))
    assert tree_hashes(out / "run", out / "report.json") == before
    best = tree_hashes(out / "run" / "best")
    # same training settings: the finished run is not trained again; export and serving run again under the
    # options given now (here another served name)
    proc = run_tft(*base, "--resume", "auto", "--name", "again")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert tree_hashes(out / "run" / "best") == best and "already finished training" in proc.stderr
    assert json.loads((out / "report.json").read_text())["served"]["model"] == "again"
    assert json.loads((out / "run" / "tft-run.json").read_text())["finished"] is True


def test_infer_resume_asks_again_for_inputs_whose_text_changed(served, tmp_path):
    source = write(tmp_path / "in.txt", "".join(f"花呗{i}\t借呗{i}\n" for i in range(20)))
    out = tmp_path / "out.jsonl"
    assert run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", source, "-o", out).returncode == 0
    done = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.rename(out.with_name("out.jsonl.partial"))  # as if interrupted after all 20
    changed = "".join(f"花呗{i}\t借呗{i}\n" if i != 7 else "余额宝\t借呗7\n" for i in range(20))
    source.write_text(changed, encoding="utf-8")
    proc = run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", source, "-o", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resumed: 19 answers kept, 1 inputs sent, 1 answers for texts no longer in the input dropped" in proc.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == [line.split("\t")[0] for line in changed.splitlines()]
    assert rows[7]["text"] == "余额宝" and [json.loads(x) for x in done][8] == rows[8]


# -- 6. process hygiene --------------------------------------------------------------------------------------

def _tritonserver_children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True).stdout.split("\n")[1:]
    return [int(p) for p, pp, c in (line.split(None, 2) for line in out if line.strip())
            if int(pp) == pid and c.startswith("tritonserver")]


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True
        time.sleep(0.2)
    return False


def test_tritonserver_dies_with_a_killed_parent_and_frees_its_ports(pair_export, tmp_path):
    from tft.serve.server import port_in_use

    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "h").returncode == 0
    server = ServeProcess(repo, tmp_path).wait_ready()
    triton = _tritonserver_children(server.process.pid)
    assert len(triton) == 1
    server.process.kill()  # SIGKILL: no chance to clean up
    server.process.wait()
    assert _gone(triton[0], 30), "tritonserver outlived its parent"
    deadline = time.monotonic() + 30
    while port_in_use("127.0.0.1", server.ports.grpc):
        assert time.monotonic() < deadline, "the gRPC port is still held"
        time.sleep(0.2)


def test_sigint_stops_a_server_started_in_the_background_by_a_script(pair_export, tmp_path):
    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "h").returncode == 0
    from tft.serve.server import Ports

    ports, ready = Ports.free(), tmp_path / "ready.json"
    # `tft serve start &` in a script: the shell starts it with SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "tft", "serve", "start", "--repository", repo, "--grpc-port",
                             str(ports.grpc), "--http-port", str(ports.http), "--metrics-port", str(ports.metrics),
                             "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    triton = _tritonserver_children(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert triton and _gone(triton[0], 30) and not ready.exists()


# -- 7. recovery that recovers -------------------------------------------------------------------------------

def test_every_killed_stub_is_replaced_on_a_served_before_read_only_repository(pair_export, tmp_path):
    """The repository as `tft serve build` writes it, served once before, then read-only (as in a container):
    SIGKILL each Python stub in turn while a request goes every second; answers resume within 10 s and a new
    stub process exists."""
    from tft.serve.client import Client

    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "rc").returncode == 0
    (tmp_path / "first").mkdir()
    ServeProcess(repo, tmp_path / "first").wait_ready().stop()
    for path in [repo, *repo.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        server = ServeProcess(repo, tmp_path, health_interval=1.0).wait_ready()
        client = Client(server.url)
        client.opts.retries = 0
        try:
            for step in ("rc_tokenizer", "rc_model", "rc_postprocess"):
                before = server.stubs(step)
                assert len(before) == 1
                os.kill(before[0], signal.SIGKILL)
                start = time.monotonic()
                while True:
                    _, stats = client.infer("rc", [{"text": "花呗怎么还款", "text_pair": "花呗如何还款"}])
                    if stats.answered == 1:
                        break
                    assert time.monotonic() - start < 10, (step, server.output()[-1500:])
                    time.sleep(1)
                after = server.stubs(step)
                assert after and not set(after) & set(before), (step, before, after)
        finally:
            server.stop()
    finally:
        for path in [repo, *repo.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


# -- 8. limits where memory is at stake ----------------------------------------------------------------------

@pytest.mark.slow  # trains a model
def test_training_caps_text_length_before_tokenizing(tmp_path):
    d = tmp_path / "data"
    long_line = {"sentence1": "花呗" * 2_000_000, "sentence2": "借呗", "label": "1"}  # 4 M characters
    rows = [{"sentence1": f"花呗{i}", "sentence2": f"借呗{i}", "label": str(i % 2)} for i in range(40)]
    write(d / "train.json", rows + [long_line])
    write(d / "dev.json", rows[:8])
    proc = run_tft("train", "--task", "afqmc", "--data-dir", d, "--model", "scratch:tiny", "--max-steps", 2,
                   "--output-dir", tmp_path / "r", "--max-seq-length", 32)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 texts longer than 4096 characters were cut before tokenizing" in proc.stderr


def test_offline_prediction_caps_texts_exactly_as_serving_does(tokenizer):
    from tft.data.features import encode_for_inference

    long = "good movie " * 10_000
    capped, plain = encode_for_inference([long, long[:4096]], None, tokenizer, 64, False)
    assert capped == plain


# -- 9. output for people and for logs -----------------------------------------------------------------------

def test_piped_output_has_no_progress_frames_and_library_warnings_go_to_a_log(trained_pair, tmp_path):
    cache = tmp_path / "cache"
    proc = run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", tmp_path / "e",
                   "--parity-samples", 16, "--max-batch", 4, env={"TFT_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "%|" not in proc.stderr
    assert "word_embedding_table" not in proc.stderr  # an onnxruntime optimizer warning
    assert "word_embedding_table" in (cache / "logs" / "libraries.log").read_text()
    verbose = run_tft("-v", "export", "--checkpoint", trained_pair / "best", "--output-dir", tmp_path / "e2",
                      "--parity-samples", 16, "--max-batch", 4, env={"TFT_CACHE": str(cache)})
    assert "word_embedding_table" in verbose.stderr
