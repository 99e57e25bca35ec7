"""`tft serve deploy`: Helm values for deploy/helm/tft-triton from a built repository, so that nobody
hand-copies model names, step names or the canary request.

    tft serve deploy --repository model_repository --name afqmc --chart-values values-afqmc.yaml
    helm install afqmc deploy/helm/tft-triton -f values-afqmc.yaml --set modelRepository.pvc.claimName=models
"""

from __future__ import annotations

import re

from tft.errors import TftError
from tft.serve.targets import DEFAULT_TARGET

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
DEFAULT_TAG = DEFAULT_TARGET  # the release deploy/Dockerfile, the chart and KServe use
URL_RE = re.compile(r"^(s3|gs|as)://.+")


def canary_body(record: dict) -> dict:
    """The build's canary example as a KServe v2 HTTP inference request to the ensemble."""
    canary = record.get("canary") or {"text": "canary", "text_pair": "canary"}
    inputs = [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [canary["text"]]}]
    if record.get("pair"):
        inputs.append({"name": "TEXT_PAIR", "shape": [1, 1], "datatype": "BYTES",
                       "data": [canary.get("text_pair") or canary["text"]]})
    return {"inputs": inputs, "outputs": [{"name": name} for name in record.get("outputs", [])]}


def chart_values(record: dict, *, device: str = "cpu", gpus: int = 1, image: str | None = None,
                 image_tag: str = DEFAULT_TAG, model_url: str | None = None, credentials_secret: str | None = None,
                 pvc: str | None = None, stock_image: bool = True) -> dict:
    if device not in ("cpu", "gpu"):
        raise TftError(f"--device {device!r}: choose cpu or gpu")
    if device == "gpu" and record.get("device", "cpu") != "gpu":
        raise TftError(f"{record['ensemble']} was built for the CPU (backend {record.get('backend')}): rebuild it with "
                       "`tft serve build --backend onnxruntime|tensorrt --device gpu` to serve it on GPUs")
    if model_url and not URL_RE.match(model_url):
        raise TftError(f"--model-url {model_url!r}: use s3://, gs:// or as:// followed by a path")
    if model_url and not credentials_secret:
        raise TftError("--model-url needs --credentials-secret: the Secret holding the object store's credentials")
    if model_url and pvc:
        raise TftError("give --model-url or --pvc, not both")
    values = {
        "model": {"name": record["ensemble"], "steps": list(record.get("steps", [])), "canary": canary_body(record)},
        "image": {"repository": image or TRITON_IMAGE, "tag": image_tag,
                  "pythonPackages": list(record.get("python_packages", [])) if stock_image else []},
        "device": device,
        "resources": {"gpu": gpus if device == "gpu" else 0},
    }
    if model_url:
        values["modelRepository"] = {"source": "url", "url": model_url, "credentialsSecret": credentials_secret}
    else:
        values["modelRepository"] = {"source": "pvc", "pvc": {"claimName": pvc or ""}}
    return values
