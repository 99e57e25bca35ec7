"""The Helm chart (deploy/helm/tft-triton), `tft serve deploy` and the KServe example, offline: rendered with
Helm's own Go SDK (helm-python-sdk), every object validated against the Kubernetes 1.30 schemas
(kubernetes-validate), key facts asserted, bad values refused by the templates, and the canary probe run
for real against the embedded Triton (it passes, and fails once a Python stub is killed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
import yaml

from helpers import REPO, ServeProcess, run_tft

CHART = REPO / "deploy" / "helm" / "tft-triton"
KSERVE = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
KUBE_VERSION = "1.30"
CANARY = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["花呗怎么还款"]},
                     {"name": "TEXT_PAIR", "shape": [1, 1], "datatype": "BYTES", "data": ["花呗如何还款"]}],
          "outputs": [{"name": "LABEL"}, {"name": "SCORE"}]}
MODEL = {"name": "afqmc", "steps": ["afqmc_tokenizer", "afqmc_model", "afqmc_postprocess"], "canary": CANARY}
VALUE_SETS = {
    "cpu": {"model": MODEL, "modelRepository": {"source": "pvc", "pvc": {"claimName": "models"}}},
    "gpu": {"model": MODEL, "device": "gpu", "resources": {"gpu": 2},
            "modelRepository": {"source": "pvc", "pvc": {"claimName": "models", "subPath": "repo"}},
            "image": {"pythonPackages": ["numpy==1.26.4", "tokenizers==0.23.3"]},
            "monitoring": {"serviceMonitor": {"enabled": True}}},
    "s3": {"model": MODEL, "modelRepository": {"source": "url", "url": "s3://bucket/model_repository",
                                               "credentialsSecret": "s3-credentials"}},
    "gcs": {"model": MODEL, "autoscaling": {"enabled": False}, "replicaCount": 3,
            "modelRepository": {"source": "url", "url": "gs://bucket/repo", "credentialsSecret": "gcs-key"}},
}


# Helm's Go SDK runs in a child process of its own, never in the test worker. A test worker died without a word
# about one clean-clone run in four; the one run that named the test had it in
# test_every_rendered_object_is_valid_kubernetes[gpu], the worker's second render, and a Go runtime's fatal output
# would go to the stderr pytest captures, then be lost with the process. A child that dies fails its test with what
# it printed.
_HELM = r"""
import json, sys
import helm_python

op, chart, values = json.loads(sys.stdin.read())
try:
    if op == "render":
        loaded = helm_python.Chart.load(chart)
        try:
            out = loaded.render(values, name="afqmc", namespace="serving")
        finally:
            loaded.close()
    else:
        out = helm_python.lint(chart, values)
except helm_python.HelmError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
else:
    print(json.dumps({"ok": out}))
"""


class HelmError(Exception):
    """An error Helm's SDK raised in the child: its class name, then its message."""


def helm(op: str, values: dict):
    """`render` ({path: text}) or `lint` of the chart with `values`, by helm-python-sdk in a child process."""
    proc = subprocess.run([sys.executable, "-c", _HELM], input=json.dumps([op, str(CHART), values]),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"helm {op} ended with {proc.returncode}: {proc.stderr[-3000:]}"
    answer = json.loads(proc.stdout)
    if "error" in answer:
        raise HelmError(f"{answer['error']}: {answer['message']}")
    return answer["ok"]


def render(values: dict) -> dict[str, list[dict]]:
    """{kind: [objects]} of the chart rendered with `values`."""
    files = helm("render", values)
    objects: dict[str, list[dict]] = {}
    for path, text in files.items():
        if path.endswith(".txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.setdefault(doc["kind"], []).append(doc)
    return objects


def container(objects) -> dict:
    return objects["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_object_is_valid_kubernetes(name):
    import kubernetes_validate

    objects = render(VALUE_SETS[name])
    checked = 0
    for kind, docs in objects.items():
        for doc in docs:
            if kind == "ServiceMonitor":  # a prometheus-operator CRD: not in the core schemas
                assert doc["spec"]["endpoints"][0]["port"] == "metrics"
                continue
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            checked += 1
    assert {"Deployment", "Service", "ConfigMap"} <= set(objects) and checked >= 4


def test_probes_ports_and_canary():
    objects = render(VALUE_SETS["cpu"])
    c = container(objects)
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["exec"]["command"] == ["python3", "/opt/tft-probe/canary.py"]
    probe = next(cm for cm in objects["ConfigMap"] if cm["metadata"]["name"].endswith("-probe"))
    assert json.loads(probe["data"]["canary.json"]) == CANARY
    assert {(p["name"], p["containerPort"]) for p in c["ports"]} == {("http", 8000), ("grpc", 8001), ("metrics", 8002)}
    service = objects["Service"][0]["spec"]
    assert {(p["name"], p["port"]) for p in service["ports"]} == {("http", 8000), ("grpc", 8001), ("metrics", 8002)}
    assert service["selector"] == objects["Deployment"][0]["spec"]["selector"]["matchLabels"]
    shm = next(v for v in objects["Deployment"][0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    pod = objects["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    assert objects["PodDisruptionBudget"][0]["spec"]["minAvailable"] == 1


def test_autoscaling_is_on_a_rate_of_queue_time_per_request():
    objects = render(VALUE_SETS["cpu"])
    hpa = objects["HorizontalPodAutoscaler"][0]["spec"]
    metric = hpa["metrics"][0]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "tft_queue_time_us_per_request"
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"][0]["metadata"]["name"]
    rule = yaml.safe_load(next(cm for cm in objects["ConfigMap"] if cm["metadata"]["name"].endswith("adapter-rule"))
                          ["data"]["rule.yaml"])[0]
    assert rule["name"]["as"] == "tft_queue_time_us_per_request"
    query = rule["metricsQuery"]
    numerator, denominator = query.split(" / ")
    assert numerator.startswith("sum(rate(nv_inference_queue_duration_us{") and "[1m]))" in numerator
    assert 'model=~"afqmc|afqmc_tokenizer|afqmc_model|afqmc_postprocess"' in numerator
    assert "rate(nv_inference_request_success{" in denominator and 'model="afqmc"' in denominator
    assert "replicas" not in objects["Deployment"][0]["spec"]  # the HPA owns the count
    no_hpa = render(VALUE_SETS["gcs"])
    assert "HorizontalPodAutoscaler" not in no_hpa and no_hpa["Deployment"][0]["spec"]["replicas"] == 3


def test_gpus_are_requested_only_by_the_gpu_value_set():
    for name, values in VALUE_SETS.items():
        c = container(render(values))
        gpus = {c["resources"]["limits"].get("nvidia.com/gpu"), c["resources"]["requests"].get("nvidia.com/gpu")}
        assert gpus == ({2} if name == "gpu" else {None}), name


def test_repository_sources_and_credentials_wiring():
    cpu = container(render(VALUE_SETS["cpu"]))
    assert "--model-repository=/models" in cpu["args"][0]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in cpu["volumeMounts"]
    gpu = render(VALUE_SETS["gpu"])
    mount = next(m for m in container(gpu)["volumeMounts"] if m["name"] == "models")
    assert mount["subPath"] == "repo"
    assert "pip install --no-cache-dir --target /opt/tft-site 'numpy==1.26.4' 'tokenizers==0.23.3'" in container(gpu)["args"][0]
    assert {"name": "PYTHONPATH", "value": "/opt/tft-site"} in container(gpu)["env"]
    s3 = container(render(VALUE_SETS["s3"]))
    assert "--model-repository=s3://bucket/model_repository" in s3["args"][0]
    assert s3["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert not any(m["name"] == "models" for m in s3["volumeMounts"])
    gcs = render(VALUE_SETS["gcs"])
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/gcs/key.json"} in container(gcs)["env"]
    volume = next(v for v in gcs["Deployment"][0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "gcs-credentials")
    assert volume["secret"]["secretName"] == "gcs-key"


@pytest.mark.parametrize("change,says", [
    ({"model": {**MODEL, "name": ""}}, "model.name is required"),
    ({"model": {**MODEL, "canary": {}}}, "model.canary is required"),
    ({"resources": {"gpu": 1}}, "resources.gpu is 1 but device is cpu"),
    ({"device": "gpu"}, "device is gpu but resources.gpu is 0"),
    ({"device": "tpu"}, 'device must be cpu or gpu, not "tpu"'),
    ({"modelRepository": {"source": "url", "url": "s3://bucket/repo"}},
     "modelRepository.credentialsSecret is required with url s3://bucket/repo"),
    ({"modelRepository": {"source": "url", "url": "ftp://x", "credentialsSecret": "s"}}, "must be s3://, gs:// or as://"),
    ({"modelRepository": {"source": "pvc"}}, "modelRepository.pvc.claimName is required"),
    ({"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, "maxReplicas must be at least"),
])
def test_bad_values_fail_rendering_with_one_message(change, says):
    values = {**VALUE_SETS["cpu"], **change}
    with pytest.raises(HelmError) as e:
        render(values)
    assert str(e.value).startswith("HelmRenderError: ") and says in str(e.value)


def test_chart_lints_clean():
    result = helm("lint", VALUE_SETS["cpu"])
    assert result["errors"] == [] and result["messages"] == []


def test_deploy_writes_values_that_render_and_refuses_bad_combinations(pair_export, tmp_path):
    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "kc").returncode == 0
    values = tmp_path / "values.yaml"
    proc = run_tft("serve", "deploy", "--repository", repo, "--chart-values", values, "--model-url", "s3://b/repo",
                   "--credentials-secret", "creds")
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(values.read_text(encoding="utf-8"))
    assert data["model"]["name"] == "kc" and data["model"]["steps"] == ["kc_tokenizer", "kc_model", "kc_postprocess"]
    record = json.loads((repo / "kc" / "tft-serve.json").read_text())
    assert data["model"]["canary"]["inputs"][0]["data"] == [record["canary"]["text"]]
    # built for the default image (24.10-py3, Python 3.10): ranges its pip resolves, not this machine's pins
    assert "onnxruntime>=1.18" in data["image"]["pythonPackages"]
    objects = render(data)
    assert "--model-repository=s3://b/repo" in container(objects)["args"][0]
    before = values.read_bytes()
    for args, says in ((("--device", "gpu", "--overwrite"), "was built for the CPU (backend python)"),
                       (("--model-url", "s3://b/r", "--overwrite"), "--model-url needs --credentials-secret"),
                       (("--model-url", "http://b/r", "--credentials-secret", "c", "--overwrite"), "use s3://, gs://"),
                       (("--name", "nope", "--overwrite"), "no model 'nope'"),
                       ((), "already exists; add --overwrite")):
        proc = run_tft("serve", "deploy", "--repository", repo, "--chart-values", values, *args)
        assert proc.returncode == 1 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert values.read_bytes() == before


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def test_the_charts_canary_probe_passes_on_triton_and_fails_after_a_stub_dies(pair_export, tmp_path):
    """The probe script and body exactly as the chart renders them, run against the embedded Triton."""

    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "lp").returncode == 0
    values = tmp_path / "values.yaml"
    assert run_tft("serve", "deploy", "--repository", repo, "--chart-values", values, "--pvc", "m").returncode == 0
    probe = next(cm for cm in render(yaml.safe_load(values.read_text()))["ConfigMap"]
                 if cm["metadata"]["name"].endswith("-probe"))
    folder = tmp_path / "probe"
    folder.mkdir()
    for name, text in probe["data"].items():
        (folder / name).write_text(text, encoding="utf-8")
    server = ServeProcess(repo, tmp_path, health_interval=0).wait_ready()  # no health loop: nothing repairs it
    try:
        url = f"http://127.0.0.1:{server.ports.http}"
        status, answer = _post(f"{url}/v2/models/lp/infer", (folder / "canary.json").read_bytes())
        assert status == 200 and {o["name"] for o in answer["outputs"]} == {"LABEL", "SCORE"}
        label = next(o for o in answer["outputs"] if o["name"] == "LABEL")
        assert label["data"][0] in ("0", "1")
        env = {**os.environ, "TFT_PROBE_URL": url}
        assert subprocess.run([sys.executable, folder / "canary.py"], env=env).returncode == 0
        for pid in server.stubs("lp_model"):
            os.kill(pid, signal.SIGKILL)
        ready = urllib.request.urlopen(f"{url}/v2/health/ready", timeout=10).status
        assert ready == 200  # Triton still says ready: the condition only the canary catches
        status, _ = _post(f"{url}/v2/models/lp/infer", (folder / "canary.json").read_bytes())
        assert status != 200
        failed = subprocess.run([sys.executable, folder / "canary.py"], env=env, capture_output=True, text=True)
        assert failed.returncode == 1 and "canary failed" in failed.stderr
    finally:
        server.stop()


def test_kserve_example_carries_the_same_probe():
    import runpy

    import kubernetes_validate

    rendered = runpy.run_path(str(REPO / "scripts" / "kserve_example.py"))["render"]()
    assert KSERVE.read_text(encoding="utf-8") == rendered, "regenerate: python scripts/kserve_example.py > " + str(KSERVE)

    config_map, service = list(yaml.safe_load_all(KSERVE.read_text(encoding="utf-8")))
    kubernetes_validate.validate(config_map, KUBE_VERSION, strict=True)
    chart_probe = next(cm for cm in render(VALUE_SETS["cpu"])["ConfigMap"] if cm["metadata"]["name"].endswith("-probe"))
    assert config_map["data"]["canary.py"] == chart_probe["data"]["canary.py"]
    assert json.loads(config_map["data"]["canary.json"])["inputs"][0]["name"] == "TEXT"
    model = service["spec"]["predictor"]["model"]
    assert service["kind"] == "InferenceService" and model["modelFormat"]["name"] == "triton"
    assert model["livenessProbe"]["exec"]["command"] == container(render(VALUE_SETS["cpu"]))["livenessProbe"]["exec"]["command"]
    volume = service["spec"]["predictor"]["volumes"][0]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert {"name": "TFT_PROBE_URL", "value": "http://127.0.0.1:8080"} in model["env"]


def test_scheduling_pull_secrets_extra_args_and_notes():
    values = {**VALUE_SETS["cpu"], "image": {"pullSecrets": ["ngc"]}, "extraArgs": ["--log-verbose=1"],
              "nodeSelector": {"pool": "inference"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
              "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}}
    objects = render(values)
    pod = objects["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "ngc"}] and pod["nodeSelector"] == {"pool": "inference"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}] and "podAntiAffinity" in pod["affinity"]
    assert container(objects)["args"][0].endswith("--metrics-port=8002 --log-verbose=1")
    assert "runtimeClassName" not in pod  # the cluster's default unless asked for
    gpu = render({**VALUE_SETS["gpu"], "runtimeClassName": "nvidia"})["Deployment"][0]["spec"]["template"]["spec"]
    assert gpu["runtimeClassName"] == "nvidia"
    notes = helm("render", VALUE_SETS["cpu"])["tft-triton/templates/NOTES.txt"]
    assert "tft infer --url 127.0.0.1:8001 --model afqmc" in notes and "tft verify --url 127.0.0.1:8001" in notes
    assert "kubectl -n serving port-forward svc/afqmc-tft-triton 8001:8001 8000:8000" in notes


def test_a_repository_answers_from_an_environment_holding_only_its_recorded_packages(pair_export, afqmc_sample,
                                                                                      tmp_path):
    """What NVIDIA's container needs, proven: a fresh venv with exactly model_repository/tft-requirements.txt
    (no tft, no torch, no transformers) serves the repository through the embedded Triton's stubs, with the
    same answers as ONNX Runtime offline."""
    import venv

    from tft.export.runtime import ExportPredictor
    from tft.serve.client import Client

    repo = tmp_path / "repo"
    assert run_tft("serve", "build", "--export", pair_export, "--repository", repo, "--name", "ce").returncode == 0
    requirements = [line for line in (repo / "tft-requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert {re.split(r"[=<>!~ ]", r)[0] for r in requirements} == {"numpy", "tokenizers", "onnxruntime"}
    env_dir = tmp_path / "container-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = subprocess.run([env_dir / "bin" / "python3", "-m", "pip", "install", "-q", "-r", repo / "tft-requirements.txt"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    for absent in ("tft", "torch", "transformers"):  # only what the repository records is there
        probe = subprocess.run([env_dir / "bin" / "python3", "-c", f"import {absent}"], cwd=tmp_path,
                               capture_output=True, text=True)
        assert probe.returncode != 0, absent
    server = ServeProcess(repo, tmp_path, health_interval=0, extra=("--python-env", str(env_dir))).wait_ready()
    try:
        rows = [json.loads(line) for line in (afqmc_sample / "dev.json").read_text().splitlines()[:64]]
        items = [{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in rows]
        served, stats = Client(server.url).infer("ce", items, batch_size=8)
        assert stats.answered == 64
        offline = ExportPredictor(pair_export).answer_items(items)
        assert [a["label"] for a in served] == [o["label"] for o in offline]
        assert max(abs(a["score"] - o["score"]) for a, o in zip(served, offline)) < 1e-4
    finally:
        server.stop()


def _pod_of(service: dict, config_map: dict) -> dict:
    """The InferenceService predictor as the Pod KServe makes of it: its PodSpec fields validated by Kubernetes'
    own schema (KServe's CRD schema is not in kubernetes-validate)."""
    predictor = service["spec"]["predictor"]
    model = {k: v for k, v in predictor["model"].items() if k not in ("modelFormat", "storageUri", "runtimeVersion")}
    model.setdefault("image", "nvcr.io/nvidia/tritonserver:24.10-py3")
    spec = {"containers": [{"name": "kserve-container", **model}], "volumes": predictor["volumes"],
            **({"initContainers": predictor["initContainers"]} if "initContainers" in predictor else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": service["metadata"]["name"]}, "spec": spec}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_kserve_runs_the_repository_as_the_chart_does(tiny_export, tmp_path, device):
    """The stock image has no `tokenizers`: an init container installs the recorded packages; /dev/shm in memory for
    the Python backend; GPU limits for a GPU build; the launch flag for a version-compatible engine; the canary."""
    import kubernetes_validate

    from tft.serve.deploy import PROBE_SCRIPT, VERSION_COMPATIBLE_FLAG, chart_values, kserve_manifest
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    backend = {"cpu": {}, "gpu": {"backend": "onnxruntime", "device": "gpu"}}[device]
    record = build_repository(tiny_export(), tmp_path / "repo", BuildOptions(name="afqmc", **backend))
    config_map, service = kserve_manifest(record, storage_uri="s3://bucket/repo", device=device, gpus=2)
    kubernetes_validate.validate(config_map, KUBE_VERSION, strict=True)
    kubernetes_validate.validate(_pod_of(service, config_map), KUBE_VERSION, strict=True)
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    [init] = predictor["initContainers"]
    assert init["command"][:5] == ["pip", "install", "--no-cache-dir", "--target", "/opt/tft-site"]
    assert init["command"][5:] == record["python_packages"] and any("tokenizers" in p for p in init["command"])
    assert {"name": "PYTHONPATH", "value": "/opt/tft-site"} in model["env"]
    shm = next(v for v in predictor["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory" and {"name": "shm", "mountPath": "/dev/shm"} in model["volumeMounts"]
    assert (model["resources"]["limits"].get("nvidia.com/gpu") == "2") == (device == "gpu")
    assert model["runtimeVersion"] == "24.10-py3" and VERSION_COMPATIBLE_FLAG not in model["args"]
    assert config_map["data"]["canary.py"] == PROBE_SCRIPT
    assert json.loads(config_map["data"]["canary.json"])["inputs"][1]["name"] == "TEXT_PAIR"
    chart_probe = next(cm for cm in render(VALUE_SETS["cpu"])["ConfigMap"] if cm["metadata"]["name"].endswith("-probe"))
    assert chart_probe["data"]["canary.py"] == PROBE_SCRIPT  # one probe, the chart's and KServe's
    compatible = {**record, "version_compatible": True}
    assert VERSION_COMPATIBLE_FLAG in kserve_manifest(compatible, storage_uri="gs://b/r", device=device)[1][
        "spec"]["predictor"]["model"]["args"]
    assert chart_values(compatible, device=device)["extraArgs"] == [VERSION_COMPATIBLE_FLAG]
    assert "extraArgs" not in chart_values(record, device=device)
    built = kserve_manifest(record, storage_uri="pvc://models/repo", device=device, built_image="me/tft-triton:1")
    assert "initContainers" not in built[1]["spec"]["predictor"] and built[1]["spec"]["predictor"]["model"][
        "image"] == "me/tft-triton:1"


def test_serve_deploy_writes_kserve_and_refuses_without_a_source(tiny_export, tmp_path):
    from helpers import one_line_error, run_tft

    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    build_repository(tiny_export(), tmp_path / "repo", BuildOptions(name="afqmc"))
    out = tmp_path / "afqmc-kserve.yaml"
    proc = run_tft("serve", "deploy", "--repository", str(tmp_path / "repo"), "--kserve", str(out))
    assert proc.returncode == 2 and "--kserve needs --model-url" in proc.stderr and not out.exists()
    proc = run_tft("serve", "deploy", "--repository", str(tmp_path / "repo"), "--kserve", str(out), "--model-url",
                   "s3://bucket/model_repository")
    assert proc.returncode == 0, proc.stderr
    config_map, service = list(yaml.safe_load_all(out.read_text(encoding="utf-8")))
    assert service["kind"] == "InferenceService" and service["spec"]["predictor"]["model"]["storageUri"] == \
        "s3://bucket/model_repository"
    proc = run_tft("serve", "deploy", "--repository", str(tmp_path / "repo"), "--kserve", str(out), "--model-url",
                   "s3://bucket/other")
    assert "exists" in one_line_error(proc) and "s3://bucket/model_repository" in out.read_text()


@pytest.mark.parametrize("compatible", [True, False])
def test_the_dockerfile_passes_the_version_compatible_flag_when_a_build_asks(tmp_path, compatible):
    """The image's CMD, run by sh as Docker runs it, with `echo` standing in for tritonserver."""
    import shlex
    import subprocess

    cmd = json.loads((REPO / "deploy" / "Dockerfile").read_text().split("\nCMD ", 1)[1].splitlines()[0])
    assert cmd[:2] == ["/bin/sh", "-c"]
    record = tmp_path / "models" / "m" / "tft-serve.json"  # the committed build's record
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"ensemble": "m", "version_compatible": compatible}, indent=2))
    script = cmd[2].replace("exec tritonserver", "echo").replace("/models", shlex.quote(str(tmp_path / "models")))
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "TFT_TRITON_ARGS": "--log-verbose=1"}).stdout
    assert ("--backend-config=tensorrt,version-compatible=true" in out) == compatible
    assert out.split()[-1] == "--log-verbose=1"


# -- the InferenceService as KServe's controller makes a Pod of it ------------------------------------------------
STOCK_RUNTIME = REPO / "tests" / "data" / "kserve" / "kserve-tritonserver.yaml"  # kserve/kserve@94adc24, Apache-2.0
RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _strategic_merge(base, patch, key: str | None = None):
    """Kubernetes' strategic merge patch for the Container fields tft sets (what KServe's MergeRuntimeContainers
    applies): maps merged key by key, env by name, volumeMounts by mountPath, other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _strategic_merge(base.get(k), v, k) if k in base else v
        return out
    merge_key = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}.get(key)
    if merge_key and isinstance(base, list) and isinstance(patch, list):
        merged = {item[merge_key]: item for item in base}
        merged.update({item[merge_key]: item for item in patch})
        return list(merged.values())
    return patch


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if str(value).endswith(unit):
            return float(str(value)[: -len(unit)]) * factor
    return float(value)


def kserve_pod(service: dict) -> dict:
    """The Pod KServe makes of tft's InferenceService on its stock Triton runtime: the predictor's model merged into
    the runtime's kserve-container (args appended, as KServe does), the predictor's volumes and init containers."""
    runtime = yaml.safe_load(STOCK_RUNTIME.read_text(encoding="utf-8"))["spec"]["containers"][0]
    runtime = {**runtime, "image": "nvcr.io/nvidia/tritonserver:23.05-py3"}
    predictor = service["spec"]["predictor"]
    model = {k: v for k, v in predictor["model"].items() if k not in ("modelFormat", "storageUri", "runtimeVersion")}
    container = _strategic_merge(runtime, {k: v for k, v in model.items() if k != "args"})
    container["args"] = [*runtime.get("args", []), *model.get("args", [])]
    if "runtimeVersion" in predictor["model"]:
        container["image"] = f"nvcr.io/nvidia/tritonserver:{predictor['model']['runtimeVersion']}"
    spec = {"containers": [container], "volumes": predictor["volumes"],
            **({"initContainers": predictor["initContainers"]} if "initContainers" in predictor else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{service['metadata']['name']}-predictor-0"},
            "spec": spec}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("name", ["afqmc", "peoples_daily", "Upper.Case_Model"])
def test_kserve_on_its_stock_runtime_makes_a_valid_pod(tiny_export, tmp_path, device, name):
    """KServe merges the predictor into its stock runtime's container key by key: the runtime's limits.cpu "1" under
    tft's request of 2 CPUs was a pod the API server refuses; a model name with '_', '.' or capitals made invalid
    object names; the init container that installs the packages needs KServe's raw deployment mode (Knative drops
    initContainers unless a feature flag that is off by default is on)."""
    import kubernetes_validate

    from tft.serve.deploy import DEPLOYMENT_MODE, PROGRESS_DEADLINE, kserve_manifest
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    backend = {"cpu": {}, "gpu": {"backend": "onnxruntime", "device": "gpu"}}[device]
    record = build_repository(tiny_export(), tmp_path / "repo", BuildOptions(name=name, **backend))
    for built_image in (None, "registry.example/tft-triton:1"):
        config_map, service = kserve_manifest(record, storage_uri="s3://bucket/repo", device=device,
                                              built_image=built_image)
        pod = kserve_pod(service)
        kubernetes_validate.validate(config_map, KUBE_VERSION, strict=True)
        kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
        [container] = pod["spec"]["containers"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for resource, amount in requests.items():
            assert resource not in limits or _quantity(amount) <= _quantity(limits[resource]), (resource, requests,
                                                                                              limits)
        assert DNS1035.match(service["metadata"]["name"]) and len(service["metadata"]["name"]) <= 45
        names = [config_map["metadata"]["name"], *(v["name"] for v in pod["spec"]["volumes"]),
                 *(c["name"] for c in pod["spec"].get("initContainers", []))]
        assert all(RFC1123.match(n) and len(n) <= 63 for n in names), names
        assert {"name": "TFT_PROBE_MODEL", "value": name} in container["env"]  # the real name reaches the probe
        raw = service["metadata"]["annotations"].get(DEPLOYMENT_MODE)
        assert (raw == "RawDeployment") == ("initContainers" in pod["spec"]) == (built_image is None)
        if raw is None:  # Knative: its progress deadline outlasts the startup probe's budget
            deadline = int(service["metadata"]["annotations"][PROGRESS_DEADLINE].rstrip("s"))
            startup = container["startupProbe"]
            assert deadline > startup["periodSeconds"] * startup["failureThreshold"]
        assert container["args"][:2] == ["tritonserver", "--model-store=/mnt/models"]  # KServe appends ours


def test_a_gpu_hosts_onnxruntime_gpu_is_read_as_the_onnxruntime_the_steps_need(monkeypatch):
    """`tft-toolchain[gpu]` installs the distribution onnxruntime-gpu: the build used to say onnxruntime "is not
    installed" there. The recorded requirement stays plain onnxruntime (the Python-backend step runs on the CPU)."""
    import importlib.metadata as metadata

    from tft.serve.repository import python_packages

    real = metadata.version

    def gpu_host(name):
        if name == "onnxruntime":
            raise metadata.PackageNotFoundError(name)
        return "1.19.2" if name == "onnxruntime-gpu" else real(name)

    monkeypatch.setattr(metadata, "version", gpu_host)
    assert "onnxruntime==1.19.2" in python_packages("python")


def test_deploy_follows_the_builds_device(tiny_export, tmp_path):
    """`serve deploy --device` defaulted to cpu whatever the build: a GPU repository got resources.gpu 0 and
    restart-looped. It now defaults to the build's device, and a CPU deploy of a GPU build is one line."""
    from helpers import one_line_error

    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    build_repository(tiny_export(), tmp_path / "repo", BuildOptions(name="g", backend="onnxruntime", device="gpu"))
    out = tmp_path / "values.yaml"
    proc = run_tft("serve", "deploy", "--repository", tmp_path / "repo", "--chart-values", out, "--pvc", "models")
    assert proc.returncode == 0, proc.stderr
    values = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert values["device"] == "gpu" and values["resources"]["gpu"] == 1
    line = one_line_error(run_tft("serve", "deploy", "--repository", tmp_path / "repo", "--chart-values",
                                  tmp_path / "cpu.yaml", "--pvc", "models", "--device", "cpu"))
    assert "--device cpu: g was built for GPUs" in line and not (tmp_path / "cpu.yaml").exists()


def test_every_launcher_passes_what_the_build_needs(tiny_export, tmp_path, monkeypatch):
    """A version-compatible engine needs --backend-config=tensorrt,version-compatible=true from whatever starts
    Triton: `serve start`, the pipeline's and verify's servers (all TritonServer), Helm and KServe, from one function;
    and a build that warms TensorRT engines gets the longer readiness budget in each."""
    from tft.serve import server as server_mod
    from tft.serve.backends import READY_SECONDS, VERSION_COMPATIBLE_FLAG, WARMUP_READY_SECONDS, ready_budget
    from tft.serve.deploy import chart_values, kserve_manifest
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    repo = tmp_path / "repo"
    record = build_repository(tiny_export(), repo, BuildOptions(name="m"))
    system = tmp_path / "triton"  # a full Triton install (its tensorrt backend present), as in NVIDIA's image
    (system / "bin").mkdir(parents=True)
    monkeypatch.setattr(server_mod, "system_triton", lambda: system)
    plain = server_mod.TritonServer(repo)
    assert VERSION_COMPATIBLE_FLAG not in plain.command() and ready_budget(plain.records()) == READY_SECONDS
    saved = repo / "m" / "tft-serve.json"
    compatible = {**record, "version_compatible": True, "ort_tensorrt": True}
    saved.write_text(json.dumps(compatible))
    (repo / "m" / str(record["version"]) / "tft-serve.json").write_text(json.dumps(compatible))
    command = server_mod.TritonServer(repo).command()
    assert command.count(VERSION_COMPATIBLE_FLAG) == 1
    assert server_mod.TritonServer(repo, extra_args=[VERSION_COMPATIBLE_FLAG]).command().count(
        VERSION_COMPATIBLE_FLAG) == 1  # given by hand too: once
    assert ready_budget(server_mod.TritonServer(repo).records()) == WARMUP_READY_SECONDS
    monkeypatch.setattr(server_mod, "system_triton", lambda: None)  # the embedded Triton: no tensorrt backend
    assert VERSION_COMPATIBLE_FLAG not in server_mod.TritonServer(repo).command()
    assert chart_values(compatible)["extraArgs"] == [VERSION_COMPATIBLE_FLAG]
    model = kserve_manifest(compatible, storage_uri="s3://b/r")[1]["spec"]["predictor"]["model"]
    assert VERSION_COMPATIBLE_FLAG in model["args"]
    probe = model["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= WARMUP_READY_SECONDS
    values = chart_values(compatible)
    startup = values["probes"]["startup"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= WARMUP_READY_SECONDS
    assert "probes" not in chart_values(record)  # the chart's own 10 minutes cover a plain build
    # the Dockerfile's CMD reads the record itself: test_the_dockerfile_passes_the_version_compatible_flag_...


@pytest.mark.parametrize("release, ort_tensorrt, precision, cuda, env", [
    ("24.10", False, "fp32", {"use_tf32": "0"}, {}),  # the cuda accelerator takes use_tf32 from r24.06
    ("24.05", False, "fp32", {}, {"NVIDIA_TF32_OVERRIDE": "0"}),
    ("24.10", True, "fp32", {}, {"NVIDIA_TF32_OVERRIDE": "0"}),  # TensorRT inside ONNX Runtime: no switch
    ("24.10", False, "fp16", {}, {}),
])
def test_fp32_is_served_in_fp32_on_gpus(tiny_export, tmp_path, release, ort_tensorrt, precision, cuda, env,
                                        monkeypatch):
    """Served fp32 ran in TF32 on Ampere and newer (served != export past 1e-4): TF32 is turned off per target, by
    the cuda accelerator's use_tf32 where the onnxruntime backend takes it, else by the container's
    NVIDIA_TF32_OVERRIDE, which every launcher sets from the build record; and for --device tensorrt parity."""
    from tft.export.runtime import tf32_off_environment
    from tft.serve import server as server_mod
    from tft.serve.deploy import chart_values, kserve_manifest
    from tft.serve.layout import Layout, parse_pbtxt, to_pbtxt
    from tft.serve.options import BuildOptions
    from tft.serve.repository import build_repository

    opts = BuildOptions(name="m", backend="onnxruntime", device="gpu", ort_tensorrt=ort_tensorrt,
                        triton_image=f"{release}-py3")
    manifest = json.loads((tiny_export() / "manifest.json").read_text())
    layout = Layout(manifest, opts, precision=precision)
    model = parse_pbtxt(to_pbtxt(layout.model_config()))
    accelerators = {a.name: dict(a.parameters) for a in model.optimization.execution_accelerators
                    .gpu_execution_accelerator}
    assert accelerators.get("cuda", {}) == cuda and layout.tf32()[1] == env
    if precision == "fp32" and release == "24.10" and not ort_tensorrt:
        record = build_repository(tiny_export("b"), tmp_path / "repo", BuildOptions(
            name="m", backend="onnxruntime", device="gpu", ort_tensorrt=True))
        assert record["container_env"] == {"NVIDIA_TF32_OVERRIDE": "0"}
        assert chart_values(record, device="gpu")["env"] == {"NVIDIA_TF32_OVERRIDE": "0"}
        kserve_env = kserve_manifest(record, storage_uri="s3://b/r", device="gpu")[1]["spec"]["predictor"]["model"]["env"]
        assert {"name": "NVIDIA_TF32_OVERRIDE", "value": "0"} in kserve_env
        started = {}
        monkeypatch.setattr(server_mod.subprocess, "Popen", lambda cmd, **kw: started.update(kw) or _Stopped())
        monkeypatch.setattr(server_mod, "port_in_use", lambda *a: False)
        server_mod.TritonServer(tmp_path / "repo", log_file=tmp_path / "t.log").start()
        assert started["env"]["NVIDIA_TF32_OVERRIDE"] == "0"
        assert tf32_off_environment("tensorrt", "fp32") == {"NVIDIA_TF32_OVERRIDE": "0"}
        assert tf32_off_environment("tensorrt", "fp16") == tf32_off_environment("cuda", "fp32") == {}


class _Stopped:
    pid, returncode = 0, 0

    def poll(self):
        return 0


@pytest.mark.parametrize("image_python, ok", [("3.11", True), ("3.10", False)])
def test_the_dockerfile_refuses_pins_for_another_python(tmp_path, image_python, ok):
    """Pins are recorded only where the target runs this machine's Python (python_packages); on an image of another
    Python pip failed with a resolver error. The Dockerfile's RUN, run by sh as Docker runs it (python3 and pip
    stand-ins), says it in one line; ranges (a target of another Python) carry no header and pass."""
    import platform
    import stat
    import subprocess

    from tft.serve.repository import python_packages, write_requirements

    here = ".".join(platform.python_version().split(".")[:2])
    repo = tmp_path / "repo"
    repo.mkdir()
    write_requirements(repo, {"python_packages": python_packages("python")})  # pinned: this machine's Python
    requirements = (repo / "tft-requirements.txt").read_text()
    assert requirements.startswith(f"# for Python {here} ")
    run = (REPO / "deploy" / "Dockerfile").read_text().split("\nRUN ", 1)[1].split("\nEXPOSE", 1)[0]
    run = run.replace("\\\n", " ").replace("/tmp/tft-requirements.txt", str(repo / "tft-requirements.txt"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    version = here if ok else ("3.10" if here != "3.10" else "3.12")
    for name, body in (("python3", f"echo {version}"), ("pip", "echo installed")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(stat.S_IRWXU)
    proc = subprocess.run(["/bin/sh", "-c", run], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TRITON_VERSION": "24.10"})
    if ok:
        assert proc.returncode == 0 and "installed" in proc.stdout, proc.stderr
    else:
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
            f"tft-requirements.txt pins packages for Python {here}; this image runs Python {version}: build the "
            "repository with tft serve build --triton-image 24.10-py3, or use the image it was built for"]


def test_a_native_cpu_backend_without_threads_is_told_to_size_them_for_the_pod():
    from tft.serve.deploy import thread_note

    record = {"ensemble": "afqmc", "backend": "onnxruntime", "device": "cpu", "threads": 0}
    assert "rebuild it with `tft serve build --threads 2`" in thread_note(record, "2")
    assert thread_note({**record, "threads": 2}, "2") is None  # sized by the build
    assert thread_note({**record, "backend": "python"}, "2") is None  # the Python step reads the cgroup quota itself
    assert thread_note({**record, "device": "gpu"}, "2") is None
