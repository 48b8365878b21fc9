"""deploy/compose.yaml: what `tongban render compose` makes of the declarations, valid under the
Compose Specification's own JSON schema (offline), and the same processes as the Kubernetes
manifests: commands, settings, secrets by file, health through `tongban-probe`."""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from tongban import grpc_tls, store
from tongban.config import SERVICE_PORTS, load_settings
from tongban.ops import render
from tongban.ops.principals import declared
from tongban.pii import new_key_line
from tongban.pii_policy import SERVICES_WITH_KEYS, seals_for
from tongban.sharing import endpoints

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
K8S = ROOT / "deploy" / "k8s" / "base"
SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose-spec.json"
PROVIDERS = {f"datasharing-{p.replace('_', '-')}": p for p in endpoints.PROVIDERS}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def tongban_processes(compose: dict) -> dict[str, dict]:
    """The long-running processes of the Tongban image (not the broker, the store, the job)."""
    return {n: s for n, s in compose["services"].items() if s["image"] == render.IMAGE and "healthcheck" in s}


def settings_service(spec: dict) -> str:
    """The name a process's settings are loaded under (its console script without `tongban-`)."""
    return spec["command"][0].removeprefix("tongban-")


def test_checked_in_compose_file_is_what_the_declarations_render():
    assert COMPOSE.read_text() == render.render_compose(), "run: tongban render compose --out deploy/compose.yaml"


def test_compose_file_validates_against_the_compose_specification(compose, validator):
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize("break_it", [
    lambda c: c["services"]["intake"].update(helthcheck={"test": ["CMD", "true"]}),  # unknown field
    lambda c: c["services"]["kafka"].update(restart=["always"]),  # wrong type
    lambda c: c["services"]["routing"]["secrets"][0].update(targett="/x"),  # unknown field, nested
])
def test_the_validation_rejects_a_broken_file(compose, validator, break_it):
    broken = copy.deepcopy(compose)
    break_it(broken)
    assert list(validator.iter_errors(broken))


def test_the_services_and_providers_run_the_wheels_commands_and_are_probed_by_tongban_probe(compose):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    processes = tongban_processes(compose)
    assert set(processes) == set(SERVICE_PORTS) | set(PROVIDERS)
    ports = {**SERVICE_PORTS, **{name: endpoints.DEFAULT_PORTS[p] for name, p in PROVIDERS.items()}}
    for name, spec in processes.items():
        assert spec["command"][0] in scripts
        assert spec["healthcheck"]["test"] == ["CMD", "tongban-probe", "--port", str(ports[name])]
        assert spec["user"].split(":")[0] not in ("0", "root")
        assert spec["read_only"] is True
    for name, provider in PROVIDERS.items():
        assert processes[name]["command"] == ["tongban-datasharing", "serve", provider]
    # Every other healthcheck of a Tongban container is the probe too; the broker and the store
    # are not Tongban processes and check themselves.
    others = {n for n, s in compose["services"].items() if "healthcheck" in s} - set(processes)
    assert others == {"kafka", "mongo"}
    assert all(s["image"] != render.IMAGE for n, s in compose["services"].items() if n in others)


def _code_variables() -> tuple[set[str], set[str]]:
    """TONGBAN_* names the code reads: whole names, and prefixes of names it builds (f-strings)."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for path in [*(ROOT / "tongban").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) or "render" in path.name:
            continue  # the renderer writes names; only what the processes read counts
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(re.findall(r"^TONGBAN_[A-Z0-9_]+$", node.value))
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                if re.fullmatch(r"TONGBAN_[A-Z0-9_]+_", head):
                    prefixes.add(head)
    return names, prefixes


def test_every_variable_a_tongban_container_gets_is_one_tongban_reads(compose):
    names, prefixes = _code_variables()
    assert "TONGBAN_KAFKA_BOOTSTRAP" in names
    assert "TONGBAN_GRPC_PORT_" in prefixes
    unknown = {}
    for name, spec in compose["services"].items():
        if spec["image"] != render.IMAGE:
            continue
        for variable in spec.get("environment", {}):
            if variable not in names and not any(variable.startswith(p) for p in prefixes):
                unknown.setdefault(name, []).append(variable)
    assert unknown == {}


def test_the_settings_of_each_process_come_from_its_environment_and_mounted_secrets(compose, tmp_path: Path):
    """Load each process's settings from its compose environment, with its secrets placed where
    compose mounts them (under tmp_path): the variables take effect and name the mounted files."""
    for name, spec in tongban_processes(compose).items():
        root = tmp_path / name
        service = settings_service(spec)
        env = {k: v.replace("/etc/", f"{root}/etc/").replace("/run/", f"{root}/run/")
               for k, v in spec["environment"].items()}
        principal = env["TONGBAN_KAFKA_USERNAME"]
        for secret in spec["secrets"]:
            target = Path(f"{root}{secret['target']}")
            target.parent.mkdir(parents=True, exist_ok=True)
            if secret["source"] == "kafka-principals":
                target.write_text(f"admin=a\n{principal}=secret-of-{principal}\n")
            elif secret["source"].startswith("pii."):
                target.write_text(new_key_line() + "\n")
            else:
                target.write_text("certificate or key\n")
        settings = load_settings(service, env)
        assert settings.kafka_client_options()["bootstrap_servers"] == "kafka:9092"
        assert (settings.sasl_username, settings.sasl_password) == (principal, f"secret-of-{principal}")
        assert principal == f"tongban-{service}"
        assert principal in {p.name for p in declared()}  # the topics job gives it its SCRAM credential
        assert settings.mongo_uri == render.COMPOSE_MONGO_URI
        assert store.retryable_writes(settings.mongo_uri)
        assert settings.grpc_host == "0.0.0.0"
        assert settings.state_dir == Path(render.VAR_DIR) / "state"
        if service in SERVICES_WITH_KEYS:
            assert settings.pii_keys.party == service
            assert set(settings.pii_keys.sealing) == {service, *seals_for(service)}, name
        # The TLS files the server and its probe read are mounted where they look.
        tls = Path(env["TONGBAN_GRPC_TLS_DIR"])
        server = PROVIDERS.get(name, service)
        for path in (*grpc_tls.server_files(tls, server), *grpc_tls.client_files(tls, "tongban-monitor"),
                     tls / "ca.pem"):
            assert path.exists(), (name, path)


def test_secrets_come_from_the_var_layout_by_file_and_are_all_used(compose):
    declared = compose["secrets"]
    used = {s["source"] for spec in compose["services"].values() for s in spec.get("secrets", [])}
    assert used == set(declared)
    assert declared["kafka-principals"]["file"] == f"{render.COMPOSE_VAR}/kafka/principals.secrets"
    var_tls = grpc_tls.DEFAULT_TLS_DIR.relative_to(grpc_tls.paths.var_dir())
    for spec in compose["services"].values():
        for secret in spec.get("secrets", []):
            source = declared[secret["source"]]["file"]
            if secret["target"].startswith(render.TLS_DIR + "/"):
                assert source == f"{render.COMPOSE_VAR}/{var_tls}/{secret['target'][len(render.TLS_DIR) + 1:]}"
            elif secret["target"].startswith(render.PII_DIR + "/"):
                assert source == f"{render.COMPOSE_VAR}/pii/{Path(secret['target']).name}"
    # Secrets are files; nothing secret is written into the compose file itself.
    assert not [v for spec in compose["services"].values() for k, v in spec.get("environment", {}).items()
                if "PASSWORD" in k or k.rsplit("_", 1)[-1] == "KEYS"]


def test_compose_runs_what_the_kubernetes_manifests_run(compose):
    deployments = {d["metadata"]["name"]: d for p in sorted(K8S.glob("*.yaml"))
                   for d in yaml.safe_load_all(p.read_text()) if d and d["kind"] == "Deployment"}
    (config,) = [d for d in yaml.safe_load_all((K8S / "config.yaml").read_text()) if d]
    transport = {"TONGBAN_KAFKA_BOOTSTRAP", "TONGBAN_KAFKA_SECURITY", "TONGBAN_KAFKA_CAFILE"}  # Strimzi's TLS
    for service in SERVICE_PORTS:
        pod = deployments[f"tongban-{service}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        spec = compose["services"][service]
        assert spec["command"] == container["command"]
        assert spec["healthcheck"]["test"][1:] == container["readinessProbe"]["exec"]["command"]
        assert spec["user"] == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        env = spec["environment"]
        assert {k: v for k, v in config["data"].items() if k not in transport}.items() <= env.items()
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert plain.items() <= env.items()
        targets = {s["target"] for s in spec["secrets"]}
        (tls,) = [v["secret"] for v in pod["volumes"] if v["name"] == "grpc-tls"]
        assert {f"{render.TLS_DIR}/{i['path']}" for i in tls["items"]} <= targets


def test_the_broker_is_the_repos_scram_broker_and_topics_job_is_make_topics(compose):
    kafka = compose["services"]["kafka"]
    pom = (ROOT / "infra" / "pom.xml").read_text()
    assert kafka["image"].endswith(":" + re.search(r"<kafka.version>([^<]+)<", pom).group(1))
    content = compose["configs"]["kafka-server"]["content"]
    props = dict(line.split("=", 1) for line in content.splitlines() if line and not line.startswith("#"))
    settings = [line.split("=", 1)[0].replace("@INTER_BROKER_LISTENER_LC@", "sasl_plaintext")
                for template in ("server.properties.in", "auth.properties.in")
                for line in (ROOT / "infra" / "kafka" / template).read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert sorted(settings) == sorted(props)  # every setting of the local broker, no other
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["advertised.listeners"] == f"SASL_PLAINTEXT://{render.COMPOSE_BOOTSTRAP}"
    # Every placeholder is filled in but the admin's secret, which the broker's start fills in.
    assert set(re.findall(r"@([A-Z_]+)@", content)) == {"ADMIN_PASSWORD"}
    # Only the admin is made when the storage is formatted; the topics job makes the rest.
    script = kafka["entrypoint"][-1]
    assert script.count("--add-scram") == 1
    assert "name=admin," in script
    topics = compose["services"]["topics"]
    make_topics = re.search(r"^topics:.*\n\t\$\(PY\) (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert " ".join(topics["command"][1:]) == make_topics
    assert topics["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    for name in tongban_processes(compose):
        assert compose["services"][name]["depends_on"]["topics"] == {"condition": "service_completed_successfully"}
        assert compose["services"][name]["environment"]["TONGBAN_KAFKA_BOOTSTRAP"] == render.COMPOSE_BOOTSTRAP
