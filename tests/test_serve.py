"""`tft serve build|start`, `tft infer`, `tft bench` against the real embedded Triton (nvidia-pytriton's
tritonserver binary, started by `tft serve start` on free 127.0.0.1 ports for the session)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import numpy as np
import pytest

from helpers import run_tft
from tft.serve.layout import parse_pbtxt


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the repository ------------------------------------------------------------------------------------

def test_every_config_parses_back_into_model_config(served):
    from tritonclient.grpc import model_config_pb2 as mc

    repo = served.repository
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert names == ["afqmc", "afqmc_model", "afqmc_postprocess", "afqmc_tokenizer",
                     "cluener", "cluener_model", "cluener_postprocess", "cluener_tokenizer"]
    configs = {n: parse_pbtxt((repo / n / "config.pbtxt").read_text(encoding="utf-8")) for n in names}
    for name, c in configs.items():
        assert c.name == name and c.max_batch_size == 16
        assert (repo / name / "1").is_dir()
    for step in ("afqmc_tokenizer", "afqmc_model", "afqmc_postprocess"):
        c = configs[step]
        assert c.backend == "python" and c.HasField("dynamic_batching")
        assert c.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    # only the model step waits for batch mates
    assert configs["afqmc_model"].dynamic_batching.max_queue_delay_microseconds == 2000
    assert configs["afqmc_tokenizer"].dynamic_batching.max_queue_delay_microseconds == 0
    tok = configs["afqmc_tokenizer"]
    assert [(i.name, i.data_type, list(i.dims), i.optional) for i in tok.input] == [
        ("TEXT", mc.TYPE_STRING, [1], False), ("TEXT_PAIR", mc.TYPE_STRING, [1], True)]
    assert all(i.allow_ragged_batch for i in configs["afqmc_model"].input)
    assert [o.name for o in configs["afqmc"].output] == ["LABEL", "SCORE", "TRUNCATED"]
    assert [o.name for o in configs["cluener"].output] == ["ENTITIES", "TRUNCATED"]
    assert [s.model_name for s in configs["cluener"].ensemble_scheduling.step] == [
        "cluener_tokenizer", "cluener_model", "cluener_postprocess"]
    assert "OFFSETS" in [o.name for o in configs["cluener_tokenizer"].output]
    assert configs["cluener"].platform == "ensemble"
    assert (repo / "afqmc_model" / "1" / "model.onnx").exists()
    assert (repo / "afqmc_tokenizer" / "1" / "tokenizer.json").exists()


def test_rebuild_adds_a_version_and_production_backends(pair_export, tmp_path):
    repo = tmp_path / "repo"
    for extra in ((), ("--artifact", "int8")):
        proc = run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "m", *extra)
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (repo / "m_model").iterdir()) == ["1", "2", "config.pbtxt"]
    assert (repo / "m_model" / "2" / "model.onnx").stat().st_size < (repo / "m_model" / "1" / "model.onnx").stat().st_size
    assert json.loads((repo / "m" / "tft-serve.json").read_text())["artifact"] == "int8"
    assert not [p for p in repo.rglob(".*")]  # no temporary folders left
    # --artifact auto: export's side-by-side benchmark decides; the build says what it chose and why
    proc = run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "m", "--artifact", "auto")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((repo / "m" / "tft-serve.json").read_text())
    manifest = json.loads((pair_export / "manifest.json").read_text())
    taken = [a for a in manifest["artifacts"] if a["name"] == record["artifact"]][0]
    assert record["model_versions"]["m_model"] == 3 and taken["precision"] in ("fp32", "int8")
    assert record["artifact_rows_per_s"] == taken["speed"]["score"]  # the benchmark's figure, not one parity pass
    assert {c["name"]: c.get("skipped") for c in record["artifact_choice"]}["fp16"] == "fp16 is not fast on the cpu"
    assert f"* {record['artifact']}" in proc.stdout

    proc = run_tft("serve", "build", "--export", pair_export, "--repository", tmp_path / "prod", "--name", "m",
                   "--backend", "onnxruntime", "--instances", 2, "--threads", 4)
    assert proc.returncode == 0, proc.stderr
    c = parse_pbtxt((tmp_path / "prod" / "m_model" / "config.pbtxt").read_text())
    assert c.platform == "onnxruntime_onnx" and c.instance_group[0].count == 2
    assert not any(i.allow_ragged_batch for i in c.input)  # fixed-shape backend: tokenizer buckets lengths instead
    assert json.loads((tmp_path / "prod" / "m_tokenizer" / "1" / "step.json").read_text())["pad_to_multiple_of"] == 16


@pytest.mark.parametrize("args,message", [
    (("--max-batch", "99"), "--max-batch 99: must be 1..16"),
    (("--backend", "tensorrt"), "the export has no TensorRT engine; run `tft export --trt`"),
    (("--name", "../x"), "--name '../x': use letters"),
    (("--artifact", "fp64"), "--artifact 'fp64': the export has fp32, fp32-optimized, int8, int8-static, fp16"),
])
def test_bad_build_options_are_one_line_and_write_nothing(pair_export, tmp_path, args, message):
    repo = tmp_path / "repo"
    proc = run_tft("serve", "build", "--export", pair_export, "--repository", repo, *args)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not repo.exists() or not any(repo.iterdir())


# -- answers equal the offline ones ------------------------------------------------------------------------

def test_pair_answers_over_grpc_equal_onnxruntime_and_pytorch(served, pair_export, trained_pair, afqmc_sample,
                                                               tmp_path):
    dev = afqmc_sample / "dev.json"
    served_out, ort_out, torch_out = tmp_path / "served.jsonl", tmp_path / "ort.jsonl", tmp_path / "torch.jsonl"
    proc = run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", dev, "-o", served_out,
                   "--batch-size", 7, "--concurrency", 4)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "answered 300 of 300 inputs" in proc.stderr and "texts/s" in proc.stderr
    assert run_tft("predict", "--onnx", pair_export, dev, "-o", ort_out).returncode == 0
    assert run_tft("predict", "--checkpoint", trained_pair / "best", dev, "-o", torch_out).returncode == 0
    s, o, t = read_jsonl(served_out), read_jsonl(ort_out), read_jsonl(torch_out)
    assert len(s) == len(o) == len(t) == 300
    assert [r["id"] for r in s] == [r["id"] for r in o]  # input order kept
    assert [r["label"] for r in s] == [r["label"] for r in o] == [r["label"] for r in t]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(s, o)) < 1e-5
    assert len({r["label"] for r in s}) == 2  # a real model, not a constant


def test_ner_entities_over_grpc_equal_offline_with_character_offsets(served, ner_export, trained_ner,
                                                                     cluener_sample, tmp_path):
    dev = cluener_sample / "dev.json"
    served_out, ort_out, torch_out = tmp_path / "served.jsonl", tmp_path / "ort.jsonl", tmp_path / "torch.jsonl"
    proc = run_tft("infer", "--url", served.url, "--model", "cluener", "-i", dev, "-o", served_out,
                   "--batch-size", 5, "--concurrency", 3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_tft("predict", "--onnx", ner_export, dev, "-o", ort_out).returncode == 0
    assert run_tft("predict", "--checkpoint", trained_ner / "best", dev, "-o", torch_out).returncode == 0
    s, o, t = read_jsonl(served_out), read_jsonl(ort_out), read_jsonl(torch_out)
    assert [r["entities"] for r in s] == [r["entities"] for r in o] == [r["entities"] for r in t]
    gold = [json.loads(line) for line in (dev).read_text(encoding="utf-8").splitlines()]
    found = total = 0
    for record, g in zip(s, gold):
        for e in record["entities"]:
            assert record["text"][e["start"]:e["end"]] == e["text"]
        predicted = {(e["type"], e["start"], e["end"]) for e in record["entities"]}
        for etype, spans in g["label"].items():
            for text, positions in spans.items():
                for start, end in positions:  # CLUENER ends are inclusive
                    total += 1
                    found += (etype, start, end + 1) in predicted
    assert total > 100 and found / total > 0.8


def test_python_api_keeps_order_under_concurrency_and_mixed_lengths(served):
    from tft.serve.client import Client

    items = [{"id": i, "text": "花呗" * (1 + i % 37), "text_pair": "借呗" * (1 + (i * 7) % 23)} for i in range(200)]
    seen = []
    answers, stats = Client(served.url).infer("afqmc", items, batch_size=3, concurrency=16,
                                              on_answer=lambda i, a: seen.append(i))
    assert seen == list(range(200))  # handed over in input order
    assert stats.answered == 200 and stats.unanswered == 0 and stats.failed == 0
    singles, _ = Client(served.url).infer("afqmc", items[:20], batch_size=1, concurrency=1)
    assert [a["label"] for a in singles] == [a["label"] for a in answers[:20]]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(singles, answers[:20])) < 1e-5


def test_infer_text_arguments_print_json_lines(served):
    proc = run_tft("infer", "--url", served.url, "--model", "cluener", "张三在北京大学", "李四去上海")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["text"] for r in lines] == ["张三在北京大学", "李四去上海"]
    assert all(isinstance(r["entities"], list) for r in lines)


# -- bad requests: an error for that request, the server keeps serving ---------------------------------------

def _bad_requests():
    import tritonclient.grpc.aio as aio

    from tft.serve.client import text_inputs

    wrong_dtype = aio.InferInput("TEXT", [1, 1], "INT32")
    wrong_dtype.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    wrong_shape = aio.InferInput("TEXT", [1, 2], "BYTES")
    wrong_shape.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=np.object_))
    pair = text_inputs(aio, ["x"], ["y"])[1]
    return {
        "empty": (text_inputs(aio, [""], ["借呗"]), "TEXT[0] is empty"),
        "invalid utf-8": (text_inputs(aio, [b"\xff\xfe ok"], ["借呗"]), "TEXT[0] is not valid UTF-8"),
        "missing TEXT_PAIR": (text_inputs(aio, ["花呗"], None), "TEXT_PAIR is required"),
        "wrong dtype": ([wrong_dtype, pair], "data-type is 'INT32', but model 'afqmc' expects 'BYTES'"),
        "wrong shape": ([wrong_shape, pair], "unexpected shape for input 'TEXT'"),
        "batch above max": (text_inputs(aio, ["花"] * 17, ["借"] * 17), "batch-size must be <= 16"),
    }


def test_bad_requests_fail_alone_while_their_batch_mates_are_answered(served):
    import tritonclient.grpc.aio as aio
    from tritonclient.utils import InferenceServerException

    from tft.serve.client import text_inputs

    async def main():
        client = aio.InferenceServerClient(served.url)
        bad = _bad_requests()

        async def send(inputs):
            try:
                return await client.infer("afqmc", inputs, client_timeout=10)
            except InferenceServerException as e:
                return e

        good = [text_inputs(aio, [f"花呗{i}"], ["借呗"]) for i in range(12)]
        # sent together, so the dynamic batcher hands good and bad requests to the same execute() calls
        results = await asyncio.gather(*(send(x) for x, _ in bad.values()), *(send(x) for x in good))
        await client.close()
        return dict(zip(bad, results[:len(bad)])), results[len(bad):]

    bad_results, good_results = asyncio.run(main())
    for name, (_, message) in _bad_requests().items():
        assert isinstance(bad_results[name], Exception), name
        assert message in str(bad_results[name]), (name, str(bad_results[name]))
    assert all(r.as_numpy("LABEL").shape == (1, 1) for r in good_results)


def test_one_megabyte_text_is_capped_and_answered_about_as_fast_as_its_capped_prefix(served):
    """Only the first 4,096 characters are tokenized: uncapped, the tokenizer alone spends about 5.5 s on this text
    (AMD EPYC, 2 cores). Timed against the capped prefix sent the same way, so a loaded machine slows both."""
    import tritonclient.grpc as grpcclient

    from tft.serve.client import text_inputs

    client = grpcclient.InferenceServerClient(served.url)
    client.infer("cluener", text_inputs(grpcclient, ["张三"], None))  # warm

    def timed(text: str):
        start = time.perf_counter()
        result = client.infer("cluener", text_inputs(grpcclient, [text], None), client_timeout=30)
        return time.perf_counter() - start, result

    prefix_s, _ = timed(("张三在北京" * 820)[:4096])
    big_s, result = timed("张三在北京" * 200_000)
    assert big_s < prefix_s + 2.0, (big_s, prefix_s)
    entities = json.loads(result.as_numpy("ENTITIES")[0][0])
    assert all(e["end"] <= 4096 for e in entities)  # only the capped prefix was tokenized
    assert client.is_server_live()


def test_client_isolates_a_bad_input_inside_a_batch(served):
    from tft.serve.client import Client

    items = [{"id": i, "text": "花呗怎么还款", "text_pair": "花呗如何还款"} for i in range(10)]
    items[4] = {"id": 4, "text": b"\xff\xfe", "text_pair": "x"}
    answers, stats = Client(served.url).infer("afqmc", items, batch_size=10, concurrency=1)
    assert stats.failed == 1 and stats.answered == 9
    assert "not valid UTF-8" in answers[4]["error"]
    assert all("label" in a for i, a in enumerate(answers) if i != 4)


# -- bench, resume, errors -----------------------------------------------------------------------------------

def test_bench_reports_throughput_and_percentiles_with_a_chart(served, afqmc_sample, tmp_path):
    proc = run_tft("bench", "--url", served.url, "--model", "afqmc", "-i", afqmc_sample / "dev.json",
                   "--concurrency", "1,4", "--requests", 30, "--warmup", 5, "--json", tmp_path / "b.json",
                   "--plot", tmp_path / "b.png")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [r["concurrency"] for r in rows] == [1, 4]
    for r in rows:
        assert r["requests"] == 30 and r["errors"] == 0 and r["texts_per_s"] > 0
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
    assert "p95 ms" in proc.stdout
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_infer_resume_finishes_an_interrupted_file_without_repeats(served, afqmc_sample, tmp_path):
    dev = afqmc_sample / "dev.json"
    full = tmp_path / "full.jsonl"
    assert run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", dev, "-o", full).returncode == 0
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp_path / "out.jsonl"
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text("".join(lines[:120]) + lines[120][:17], encoding="utf-8")  # a torn last line
    proc = run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", dev, "-o", out)
    assert proc.returncode == 1 and "add --resume" in proc.stderr
    proc = run_tft("infer", "--url", served.url, "--model", "afqmc", "-i", dev, "-o", out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "resumed: 120 answers kept, 180 inputs sent" in proc.stderr
    assert read_jsonl(out) == read_jsonl(full) and not partial.exists()


def test_unreachable_server_and_unknown_model_are_one_line_errors(served):
    proc = run_tft("infer", "--url", "127.0.0.1:9", "--model", "afqmc", "a", "b")
    assert proc.returncode == 1 and "cannot reach Triton at 127.0.0.1:9" in proc.stderr
    proc = run_tft("infer", "--url", served.url, "--model", "nope", "a")
    assert proc.returncode == 1 and "model 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_start_refuses_a_missing_repository_and_a_busy_port(served, tmp_path):
    proc = run_tft("serve", "start", "--repository", tmp_path / "none")
    assert proc.returncode == 1 and "no such model repository" in proc.stderr
    proc = run_tft("serve", "start", "--repository", served.repository, "--grpc-port", served.ports.grpc)
    assert proc.returncode == 1 and f"{served.ports.grpc} (grpc) is already in use" in proc.stderr


# -- crash of a Python-backend stub -------------------------------------------------------------------------

def test_stub_lookup_keeps_to_one_servers_descendants(tmp_path):
    """Two servers on one machine (two test workers, two users) may both serve a model of one name: a fault or a test
    that kills "the" stub must find only its own server's."""
    import subprocess
    import sys

    def stub(repo: str) -> list[str]:  # a sleeping Python whose argv[0] is the stub's name, as Triton starts it
        return ["/opt/tritonserver/backends/python/triton_python_backend_stub", "-c", "import time; time.sleep(60)",
                f"/{repo}/lookup_model/1/model.py"]

    mine = subprocess.Popen(stub("repo"), executable=sys.executable)
    # the other server's stub: started by a Python that exits at once, so it is nobody's descendant here
    subprocess.run([sys.executable, "-c", f"import subprocess, sys; "
                    f"subprocess.Popen({stub('other')!r}, executable=sys.executable)"], check=True)
    from tft.serve.health import stub_processes

    try:
        deadline = time.monotonic() + 10
        while len(stub_processes("lookup_model")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        everyone = stub_processes("lookup_model")
        assert mine.pid in everyone and len(everyone) >= 2
        assert stub_processes("lookup_model", under=os.getpid()) == [mine.pid]
        assert stub_processes("lookup_tokenizer", under=os.getpid()) == []
    finally:
        for pid in stub_processes("lookup_model"):
            if "/other/" in open(f"/proc/{pid}/cmdline").read() or pid == mine.pid:
                os.kill(pid, signal.SIGKILL)
        mine.wait()


def test_killed_stub_is_detected_by_canary_and_reloaded(served):
    from tft.serve.client import Client

    client = Client(served.url)
    assert client.infer("afqmc", [{"text": "花呗", "text_pair": "借呗"}])[1].answered == 1
    before = served.stubs("afqmc_model")
    assert before
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while "health: reloaded afqmc_model: answering again" not in served.output():
        assert time.monotonic() < deadline, served.output()[-2000:]
        time.sleep(0.5)
    assert "health: canary inference on afqmc failed" in served.output()
    answers, stats = client.infer("afqmc", [{"text": "花呗", "text_pair": "借呗"}] * 5)
    assert stats.answered == 5
    after = served.stubs("afqmc_model")
    assert after and not set(after) & set(before)


def test_bench_writes_the_texts_for_perf_analyzer(served, afqmc_sample, tmp_path):
    """`--perf-analyzer-data`: the task's real texts in perf_analyzer's --input-data format (string content and
    shape per input, one entry per request), the format the real perf_analyzer 2.51 accepted against this server
    (docs/benchmarks.md)."""
    out = tmp_path / "pa.json"
    proc = run_tft("bench", "--url", served.url, "--model", "afqmc", "-i", afqmc_sample / "dev.json",
                   "--concurrency", "1", "--requests", 5, "--warmup", 0, "--perf-analyzer-data", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text(encoding="utf-8"))["data"]
    rows = [json.loads(line) for line in (afqmc_sample / "dev.json").read_text(encoding="utf-8").splitlines()]
    assert len(data) == len(rows) == 300
    assert data[0] == {"TEXT": {"content": [rows[0]["sentence1"]], "shape": [1]},
                       "TEXT_PAIR": {"content": [rows[0]["sentence2"]], "shape": [1]}}
    lines = tmp_path / "in.txt"
    lines.write_text("张三在北京\n李四去上海\n", encoding="utf-8")
    ner = tmp_path / "ner.json"
    proc = run_tft("bench", "--url", served.url, "--model", "cluener", "-i", lines, "--concurrency", "1",
                   "--requests", 2, "--warmup", 0, "--perf-analyzer-data", ner)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(ner.read_text(encoding="utf-8"))["data"] == [
        {"TEXT": {"content": ["张三在北京"], "shape": [1]}}, {"TEXT": {"content": ["李四去上海"], "shape": [1]}}]
