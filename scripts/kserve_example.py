"""Writes deploy/kserve/inferenceservice.yaml, the KServe example, from the same renderer as `tft serve deploy --kserve`:

    python scripts/kserve_example.py > deploy/kserve/inferenceservice.yaml

tests/test_deploy.py fails when the checked-in file and this output differ."""
import yaml
from tft.serve.deploy import kserve_manifest, to_yaml
from tft.serve.repository import python_packages
from tft.serve.targets import DEFAULT_TARGET, TARGETS

EXAMPLE_RECORD = {"ensemble": "afqmc", "pair": True, "outputs": ["LABEL", "SCORE"],
                  "canary": {"text": "花呗怎么还款", "text_pair": "花呗如何还款"},
                  "python_packages": python_packages("python", {"python": TARGETS[DEFAULT_TARGET].python})}
HEADER = """# KServe InferenceService for a `tft serve build` repository (the demo's afqmc, --backend python) on KServe's
# Triton runtime, as `tft serve deploy --kserve FILE --model-url URL` writes it for your own build (the model
# name, the canary request, the packages and launch flags come from its build record):
#   aws s3 sync model_repository s3://my-bucket/model_repository     # the storage initializer copies it in
#   kubectl apply -f deploy/kserve/inferenceservice.yaml
# The stock image lacks the Python steps' packages (tokenizers): the init container installs the recorded ones
# (for the image's Python) into a volume on PYTHONPATH. KServe's Triton runtime serves HTTP on 8080 (hence
# TFT_PROBE_URL) and gRPC on 9000; the storage credentials come from the service account KServe is configured
# with (docs/scaling.md).
"""


def render() -> str:
    return (HEADER + to_yaml(kserve_manifest(EXAMPLE_RECORD, storage_uri="s3://my-bucket/model_repository")))


if __name__ == "__main__":
    print(render(), end="")
