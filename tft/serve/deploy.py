"""`tft serve deploy`: Helm values for deploy/helm/tft-triton, or a KServe InferenceService, from a built
repository, so that nobody hand-copies model names, step names, packages, launch flags or the canary request.

    tft serve deploy --repository model_repository --name afqmc --chart-values values-afqmc.yaml
    helm install afqmc deploy/helm/tft-triton -f values-afqmc.yaml --set modelRepository.pvc.claimName=models
    tft serve deploy --repository model_repository --name afqmc --kserve afqmc-kserve.yaml \
        --model-url s3://bucket/model_repository
    kubectl apply -f afqmc-kserve.yaml
"""

from __future__ import annotations

import re

from tft.errors import TftError
from tft.serve.backends import BACKENDS, VERSION_COMPATIBLE_FLAG, launch_env, launch_flags, ready_budget  # noqa: F401
from tft.serve.targets import DEFAULT_TARGET

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
DEFAULT_TAG = DEFAULT_TARGET  # the release deploy/Dockerfile, the chart and KServe use
URL_RE = re.compile(r"^(s3|gs|as)://.+")
CHART_STARTUP_SECONDS = 600  # deploy/helm/tft-triton/values.yaml: probes.startup, 5 s x 120
SITE = "/opt/tft-site"  # where the recorded Python packages are installed beside the stock image's own

# The liveness probe: one real request through the ensemble (KServe v2 HTTP API); any error fails it. The Helm chart
# renders the same script (templates/configmap-probe.yaml); a test keeps the two equal.
PROBE_SCRIPT = '''"""Exit 0 if the served ensemble answers the canary request, 1 otherwise (liveness probe)."""
import json, os, sys, urllib.request
url = os.environ.get("TFT_PROBE_URL", "http://127.0.0.1:8000")
model = os.environ.get("TFT_PROBE_MODEL", "afqmc")
here = os.path.dirname(os.path.abspath(__file__))
body = open(os.path.join(here, "canary.json"), "rb").read()
request = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=float(os.environ.get("TFT_PROBE_TIMEOUT", "8"))) as response:
        answer = json.loads(response.read())
except Exception as e:  # HTTP 4xx/5xx (a dead stub answers 500), refused, timed out
    print(f"canary failed: {e}", file=sys.stderr)
    sys.exit(1)
if not answer.get("outputs"):
    print(f"canary failed: no outputs in {answer}", file=sys.stderr)
    sys.exit(1)
'''


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
    _check_device(record, device)
    if model_url and not URL_RE.match(model_url):
        raise TftError(f"--model-url {model_url!r}: use s3://, gs:// or as:// followed by a path")
    if model_url and not credentials_secret:
        raise TftError("--model-url needs --credentials-secret: the Secret holding the object store's credentials")
    if model_url and pvc:
        raise TftError("give --model-url or --pvc, not both")
    values = {
        "model": {"name": record["ensemble"], "steps": list(record.get("steps", [])), "canary": canary_body(record)},
        **({"extraArgs": launch_flags(record)} if launch_flags(record) else {}),
        "image": {"repository": image or TRITON_IMAGE, "tag": image_tag,
                  "pythonPackages": list(record.get("python_packages", [])) if stock_image else []},
        "device": device,
        "resources": {"gpu": gpus if device == "gpu" else 0},
    }
    if launch_env(record):  # TF32 off for fp32 where no model setting can do it
        values["env"] = launch_env(record)
    if ready_budget(record) > CHART_STARTUP_SECONDS:  # the build warms TensorRT engines while it loads
        values["probes"] = {"startup": {"periodSeconds": 5, "failureThreshold": -(-ready_budget(record) // 5)}}
    if model_url:
        values["modelRepository"] = {"source": "url", "url": model_url, "credentialsSecret": credentials_secret}
    else:
        values["modelRepository"] = {"source": "pvc", "pvc": {"claimName": pvc or ""}}
    return values


def thread_note(record: dict, pod_cpus: str) -> str | None:
    """Why a native CPU backend would oversubscribe its pod, or None: Triton's onnxruntime and openvino backends size
    their thread pools from the node's cores, not the pod's CPU limit (tft's Python model step reads the cgroup quota
    itself), and a repository carries its thread count in config.pbtxt, which no manifest can change."""
    backend = BACKENDS.get(record.get("backend"))
    native_threads = backend is not None and backend.thread_parameter and not backend.python_model
    if native_threads and record.get("device", "cpu") == "cpu" and not record.get("threads"):
        return (f"{record['ensemble']}: the {record['backend']} backend sizes its threads from the node's cores, not "
                f"the pod's {pod_cpus} CPUs (64 threads on 2 CPUs ran at half the speed of one); rebuild it with "
                f"`tft serve build --threads {pod_cpus}`")
    return None


def _check_device(record: dict, device: str) -> None:
    """The pod's device against the build's (chart values and KServe alike)."""
    import logging

    note = thread_note(record, KSERVE_RESOURCES["limits"]["cpu"])
    if note:
        logging.getLogger("tft").warning("%s", note)
    if device not in ("cpu", "gpu"):
        raise TftError(f"--device {device!r}: choose cpu or gpu")
    if device == "gpu" and record.get("device", "cpu") != "gpu":
        raise TftError(f"{record['ensemble']} was built for the CPU (backend {record.get('backend')}): rebuild it with "
                       "`tft serve build --backend onnxruntime|tensorrt --device gpu` to serve it on GPUs")


def kube_name(name: str, limit: int = 63, dns1035: bool = False) -> str:
    """A model name as a Kubernetes object name: lower case, letters, digits and '-' (RFC 1123; a Service name also
    starts with a letter, DNS-1035), at most `limit` characters. The real name stays in the probe's settings."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if dns1035 and not text[:1].isalpha():
        text = "m-" + text
    return text[:limit].rstrip("-") or "model"


# KServe's Serverless mode (Knative) drops a predictor's initContainers unless Knative's
# kubernetes.podspec-init-containers feature flag is on (off by default); the packages' init container needs the raw
# (Standard) mode, which keeps the PodSpec as written. KServe reads this annotation (GetDeploymentMode) and maps the
# legacy RawDeployment value to Standard in its newer releases.
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
# Knative Serving's per-revision progress deadline (default 600 s, the same as tft's startup budget before): how long a
# revision may take to become ready before Knative marks it failed
PROGRESS_DEADLINE = "serving.knative.dev/progress-deadline"
# KServe merges the predictor into its stock runtime's container key by key (MergeRuntimeContainers: a strategic merge
# patch); that runtime (config/runtimes/kserve-tritonserver.yaml) sets limits.cpu "1": a request above it without a
# limit of our own makes a pod the API server rejects. Requests and limits are both set here.
KSERVE_RESOURCES = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}


def kserve_manifest(record: dict, *, storage_uri: str, device: str = "cpu", gpus: int = 1,
                    image_tag: str = DEFAULT_TAG, built_image: str | None = None, min_replicas: int = 2,
                    max_replicas: int = 8, shm_size: str = "1Gi") -> list[dict]:
    """A ConfigMap (the canary probe) and an InferenceService on KServe's Triton runtime that run the repository as
    the Helm chart does: the recorded Python packages installed by an init container from the same image (or none
    with `built_image`, an image built from deploy/Dockerfile), an in-memory /dev/shm for the Python backend's
    tensors, nvidia.com/gpu limits for a GPU build, the launch flags the build needs, and the canary liveness probe."""
    import json

    _check_device(record, device)
    if device == "cpu" and record.get("device") == "gpu":
        raise TftError(f"{record['ensemble']} was built for GPUs: deploy it with --device gpu")
    if not URL_RE.match(storage_uri) and not storage_uri.startswith("pvc://"):
        raise TftError(f"--model-url {storage_uri!r}: use s3://, gs://, as:// or pvc://NAME/path")
    name = record["ensemble"]
    service_name = kube_name(name, limit=45, dns1035=True)  # KServe adds "-predictor" (and Knative more) to it
    probe = kube_name(f"{service_name}-tft-probe")
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": probe, "labels": {"app.kubernetes.io/name": "tft-triton",
                                                         "tft.dev/model": service_name}},
                  "data": {"canary.json": json.dumps(canary_body(record), ensure_ascii=False, separators=(",", ":")),
                           "canary.py": PROBE_SCRIPT}}
    packages = [] if built_image else list(record.get("python_packages", []))
    gpu = {"nvidia.com/gpu": str(gpus)} if device == "gpu" else {}
    env = [{"name": "TFT_PROBE_URL", "value": "http://127.0.0.1:8080"}, {"name": "TFT_PROBE_MODEL", "value": name}]
    if packages:
        env.append({"name": "PYTHONPATH", "value": SITE})
    env += [{"name": key, "value": value} for key, value in launch_env(record).items()]
    mounts = [{"name": "probe", "mountPath": "/opt/tft-probe", "readOnly": True},
              {"name": "shm", "mountPath": "/dev/shm"}]
    volumes = [{"name": "probe", "configMap": {"name": probe}},
               # the Python backend passes tensors through /dev/shm; a container's default 64 MB is too small
               {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}}]
    model = {
        "modelFormat": {"name": "triton"}, "storageUri": storage_uri,
        "args": ["--strict-readiness=true", "--exit-on-error=false", *launch_flags(record)],
        "env": env,
        "resources": {"requests": {**KSERVE_RESOURCES["requests"], **gpu}, "limits": {**KSERVE_RESOURCES["limits"], **gpu}},
        # ready only once every model (and a TensorRT warm-up) has loaded; the canary then keeps it honest
        "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 5,
                         "failureThreshold": max(120, -(-ready_budget(record) // 5))},
        "livenessProbe": {"exec": {"command": ["python3", "/opt/tft-probe/canary.py"]}, "periodSeconds": 15,
                          "timeoutSeconds": 10, "failureThreshold": 3},
        "volumeMounts": mounts + ([{"name": "site", "mountPath": SITE, "readOnly": True}] if packages else []),
    }
    if built_image:
        model["image"] = built_image
    else:
        model["runtimeVersion"] = image_tag
    predictor = {"minReplicas": min_replicas, "maxReplicas": max_replicas, "model": model, "volumes": volumes}
    if packages:
        volumes.append({"name": "site", "emptyDir": {}})
        predictor["initContainers"] = [{
            "name": "tft-packages", "image": f"{TRITON_IMAGE}:{image_tag}",
            "command": ["pip", "install", "--no-cache-dir", "--target", SITE, *packages],
            "volumeMounts": [{"name": "site", "mountPath": SITE}]}]
    annotations = {"serving.kserve.io/enable-prometheus-scraping": "true"}
    if packages:
        annotations[DEPLOYMENT_MODE] = "RawDeployment"
    else:  # Knative (Serverless): its 600 s progress deadline must outlast the startup budget, or it gives up first
        annotations[PROGRESS_DEADLINE] = f"{ready_budget(record) + 600}s"
    service = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
               "metadata": {"name": service_name, "annotations": annotations},
               "spec": {"predictor": predictor}}
    return [config_map, service]


def to_yaml(documents: list[dict]) -> str:
    """YAML documents with multi-line strings (the probe script) as literal blocks, readable in review."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(documents, Dumper=Dumper, allow_unicode=True, sort_keys=False, width=120)
