"""The Kubernetes manifests: they parse, each overlay renders with kustomize, and every custom resource validates
against the upstream CRD schema in ../shared/k8s-schemas (KubeRay, milvus-operator, the Prometheus Operator)."""

import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from common.errors import BadInput
from tests.conftest import SHARED

K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir())
CRDS = {
    ("ray.io/v1", "RayJob"): "kuberay/ray.io_rayjobs.yaml",
    ("ray.io/v1", "RayService"): "kuberay/ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "kuberay/ray.io_rayclusters.yaml",
    ("milvus.io/v1beta1", "Milvus"): "milvus-operator/milvus.io_milvuses.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator/monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml",
}


def render(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return _render(overlay)


@cache
def _render(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@cache
def crd_schema(api_version: str, kind: str) -> dict:
    root = SHARED / "k8s-schemas"
    if not root.is_dir():
        pytest.skip(f"CRD schemas not found at {root} (../shared is absent on a fresh machine)")
    version = api_version.split("/")[1]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((root / CRDS[(api_version, kind)]).read_text(), Loader=loader)
    return strict(next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"])


def strict(schema: dict) -> dict:
    """The schema, refusing fields it does not name: the API server would silently prune a misspelt one (the
    way `kubectl apply --validate=strict` refuses it), so a typo here must fail, not vanish."""
    schema = dict(schema)
    if "properties" in schema and "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {name: strict(sub) for name, sub in schema[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    return schema


def test_every_manifest_parses():
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_custom_resources_validate(overlay):
    docs = render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Milvus", "PersistentVolumeClaim", "PodMonitor", "PodMonitor", "PrometheusRule",
                     "RayJob", "RayJob", "RayJob", "RayService", "Service", "StatefulSet"]  # the last two: Redis
    checked = 0
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRDS:
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in jsonschema.Draft7Validator(crd_schema(*key)).iter_errors(doc)]
            assert not errors, (doc["metadata"]["name"], errors[:5])
            checked += 1
    assert checked == 8  # Milvus, three RayJobs, the RayService, the two PodMonitors, the PrometheusRule


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_comes_from_the_one_configmap(overlay):
    docs = render(overlay)
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(config["data"]) >= {"ARCMATCH_MILVUS_URI", "ARCMATCH_GALLERY", "ARCMATCH_MODEL"}
    from jobs.settings import Settings

    for name in config["data"]:  # every key is a setting the CLI/API reads, not a second copy under another name
        field = name.removeprefix("ARCMATCH_").lower()
        assert field in Settings.model_fields, name  # by its own name: ARCMATCH_GALLERY, not ARCMATCH_COLLECTION
    for doc in docs:
        if doc["kind"] not in ("RayJob", "RayService"):
            continue
        cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
        pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
        for pod in pods:
            for container in pod["template"]["spec"]["containers"]:
                refs = [e.get("configMapRef", {}).get("name") for e in container.get("envFrom", [])]
                assert config["metadata"]["name"] in refs, (doc["metadata"]["name"], container["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_can_write_where_the_configuration_says_it_writes(overlay):
    """The audit trail and the face archive are written by the API's replicas: their volume must not be
    mounted read-only (a read-only /data failed every enrollment's archive write and every audit line)."""
    docs = render(overlay)
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    written = [config[k] for k in ("ARCMATCH_AUDIT_DIR", "ARCMATCH_ARCHIVE_URI") if "://" not in config.get(k, "://")]
    assert written  # both on the shared volume in this deployment
    service = next(d for d in docs if d["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    for pod in [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]:
        for container in pod["template"]["spec"]["containers"]:
            for path in written:
                mount = max((m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"])),
                            key=lambda m: len(m["mountPath"]), default=None)
                assert mount is not None and not mount.get("readOnly"), (container["name"], path)


def test_serve_config_points_at_a_real_builder():
    from jobs.api.serve import app_builder

    service = yaml.safe_load((K8S / "base" / "rayservice-api.yaml").read_text())
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "jobs.api.serve:app_builder"
    with pytest.raises(BadInput, match="unknown arcmatch serve args"):
        app_builder({**app["args"], "replicas": 3})


def test_the_schema_check_catches_a_wrong_field():
    job = next(d for d in render("dev") if d["kind"] == "RayJob")
    broken = {**job, "spec": {**job["spec"], "shutdownAfterJobFinishes": "yes"}}
    assert list(jsonschema.Draft7Validator(crd_schema("ray.io/v1", "RayJob")).iter_errors(broken))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_monitor_finds_the_api_pods_and_their_port(overlay):
    """The PodMonitor selects by labels the RayService's API worker pods carry, on a port they name and the one
    ARCMATCH_METRICS_PORT tells the replicas to serve on: a selector that matches nothing scrapes nothing, silently.
    `ray.io/node-type` is KubeRay's own label on every Ray pod."""
    docs = render(overlay)
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    monitor = next(d for d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"].endswith("arcmatch-api"))
    wanted = monitor["spec"]["selector"]["matchLabels"]
    cluster = next(d for d in docs if d["kind"] == "RayService")["spec"]["rayClusterConfig"]
    matched = []
    for group in cluster["workerGroupSpecs"]:
        template = group["template"]
        labels = {**template.get("metadata", {}).get("labels", {}), "ray.io/node-type": "worker"}
        if all(labels.get(k) == v for k, v in wanted.items()):
            matched.append(group["groupName"])
            ports = {p.get("name"): p["containerPort"] for c in template["spec"]["containers"]
                     for p in c.get("ports", [])}
            [endpoint] = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
            assert ports.get(endpoint) == int(config["ARCMATCH_METRICS_PORT"]), group["groupName"]
    assert matched == ["api"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_jobs_pod_monitor_finds_every_jobs_driver_on_the_port_the_configmap_names(overlay):
    """Each RayJob's head (where `arcmatch ...` runs as the job's driver) carries the labels and the named port the
    jobs' PodMonitor selects, and that port is the one ARCMATCH_JOB_METRICS_PORT tells the job to serve on."""
    docs = render(overlay)
    monitor = next(d for d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"].endswith("arcmatch-jobs"))
    wanted = monitor["spec"]["selector"]["matchLabels"]
    [port_name] = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    jobs = [d for d in docs if d["kind"] == "RayJob"]
    assert len(jobs) == 3
    for job in jobs:
        template = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
        labels = {**template.get("metadata", {}).get("labels", {}), "ray.io/node-type": "head"}
        assert all(labels.get(k) == v for k, v in wanted.items()), job["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert ports[port_name] == int(config["ARCMATCH_JOB_METRICS_PORT"]), job["metadata"]["name"]



@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_cluster_is_set_to_survive_a_machine_and_its_head(overlay):
    """What docs/deploy.md's survival table relies on: two API pods at least, kept on different machines; Serve's
    health checks for the arcmatch deployment; the GCS kept in a Redis that the render holds, on the Service's port,
    with the password from the Secret the Redis itself reads. (The dev overlay runs one API pod, by choice.)"""
    docs = render(overlay)
    service = next(d for d in docs if d["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    [api] = cluster["workerGroupSpecs"]
    assert api["minReplicas"] >= (1 if overlay == "dev" else 2)
    terms = api["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = api["template"]["metadata"]["labels"].items()
    assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" and
               t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels for t in terms)
    [deployment] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["deployments"]
    assert deployment["name"] == "arcmatch"
    assert deployment["health_check_period_s"] <= deployment["health_check_timeout_s"]

    store = cluster["gcsFaultToleranceOptions"]
    host, port = store["redisAddress"].removeprefix("redis://").split(":")
    redis_service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host)
    assert int(port) in [p["port"] for p in redis_service["spec"]["ports"]]
    redis = next(d for d in docs if d["kind"] == "StatefulSet" and
                 d["spec"]["template"]["metadata"]["labels"].items() >= redis_service["spec"]["selector"].items())
    secret = store["redisPassword"]["valueFrom"]["secretKeyRef"]
    read = [e["valueFrom"]["secretKeyRef"] for c in redis["spec"]["template"]["spec"]["containers"]
            for e in c.get("env", []) if "valueFrom" in e]
    assert secret in read


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_serve_proxy_answers_a_request_its_replica_died_on_503(overlay):
    """Ray Serve's proxy reads its middleware's import path from the node's environment when it starts: every pod
    of the API's cluster carries it, and it names the middleware the suite tests (tests/jobs/api/test_proxy.py)."""
    from jobs.api.proxy import PROXY_ENV

    service = next(d for d in render(overlay) if d["kind"] == "RayService")
    cluster = service["spec"]["rayClusterConfig"]
    for pod in [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]:
        [container] = pod["template"]["spec"]["containers"]
        assert PROXY_ENV.items() <= {e["name"]: e.get("value") for e in container.get("env", [])}.items()
