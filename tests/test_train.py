"""`tft train`, `tft eval`, `tft predict` on tiny models and synthetic learnable data (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import one_line_error, run_tft, write


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_classification_learns_and_writes_all_outputs(trained_pair):
    out = trained_pair
    metrics = read_json(out / "metrics.json")
    assert metrics["dev"]["accuracy"] >= 0.62, metrics  # the dev split is balanced: majority class is 0.50
    for name in ("train_log.jsonl", "training.png", "best/model.safetensors", "best/config.json",
                 "best/tokenizer.json", "best/tft.json"):
        assert (out / name).exists(), name
    assert not (out / "best" / "training_args.bin").exists()  # no pickles in the deliverable
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    manifest = read_json(out / "best" / "tft.json")
    assert manifest["task"] == "afqmc" and manifest["labels"] == ["0", "1"]
    assert manifest["kind"] == "pair_classification" and manifest["smoke_test_model"] is True
    assert manifest["metrics"]["accuracy"] == pytest.approx(metrics["dev"]["accuracy"])
    assert {"tft", "torch", "transformers"} <= set(manifest["versions"])
    config = read_json(out / "best" / "config.json")
    assert config["id2label"] == {"0": "0", "1": "1"} and config["label2id"] == {"0": 0, "1": 1}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and any("eval_accuracy" in r for r in log)


def test_eval_reproduces_training_metric(trained_pair):
    proc = run_tft("eval", "--checkpoint", trained_pair / "best")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    trained = read_json(trained_pair / "metrics.json")["dev"]
    assert result["examples"] == 300
    assert result["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)


def test_predict_pairs_from_task_file_and_text_lines(trained_pair, afqmc_sample, tmp_path):
    out = tmp_path / "pred.jsonl"
    proc = run_tft("predict", "--checkpoint", trained_pair / "best", afqmc_sample / "test.json", "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 50 and [r["id"] for r in rows] == [str(i) for i in range(50)]
    assert all(r["label"] in ("0", "1") and 0.5 <= r["score"] <= 1 for r in rows)
    lines = write(tmp_path / "in.txt", "花呗怎么还款\t花呗如何还款\n借呗怎么开通\t余额宝额度是多少\n")
    proc = run_tft("predict", "--checkpoint", trained_pair / "best", lines, "-o", out)
    assert proc.returncode == 1 and f"-o {out}: already exists; add --overwrite" in proc.stderr
    proc = run_tft("predict", "--checkpoint", trained_pair / "best", lines, "-o", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["text_pair"] for line in out.read_text().splitlines()] == ["花呗如何还款", "余额宝额度是多少"]
    bad = write(tmp_path / "bad.txt", "only one text\n")
    proc = run_tft("predict", "--checkpoint", trained_pair / "best", bad, "-o", tmp_path / "x.jsonl")
    assert proc.returncode == 1 and f"{bad}:1: expected two tab-separated texts" in proc.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_ner_learns_and_predicts_character_offsets(trained_ner, tmp_path):
    metrics = read_json(trained_ner / "metrics.json")["dev"]
    assert metrics["f1"] >= 0.5, metrics
    assert set(metrics["per_type"]) == {"address", "company", "name"}
    text = "据腾讯消息，李娜将前往上海"
    src = write(tmp_path / "in.txt", text + "\n")
    out = tmp_path / "ents.jsonl"
    proc = run_tft("predict", "--checkpoint", trained_ner / "best", src, "-o", out)
    assert proc.returncode == 0, proc.stderr
    ents = json.loads(out.read_text(encoding="utf-8"))["entities"]
    assert ents, "no entities predicted"
    for e in ents:
        assert text[e["start"]:e["end"]] == e["text"]
    assert {"type": "address", "text": "上海", "start": 11, "end": 13} in ents


@pytest.mark.slow  # trains a model
def test_ddp_two_processes_shard_data_and_report_undoubled_loss(afqmc_sample, tmp_path):
    common = ["--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny", "--max-steps", 12,
              "--batch-size", 16, "--logging-steps", 1, "--lr", "1e-4", "--limit-eval", 64, "--no-group-by-length"]
    single = run_tft("--quiet", "train", *common, "--output-dir", tmp_path / "single")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = run_tft("--quiet", "train", *common, "--output-dir", tmp_path / "ddp", "--nproc-per-node", 2,
                  "--master-port", 29000 + os.getpid() % 1000)
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    def log(run):
        return [json.loads(line) for line in (tmp_path / run / "train_log.jsonl").read_text().splitlines()]

    s_log, d_log = log("single"), log("ddp")
    s_step = next(r for r in s_log if r["step"] == 12 and "loss" in r)
    d_step = next(r for r in d_log if r["step"] == 12 and "loss" in r)
    # the sampler shards the data: 2 ranks x 16 per step -> ceil(2000 / 32) steps per epoch, not 2000 / 16
    assert round(12 / s_step["epoch"]) == 125
    assert round(12 / d_step["epoch"]) == 63
    s_loss = np.mean([r["loss"] for r in s_log if "loss" in r])
    d_loss = np.mean([r["loss"] for r in d_log if "loss" in r])
    assert d_loss == pytest.approx(s_loss, rel=0.1), (s_loss, d_loss)  # not multiplied by the world size
    assert (tmp_path / "ddp" / "best" / "tft.json").exists()
    assert len(list((tmp_path / "ddp").glob("best*"))) == 1  # rank 0 alone wrote it


@pytest.mark.slow  # trains a model
def test_sigkill_then_resume_auto_matches_uninterrupted_run(afqmc_sample, tmp_path):
    from safetensors.numpy import load_file

    common = ["--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny", "--max-steps", 45,
              "--eval-every", 15, "--batch-size", 16, "--lr", "3e-4", "--limit-eval", 100, "--save-total-limit", 5]
    full = run_tft("--quiet", "train", *common, "--output-dir", tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tft", "--quiet", "train", *map(str, common), "--output-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint-15" / ".tft-complete").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before the first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "best").exists()
    # a half-written later checkpoint (no completion marker) must be ignored by --resume auto
    (killed / "checkpoint-40").mkdir(exist_ok=True)
    (killed / "checkpoint-40" / "model.safetensors").write_bytes(b"partial")

    again = run_tft("train", *common, "--output-dir", killed)
    assert again.returncode == 1 and "--resume auto" in again.stderr  # refuses to overwrite silently

    resumed = run_tft("train", *common, "--output-dir", killed, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "checkpoint-15" in resumed.stderr

    a = load_file(tmp_path / "full" / "checkpoint-45" / "model.safetensors")
    b = load_file(killed / "checkpoint-45" / "model.safetensors")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    assert read_json(killed / "metrics.json")["dev"] == pytest.approx(read_json(tmp_path / "full" / "metrics.json")["dev"])


@pytest.mark.slow  # trains a model
def test_fp16_on_cpu_fails_clearly_or_falls_back_when_allowed(afqmc_sample, tmp_path):
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", tmp_path / "r", "--fp16")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "Error: --fp16 needs a CUDA GPU and none is available; drop --fp16 or add --allow-fp32-fallback")
    assert not (tmp_path / "r").exists()
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", tmp_path / "r", "--fp16", "--allow-fp32-fallback", "--max-steps", 2, "--limit-eval", 8)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "training in fp32" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--fp16", "--bf16"], "--fp16 and --bf16 exclude each other"),
    (["--text-field", "x"], "has fixed fields"),
    (["--model", "scratch:huge"], "unknown scratch model 'scratch:huge'"),
    (["--model", "/nonexistent/model"], "--model /nonexistent/model: no such folder"),  # a path, not a hub name
    (["--early-stopping", "2", "--resume", "/nonexistent"], "not a complete training checkpoint"),
])
def test_bad_flag_combinations_are_one_line_errors(afqmc_sample, tmp_path, args, message):
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--output-dir", tmp_path / "r",
                   "--model", "scratch:tiny", *args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "r").exists()  # a bad input leaves nothing behind (a scratch tokenizer used to stay)


def test_bad_data_file_is_one_line_error(tmp_path):
    d = tmp_path / "afqmc"
    write(d / "train.json", '{"sentence1": "a", "sentence2": "b", "label": "1"}\n{"sentence1": "a"\n')
    proc = run_tft("train", "--task", "afqmc", "--data-dir", d, "--model", "scratch:tiny", "--output-dir", tmp_path / "r")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: {d / 'train.json'}:2: malformed JSON")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # trains a model
def test_yaml_config_with_cli_override(afqmc_sample, tmp_path):
    cfg = write(tmp_path / "c.yaml", f"task: afqmc\ndata-dir: {afqmc_sample}\nmodel: scratch:tiny\nmax_steps: 3\n"
                                     "batch_size: 8\nlimit_eval: 16\nseed: 7\n")
    proc = run_tft("--quiet", "train", "--config", cfg, "--max-steps", 2, "--output-dir", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-2000:]
    used = read_json(tmp_path / "r" / "best" / "tft.json")["train_config"]
    assert used["max_steps"] == 2 and used["seed"] == 7 and used["batch_size"] == 8
    bad = write(tmp_path / "bad.yaml", "task: afqmc\nlearning_rate_typo: 1\n")
    proc = run_tft("train", "--config", bad)
    assert proc.returncode == 1 and f"{bad}: unknown option 'learning_rate_typo'" in proc.stderr


def test_feature_cache_roundtrip(afqmc_sample, tokenizer):
    from tft.data.dataset import load_dataset
    from tft.data.features import encode
    from tft.tasks import get_task
    from tft.train.feature_cache import load_features, save_features

    ds = load_dataset(get_task("afqmc"), afqmc_sample, ("dev",))
    feats = encode(ds["dev"].examples, tokenizer, 32, ds.labels, "pair_classification").features
    path = afqmc_sample.parent / "cache-test.npz"
    save_features(path, feats)
    assert load_features(path) == feats


def test_torchrun_launch_lines_static_and_elastic(tmp_path):
    from tft.errors import TftError
    from tft.train.cli import torchrun_command

    base = {"nproc_per_node": 8, "nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.1", "master_port": 29500,
            "rdzv_backend": "static", "rdzv_endpoint": None, "rdzv_id": "tft", "max_restarts": 0}
    static = torchrun_command(base, tmp_path / "c.yaml")
    assert static[2:7] == ["torch.distributed.run", "--nproc-per-node=8", "--nnodes=2", "--node-rank=1",
                           "--master-addr=10.0.0.1"]
    elastic = torchrun_command({**base, "rdzv_backend": "c10d", "rdzv_endpoint": "head:29400", "max_restarts": 3},
                               tmp_path / "c.yaml")
    assert "--rdzv-backend=c10d" in elastic and "--rdzv-endpoint=head:29400" in elastic
    assert "--max-restarts=3" in elastic and not any(a.startswith("--node-rank") for a in elastic)
    assert elastic[-5:] == ["-m", "tft", "train", "--config", str(tmp_path / "c.yaml")]
    with pytest.raises(TftError, match="--rdzv-backend c10d needs --rdzv-endpoint"):
        torchrun_command({**base, "rdzv_backend": "c10d"}, tmp_path / "c.yaml")


def test_multi_node_runs_need_an_output_dir(afqmc_sample):
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--nproc-per-node", 2, "--nnodes", 2)
    assert proc.returncode == 1 and "--output-dir is required with --nnodes > 1" in proc.stderr
    # static rendezvous at 127.0.0.1 on every node would wait for ever: the rank-0 address is required
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--nproc-per-node", 2, "--nnodes", 2, "--output-dir", "runs/x")
    assert "--nnodes > 1 needs --master-addr: the address of the rank-0 node" in one_line_error(proc)


def test_precision_auto_fits_the_hardware():
    from tft.train.precision import choose_precision, cpu_flags

    assert choose_precision("auto", cuda=True, cuda_bf16=True, flags=set())[0] == "bf16"
    assert choose_precision("auto", cuda=True, cuda_bf16=False, flags=set())[0] == "fp16"
    assert choose_precision("auto", cuda=False, cuda_bf16=False, flags={"avx512f", "amx_bf16"}) == (
        "bf16", "the CPU has amx_bf16")
    assert choose_precision("auto", cuda=False, cuda_bf16=False, flags={"avx2"})[0] == "fp32"
    assert choose_precision("fp32", cuda=True, cuda_bf16=True, flags={"amx_bf16"})[0] == "fp32"
    assert cpu_flags("processor : 0\nflags\t\t: fpu avx512_bf16 sse\n") == {"fpu", "avx512_bf16", "sse"}


def test_bf16_on_a_cpu_trains_with_eager_attention():
    """PyTorch's CPU SDPA backward is slower in bf16 than in fp32 (measured: tft/train/precision.py): bf16 on a CPU
    asks for eager attention; fp32 and GPUs keep the family's default."""
    from tft.train.precision import training_attention

    assert training_attention("bf16", cuda=False) == "eager"
    assert training_attention("fp32", cuda=False) is None
    assert training_attention("bf16", cuda=True) is None and training_attention("fp16", cuda=True) is None


def test_half_precision_batches_on_a_gpu_are_padded_to_a_multiple_of_8_within_max_seq_length():
    """Tensor cores want multiples of 8 in bf16/fp16 (on a CPU the padding cost more than it saved): never past
    --max-seq-length, so never past the model's positions."""
    from transformers import BertTokenizerFast

    from tft.data.features import IGNORE_INDEX, make_collator
    from tft.train.precision import padding_multiple

    assert padding_multiple("bf16", 128, cuda=True) == 8 and padding_multiple("fp16", 512, cuda=True) == 8
    assert padding_multiple("fp32", 128, cuda=True) is None
    assert padding_multiple("bf16", 128, cuda=False) is None  # measured: benchmarks/train_step.py
    assert padding_multiple("bf16", 100, cuda=True) is None  # 100 would round up to 104: past what the user allowed

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    rows = [{"input_ids": [2, 4, 4, 3], "attention_mask": [1] * 4, "labels": 0},
            {"input_ids": [2] + [5] * 9 + [3], "attention_mask": [1] * 11, "labels": 1}]
    batch = make_collator(tokenizer, token_task=False, pad_to_multiple_of=8)(rows)
    assert tuple(batch["input_ids"].shape) == (2, 16) and batch["attention_mask"][1].sum() == 11
    assert tuple(make_collator(tokenizer, token_task=False)(rows)["input_ids"].shape) == (2, 11)
    tagged = [{**r, "labels": [0] * len(r["input_ids"])} for r in rows]
    batch = make_collator(tokenizer, token_task=True, pad_to_multiple_of=8)(tagged)
    assert tuple(batch["labels"].shape) == (2, 16) and (batch["labels"][0, 4:] == IGNORE_INDEX).all()


def test_explicit_bf16_on_hardware_that_only_emulates_it_is_one_line(afqmc_dir, tmp_path, monkeypatch):
    """An AVX2-only CPU (an AMD EPYC, say) emulates bf16 ~15x slower than fp32: refused before any data is read,
    naming what is missing; --force-bf16 still trains in it; a V100-class GPU (no native bf16) alike."""
    from tft.train.precision import bf16_problem

    assert "neither avx512_bf16 nor amx_bf16" in bf16_problem(cuda=False, cuda_bf16_native=False, flags={"avx2"})
    assert bf16_problem(cuda=False, cuda_bf16_native=False, flags={"avx2", "amx_bf16"}) is None
    assert "no native bfloat16" in bf16_problem(cuda=True, cuda_bf16_native=False, flags={"amx_bf16"})
    assert bf16_problem(cuda=True, cuda_bf16_native=True, flags=set()) is None
    env = {"TFT_CPU_FLAGS": "fpu sse avx avx2"}
    common = ("train", "--task", "afqmc", "--data-dir", afqmc_dir, "--model", "scratch:tiny", "--max-steps", 1)
    for flag in (("--bf16",), ("--precision", "bf16")):
        msg = one_line_error(run_tft(*common, "--output-dir", tmp_path / "r", *flag, env=env))
        assert f"{flag[-2] if len(flag) == 2 else flag[0]}" in msg and "neither avx512_bf16 nor amx_bf16" in msg
        assert "use --precision auto or fp32, or add --force-bf16" in msg
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # trains a model
def test_auto_never_picks_emulated_bf16_and_force_still_trains_in_it(afqmc_dir, tmp_path):
    env = {"TFT_CPU_FLAGS": "fpu sse avx avx2"}
    common = ("train", "--task", "afqmc", "--data-dir", afqmc_dir, "--model", "scratch:tiny", "--max-steps", 1)
    auto = run_tft(*common, "--output-dir", tmp_path / "auto", "--precision", "auto", "--limit-eval", 2, env=env)
    assert auto.returncode == 0 and "precision auto: fp32 (no GPU, and the CPU has no bfloat16" in auto.stderr
    forced = run_tft(*common, "--output-dir", tmp_path / "f", "--bf16", "--force-bf16", "--limit-eval", 2, env=env)
    assert forced.returncode == 0, forced.stderr[-2000:]


@pytest.mark.slow  # trains a model
def test_precision_option_says_what_it_chose(afqmc_sample, tmp_path):
    from tft.train.precision import choose_precision, cpu_flags

    expected, why = choose_precision("auto", cuda=False, cuda_bf16=False, flags=cpu_flags())
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny",
                   "--output-dir", tmp_path / "r", "--max-steps", 2, "--limit-eval", 8, "--precision", "auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"precision auto: {expected} ({why})" in proc.stderr
    assert ("attention: eager" in proc.stderr) == (expected == "bf16")
    used = read_json(tmp_path / "r" / "best" / "tft.json")["train_config"]
    assert (used["bf16"], used["fp16"]) == (expected == "bf16", expected == "fp16")
    proc = run_tft("train", "--task", "afqmc", "--precision", "fast")
    assert proc.returncode == 1 and "--precision fast: choose one of auto, fp32, fp16, bf16" in proc.stderr


@pytest.mark.slow  # trains a model
def test_learning_rate_schedules_follow_the_trainers_names(afqmc_dir, tmp_path):
    """--lr-scheduler takes the Hugging Face Trainer's schedule names, is recorded in tft.json, and the rate each
    step logs follows it (cosine: half the peak at mid-run; constant: the peak throughout)."""
    import math

    rates = {}
    for schedule in ("cosine", "constant"):
        out = tmp_path / schedule
        proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_dir, "--model", "scratch:tiny", "--output-dir",
                       out, "--max-steps", 20, "--batch-size", 2, "--lr", "1e-3", "--warmup", 0, "--logging-steps", 1,
                       "--lr-scheduler", schedule, "--no-plot")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert read_json(out / "best" / "tft.json")["train_config"]["lr_scheduler"] == schedule
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        rates[schedule] = {r["step"]: r["learning_rate"] for r in log if "learning_rate" in r}
    cosine = rates["cosine"]
    assert abs(cosine[11] - 1e-3 * 0.5 * (1 + math.cos(math.pi * 10 / 20))) < 1e-6  # the rate used at step 11
    assert all(a >= b for a, b in zip(list(cosine.values()), list(cosine.values())[1:]))
    assert set(rates["constant"].values()) == {1e-3}
    assert "--lr-scheduler cos: choose one of linear, cosine" in one_line_error(
        run_tft("train", "--task", "afqmc", "--lr-scheduler", "cos"))


@pytest.mark.slow  # trains a model
def test_a_warm_up_longer_than_the_run_is_said(afqmc_dir, tmp_path):
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_dir, "--model", "scratch:tiny", "--output-dir",
                   tmp_path / "r", "--max-steps", 3, "--batch-size", 2, "--warmup", 50, "--no-plot")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--warmup 50 steps is not shorter than the run (3 optimizer steps)" in proc.stderr


def test_an_unreachable_rank0_node_is_one_line_within_the_rendezvous_timeout(afqmc_dir, tmp_path):
    """It used to wait torchrun's 900 s and print ~200 lines of C++ frames."""
    import socket
    import time

    from tft.train.cli import torchrun_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    start = time.monotonic()
    proc = run_tft("train", "--task", "afqmc", "--data-dir", afqmc_dir, "--model", "scratch:tiny", "--nproc-per-node",
                   1, "--nnodes", 2, "--node-rank", 1, "--master-addr", "127.0.0.1", "--master-port", port,
                   "--rdzv-timeout", 2, "--output-dir", tmp_path / "run")
    line = one_line_error(proc)
    assert f"cannot reach the rank-0 node at 127.0.0.1:{port} within 2 s (--rdzv-timeout)" in line
    assert time.monotonic() - start < 30 and not (tmp_path / "run").exists()
    launch = {"nproc_per_node": 8, "nnodes": 2, "node_rank": 1, "master_addr": "10.0.0.1", "master_port": 29500,
              "rdzv_backend": "static", "rdzv_endpoint": None, "rdzv_id": "tft", "rdzv_timeout": 300, "max_restarts": 0}
    assert "--rdzv-conf=timeout=300" in torchrun_command(launch, tmp_path / "c.yaml")  # torchrun waits as long


@pytest.mark.slow  # trains a model three times
def test_cpu_training_says_its_step_speed_ups_and_the_same_seed_gives_the_same_weights(afqmc_sample, tmp_path):
    """NumPy-drawn dropout masks are seeded from PyTorch's generator: a second run with the same seed ends with the
    same weights; --no-fast-dropout trains with PyTorch's own masks (other weights)."""
    from safetensors.numpy import load_file

    common = ["--task", "afqmc", "--data-dir", afqmc_sample, "--model", "scratch:tiny", "--max-steps", 6,
              "--batch-size", 16, "--limit-eval", 16, "--lr", "1e-3"]
    runs = {}
    for name, extra in (("a", []), ("b", []), ("torch", ["--no-fast-dropout"])):
        proc = run_tft("train", *common, *extra, "--output-dir", tmp_path / name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("dropout: masks drawn by NumPy" in proc.stderr) == (name != "torch")
        runs[name] = load_file(tmp_path / name / "best" / "model.safetensors")
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert any(not np.allclose(runs["a"][k], runs["torch"][k]) for k in runs["a"])
