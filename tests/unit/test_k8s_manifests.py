"""The Kubernetes manifests of deploy/k8s (issue 15, part 5), offline: every resource
against the schemas of a pinned Kubernetes version in strict mode (kubernetes-validate
ships them; an unknown or misspelt field fails), and the cross-references a schema
cannot see, read through ponder's own CLI parser and settings loader: the ponder
container's arguments and its ConfigMap TOML give the settings it would run with, and
the probes, ports, grace period, engine URL and the upstream's flags must agree with
them. No cluster is involved; applying the set to one is not tested here.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from server.cli import _parser, overrides_from_args
from server.settings import Settings, load_settings, model_preset

# Pinned: a release still in support when this was written whose schemas the package
# ships; the manifests use nothing newer (the preStop sleep action is GA in 1.34).
KUBERNETES = "1.34"
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "k8s"
# After ponder's drain, uvicorn's own graceful shutdown (server/cli.py serve) may take this long.
AFTER_DRAIN = 10


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted(DEPLOY.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


DOCS = _documents()
# kustomization.yaml is kustomize's, not an API resource: no schema, no name.
(KUSTOMIZATION,) = [doc for _, doc in DOCS if doc["kind"] == "Kustomization"]
MANIFESTS = [(name, doc) for name, doc in DOCS if doc is not KUSTOMIZATION]
RESOURCES = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in MANIFESTS}


def pod(name: str) -> dict[str, Any]:
    return RESOURCES["Deployment", name]["spec"]["template"]


def container(name: str) -> dict[str, Any]:
    return next(c for c in pod(name)["spec"]["containers"] if c["name"] == name)


def container_port(c: dict[str, Any], port: int | str) -> int:
    """A port as a probe or a Service names it (a number, or a container port's name)."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in c["ports"] if p.get("name") == port)


def flag(args: list[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in a command line."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def selects(selector: dict[str, str], name: str) -> bool:
    return selector.items() <= pod(name)["metadata"]["labels"].items()


@pytest.fixture
def ponder_settings(tmp_path: Path) -> Settings:
    """The settings the ponder container starts with: its arguments through ponder's own
    parser, its --config file taken from the ConfigMap mounted where it points."""
    c = container("ponder")
    assert c["command"][-1].endswith("ponder")
    args = _parser().parse_args(c["args"])
    mount = next(m for m in c["volumeMounts"] if args.config.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod("ponder")["spec"]["volumes"] if v["name"] == mount["name"])
    data = RESOURCES["ConfigMap", volume["configMap"]["name"]]["data"]
    (tmp_path / "ponder.toml").write_text(data[args.config.removeprefix(mount["mountPath"] + "/")])
    args.config = str(tmp_path / "ponder.toml")
    return load_settings(args.config, overrides_from_args(args), model_preset(args.model))


@pytest.mark.parametrize("doc", [doc for _, doc in MANIFESTS],
                         ids=[f"{name}:{doc['kind']}/{doc['metadata']['name']}" for name, doc in MANIFESTS])
def test_every_manifest_is_valid_kubernetes_in_strict_mode(doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, KUBERNETES, strict=True) == KUBERNETES


def test_strict_mode_refuses_a_misspelt_field() -> None:
    doc = copy.deepcopy(RESOURCES["Deployment", "ponder"])
    c = doc["spec"]["template"]["spec"]["containers"][0]
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_kustomization_applies_every_manifest() -> None:
    assert sorted(KUSTOMIZATION["resources"]) == sorted({name for name, _ in MANIFESTS})


def test_ponder_is_probed_on_ready_and_health_at_its_port(ponder_settings: Settings) -> None:
    c, port = container("ponder"), ponder_settings.server.port
    assert ponder_settings.server.host == "0.0.0.0"  # reachable from the kubelet and the Service
    probes = {kind: c[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/ready" and probes["livenessProbe"]["path"] == "/health"
    assert all(container_port(c, p["port"]) == port for p in probes.values())
    # The kubelet sends no API key: both paths must be open without one.
    assert {"/ready", "/health"} <= set(ponder_settings.server.public_paths)
    service = RESOURCES["Service", "ponder"]
    assert selects(service["spec"]["selector"], "ponder")
    assert [container_port(c, p["targetPort"]) for p in service["spec"]["ports"]] == [port]


def test_the_grace_period_outlasts_the_drain(ponder_settings: Settings) -> None:
    spec = pod("ponder")["spec"]
    pause = container("ponder")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > ponder_settings.server.drain_timeout
    assert spec["terminationGracePeriodSeconds"] >= pause + ponder_settings.server.drain_timeout + AFTER_DRAIN


def test_the_engine_url_is_the_vllm_service_and_port(ponder_settings: Settings) -> None:
    service, vllm = RESOURCES["Service", "vllm"], container("vllm")
    (url,) = ponder_settings.remote.urls
    where = urlsplit(url)
    (port,) = service["spec"]["ports"]
    assert (where.scheme, where.hostname, where.port) == ("http", service["metadata"]["name"], port["port"])
    assert selects(service["spec"]["selector"], "vllm")
    assert container_port(vllm, port["targetPort"]) == int(flag(vllm["args"], "--port") or 0)
    # The init container waits for that same upstream before ponder asks it what it serves.
    (wait,) = pod("ponder")["spec"]["initContainers"]
    assert f'"{url}/health"' in wait["command"][-1]


def test_the_upstream_is_started_the_way_ponder_needs(ponder_settings: Settings) -> None:
    vllm = container("vllm")
    assert vllm["image"].startswith("vllm/vllm-openai:") and vllm["command"] == ["vllm", "serve"]
    assert not vllm["args"][0].startswith("-")  # the model
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert int(env(vllm)["VLLM_MAX_STOP_STRINGS"]["value"]) == ponder_settings.remote.max_stop_strings
    assert flag(vllm["args"], "--scheduling-policy") == ponder_settings.engine.scheduling_policy
    assert "--enable-prompt-tokens-details" in vllm["args"]


def test_the_keys_come_from_the_secret_the_readme_creates() -> None:
    refs = {name: env(container("ponder"))[name]["valueFrom"]["secretKeyRef"]
            for name in ("PONDER_API_KEY", "PONDER_SECRET_KEY")}
    (secret,) = {ref["name"] for ref in refs.values()}
    assert not any(ref.get("optional") for ref in refs.values())  # no key, no start
    readme = (ROOT / "README.md").read_text()
    assert f"create secret generic {secret}" in readme
    assert all(f"--from-literal={ref['key']}=" in readme for ref in refs.values())


def test_the_disruption_budget_and_network_policy_select_the_right_pods() -> None:
    budget = RESOURCES["PodDisruptionBudget", "ponder"]["spec"]
    assert selects(budget["selector"]["matchLabels"], "ponder")
    assert budget["minAvailable"] < RESOURCES["Deployment", "ponder"]["spec"]["replicas"]
    policy = RESOURCES["NetworkPolicy", "vllm-from-ponder"]["spec"]
    assert selects(policy["podSelector"]["matchLabels"], "vllm")
    (rule,) = policy["ingress"]
    assert [selects(peer["podSelector"]["matchLabels"], "ponder") for peer in rule["from"]] == [True]
    vllm = container("vllm")
    assert [container_port(vllm, p["port"]) for p in rule["ports"]] == [int(flag(vllm["args"], "--port") or 0)]
