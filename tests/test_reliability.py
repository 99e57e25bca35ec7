"""Reliability and security: load, faults (killed stub, killed server, killed export/build), hostile input,
TLS and restricted protocols, no unsafe loads. Each test backs a row of docs/reliability.md."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import REPO, SHARED_DATASETS, ServeProcess, run_tft, write

HOSTILE = {
    "zero-width": "花\u200b呗\u200d怎么\ufeff还款",
    "NUL": "花呗\x00还款",
    "control": "\x01\x02\x1b[31m花呗\x7f",
    "emoji": "花呗😀👍🏽👨‍👩‍👧 还款",
    "right-to-left": "\u202eمرحبا بالعالم\u202c 花呗",
    "combining": "e\u0301\u0301\u0301 花呗",
    "whitespace-only": " \t\u3000 ",
    "lone surrogate escaped": "花呗\\ud800",
    "very long word": "x" * 50_000,
    "1 MB": "花呗借呗" * 262_144,
}


def _children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(proc.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _rss_kb(pids) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(m.group(1)) if m else 0
    return total


def _server_tree(serve: ServeProcess) -> list[int]:
    triton = _children(serve.process.pid)
    stubs = [c for t in triton for c in _children(t)]
    return triton + stubs


# -- security ------------------------------------------------------------------------------------------------

def test_package_has_no_unsafe_loads():
    """No pickle, no torch.load without weights_only=True, no trust_remote_code=True, no yaml.load."""
    problems = []
    for path in (REPO / "tft").rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport pickle\b|\bpickle\.|cPickle|dill\.|joblib\.load|allow_pickle=True", code) \
                    or ("torch.load(" in code and "weights_only=True" not in code) \
                    or "trust_remote_code=True" in code or re.search(r"yaml\.load\(", code) \
                    or re.search(r"(?<![\w.])(eval|exec)\(", code):
                problems.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert problems == []


def _certificate(tmp_path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def test_tls_and_restricted_protocol(served, tmp_path):
    cert, key = _certificate(tmp_path)
    server = ServeProcess(served.repository, tmp_path, extra=[
        "--model", "afqmc_tokenizer", "--model", "afqmc_model", "--model", "afqmc_postprocess", "--model", "afqmc",
        "--triton-arg=--grpc-use-ssl=true", f"--triton-arg=--grpc-server-cert={cert}",
        f"--triton-arg=--grpc-server-key={key}",
        "--triton-arg=--grpc-restricted-protocol=inference,model-config,model-repository:x-api-key=SECRET"])
    try:
        server.wait_ready()
        url = f"localhost:{server.ports.grpc}"
        auth = ("-H", "triton-grpc-protocol-x-api-key: SECRET")
        ok = run_tft("infer", "--url", url, "--model", "afqmc", "--root-certificates", cert, *auth, "花呗", "借呗")
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout.splitlines()[0])["label"] in ("0", "1")
        no_key = run_tft("infer", "--url", url, "--model", "afqmc", "--root-certificates", cert, "花呗", "借呗")
        assert no_key.returncode == 1 and "expecting header 'triton-grpc-protocol-x-api-key'" in no_key.stderr
        plain = run_tft("infer", "--url", url, "--model", "afqmc", "--retries", 0, "-H", "triton-grpc-protocol-x-api-key: S",
                        "花呗", "借呗")
        assert plain.returncode == 1 and "cannot reach Triton" in plain.stderr
    finally:
        server.stop()


def test_server_binds_loopback_by_default_and_says_so(served):
    assert "bound to 127.0.0.1 only" in served.output()
    ready = json.loads(served.ready_file.read_text())
    assert ready["grpc"].startswith("127.0.0.1:")


# -- faults --------------------------------------------------------------------------------------------------

def test_stub_killed_under_load_every_input_is_answered(served):
    from tft.serve.client import Client

    items = [{"id": i, "text": "花呗" * (1 + i % 20), "text_pair": "借呗" * (1 + i % 7)} for i in range(3000)]
    result = {}
    worker = threading.Thread(target=lambda: result.update(zip(("answers", "stats"), Client(served.url).infer(
        "afqmc", items, batch_size=2, concurrency=8))))
    worker.start()
    time.sleep(0.5)
    killed = served.stubs("afqmc_model")
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    worker.join(180)
    stats = result["stats"]
    assert killed and stats.unanswered == 0 and stats.failed == 0 and stats.answered == 3000
    assert all(a is not None and "label" in a for a in result["answers"])


@pytest.mark.slow  # starts Triton
def test_stop_after_a_stub_was_replaced_takes_seconds_not_tritons_exit_timeout(tiny_export, tmp_path):
    """A model whose stub died and was reloaded never finishes unloading: Triton then waits its whole 30 s exit
    timeout on Ctrl-C. `tft serve start` stops once nothing is in flight and the unloads had a few seconds."""
    from tft.serve.client import Client

    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", tiny_export(), "--repository", repo, "--name", "sr").returncode == 0
    server = ServeProcess(repo, tmp_path).wait_ready()
    try:
        for pid in server.stubs("sr_model"):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "health: reloaded sr_model: answering again" not in server.output():
            assert time.monotonic() < deadline, server.output()[-2000:]
            time.sleep(0.5)
        assert Client(server.url).infer("sr", [{"text": "a", "text_pair": "b"}])[1].answered == 1
    finally:
        start = time.monotonic()
        assert server.stop() == 0
        took = time.monotonic() - start
    assert took < 20, (took, server.output()[-1500:])
    assert "in-flight inferences" in server.triton_log.read_text(encoding="utf-8")  # it drained first


def test_server_killed_under_load_then_resume_answers_each_input_once(served, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"花呗{'还款' * (i % 9)}{i}\t借呗{i}\n" for i in range(4000)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    only_afqmc = ["--model", "afqmc_tokenizer", "--model", "afqmc_model", "--model", "afqmc_postprocess",
                  "--model", "afqmc"]
    (tmp_path / "a").mkdir()
    first = ServeProcess(served.repository, tmp_path / "a", extra=only_afqmc).wait_ready()
    client = subprocess.Popen([sys.executable, "-m", "tft", "infer", "--url", first.url, "--model", "afqmc", "-i",
                               str(source), "-o", str(out), "--batch-size", "1", "--concurrency", "2",
                               "--retries", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not partial.exists() or partial.read_text(encoding="utf-8").count("\n") < 300:
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.05)
    for pid in _children(first.process.pid):  # the tritonserver child: killed, no clean shutdown
        os.kill(pid, signal.SIGKILL)
    _, stderr = client.communicate(timeout=120)
    first.stop()
    assert client.returncode == 1
    m = re.search(r"Error: (\d+) inputs unanswered", stderr)
    assert m and 0 < int(m.group(1)) < 4000 and "--resume" in stderr
    lines = partial.read_text(encoding="utf-8").splitlines()
    assert len(lines) + int(m.group(1)) == 4000
    assert [json.loads(x)["id"] for x in lines] == [f"line-{i}" for i in range(1, len(lines) + 1)]
    assert not out.exists()

    (tmp_path / "b").mkdir()
    second = ServeProcess(served.repository, tmp_path / "b", extra=only_afqmc).wait_ready()
    try:
        proc = run_tft("infer", "--url", second.url, "--model", "afqmc", "-i", source, "-o", out, "--resume")
        assert proc.returncode == 0, proc.stderr
        reference = run_tft("infer", "--url", second.url, "--model", "afqmc", "-i", source, "-o", tmp_path / "ref.jsonl")
        assert reference.returncode == 0
    finally:
        second.stop()
    got = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in got] == [f"line-{i}" for i in range(1, 4001)]  # none repeated, none dropped
    ref = [json.loads(x) for x in (tmp_path / "ref.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in got] == [r["label"] for r in ref]


def test_export_killed_mid_write_leaves_nothing_and_reruns_cleanly(trained_pair, tmp_path):
    out = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, "-m", "tft", "export", "--checkpoint", str(trained_pair / "best"),
                             "--output-dir", str(out), "--int8", "--fp16", "--parity-samples", "64"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(p.glob("*.onnx") for p in tmp_path.glob(".exp.tmp-*")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not out.exists()  # nothing under the final name: no half-written export to mistake for a real one
    assert list(tmp_path.glob(".exp.tmp-*"))  # the killed writer's hidden temp folder
    again = run_tft("export", "--checkpoint", trained_pair / "best", "--output-dir", out, "--parity-samples", 64)
    assert again.returncode == 0, again.stderr
    assert (out / "manifest.json").exists() and not list(tmp_path.glob(".exp.tmp-*"))


def test_serve_build_leftovers_are_invisible_and_cleaned(pair_export, tmp_path):
    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "m").returncode == 0
    # what a build killed mid-write leaves: a hidden new model folder and a hidden next version
    (repo / ".n_model.tmp-abc" / "1").mkdir(parents=True)
    (repo / ".n_model.tmp-abc" / "1" / "model.onnx").write_bytes(b"half")
    (repo / "m_model" / ".2.tmp-abc").mkdir()
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "m").returncode == 0
    assert not list(repo.rglob(".*tmp-*"))
    assert sorted(p.name for p in (repo / "m_model").iterdir()) == ["1", "2", "config.pbtxt"]


# -- hostile input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_texts_get_an_answer_or_a_clear_error_and_the_server_stays_up(served, name):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from tft.serve.client import text_inputs

    client = grpcclient.InferenceServerClient(served.url)
    text = HOSTILE[name]
    for model, pair in (("afqmc", [text]), ("cluener", None)):
        start = time.perf_counter()
        try:
            result = client.infer(model, text_inputs(grpcclient, [text], pair), client_timeout=10)
        except InferenceServerException as e:
            assert name == "whitespace-only" and "is empty" in str(e), str(e)
        else:
            if model == "afqmc":
                assert result.as_numpy("LABEL")[0][0] in (b"0", b"1")
            else:
                for e in json.loads(result.as_numpy("ENTITIES")[0][0]):
                    assert text[e["start"]:e["end"]] == e["text"]
        # no text stalls a step: the 1 MB one took 2.3 s with both cores busy (the capped tokenizing is timed against
        # its prefix in test_serve.py); uncapped, tokenizing it alone took 5.5 s, a pair of it twice that
        assert time.perf_counter() - start < 4.0
    assert client.is_server_live() and client.infer("afqmc", text_inputs(grpcclient, ["花呗"], ["借呗"]))


def test_hostile_files_give_one_line_errors(tmp_path):
    cases = {
        "invalid utf-8": b'{"sentence1": "a", "sentence2": "b", "label": "1"}\n\xff\xfe\n',
        "NUL byte": b'{"sentence1": "a\x00", "sentence2": "b", "label": "1"}\n',
        "deeply nested": b'{"sentence1": ' + b"[" * 100_000 + b"]" * 100_000 + b', "label": "1"}\n',
        "huge line": b'{"sentence1": "' + b"a" * 5_000_000 + b'", "sentence2": "b", "label": "1"}\n',
        "int label": b'{"sentence1": "a", "sentence2": "b", "label": 1}\n',
        "label out of range": b'{"sentence1": "a", "sentence2": "b", "label": "7"}\n',
        "not an object": b'["a", "b", "1"]\n',
    }
    outcomes = {}
    for name, content in cases.items():
        d = tmp_path / name.replace(" ", "_")
        write(d / "train.json", content)
        write(d / "dev.json", '{"sentence1": "a", "sentence2": "b", "label": "1"}\n')
        proc = run_tft("data", "check", "--task", "afqmc", "--data-dir", d, timeout=60)
        assert "Traceback" not in proc.stderr, (name, proc.stderr[-2000:])
        outcomes[name] = (proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
    for name in ("invalid utf-8", "deeply nested", "label out of range", "not an object"):
        code, line = outcomes[name]
        assert code == 1 and "train.json:" in line, (name, line)
    # defined results: a NUL is a character, a huge line is read, `1` and "1" are the same label
    assert outcomes["huge line"][0] == 0 and outcomes["int label"][0] == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6), st.booleans())
def test_tokenizing_any_unicode_never_crashes(tokenizer, texts, token_task):
    from tft.data.features import encode_for_inference

    feats = encode_for_inference(texts, None, tokenizer, 32, token_task, "" if token_task else " ")
    assert len(feats) == len(texts)
    for f in feats:
        assert 2 <= len(f["input_ids"]) <= 32
        if token_task:
            assert len(f["word_ids"]) == len(f["input_ids"])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.data(), st.sampled_from(["", " "]))
def test_entities_from_any_tags_have_valid_offsets(text, data, joiner):
    from tft import predictions

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    words = predictions.split_words(text, joiner)
    ids = data.draw(st.lists(st.integers(0, len(labels) - 1), min_size=len(words), max_size=len(words)))
    token_word_ids = [-1] + list(range(len(words))) + [-1]
    ents = predictions.entities(text, [0] + ids + [0], token_word_ids, joiner, labels)
    for e in ents:
        assert 0 <= e["start"] < e["end"] <= len(text) and text[e["start"]:e["end"]] == e["text"]
        assert e["type"] in ("PER", "LOC")
    assert len(ents) <= sum(1 for i in ids if labels[i] != "O")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=30), st.binary(max_size=30).map(lambda b: b.decode("latin-1"))),
                min_size=1, max_size=5))
def test_reading_any_jsonl_gives_examples_or_a_data_error(tmp_path_factory, lines):
    from tft.data.readers import READERS
    from tft.errors import DataError
    from tft.tasks import get_task

    path = tmp_path_factory.mktemp("h") / "train.json"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = get_task("afqmc")
    try:
        READERS[task.reader](path, task, require_label=True)
    except DataError as e:
        assert str(e).startswith(str(path))


# -- load ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ten_thousand_requests_at_concurrency_64_real_texts(served, pair_export, ner_export):
    """Real AFQMC pairs and CLUENER sentences (or synthetic ones where ../shared is absent), one text per
    request: zero errors, answers equal offline ONNX Runtime, server memory steady."""
    from tft.export.runtime import ExportPredictor
    from tft.serve.client import Client

    afqmc, cluener = SHARED_DATASETS / "afqmc" / "dev.json", SHARED_DATASETS / "cluener" / "dev.json"
    if not afqmc.exists():
        pytest.skip(f"{afqmc} not present")
    pairs = [json.loads(x) for x in afqmc.read_text(encoding="utf-8").splitlines()]
    sentences = [json.loads(x) for x in cluener.read_text(encoding="utf-8").splitlines()]
    jobs = {"afqmc": [{"id": i, "text": r["sentence1"], "text_pair": r["sentence2"]} for i, r in
                      enumerate(pairs[:2500] * 2)],
            "cluener": [{"id": i, "text": r["text"]} for i, r in enumerate(sentences[:1250] * 4)]}
    client = Client(served.url)
    memory = []
    started = time.perf_counter()
    for model, items in jobs.items():
        for start in range(0, len(items), 1000):
            answers, stats = client.infer(model, items[start:start + 1000], batch_size=1, concurrency=64)
            assert stats.failed == 0 and stats.unanswered == 0
            memory.append(_rss_kb(_server_tree(served)))
            jobs[model][start:start + 1000] = [{**i, **a} for i, a in zip(items[start:start + 1000], answers)]
    print(f"\nload: 10,000 requests answered in {time.perf_counter() - started:.1f}s, 0 errors")
    offline = {"afqmc": ExportPredictor(pair_export), "cluener": ExportPredictor(ner_export)}
    for model, items in jobs.items():
        expected = offline[model].answer_items([{k: i[k] for k in ("text", "text_pair") if k in i} for i in items])
        key = "label" if model == "afqmc" else "entities"
        assert [i[key] for i in items] == [e[key] for e in expected]
    growth = (memory[-1] - memory[0]) / memory[0]
    print(f"\nload: 10,000 requests at concurrency 64, server RSS after each 1,000 (MB): "
          f"{[round(m / 1024) for m in memory]}, growth first->last {growth:+.1%}")
    assert len(memory) == 10 and growth < 0.10, memory
