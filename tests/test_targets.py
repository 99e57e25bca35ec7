"""Deploy targets as data: NVIDIA's Triton -py3 images, what each runs, and what a build for one records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import one_line_error, run_tft


def test_the_table_holds_the_py3_images_with_their_versions():
    from tft.serve.targets import DEFAULT_TARGET, TARGETS, target_of

    assert DEFAULT_TARGET in TARGETS and min(TARGETS) == "24.05-py3" and max(TARGETS) == "26.08-py3"
    t = target_of("nvcr.io/nvidia/tritonserver:24.10-py3")
    assert (t.triton, t.python, t.onnxruntime, t.cuda[:6]) == ("2.51.0", "3.10.12", "1.19.2", "12.6.2")
    assert target_of("24.11").python == "3.12.3"  # Ubuntu 24.04 from 24.11
    assert all(set(t.backends) >= {"python", "onnxruntime", "tensorrt"} for t in TARGETS.values())
    releases = sorted(t[:5] for t in TARGETS)
    assert len(releases) == 28  # every month from 24.05 to 26.08


@pytest.mark.parametrize("image, says", [
    ("24.10-trtllm-python-py3", "not the onnxruntime or tensorrt backends (server issue #7346); serve with 24.10-py3"),
    ("23.12-py3", "tft's table of Triton's -py3 images holds 24.05 to 26.08; for another image give its versions by "
                  "hand"),
    ("nvcr.io/nvidia/tritonserver:latest", "holds 24.05 to 26.08"),
])
def test_an_image_tft_cannot_describe_is_one_line(image, says):
    from tft.errors import TftError
    from tft.serve.targets import target_of

    with pytest.raises(TftError, match=says.replace("(", r"\(").replace(")", r"\)")):
        target_of(image)


def test_a_build_for_a_target_pins_packages_for_its_python_and_serves_the_plain_graph(tiny_export, tmp_path):
    import shutil

    from tft.fsutil import file_sha256
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository
    from tft.serve.targets import DEFAULT_TARGET

    export = tmp_path / "exp"
    shutil.copytree(tiny_export(), export)
    shutil.copy(export / "model.onnx", export / "model.opt.onnx")  # as if ONNX Runtime had fused it
    manifest = json.loads((export / "manifest.json").read_text())
    fused = {**manifest["artifacts"][0], "name": "fp32-optimized", "file": "model.opt.onnx",
             "sha256": file_sha256(export / "model.opt.onnx"), "parity": {"passed": True, "rows_per_s": 500.0,
                                                                        "batch_invariance": 1.0}}
    manifest["artifacts"].append(fused)
    manifest["versions"] = {"onnxruntime": "1.32.0"}
    (export / "manifest.json").write_text(json.dumps(manifest))
    # without --triton-image: for the image deploy/Dockerfile and the chart use, not this machine (whose pins used to
    # be recorded for a Python that image does not run)
    default = build_repository(export, tmp_path / "default", BuildOptions(artifact="auto"))
    assert default["target"]["tag"] == DEFAULT_TARGET and default["artifact"] == "fp32"
    assert default["python_packages"] == ["numpy>=1.21,<2", "tokenizers>=0.20,<1", "onnxruntime>=1.18"]
    record = build_repository(export, tmp_path / "r", BuildOptions(artifact="auto", backend="python",
                                                                    triton_image="24.10-py3"))
    assert record["target"]["python"] == "3.10.12" and record["artifact"] == "fp32"
    skipped = {c["name"]: c.get("skipped") for c in record["artifact_choice"]}
    assert skipped["fp32-optimized"].startswith("fused by ONNX Runtime 1.32.0; 24.10-py3 runs the newest for Python 3.10")
    assert record["python_packages"] == ["numpy>=1.21,<2", "tokenizers>=0.20,<1", "onnxruntime>=1.18"]
    requirements = (tmp_path / "r" / "tft-requirements.txt").read_text().split()
    assert requirements == sorted(record["python_packages"])
    ort = build_repository(export, tmp_path / "ort", BuildOptions(artifact="auto", backend="onnxruntime",
                                                                   triton_image="24.10-py3"))
    assert ort["artifact"] == "fp32" and "24.10-py3 runs 1.19.2" in ort["artifact_choice"][1]["skipped"]
    says = one_line_error(run_tft("serve", "build", "--export", export, "--repository", tmp_path / "x", "--backend",
                                  "onnxruntime", "--artifact", "fp32-optimized", "--triton-image", "24.10-py3"))
    assert "--artifact fp32-optimized: fused by ONNX Runtime 1.32.0; 24.10-py3 runs 1.19.2" in says


@pytest.mark.slow  # asks the package index
def test_the_recorded_requirements_resolve_to_wheels_for_every_targets_python(tmp_path):
    """What a build records for a target installs there: resolved with pip for each Python of the table, binary
    wheels only, for the container's platform (manylinux x86_64)."""
    from tft.serve.repository import PACKAGE_RANGES
    from tft.serve.targets import TARGETS

    for python in sorted({t.python_minor for t in TARGETS.values()}):
        report = tmp_path / f"report-{python}.json"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--only-binary=:all:",
             "--python-version", python, "--implementation", "cp", "--platform", "manylinux2014_x86_64",
             "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--target",
             str(tmp_path / "t"), "--report", str(report), *PACKAGE_RANGES.values()],
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                    for i in json.loads(report.read_text())["install"]}
        assert {"numpy", "tokenizers", "onnxruntime"} <= set(resolved), resolved
        assert int(resolved["numpy"].split(".")[0]) < 2


def test_every_launcher_defaults_to_the_same_target():
    """deploy/Dockerfile, the Helm chart, KServe and `tft serve deploy` name one release: the table's default."""
    import re

    from helpers import REPO
    from tft.serve.deploy import DEFAULT_TAG
    from tft.serve.targets import DEFAULT_TARGET, TARGETS

    assert DEFAULT_TAG == DEFAULT_TARGET and DEFAULT_TARGET in TARGETS
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"ARG TRITON_VERSION={DEFAULT_TARGET[:5]}" in dockerfile and "${TRITON_VERSION}-py3" in dockerfile
    assert re.search(rf'tag: "{DEFAULT_TARGET}"', (REPO / "deploy" / "helm" / "tft-triton" / "values.yaml").read_text())
    assert f"runtimeVersion: {DEFAULT_TARGET}" in (REPO / "deploy" / "kserve" / "inferenceservice.yaml").read_text()


def test_every_target_renders_its_repository_dockerfile_chart_and_kserve(tiny_export, tmp_path):
    """The target matrix: for each image in the table, a build for it, the Dockerfile's build argument that makes
    that image, and the Helm values and KServe manifest `tft serve deploy` writes for it."""
    import re

    import yaml

    from helpers import REPO
    from tft.serve.deploy import chart_values, kserve_manifest
    from tft.serve.layout import parse_pbtxt
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository
    from tft.serve.targets import TARGETS

    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)$", dockerfile, re.M).group(1)
    export = tiny_export()
    for tag, target in TARGETS.items():
        repo = tmp_path / tag
        record = build_repository(export, repo, BuildOptions(name="afqmc", triton_image=tag))
        assert record["target"]["tag"] == tag and record["target"]["python"] == target.python
        for step in record["steps"] + [record["ensemble"]]:
            assert parse_pbtxt((repo / step / "config.pbtxt").read_text()).name == step
        requirements = (repo / "tft-requirements.txt").read_text().split()
        assert sorted(requirements) == sorted(record["python_packages"])  # the file: sorted, one per line
        assert base.replace("${TRITON_VERSION}", tag.split("-")[0]) == f"nvcr.io/nvidia/tritonserver:{tag}"
        values = chart_values(record, image_tag=tag)
        assert values["image"]["tag"] == tag and values["image"]["pythonPackages"] == record["python_packages"]
        config_map, service = kserve_manifest(record, storage_uri="s3://b/r", image_tag=tag)
        predictor = service["spec"]["predictor"]
        assert predictor["model"]["runtimeVersion"] == tag
        assert predictor["initContainers"][0]["image"] == f"nvcr.io/nvidia/tritonserver:{tag}"
        assert predictor["initContainers"][0]["command"][5:] == record["python_packages"]
        yaml.safe_dump_all([config_map, service])  # plain data, as written to the file


def test_the_trt_extra_installs_the_tensorrt_every_target_runs():
    """An engine built by TensorRT 11 never loads on the TensorRT 10 of every image in the table."""
    import tomllib

    from packaging.requirements import Requirement

    from helpers import REPO
    from tft.serve.targets import TRTLLM_TENSORRT

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = next(Requirement(r) for r in extras["trt"] if r.startswith("tensorrt")).specifier
    assert "11.0.0" not in spec and "11.4.0" not in spec
    assert all(version in spec for version in TRTLLM_TENSORRT.values())


def test_tensorrt_of_each_image_from_its_sources_and_the_major_it_runs():
    """The release notes give the TensorRT of 24.08, 24.10, 24.12 and 25.01; the others are unknown here (one line
    asking for --tensorrt-version); 26.06 and later run TensorRT 11, which the trt11 extra installs."""
    import tomllib

    from packaging.requirements import Requirement

    from helpers import REPO
    from tft.errors import TftError
    from tft.serve.artifacts import engine_loads_on
    from tft.serve.targets import TARGETS, tensorrt_of_image

    assert tensorrt_of_image("24.10-py3") == "10.5.0.18" and tensorrt_of_image("nvcr.io/nvidia/tritonserver:25.01-py3") \
        == "10.8.0.43"
    with pytest.raises(TftError, match=r"24.11-py3 \(TensorRT 10\).*--tensorrt-version.*dpkg -l \| grep tensorrt"):
        tensorrt_of_image("24.11-py3")
    assert {t.tensorrt_major for tag, t in TARGETS.items() if tag < "26.06"} == {10}
    assert {t.tensorrt_major for tag, t in TARGETS.items() if tag >= "26.06"} == {11}
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    spec = next(Requirement(r) for r in extras["trt11"] if r.startswith("tensorrt")).specifier
    assert "11.4.0" in spec and "10.16.1" not in spec
    # the build number counts where both sides give it, as TensorRT checks
    assert engine_loads_on("10.5.0.18", "10.5.0.18", False) and not engine_loads_on("10.5.0.17", "10.5.0.18", False)
    assert engine_loads_on("10.5.0", "10.5.0.18", False)  # a side without its build number: as far as it says
