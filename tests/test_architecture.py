"""The imports follow the data: core -> train -> export -> serve -> the commands that span them.

core (tasks, data readers and features, the torch-free inference core, metrics, manifests, files)
imports no stage; train imports no later stage; export and serve never import train, and serve never
imports export (they read the earlier stage's manifest, through core, not its code); only tft.pipeline,
tft.verify and tft.cli may import every stage. Function-level
imports count too: a lazy import against the direction is still a dependency."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

PACKAGE = REPO / "tft"
RANK = {"core": 0, "train": 1, "export": 2, "serve": 3, "top": 4}
TOP = {"tft.pipeline", "tft.verify", "tft.cli", "tft.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    if module in TOP:
        return "top"
    for name in ("train", "export", "serve"):
        if module == f"tft.{name}" or module.startswith(f"tft.{name}."):
            return name
    return "core"


def tft_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported tft module, at module level) for every import of a tft module in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name == "tft" or name.startswith("tft."):
                found.append((node.lineno, name, id(node) in top_level))
    return found


def test_no_import_runs_against_the_data():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "models" in path.parts and "serve" in path.parts:
            continue  # Triton Python-backend model files: they import nothing of tft (checked below)
        here = module_name(path)
        for line, name, _ in tft_imports(path):
            target = stage(name)
            backwards = RANK[target] > RANK[stage(here)]
            reaches_into_train = stage(here) in ("export", "serve") and target == "train"
            reaches_into_export = stage(here) == "serve" and target == "export"  # serving reads manifests (core)
            if backwards or reaches_into_train or reaches_into_export:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {here} ({stage(here)}) imports {name} ({target})")
    assert not wrong, "\n".join(wrong)


def test_triton_model_files_stand_alone():
    for path in (PACKAGE / "serve" / "models").glob("*.py"):
        assert not tft_imports(path), f"{path} must load inside a Triton stub without tft installed"


def test_no_import_cycle_even_through_function_level_imports():
    """A lazy import that closes a cycle hides it from Python, not from the design: two modules that need each other
    are one module (tft.heads <-> tft.head_modules and tft.serve.options <-> tft.serve.artifacts were)."""
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        deps = set()
        for _, name, _ in tft_imports(path):
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            deps.add(name)
        graph[module_name(path)] = deps - {module_name(path)}
    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        assert node not in visiting, "import cycle: " + " -> ".join(trail + [node])
        visiting.add(node)
        for dep in graph.get(node, ()):
            visit(dep, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


def test_the_client_path_never_loads_torch(afqmc_sample):
    """`tft infer --help`, the client and reading a task's input file: no torch, no transformers."""
    code = f"""
import sys
from tft.cli import cli
try:
    cli.main(["infer", "--help"], standalone_mode=False)
except SystemExit:
    pass
import tft.serve.client, tft.serve.bench
from tft.inference import read_inputs
from tft.tasks import get_task
assert len(read_inputs({str(afqmc_sample / 'dev.json')!r}, get_task("afqmc"))) == 300
print(sorted(m for m in ("torch", "transformers", "onnxruntime") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_stages_read_task_kinds_from_one_description():
    """No stage compares kind names: each reads the kind's decisions from KIND_SPECS in tft/tasks.py, so a
    new kind is one entry there (docs/architecture.md)."""
    import transformers

    from tft.answers import SHAPES
    from tft.errors import TaskError
    from tft.tasks import KIND_SPECS, TASKS, kind_of

    for name, spec in KIND_SPECS.items():
        assert spec.name == name and hasattr(transformers, spec.auto_model)
        assert spec.answer in SHAPES
    assert {t.kind for t in TASKS.values()} <= set(KIND_SPECS.values())  # Task.kind is the Kind itself
    with pytest.raises(TaskError, match="unknown task kind 'multi_label'"):
        kind_of("multi_label")
    pattern = re.compile(r"\b(kind|\[\"kind\"\])\s*[!=]=|==\s*(SEQUENCE|PAIR|REGRESSION|TOKEN)\b")
    offenders = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "tft").rglob("*.py")) if path.name != "tasks.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_stages_read_model_families_from_one_description():
    """No module outside tft/families.py names a model family or compares `model_type`: training, export and
    serving read a family's decisions (inputs, positions, padding side, pooled token, fusions, fp16 keep-list) from
    its entry in FAMILIES, so a new family is one entry there."""
    from tft.families import FAMILIES, family_of

    names = set(FAMILIES) | {"longformer", "xlm", "funnel", "bart", "t5", "gpt2", "llama", "nezha"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "families.py":
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: the family name {node.value!r}")
            if isinstance(node, ast.Compare):
                text = ast.get_source_segment(source, node) or ""
                if "model_type" in text:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: compares model_type ({text})")
    assert not offenders, "\n".join(offenders)
    # the decisions a newcomer would otherwise write as `if model_type == ...` elsewhere
    assert family_of("xlnet").padding_side == "left" and family_of("xlnet").relative_positions
    assert family_of("bert").padding_side == "right" and family_of("roberta").position_offset == "pad+1"
    unknown = family_of("a-new-family", quiet=True)
    assert not unknown.known and unknown.optimizer_type is None and unknown.padding_side == "right"


def test_stages_ask_backends_and_runtimes_their_decisions_not_their_names():
    """Issue 29: `runtime == "tensorrt"` stood in six places and "not onnxruntime" meant the Python backend. A backend's
    decisions (serves engines, whose ONNX Runtime, its fixed parameters, its TF32 switch, the export flag for its
    artifacts) are fields of its entry in tft/serve/backends.py; the offline runners of artifact runtimes are one table
    in tft/export/runtime.py. Nothing else compares a backend or runtime name."""
    pattern = re.compile(r'(backend|runtime)"?\)?\s*(==|!=)\s*"|backend"?\)?\s+(not )?in \("')
    offenders = [f"{path.relative_to(REPO)}:{n}" for path in sorted(PACKAGE.rglob("*.py"))
                 if "models" not in path.parts and path.name != "backends.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
    from tft.serve.backends import BACKENDS, native_backend_of, tf32_off

    assert [b.name for b in BACKENDS.values() if b.engine] == ["tensorrt"]
    assert native_backend_of("tensorrt").engine and not native_backend_of("onnxruntime").engine
    assert {b.name: b.onnxruntime_from for b in BACKENDS.values() if b.onnxruntime_from} == {
        "python": "pip", "onnxruntime": "image"}
    assert tf32_off(BACKENDS["onnxruntime"], True, False, "fp32", "24.10") == ({"use_tf32": "0"}, {})
    assert tf32_off(BACKENDS["tensorrt"], True, False, "fp32", "24.10") == ({}, {"NVIDIA_TF32_OVERRIDE": "0"})
    assert tf32_off(BACKENDS["openvino"], True, False, "fp32", "24.10") == ({}, {})


def test_device_has_one_meaning_per_command_family():
    """`--device` is where ONNX Runtime runs for the offline commands (export, predict, verify, pipeline) and where
    the served model runs for the serving commands (serve build, serve deploy); each --help says which."""
    from click.testing import CliRunner

    from tft.cli import cli
    from tft.inference import ORT_DEVICES
    from tft.serve.backends import SERVE_DEVICES

    families = {("export",): ORT_DEVICES, ("predict",): ORT_DEVICES, ("verify",): ORT_DEVICES,
                ("pipeline",): ORT_DEVICES, ("serve", "build"): SERVE_DEVICES, ("serve", "deploy"): SERVE_DEVICES}
    for path, choices in families.items():
        command = cli
        for name in path:
            command = command.commands[name]
        device = next(p for p in command.params if "--device" in p.opts)
        assert tuple(device.type.choices) == tuple(choices), path
        help_text = CliRunner().invoke(cli, [*path, "--help"]).output
        assert ("ONNX Runtime" if choices == ORT_DEVICES else "run") in help_text.split("--device", 1)[1][:300], path
