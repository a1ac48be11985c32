"""The container files agree with the code: compose services, ports, names of settings,
images, commands, monitoring; and `.env.example` lists exactly the settings with their defaults.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORE = {"gateway", "matting-api", "comparison-api", "matting-worker-1", "matting-worker-2",
        "matting-worker-3", "comparison-worker-1", "comparison-worker-2"}
MONITORING = {"prometheus", "grafana"}
INIT = "data-init"
LIGHT = {"gateway", "matting-api", "comparison-api"}
ENGINES = CORE - LIGHT
# compose-only variables: where the gateway is published, the image's base, Grafana's password
EXTERNAL_VARS = {"GRAFANA_ADMIN_PASSWORD", "GATEWAY_PUBLISH", "BASE_IMAGE"}
DATA_MOUNT = "${DATA_HOST_PATH:-./data}:/app/data"
FIELDS = {name.upper() for name in Settings.model_fields}


class ComposeLoader(yaml.SafeLoader):
    """Compose's own tags: `!reset` (drop the base file's value) and `!override`."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
ComposeLoader.add_constructor(
    "!override", lambda loader, node: loader.construct_mapping(node)  # type: ignore[arg-type]
    if isinstance(node, yaml.MappingNode) else loader.construct_sequence(node))  # type: ignore[arg-type]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svcs: dict[str, dict[str, Any]] = compose["services"]
    return svcs


def port_of(command: list[str], default: int) -> int:
    return int(command[command.index("--port") + 1]) if "--port" in command else default


def test_every_service_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == CORE | MONITORING | {INIT}
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"]


def test_only_the_gateway_is_published(services: dict[str, dict[str, Any]]) -> None:
    published = {n for n, s in services.items() if s.get("ports")}
    assert published == {"gateway", "grafana"}
    assert services["gateway"]["ports"] == ["${GATEWAY_PUBLISH:-8000}:8000"]
    assert all(p.startswith("127.0.0.1:") for p in services["grafana"]["ports"])
    # The CPU variant (an override file) publishes nothing more and keeps the networks.
    for name, svc in load("docker-compose.cpu.yml")["services"].items():
        assert "ports" not in svc and "networks" not in svc, name


def test_health_restart_volume_network(compose: dict[str, Any],
                                       services: dict[str, dict[str, Any]]) -> None:
    assert compose["networks"]["internal"]["internal"] is True
    for name, svc in services.items():
        if name == INIT:
            continue
        assert svc["restart"] == "unless-stopped", name
        assert svc["healthcheck"]["test"][0] == "CMD", name
        assert "internal" in svc["networks"], name
        assert ("public" in svc["networks"]) == (name in {"gateway", "grafana"}), name
    for name in CORE:
        svc = services[name]
        assert DATA_MOUNT in svc["volumes"], name
        assert svc["environment"]["DATA_DIR"] == "/app/data"
        # the healthcheck asks the port the service listens on
        port = port_of(svc["command"], 8000)
        assert f"http://127.0.0.1:{port}/health" in svc["healthcheck"]["test"][-1], name
    assert "data" not in compose["volumes"]  # a bind mount of DATA_HOST_PATH, not Docker's


def test_the_data_folder_is_the_users_and_handed_to_the_services(
        services: dict[str, dict[str, Any]]) -> None:
    """DATA_HOST_PATH (default ./data) is bind-mounted everywhere; `data-init` runs once as
    root to give it to the services' uid, and every service waits for it (directly, or
    through what it depends on)."""
    init = services[INIT]
    assert init["volumes"] == [DATA_MOUNT]
    assert init["user"] == "0" and init["restart"] == "no" and init["network_mode"] == "none"
    assert init["command"] == ["find", "/app/data", "!", "-user", "10001",
                               "-exec", "chown", "10001:10001", "{}", "+"]

    def waits_for_init(name: str) -> bool:
        deps = services[name].get("depends_on", {})
        return deps.get(INIT) == {"condition": "service_completed_successfully"} or any(
            waits_for_init(d) for d in deps if d in CORE)
    assert all(waits_for_init(n) for n in CORE)
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    assert "useradd --uid 10001" in dockerfile


def test_gpu_goes_to_the_matting_workers_only(services: dict[str, dict[str, Any]]) -> None:
    for name in CORE:
        devices = services[name].get("deploy", {}).get("resources", {}).get(
            "reservations", {}).get("devices")
        if name.startswith("matting-worker"):
            assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
            env = services[name]["environment"]
            assert env["CUDA_VISIBLE_DEVICES"] == "0"
            assert 0 < float(re.sub(r"\$\{\w+:-(.*)\}", r"\1", env["GPU_MEMORY_FRACTION"])) * 3 <= 1
        else:
            assert devices is None, name


def test_environment_names_are_settings(services: dict[str, dict[str, Any]]) -> None:
    for name in CORE:
        unknown = set(services[name]["environment"]) - FIELDS
        assert not unknown, f"{name}: {unknown} are not fields of shared.settings.Settings"
    for file in ("docker-compose.yml", "docker-compose.cpu.yml"):
        used = set(re.findall(r"\$\{(\w+)", (ROOT / file).read_text()))
        assert used - FIELDS <= EXTERNAL_VARS, file


def test_commands_ports_and_worker_lists_agree(services: dict[str, dict[str, Any]]) -> None:
    for name in CORE:
        cmd = services[name]["command"]
        assert cmd[:2] == ["python", "-m"]
        assert importlib.util.find_spec(cmd[2]) is not None, f"{name}: no package {cmd[2]}"
    for kind, api, api_port in (("matting", "matting-api", 8001),
                                ("comparison", "comparison-api", 8002)):
        workers = sorted(n for n in CORE if n.startswith(f"{kind}-worker"))
        urls = []
        for w in workers:
            cmd, env = services[w]["command"], services[w]["environment"]
            assert cmd[2] == f"{kind}_worker" and cmd[cmd.index("--worker-id") + 1] == w
            assert env["WORKER_ID"] == w
            url = f"http://{w}:{port_of(cmd, 0)}"
            assert env["PUBLIC_URL"] == url
            assert env[f"{kind.upper()}_API_URL"] == f"http://{api}:{api_port}"
            urls.append(url)
        assert services[api]["environment"]["WORKER_URLS"].split(",") == urls
        assert port_of(services[api]["command"], 0) == api_port
        assert set(services[api]["depends_on"]) == set(workers)
    assert {s: c["condition"] for s, c in services["gateway"]["depends_on"].items()} == {
        "matting-api": "service_healthy", "comparison-api": "service_healthy"}


def stages(dockerfile: str) -> dict[str, str]:
    """The Dockerfile's stages by name: the text of each `FROM … AS name` up to the next."""
    parts = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    return {re.search(r" AS (\S+)", p.splitlines()[0]).group(1): p  # type: ignore[union-attr]
            for p in parts}


def test_one_dockerfile_two_images(services: dict[str, dict[str, Any]]) -> None:
    """The gateway and the balancers run the light image (no engine), the workers the
    engines image; the CPU override changes only the workers' image and accelerator."""
    cpu = load("docker-compose.cpu.yml")["services"]
    assert set(cpu) == ENGINES
    for name in CORE | {INIT}:
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/Dockerfile"
        if name in ENGINES:
            assert build["target"] == "engines" and build["args"]["ACCELERATOR"] == "cuda"
            assert services[name]["image"] == "mattepipe-engines:cuda"
            assert cpu[name]["build"]["target"] == "engines"
            assert cpu[name]["build"]["args"]["ACCELERATOR"] == "cpu"
            assert cpu[name]["image"] == "mattepipe-engines:cpu"
        else:
            assert build["target"] == "light"
            assert services[name]["image"] == "mattepipe-light:latest"
        if name.startswith("matting-worker"):
            assert "deploy" in cpu[name] and cpu[name]["deploy"] is None  # !reset

    text = (ROOT / "docker/Dockerfile").read_text()
    st = stages(text)
    for target, packages in (("light", {"shared", "gateway", "matting_api", "comparison_api"}),
                             ("engines", {"shared", "matting_worker", "comparison_worker"})):
        copied = set(re.findall(r"^COPY (\w+) \./\1$", st[target], re.M))
        assert copied == packages, target  # never mattepipe/ (no service imports it)
        assert re.search(r"^USER app$", st[target], re.M), f"{target} must not run as root"
        # the final images take only the virtualenv from the build stages: no build-extra
        assert "build-extra" not in st[target] and "pip-install" not in st[target], target
        assert st[target].startswith("os AS "), target
    for name in CORE:
        command = services[name]["command"]
        target = "engines" if name in ENGINES else "light"
        assert command[2] in {p for p in re.findall(r"^COPY (\w+) ", st[target], re.M)}, name
    # no vendor's registry in the GPU image: PyPI's torch and onnxruntime-gpu bring CUDA
    assert "nvidia/cuda" not in text and "ARG BASE_IMAGE=debian:bookworm-slim" in text
    assert "# syntax=" not in text  # no frontend image to pull where no registry answers
    make = (ROOT / "Makefile").read_text()
    torch = re.search(r"^TORCH_VERSION := (\S+)$", make, re.M).group(1)  # type: ignore[union-attr]
    assert f"ARG TORCH_VERSION={torch}" in text


def test_prometheus_scrapes_every_service(services: dict[str, dict[str, Any]]) -> None:
    prom = yaml.safe_load((ROOT / "docker/prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    expected = {f"{n}:{port_of(services[n]['command'], 8000)}" for n in CORE}
    assert targets == expected
    mounts = services["prometheus"]["volumes"]
    assert "./docker/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_dashboard_and_provisioning(services: dict[str, dict[str, Any]]) -> None:
    dash = json.loads((ROOT / "docker/grafana/dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in ("mattepipe_tasks", "mattepipe_stage_seconds_bucket", "mattepipe_queue_depth",
                   "mattepipe_http_in_flight", "mattepipe_batch_size_count",
                   "mattepipe_gpu_memory_allocated_bytes"):
        assert metric in exprs
    ds = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml")
                        .read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"
    assert {p["datasource"]["uid"] for p in dash["panels"]} == {ds["uid"]}
    prov = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/mattepipe.yml")
                          .read_text())["providers"][0]
    mounts = services["grafana"]["volumes"]
    assert any(m.startswith("./docker/grafana/dashboard.json:" + prov["options"]["path"])
               for m in mounts)
    for mount in mounts:
        assert (ROOT / mount.split(":")[0]).exists(), mount


def env_example_names() -> list[str]:
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")
    return [m.group(1) for line in (ROOT / ".env.example").read_text().splitlines()
            if (m := pattern.match(line))]


def test_env_example_lists_exactly_the_settings() -> None:
    names = env_example_names()
    assert len(names) == len(set(names)), "a setting is listed twice"
    missing, extra = FIELDS - set(names), set(names) - FIELDS
    assert not missing and not extra, f"add to .env.example: {missing}; remove: {extra}"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FIELDS:
        monkeypatch.delenv(name, raising=False)
    from_file = Settings(_env_file=ROOT / ".env.example")  # type: ignore[call-arg]
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_file.model_dump() == defaults.model_dump()


def test_grafana_has_no_default_admin_password(services: dict[str, dict[str, Any]]) -> None:
    env = services["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] in ("${GRAFANA_ADMIN_PASSWORD:-}",
                                                 "${GRAFANA_ADMIN_PASSWORD}")
    for name in ("docker-compose.yml", "docker-compose.cpu.yml"):
        assert not re.search(r"GRAFANA_ADMIN_PASSWORD:?-\w", (ROOT / name).read_text()), name
    # Grafana itself would fall back to admin/admin on an empty password: the entrypoint stops
    # it first, and only then hands over to the image's own /run.sh.
    script = " ".join(services["grafana"]["entrypoint"])
    assert 'test -n "$$GF_SECURITY_ADMIN_PASSWORD"' in script and "exit 1" in script
    assert script.index("exit 1") < script.index("exec /run.sh")


def test_the_internal_plane_needs_its_token(compose: dict[str, Any],
                                            services: dict[str, dict[str, Any]]) -> None:
    """Every service gets INTERNAL_TOKEN from the environment, and compose refuses to start
    without one (`${INTERNAL_TOKEN:?…}`); balancers and workers bind inside their network;
    Prometheus scrapes their /metrics with the token, mounted as a secret."""
    for name in CORE:
        env = services[name]["environment"]
        assert re.fullmatch(r"\$\{INTERNAL_TOKEN:\?[^}]+\}", env["INTERNAL_TOKEN"]), name
        assert env["INTERNAL_HOST"] == "0.0.0.0", name
    assert compose["secrets"]["internal_token"] == {"environment": "INTERNAL_TOKEN"}
    assert services["prometheus"]["secrets"] == ["internal_token"]
    prom = yaml.safe_load((ROOT / "docker/prometheus.yml").read_text())
    for job in prom["scrape_configs"]:
        if job["job_name"] != "gateway":
            assert job["authorization"] == {
                "type": "Bearer", "credentials_file": "/run/secrets/internal_token"}, job
