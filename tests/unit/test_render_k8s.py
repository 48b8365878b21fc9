"""deploy/: the Kubernetes manifests are what `tongban render k8s` makes of the declarations,
they validate offline against the Kubernetes schemas, and the Containerfile builds an image
whose commands are the wheel's entry points."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tongban import grpc_tls
from tongban.config import SERVICE_PORTS
from tongban.ops import render
from tongban.ops.topics import load_declared

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES = "1.33"  # the schema version manifests are checked against (kubernetes-validate bundles it)
CORE_KINDS = {"Deployment", "Service", "ConfigMap"}


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def every_document() -> list[tuple[str, dict]]:
    return [(str(p.relative_to(K8S)), d) for p in sorted(K8S.rglob("*.yaml")) for d in documents(p)]


def by_kind(kind: str, where: str = "base") -> list[dict]:
    return [d for p in sorted((K8S / where).glob("*.yaml")) for d in documents(p) if d["kind"] == kind]


def test_checked_in_manifests_are_what_the_declarations_render(tmp_path: Path):
    sizes = json.loads((K8S / "base" / "sizing.json").read_text())
    render.render_k8s(tmp_path, sizes)
    fresh = {str(p.relative_to(tmp_path)): p.read_text() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    checked_in = {str(p.relative_to(K8S)): p.read_text() for p in sorted(K8S.rglob("*")) if p.is_file()}
    assert sorted(fresh) == sorted(checked_in)
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert stale == [], "run: tongban render k8s --out deploy/k8s"


def test_core_resources_validate_against_the_kubernetes_schemas():
    kinds = {d["kind"] for _, d in every_document()}
    # Custom resources: Strimzi's are checked against their CRDs in test_render_strimzi.py; kustomize's
    # Kustomization and the Prometheus operator's ServiceMonitor have no schema here.
    assert kinds - CORE_KINDS == {"Kustomization", "ServiceMonitor", "KafkaTopic", "KafkaUser"}
    checked = 0
    for where, document in every_document():
        if document["kind"] in CORE_KINDS:
            try:
                kubernetes_validate.validate(document, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{where} {document['kind']} {document['metadata']['name']}: {exc}") from exc
            checked += 1
    assert checked == 2 * len(SERVICE_PORTS) + 3  # Deployment and Service each, metrics' two, the ConfigMap


def test_the_validation_rejects_a_mistyped_field():
    deployment = copy.deepcopy(by_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exex"] = {"command": ["x"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_each_service_runs_on_no_more_replicas_than_its_inputs_have_partitions():
    overlay = documents(K8S / "overlays" / "production" / "kustomization.yaml")[0]
    counts = {r["name"]: r["count"] for r in overlay["replicas"]}
    production = load_declared("", overlay="production")
    assert set(counts) == {f"tongban-{s}" for s in SERVICE_PORTS}
    for service in SERVICE_PORTS:
        partitions = [s.partitions for s in production if service in s.readers or f"tongban-{service}" in s.readers]
        assert partitions, service
        assert 1 <= counts[f"tongban-{service}"] <= min(partitions)
    assert all(d["spec"]["replicas"] == 1 for d in by_kind("Deployment"))


def test_deployments_probe_grpc_health_and_take_secrets_by_reference():
    sizes = json.loads((K8S / "base" / "sizing.json").read_text())["memory_request_mb"]
    services = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    for service, port in SERVICE_PORTS.items():
        pod = services[f"tongban-{service}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == [f"tongban-{service}"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"] == ["tongban-probe", "--port", str(port)]
        env = {e["name"]: e for e in container["env"]}
        assert env["TONGBAN_KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"tongban-{service}",
                                                                              "key": "password"}
        assert "secretKeyRef" in env["TONGBAN_MONGO_URI"]["valueFrom"]
        assert not any("value" in e and "PASSWORD" in e["name"] for e in container["env"])
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert f"tongban-grpc-tls-{service}" in secrets
        (tls,) = [v["secret"] for v in pod["volumes"] if v["name"] == "grpc-tls"]
        server, monitor = grpc_tls.server_files(Path("."), service), grpc_tls.client_files(Path("."), "tongban-monitor")
        assert {i["path"] for i in tls["items"]} == {"ca.pem", *(str(f) for f in (*server, *monitor))}
        assert (f"tongban-pii-{service}" in secrets) == (service in ("intake", "verification", "delivery", "routing"))
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["resources"]["requests"]["memory"] == f"{sizes[service]}Mi"
    grpc_ports = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"] if p["name"] == "grpc"}
                  for d in by_kind("Service")}
    assert all(grpc_ports[f"tongban-{s}"] == {p} for s, p in SERVICE_PORTS.items())
    (monitor,) = by_kind("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_sizing_comes_from_the_bench_peak_rss(tmp_path: Path):
    bench = tmp_path / "latest.json"
    bench.write_text(json.dumps({"run": {"started": "t", "commit": "c"},
                                 "details": {"pipeline": {"peak_rss_mb": {"intake": 237.2}}}}))
    sizes = render.sizing(bench)["memory_request_mb"]
    assert sizes["intake"] == 384  # 237.2 x 1.5, rounded up to 32 MiB
    assert sizes["routing"] == render.DEFAULT_MEMORY_MB
    assert render.sizing(tmp_path / "absent.json")["source"] == "defaults"


def test_containerfile_is_multi_stage_non_root_and_runs_the_wheels_commands():
    text = (DEPLOY / "Containerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert len(stages) >= 2
    final = text.split(f"AS {stages[-1]}", 1)[1]
    (user,) = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root")
    assert "COPY --from=build /wheels" in final
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    commands = {c for d in by_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"][0]["command"][:1]}
    probes = {d["spec"]["template"]["spec"]["containers"][0].get("readinessProbe", {}).get("exec", {})
              .get("command", [None])[0] for d in by_kind("Deployment")} - {None}
    assert commands | probes <= set(scripts)
