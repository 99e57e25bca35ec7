"""Shared fixtures: everything is built locally (no hub): a character vocab tokenizer, a tiny BERT,
small data files in each supported format."""

from __future__ import annotations

import os
import shutil
import string
from pathlib import Path

import pytest

from helpers import CJK, SPECIALS, ServeProcess, run_tft, write


def build_vocab() -> list[str]:
    words = ["good", "bad", "movie", "film", "great", "awful", "the", "a", "is", "was", "not", "john", "smith",
             "lives", "in", "paris", "london", "works", "at", "acme", "google", "and", "very", "plot", "fun"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    subwords = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys(SPECIALS + words + chars + subwords + list(CJK)))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import BertTokenizerFast

    out = tmp_path_factory.mktemp("tokenizer")
    vocab = build_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5: `vocab_file=` is silently ignored; `vocab=` with a path is what loads the file.
    tok = BertTokenizerFast(vocab=str(out / "vocab.txt"), model_max_length=128)
    assert tok.vocab_size == len(vocab)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny randomly initialised BERT saved with save_pretrained, with the tokenizer beside it."""
    from transformers import BertConfig

    out = tmp_path_factory.mktemp("tiny-bert")
    vocab_size = len((tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")) - 1
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    config.save_pretrained(out)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture
def afqmc_dir(tmp_path) -> Path:
    d = tmp_path / "afqmc"
    write(d / "train.json", [
        {"sentence1": "花呗怎么还款", "sentence2": "花呗如何还款", "label": "1"},
        {"sentence1": "借呗可以提前还款吗", "sentence2": "为什么不能用花呗", "label": "0"},
        {"sentence1": "我的额度是多少", "sentence2": "额度是多少", "label": "1"},
    ])
    write(d / "dev.json", [
        {"sentence1": "花呗怎么开通", "sentence2": "开通花呗", "label": "1"},
        {"sentence1": "支付宝银行卡", "sentence2": "账单分期利息", "label": "0"},
    ])
    write(d / "test.json", [
        {"id": 0, "sentence1": "借呗取消", "sentence2": "关闭借呗"},
        {"id": 1, "sentence1": "花呗分期", "sentence2": "分期利息"},
    ])
    return d


@pytest.fixture
def cluener_dir(tmp_path) -> Path:
    d = tmp_path / "cluener"
    write(d / "train.json", [
        {"text": "张三在北京大学", "label": {"name": {"张三": [[0, 1]]}, "organization": {"北京大学": [[3, 6]]}}},
        {"text": "李四去年在上海", "label": {"name": {"李四": [[0, 1]]}, "address": {"上海": [[5, 6]]}}},
    ])
    write(d / "dev.json", [
        {"text": "王五在广州医院", "label": {"name": {"王五": [[0, 1]]}, "address": {"广州": [[3, 4]]}}},
    ])
    write(d / "test.json", [{"id": 0, "text": "张三去上海"}])
    return d


def fixture_timeout(rows: int) -> float:
    """A shared fixture's time limit from the work it does (rows trained or checked), not one figure for all:
    about 20x what this 2-core machine needs unloaded, so a loaded CI machine does not time it out."""
    return 300 + 0.05 * rows


# -- tiers -------------------------------------------------------------------------------------------------
# `make test-fast` (-m "not slow") runs what needs no trained model, export or Triton: everything that uses
# these shared fixtures is slow by construction, and tests that train or serve on their own carry the mark.
HEAVY_FIXTURES = {"trained_pair", "trained_ner", "pair_export", "ner_export", "served", "pipeline_run", "client_env",
                  "wheel_env"}


# `make test` runs on pytest-xdist workers, a test file to a worker (--dist loadfile: a module-scoped fixture such
# as the family matrix is built once); session fixtures are built once per run (once_per_run below). The files
# holding the longest units go first, so the workers finish together. (Not --dist loadgroup: xdist 3.8 groups by
# rewriting `item._nodeid`, which pytest 9.2 no longer reads.)
# per file on two workers (2026-12-02, CLI forked from the zygote): families 408 s, safety 266, MiniLM 233,
# pipeline 206, concurrency 190, reliability 136, then under 80 s each (train 74). This order, train early, is
# the one the clean-clone run measured at 13 min 36 s.
LONGEST_FIRST = ("test_families.py", "test_safety.py", "test_real_model.py", "test_train.py", "test_pipeline.py",
                 "test_concurrency.py", "test_reliability.py", "test_serve.py", "test_export.py", "test_deploy.py",
                 "test_client_install.py", "test_trt_plan.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def _workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


if _workers() > 1:
    # Each worker's torch (and every `tft` it starts) gets its share of the cores: two workers of two threads
    # on two cores spin against each other in OpenMP and both run slower than one.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers())))


def _guard_the_test_process() -> None:
    """A test worker that dies says so. A PID read a while ago (a stub that has since died) may by now be a thread
    of this very process: Linux's kill() takes a thread's ID and signals its whole process, and a worker killed
    that way vanishes without a word ("node down: Not properly terminated"). So a kill aimed at one of this
    process's own threads fails the test that sent it, and a catchable signal that would end it (SIGTERM, SIGHUP and
    the like, from anywhere) dumps every thread's stack to stderr before the worker ends as the signal says."""
    import faulthandler
    import signal
    import sys

    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if sig and pid > 0 and os.path.exists(f"/proc/{os.getpid()}/task/{pid}"):
            raise AssertionError(f"os.kill({pid}, {sig}): {pid} is a thread of this test process (a reused PID)")
        real_kill(pid, sig)

    os.kill = kill
    # every other signal whose default ends a process without a core, but SIGALRM (pytest-timeout's) and SIGINT
    # (pytest's own KeyboardInterrupt)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGVTALRM, signal.SIGPROF):
        faulthandler.register(sig, file=sys.__stderr__, all_threads=True, chain=True)


_guard_the_test_process()


def once_per_run(tmp_path_factory, name: str, build):
    """A session fixture's folder, built once for the whole run: under xdist the first worker to ask builds it
    (the others wait on a lock and reuse it); a build that failed fails in that worker and is a skip pointing at
    it in the others. `build(folder)` fills an empty folder and returns the path the fixture hands out."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    from tft.fsutil import file_lock

    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of this run
    folder, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with file_lock(root / f"{name}.lock"):
        if failed.exists():
            pytest.skip(f"the shared fixture {name!r} failed in another worker: {failed.read_text()[:300]}")
        if done.exists():
            return Path(done.read_text(encoding="utf-8"))
        if folder.exists():  # a worker killed mid-build left it (the folder is this fixture's own)
            shutil.rmtree(folder)
        folder.mkdir()
        try:
            result = build(folder)
        except BaseException as e:
            failed.write_text(f"{type(e).__name__}: {e}", encoding="utf-8")
            raise
        done.write_text(str(result), encoding="utf-8")
        return result


# A worker that dies mid-test (tests/scheduling.py): its file is run on by a new worker, the test it died in
# included, whose own result counts; the death is said at once and again in the summary, as a rerun, and counts as
# a failure only when the same test takes a second worker down with it.
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist", None) == "loadfile":
        from scheduling import CrashSafeLoadFileScheduling

        return CrashSafeLoadFileScheduling(config, log)
    return None


def _how_it_ended(node) -> str:
    """The dead worker's exit as its process reports it (execnet's Popen of it): a signal or an exit status."""
    import signal
    import subprocess

    try:
        code = node.gateway._io.popen.wait(timeout=10)
    except (AttributeError, subprocess.TimeoutExpired):
        return "its exit is unknown"
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def pytest_handlecrashitem(crashitem, report, sched):
    report.longrepr = f"{report.longrepr} ({_how_it_ended(report.node)})"
    if getattr(sched, "crashes", {}).get(crashitem) == 1:
        report.outcome = "rerun"
        report.longrepr = f"{report.longrepr}; run again on a new worker, whose result counts"
    terminal = sched.config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line(f"\n{report.longrepr}", yellow=True)


def pytest_report_teststatus(report, config):
    if report.outcome == "rerun":
        return "rerun", "R", ("RERUN", {"yellow": True})


def pytest_terminal_summary(terminalreporter):
    for report in terminalreporter.stats.get("rerun", []):
        terminalreporter.write_line(f"RERUN {report.longrepr}", yellow=True)


_REPORTED_FIXTURE_ERRORS: set[int] = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A shared fixture that failed fails once: the first test that asked for it shows the error; the others
    (pytest hands them the same cached exception) are reported as skipped, pointing at it."""
    outcome = yield
    report = outcome.get_result()
    if call.when != "setup" or not report.failed or call.excinfo is None:
        return
    error = call.excinfo.value
    if id(error) in _REPORTED_FIXTURE_ERRORS:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: a shared fixture failed earlier ({type(error).__name__}); see its first error")
    else:
        _REPORTED_FIXTURE_ERRORS.add(id(error))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Feature caches and downloads of the tests go to a private folder, never ~/.cache."""
    os.environ["TFT_CACHE"] = str(tmp_path_factory.mktemp("tft-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """tft-toolchain's wheel, built as `make dist` builds it, from a copy of the source tree (a build in the checkout
    would write build/ and egg-info beside the running tests)."""
    import subprocess
    import sys

    from helpers import REPO

    def build(folder: Path) -> Path:
        source = folder / "source"
        shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "exports", "model_repository", "demo_out", "dist", "build", "*.egg-info",
            "__pycache__", ".pytest_cache", ".hypothesis"))
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                               "-w", folder, source], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return next(folder.glob("tft_toolchain-*.whl"))

    return once_per_run(tmp_path_factory, "wheel", build)


@pytest.fixture(scope="session")
def afqmc_sample(tmp_path_factory) -> Path:
    from tft.data.synthetic import write_sample

    return once_per_run(tmp_path_factory, "afqmc-data",
                        lambda d: write_sample("afqmc", d / "afqmc", train=2000, dev=300, test=50))


@pytest.fixture(scope="session")
def cluener_sample(tmp_path_factory) -> Path:
    from tft.data.synthetic import write_sample

    return once_per_run(tmp_path_factory, "cluener-data",
                        lambda d: write_sample("cluener", d / "cluener", train=800, dev=200, test=50))


def train_tiny(tmp_path_factory, task: str, data: Path, epochs: int, lr: str) -> Path:
    """A scratch:tiny model trained on `data` by the real CLI: the one factory behind the trained fixtures."""
    examples = sum(1 for _ in (data / "train.json").open(encoding="utf-8"))

    def build(folder: Path) -> Path:
        out = folder / task
        proc = run_tft("--quiet", "train", "--task", task, "--data-dir", data, "--model", "scratch:tiny",
                       "--output-dir", out, "--epochs", epochs, "--batch-size", 32, "--lr", lr,
                       timeout=fixture_timeout(epochs * examples))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out

    return once_per_run(tmp_path_factory, f"runs-{task}", build)


def export_tiny(tmp_path_factory, checkpoint: Path, name: str, *args, checks: int) -> Path:
    def build(folder: Path) -> Path:
        out = folder / name
        proc = run_tft("export", "--checkpoint", checkpoint, "--output-dir", out, *args, timeout=fixture_timeout(checks))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out

    return once_per_run(tmp_path_factory, f"exports-{name}", build)


@pytest.fixture(scope="session")
def trained_pair(tmp_path_factory, afqmc_sample) -> Path:
    """A scratch:tiny AFQMC-format model that has learned the synthetic task (session-wide, ~30 s)."""
    return train_tiny(tmp_path_factory, "afqmc", afqmc_sample, 8, "3e-4")


@pytest.fixture(scope="session")
def trained_ner(tmp_path_factory, cluener_sample) -> Path:
    return train_tiny(tmp_path_factory, "cluener", cluener_sample, 4, "5e-4")


@pytest.fixture(scope="session")
def pair_export(trained_pair, tmp_path_factory) -> Path:
    """fp32, optimized, int8 (dynamic and static Q/DQ) and fp16 ONNX of the AFQMC-format model, parity-checked
    up to batch 16."""
    return export_tiny(tmp_path_factory, trained_pair / "best", "afqmc", "--int8", "--int8-static", "--fp16",
                       "--max-batch", 16, "--parity-samples", 128, checks=5 * 128 * 16)


@pytest.fixture(scope="session")
def ner_export(trained_ner, tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory, trained_ner / "best", "cluener", "--max-batch", 16, "--parity-samples", 64,
                       checks=2 * 64 * 16)


@pytest.fixture(scope="session")
def served(pair_export, ner_export, tmp_path_factory):
    """One embedded Triton for the session, serving `afqmc` (pair classification) and `cluener` (NER)."""
    work = tmp_path_factory.mktemp("served")
    repo = work / "model_repository"
    for export, name in ((pair_export, "afqmc"), (ner_export, "cluener")):
        proc = run_tft("serve", "build", "--export", export, "--repository", repo, "--name", name,
                       "--max-batch", 16)
        assert proc.returncode == 0, proc.stderr[-3000:]
    server = ServeProcess(repo, work).wait_ready()
    server.repository = repo
    yield server
    server.stop()


@pytest.fixture
def tiny_export(tmp_path, tokenizer_dir):
    """A builder of export folders in milliseconds (tests/helpers.py: tiny_export)."""
    import helpers

    def make(name: str = "export", **kw) -> Path:
        return helpers.tiny_export(tmp_path / name, tokenizer_dir, **kw)

    return make
