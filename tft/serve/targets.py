"""Deploy targets as data: the Triton container releases users deploy (NVIDIA's `nvcr.io/nvidia/tritonserver:YY.MM-py3`
images, which carry the python, onnxruntime and tensorrt backends), and what each runs.

Sources, read from triton-inference-server/server at each release branch rYY.MM (the search tool's copy):
  * Triton version: the branch's TRITON_VERSION file;
  * ONNX Runtime of the onnxruntime backend: docs/introduction/compatibility.md, "ONNX Runtime Versions" (24.05-26.06),
    and build.py's `ort_version` (26.07: 1.27.0, 26.08: 1.28.0);
  * Python: the image's Ubuntu (build.py's base image: 22.04 up to 24.10, 24.04 from 24.11), whose Python is 3.10.12 and
    3.12.3; compatibility.md's vllm-python-py3 table, built on the same base, lists the same;
  * CUDA: compatibility.md's vllm-python-py3 table (the release's base image; 24.10's release notes say CUDA 12.6.2).
  * TensorRT of the -py3 images: the release notes list it for some releases ("The container also includes the
    following"; TENSORRT_SOURCES names the page per row): 24.08 10.3.0.26, 24.10 10.5.0.18, 24.12 10.7.0.23, 25.01
    10.8.0.43. The others are listed only in NVIDIA's Frameworks Support Matrix, which tft could not read: they are
    unknown here (give --tensorrt-version for an engine). Their TensorRT major: 10 from 24.05 (the first release on
    TensorRT 10) to 26.05, 11 from 26.06 (server commit d898a0f adds the TensorRT 11 QA for 26.06). The -trtllm-python-py3 images carry the TensorRT-LLM and Python
backends, not the tensorrt or onnxruntime ones (a Triton maintainer, server issue #7346): tft refuses them for those
backends; their TensorRT (compatibility.md's trtllm-python-py3 table) is kept for --tensorrt-version's check.
  * OpenVINO of the openvino backend: build.py's TRITON_VERSION_MAP, "Standalone OpenVINO", on each release branch
    (x86 images; the openvino backend is built for x86 only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tft.serve.backends import RepositoryError

DEFAULT_TARGET = "24.10-py3"  # deploy/Dockerfile, the Helm chart, KServe and `tft serve deploy` use it
PY3_BACKENDS = ("python", "onnxruntime", "openvino", "tensorrt")  # of those tft serves with
# the standalone OpenVINO of each release's openvino backend (server build.py, TRITON_VERSION_MAP, branch rYY.MM)
OPENVINO = {"24.05": "2023.3.0", "24.06": "2024.0.0", "24.07": "2024.0.0", "24.08": "2024.0.0", "24.09": "2024.0.0",
            "24.10": "2024.4.0", "24.11": "2024.4.0", "24.12": "2024.5.0", "25.01": "2024.5.0", "25.02": "2025.0.0",
            "25.03": "2025.0.0", "25.04": "2025.0.0", "25.05": "2025.1.0", "25.06": "2025.1.0", "25.07": "2025.1.0",
            "25.08": "2025.2.0", "25.09": "2025.3.0", "25.10": "2025.3.0", "25.11": "2025.3.0", "25.12": "2025.4.0",
            "26.01": "2025.4.1", "26.02": "2025.4.1", "26.03": "2026.0.0", "26.04": "2026.1.0", "26.05": "2026.1.0",
            "26.06": "2026.2.0", "26.07": "2026.2.0", "26.08": "2026.3.0"}
UBUNTU_PYTHON = {"22.04": "3.10.12", "24.04": "3.12.3"}


@dataclass(frozen=True)
class Target:
    tag: str
    triton: str
    onnxruntime: str  # of the onnxruntime backend
    cuda: str
    ubuntu: str
    tensorrt: str | None = None  # None: not in the sources tft could read (give --tensorrt-version)
    backends: tuple[str, ...] = PY3_BACKENDS

    @property
    def tensorrt_major(self) -> int:
        """10 up to 26.05, 11 from 26.06 (the module docstring names the sources)."""
        return 11 if self.tag.split("-", 1)[0] >= TENSORRT_11_FROM else 10

    @property
    def openvino(self) -> str | None:
        """The OpenVINO of its openvino backend."""
        return OPENVINO.get(self.tag.split("-", 1)[0])

    @property
    def python(self) -> str:
        return UBUNTU_PYTHON[self.ubuntu]

    @property
    def python_minor(self) -> str:
        return ".".join(self.python.split(".")[:2])


TENSORRT_11_FROM = "26.06"
# the release notes that list a -py3 image's TensorRT (docs.nvidia.com/deeplearning/triton-inference-server/
# release-notes/rel-YY-MM.html, "The container also includes the following")
TENSORRT_SOURCES = {"24.08": "10.3.0.26", "24.10": "10.5.0.18", "24.12": "10.7.0.23", "25.01": "10.8.0.43"}


def _py3(release, triton, ort, cuda):
    return Target(f"{release}-py3", triton, ort, cuda, "22.04" if release <= "24.10" else "24.04",
                  tensorrt=TENSORRT_SOURCES.get(release))


TARGETS: dict[str, Target] = {t.tag: t for t in (
    _py3("24.05", "2.46.0", "1.18.0", "12.4.1"), _py3("24.06", "2.47.0", "1.18.0", "12.5.0.23"),
    _py3("24.07", "2.48.0", "1.18.1", "12.5.1"), _py3("24.08", "2.49.0", "1.18.1", "12.6.0.022"),
    _py3("24.09", "2.50.0", "1.19.2", "12.6.1.006"), _py3("24.10", "2.51.0", "1.19.2", "12.6.2.004"),
    _py3("24.11", "2.52.0", "1.19.2", "12.6.3.001"), _py3("24.12", "2.53.0", "1.20.1", "12.6.3.004"),
    _py3("25.01", "2.54.0", "1.20.1", "12.8.0.038"), _py3("25.02", "2.55.0", "1.20.1", "12.8.0.038"),
    _py3("25.03", "2.56.0", "1.21.0", "12.8.1.012"), _py3("25.04", "2.57.0", "1.21.0", "12.9.0.036"),
    _py3("25.05", "2.58.0", "1.22.0", "12.9.0.043"), _py3("25.06", "2.59.0", "1.22.0", "12.9.0.043"),
    _py3("25.07", "2.59.1", "1.22.0", "12.9.0.043"), _py3("25.08", "2.60.0", "1.23.0", "13.0.1.012"),
    _py3("25.09", "2.61.0", "1.23.0", "13.0.1.012"), _py3("25.10", "2.62.0", "1.23.1", "13.0.2.006"),
    _py3("25.11", "2.63.0", "1.23.2", "13.0.2.006"), _py3("25.12", "2.64.0", "1.23.2", "13.1.0.036"),
    _py3("26.01", "2.65.0", "1.23.2", "13.1.1.006"), _py3("26.02", "2.66.0", "1.24.1", "13.1.1.006"),
    _py3("26.03", "2.67.0", "1.24.2", "13.2.0.046"), _py3("26.04", "2.68.0", "1.24.4", "13.2.1.009"),
    _py3("26.05", "2.69.0", "1.24.4", "13.2.1.009"), _py3("26.06", "2.70.0", "1.24.4", "13.3.0.035"),
    _py3("26.07", "2.71.0", "1.27.0", "13.3.0.035"), _py3("26.08", "2.72.0", "1.28.0", "13.4.1.012"),
)}

# TensorRT of the -trtllm-python-py3 images (compatibility.md, "Container Name: trtllm-python-py3")
TRTLLM_TENSORRT = {
    "24.05": "10.0.1.6", "24.06": "10.0.1", "24.07": "10.1.0", "24.08": "10.3.0", "24.09": "10.4.0", "24.10": "10.4.0",
    "24.11": "10.6.0", "24.12": "10.7.0", "25.01": "10.8.0.43", "25.02": "10.8.0.43", "25.03": "10.9.0.34",
    "25.04": "10.9.0.34", "25.05": "10.9.0.34", "25.06": "10.10.0.31", "25.07": "10.10.0.31", "25.08": "10.11.0.33",
    "25.09": "10.11.0.33", "25.10": "10.11.0.33", "25.11": "10.13.3.9", "25.12": "10.13.3.9", "26.01": "10.13.3.9",
    "26.02": "10.13.3.9", "26.03": "10.14.1.48", "26.04": "10.14.1.48", "26.05": "10.14.1.48", "26.06": "10.14.1.48",
    "26.07": "10.14.1.48",
}
TRITON_IMAGE_TENSORRT = {f"{release}-trtllm-python-py3": trt for release, trt in TRTLLM_TENSORRT.items()}


def _tag(image: str) -> str:
    return image.rsplit("/", 1)[-1].split(":", 1)[-1] if ":" in image else image


def target_of(image: str) -> Target:
    """The target of `--triton-image` (`nvcr.io/nvidia/tritonserver:TAG` or TAG), or one line saying how to go on."""
    tag = _tag(image)
    if tag in TARGETS:
        return TARGETS[tag]
    if re.fullmatch(r"\d\d\.\d\d", tag) and f"{tag}-py3" in TARGETS:
        return TARGETS[f"{tag}-py3"]
    if tag.endswith("-trtllm-python-py3") or tag.endswith("-vllm-python-py3"):
        release = tag.split("-", 1)[0]
        raise RepositoryError(f"--triton-image {image!r}: that image carries the TensorRT-LLM/vLLM and Python backends, "
                              f"not the onnxruntime or tensorrt backends (server issue #7346); serve with {release}-py3")
    known = f"{min(TARGETS)[:5]} to {max(TARGETS)[:5]}"
    raise RepositoryError(f"--triton-image {image!r}: tft's table of Triton's -py3 images holds {known}; for another "
                          "image give its versions by hand (--tensorrt-version X.Y.Z for an engine; the Python packages "
                          "of tft-requirements.txt are then those of this machine)")


def tensorrt_of_image(image: str) -> str:
    """The TensorRT bundled in a Triton image, where the sources list it; one line saying what to give otherwise."""
    tag = _tag(image)
    if tag in TRITON_IMAGE_TENSORRT:
        raise RepositoryError(f"--triton-image {image!r}: that image carries the TensorRT-LLM and Python backends, not "
                              f"the tensorrt backend (server issue #7346); serve engines with {tag.split('-')[0]}-py3")
    target = target_of(image)
    if target.tensorrt is None:
        raise RepositoryError(f"--triton-image {image!r}: the TensorRT inside {target.tag} (TensorRT "
                              f"{target.tensorrt_major}) is listed only in NVIDIA's Frameworks Support Matrix, which "
                              "tft's table does not hold; give it with --tensorrt-version X.Y.Z.B (docker run IMAGE "
                              "dpkg -l | grep tensorrt)")
    return target.tensorrt


def reads_ir_of(serving: str | None, written: str | None) -> bool:
    """Whether an OpenVINO reads an IR another one wrote: its own release or a later one (an older OpenVINO may lack
    the operator sets a newer one writes)."""
    def minor(v):
        return tuple(int(p) for p in re.findall(r"\d+", str(v))[:2])

    return serving is not None and written is not None and minor(serving) >= minor(written)


def same_minor(a: str | None, b: str | None) -> bool:
    def minor(v):
        return tuple(int(p) for p in re.findall(r"\d+", str(v))[:2])

    return a is not None and b is not None and minor(a) == minor(b)
