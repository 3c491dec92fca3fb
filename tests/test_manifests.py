"""The deployment examples (``examples/docker-compose.yml``, ``examples/kubernetes``) checked
against the collector and its image: every ``COLLECTOR_*`` variable is a setting with a valid
value, the ports and probe paths are the ones it serves, the WAL is on the volume, the grace
period outlasts the shutdown timeout, and a listener beyond loopback always has a tokens file.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.cli import _parser
from collector.config import ENV_PREFIX, Config
from tests.conftest import ROOT, CollectorProcess

EXAMPLES = ROOT / "examples"
MANIFESTS = sorted((EXAMPLES / "kubernetes").rglob("*.yaml"))
IMAGE = "otlp-delta-collector"


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _seconds(value: str | int) -> float:
    m = re.fullmatch(r"(\d+)(s|m)?", str(value))
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def _loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _check_collector(env: dict[str, str], mounts: dict[str, str], grace: float) -> Config:
    """What holds for any collector container: ``env`` over the image's, ``mounts`` path →
    volume name."""
    names = {ENV_PREFIX + f.name.upper() for f in Config.settings()}
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in names)
    assert not unknown, f"not settings: {unknown}"
    config = Config.load({}, image_env() | env)  # every value parses
    wal = str(config.wal_dir)
    assert any(wal == m or wal.startswith(m.rstrip("/") + "/") for m in mounts), (wal, mounts)
    assert grace > config.shutdown_timeout, (grace, config.shutdown_timeout)
    exposed = [a for a in (config.http, config.grpc) if a is not None and not _loopback(a.host)]
    if exposed:
        assert config.tokens_file is not None, "a listener beyond loopback needs a tokens file"
        tokens = str(config.tokens_file)
        assert any(tokens == m or tokens.startswith(m.rstrip("/") + "/") for m in mounts), (
            tokens,
            mounts,
        )
    return config


def _containers(doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = doc["spec"]
    pod = spec["template"]["spec"] if "template" in spec else spec["jobTemplate"]["spec"]
    pod = pod.get("template", {}).get("spec", pod)
    return pod, pod["containers"]


def test_the_examples_are_all_checked() -> None:
    kinds = {d["kind"] for path in MANIFESTS for d in _documents(path)}
    assert kinds >= {"StatefulSet", "Service", "Secret", "PodDisruptionBudget", "Deployment",
                     "CronJob", "Kustomization"}  # fmt: skip
    for kustomization in (EXAMPLES / "kubernetes").rglob("kustomization.yaml"):
        listed = set(_documents(kustomization)[0]["resources"])
        present = {p.name for p in kustomization.parent.glob("*.yaml")} - {kustomization.name}
        assert listed == present, kustomization


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_each_kubernetes_collector_matches_the_collector(
    path: Path, collector: CollectorProcess
) -> None:
    for doc in _documents(path):
        if doc["kind"] not in ("StatefulSet", "Deployment", "CronJob"):
            continue
        pod, containers = _containers(doc)
        for container in containers:
            if not container["image"].startswith(IMAGE):
                continue
            env = {e["name"]: e.get("value", "from-the-pod") for e in container.get("env", [])}
            args = container.get("args", ["serve"])
            _parser().parse_args(args)  # the command exists, its flags too
            if args[0] != "serve":
                continue
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert all(name in volumes or name in claims for name in mounts.values())
            grace = pod.get("terminationGracePeriodSeconds", 30)
            config = _check_collector(env, mounts, grace)
            # The WAL's volume outlives the container: a claim per replica, or the pod's emptyDir.
            wal_volume = next(n for m, n in mounts.items() if str(config.wal_dir).startswith(m))
            assert wal_volume in claims or "emptyDir" in volumes[wal_volume]
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            assert config.http is not None
            if ports:
                assert ports == {"otlp-http": config.http.port, "otlp-grpc": config.grpc.port}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe in container:
                    get = container[probe]["httpGet"]
                    assert ports.get(get["port"], get["port"]) == config.http.port
                    with urllib.request.urlopen(collector.url(get["path"])) as answer:
                        assert answer.status == 200, get["path"]
            if _loopback(config.http.host):  # a sidecar: its agents must be in the same pod
                agents = [c for c in containers if c is not container]
                endpoints = {e["value"] for c in agents for e in c.get("env", [])
                             if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT"}  # fmt: skip
                assert endpoints == {f"http://127.0.0.1:{config.http.port}"}


def test_the_central_service_points_at_the_replicas_ports() -> None:
    central = EXAMPLES / "kubernetes" / "central"
    (service,) = _documents(central / "service.yaml")
    (statefulset,) = _documents(central / "statefulset.yaml")
    _, (container,) = _containers(statefulset)
    named = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} == named
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318}
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (pdb,) = _documents(central / "pdb.yaml")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    env = {e["name"]: e for e in container["env"]}
    # A stable identity per replica, so that a restarted replica replays its WAL as itself.
    assert env["COLLECTOR_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_docker_compose_matches_the_collector() -> None:
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())
    collector = compose["services"]["collector"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in collector["volumes"]}
    grace = _seconds(collector["stop_grace_period"])
    config = _check_collector(collector["environment"], mounts, grace)
    assert config.http is not None
    agent = compose["services"]["agent"]["environment"]
    assert agent["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://collector:{config.http.port}"
    assert "Authorization=Bearer" in agent["OTEL_EXPORTER_OTLP_LOGS_HEADERS"]


def test_the_image_default_is_a_sidecar_on_loopback() -> None:
    config = Config.load({}, image_env())
    assert config.http is not None and config.grpc is not None
    assert _loopback(config.http.host) and _loopback(config.grpc.host)
    assert (config.http.port, config.grpc.port) == (4318, 4317)
    assert str(config.wal_dir).startswith("/data/") and config.warehouse.startswith("/data/")
    assert "VOLUME /data" in (ROOT / "Dockerfile").read_text()
