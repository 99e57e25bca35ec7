"""Deploy targets: the Triton container images a repository is built for, and what each bundles."""

from __future__ import annotations

from tft.serve.backends import RepositoryError


# Triton container tag -> the TensorRT it bundles, copied from the "Release Compatibility Matrix" of Triton's
# user guide (docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/introduction/compatibility.html,
# table "Container Name: trtllm-python-py3", read 2026-11-23). Only tags that table lists: the plain `-py3`
# images bundle other TensorRT builds, listed in NVIDIA's Frameworks Support Matrix; pass those as
# --tensorrt-version rather than guess.
TRITON_IMAGE_TENSORRT = {
    "24.05-trtllm-python-py3": "10.0.1.6", "24.06-trtllm-python-py3": "10.0.1",
    "24.07-trtllm-python-py3": "10.1.0", "24.08-trtllm-python-py3": "10.3.0",
    "24.09-trtllm-python-py3": "10.4.0", "24.10-trtllm-python-py3": "10.4.0",
    "24.11-trtllm-python-py3": "10.6.0", "24.12-trtllm-python-py3": "10.7.0",
    "25.01-trtllm-python-py3": "10.8.0.43", "25.06-trtllm-python-py3": "10.10.0.31",
    "25.07-trtllm-python-py3": "10.10.0.31", "25.08-trtllm-python-py3": "10.11.0.33",
    "25.09-trtllm-python-py3": "10.11.0.33", "25.10-trtllm-python-py3": "10.11.0.33",
    "25.11-trtllm-python-py3": "10.13.3.9", "25.12-trtllm-python-py3": "10.13.3.9",
}


def tensorrt_of_image(image: str) -> str:
    """The TensorRT bundled in a Triton image (`nvcr.io/nvidia/tritonserver:TAG` or TAG), from the table above."""
    tag = image.rsplit(":", 1)[-1]
    if tag not in TRITON_IMAGE_TENSORRT:
        known = ", ".join(sorted({t.split("-", 1)[0] for t in TRITON_IMAGE_TENSORRT}))
        raise RepositoryError(f"--triton-image {image!r}: tft's table (Triton's compatibility matrix) lists only the "
                              f"-trtllm-python-py3 images of {known}; pass the container's TensorRT as "
                              "--tensorrt-version X.Y.Z (NVIDIA's Frameworks Support Matrix lists it)")
    return TRITON_IMAGE_TENSORRT[tag]
