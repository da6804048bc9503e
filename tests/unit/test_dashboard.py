"""The monitoring stack of docker/ (issue 15, part 4), offline: the Grafana dashboard
against the dashboard schema of the Grafana release compose runs (grafana-foundation-
sdk's models, generated from Grafana's own schemas: an unknown or misspelt key, a
wrong type or an enum value Grafana does not know fails), its datasource references,
layout and queries, every metric name in its PromQL against what ponder's code
registers and what the installed vLLM's source creates, and the provisioning,
Prometheus and compose files that wire it up. No Grafana runs here;
tests/integration/test_dashboard_metrics.py compares the names with a live /metrics.
"""
from __future__ import annotations

import copy
import enum
import importlib.metadata
import json
import re
import types
import typing
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import Runtime
from grafana_foundation_sdk.models import prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.dashboard import (
    DASHBOARD,
    DOCKER,
    VLLM_METRICS,
    dashboard_metric_names,
    exposed_names,
    label_names,
    load_dashboard,
    metric_names,
    panels,
    ponder_families,
    series_index,
    targets,
    vllm_families,
    vllm_source_metrics,
)

DASH = load_dashboard()
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
PROVISIONING = DOCKER / "grafana" / "provisioning"
(DATASOURCE,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())["datasources"]
(PROVIDER,) = yaml.safe_load((PROVISIONING / "dashboards" / "ponder.yaml").read_text())["providers"]
INDEX = series_index(ponder_families() + vllm_families())
# What issue 15 asks the dashboard to show, by the series that show it.
REQUIRED = {
    "ponder_requests_total",  # requests and errors by strategy
    "ponder_tokens_total",  # thinking vs answer tokens
    "ponder_time_to_first_thinking_token_seconds_bucket", "ponder_time_to_first_answer_token_seconds_bucket",
    "ponder_admission_sequences_in_use", "ponder_requests_rejected_total",  # admission and 429s
    "ponder_early_stop_tokens_saved_total",
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
}


@pytest.mark.parametrize("expr, names", [
    ("rate(ponder_requests_total[5m])", {"ponder_requests_total"}),
    ('sum by (strategy) (rate(ponder_tokens_total{channel="thinking"}[$__rate_interval]))', {"ponder_tokens_total"}),
    ("histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[5m])))", {"x_seconds_bucket"}),
    ("sum by(le)(rate(x_bucket[5m]))", {"x_bucket"}),
    ("sum(rate(vllm:prefix_cache_hits_total[1m])) / sum(rate(vllm:prefix_cache_queries_total[1m]))",
     {"vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"}),
    ("max(vllm:kv_cache_usage_perc)", {"vllm:kv_cache_usage_perc"}),
    ("a + on (job) group_left (instance) b offset 5m", {"a", "b"}),
    ("sum(a) without (le) > bool 1 and b unless c or inf > NaN", {"a", "b", "c"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)")', {"up"}),
    ('x{job=~"a|b(c)", path!="/v1 rate(y)"}', {"x"}),
    ("sum(increase(m_total[$__range])) * 1e3 + 0x1f", {"m_total"}),
    ("rate(x[5m:30s] @ end())", {"x"}),
    ("min_over_time(y{a='b'}[10m]) atan2 z", {"y", "z"}),
    ("rate(${metric}[5m]) + up", {"up"}),
], ids=["rate", "grouped-matcher", "quantile", "no-spaces", "colon-names", "gauge", "vector-matching",
        "keywords", "strings", "parens-in-strings", "numbers", "subquery-at", "binary-function", "variables"])
def test_metric_names_are_the_selectors_of_an_expression(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr, labels", [
    ('sum by (strategy, status) (rate(m{status!="ok"}[5m]))', {"strategy", "status"}),
    ('m{a=~"x", b="y,z=w"}', {"a", "b"}),
    ("a / on (job) group_left () b", {"job"}),
    ("histogram_quantile(0.5, sum(rate(x_bucket[5m])) by (le))", {"le"}),
    ("up", set()),
], ids=["by-and-matcher", "matchers", "on", "by-after", "none"])
def test_label_names_are_the_matched_and_grouped_labels(expr: str, labels: set[str]) -> None:
    assert label_names(expr) == labels


def test_every_query_names_a_metric_ponder_or_vllm_exports() -> None:
    unknown = {(panel["title"], name) for panel, target in targets(DASH) for name in metric_names(target["expr"])
               if name not in INDEX}
    assert not unknown
    assert all(metric_names(target["expr"]) for _, target in targets(DASH))


def test_every_label_a_query_uses_is_a_label_of_its_metrics() -> None:
    for panel, target in targets(DASH):
        known = set().union(*(INDEX[name].labels_of(name) for name in metric_names(target["expr"])))
        assert label_names(target["expr"]) <= known, panel["title"]


def test_histograms_are_read_through_quantiles_and_counters_through_rates() -> None:
    """A counter's raw value and a bucket's cumulative count mean nothing on a graph, nor
    does the rate of a gauge."""
    for panel, target in targets(DASH):
        expr = target["expr"]
        for name in metric_names(expr):
            if INDEX[name].type == "counter":
                assert re.search(rf"\b(rate|irate|increase)\(\s*{re.escape(name)}(\{{[^}}]*\}})?\[", expr), panel["title"]
            if INDEX[name].type == "gauge":
                assert not re.search(rf"\b(rate|irate|increase)\(\s*{re.escape(name)}\b", expr), panel["title"]
            if name.endswith("_bucket"):
                assert expr.startswith("histogram_quantile(") and "by (le)" in expr, panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    assert REQUIRED <= dashboard_metric_names(DASH)


def test_the_listed_vllm_metrics_are_created_by_the_installed_vllm() -> None:
    source = vllm_source_metrics()
    assert {name: source.get(name) for name in VLLM_METRICS} == VLLM_METRICS


def test_exposed_names_reads_samples_and_declared_families() -> None:
    text = ('# HELP a_total h\n# TYPE a_total counter\na_total{l="x y"} 1.0\n# HELP b h\n# TYPE b histogram\n'
            "# TYPE vllm:c gauge\nvllm:c 0.5\n")
    assert exposed_names(text) == ({"a_total", "vllm:c"}, {"a_total", "b_bucket", "b_sum", "b_count", "vllm:c"})


# --- what Grafana needs ----------------------------------------------------------

def test_panels_have_unique_ids_and_a_place_on_the_grid() -> None:
    ids = [p["id"] for p in panels(DASH)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for p in panels(DASH):
        g = p["gridPos"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[x, y]}"
                cells[x, y] = p["title"]


def test_every_panel_but_a_row_has_titled_queries() -> None:
    for p in panels(DASH):
        assert p["title"]
        if p["type"] == "row":
            continue
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        assert all(t["expr"].strip() and t.get("legendFormat") for t in p["targets"]), p["title"]


def test_every_datasource_is_the_variable_that_defaults_to_the_provisioned_prometheus() -> None:
    (variable,) = [v for v in DASH["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == DATASOURCE["type"] == "prometheus"
    assert variable["current"]["value"] == DATASOURCE["uid"]
    ref = {"type": "prometheus", "uid": "${" + variable["name"] + "}"}
    for p in panels(DASH):
        if p["type"] != "row":
            assert p["datasource"] == ref and all(t["datasource"] == ref for t in p["targets"]), p["title"]


def _model(value: Any) -> bool:
    return hasattr(type(value), "from_json")


def _wrong(value: Any, hint: Any, path: str) -> list[str]:
    """How a decoded SDK object differs from its type hints: enum values Grafana does
    not know, wrong JSON types, objects of the wrong kind."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        return []
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        chosen = [a for a in options if isinstance(a, type) and _model(value) and isinstance(value, a)]
        errors = [_wrong(value, a, path) for a in chosen or options]
        return [] if any(not e for e in errors) else errors[0]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [e for i, v in enumerate(value) for e in _wrong(v, args[0], f"{path}[{i}]")]
    if origin is dict:
        return [] if isinstance(value, dict) else [f"{path}: not an object"]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        known = [m.value for m in hint]
        return [] if value in known else [f"{path}: {value!r} is not one of {known}"]
    if hint in (int, float, str, bool):
        return [] if type(value) is hint or (hint is float and type(value) is int) else \
            [f"{path}: {value!r} is not a {hint.__name__}"]
    if hint is typing.Any or hint is object:  # panel options, field config: decoded by the panel's plugin
        return _wrong(value, type(value), path) if _model(value) else []
    if isinstance(hint, type) and (_model(value) or hasattr(hint, "from_json")):
        if not isinstance(value, hint):
            return [f"{path}: not a {hint.__name__}"]
        return [e for k, h in typing.get_type_hints(type(value)).items()
                for e in _wrong(getattr(value, k, None), h, f"{path}.{k}")]
    return []


def _lost(raw: Any, back: Any, path: str = "$") -> list[str]:
    """Where ``raw`` has what its round trip through the schema's models dropped or changed."""
    if isinstance(raw, dict):
        if not isinstance(back, dict):
            return [path]
        return [e for k, v in raw.items() for e in ([f"{path}.{k}"] if k not in back else _lost(v, back[k], f"{path}.{k}"))]
    if isinstance(raw, list):
        if not isinstance(back, list) or len(raw) != len(back):
            return [path]
        return [e for i, (r, b) in enumerate(zip(raw, back)) for e in _lost(r, b, f"{path}[{i}]")]
    return [] if raw == back else [path]


def schema_errors(raw: dict[str, Any]) -> list[str]:
    """What Grafana's dashboard schema (the SDK's release) says is wrong with ``raw``."""
    register_default_plugins()  # the panel and query kinds; idempotent
    decoded = Dashboard.from_json(raw)
    errors = _lost(raw, json.loads(json.dumps(decoded, cls=JSONEncoder))) + _wrong(decoded, Dashboard, "$")
    known = set(Runtime().panelcfg_variants) | {"row"}
    errors += [f"panel type {p['type']!r}" for p in panels(raw) if p["type"] not in known]
    errors += [f"{p.get('title')}: query not read as Prometheus's" for p in decoded.panels or []
               for t in getattr(p, "targets", None) or [] if not isinstance(t, prometheus.Dataquery)]
    return errors


def test_the_dashboard_fits_the_schema_of_the_grafana_compose_runs() -> None:
    grafana = SERVICES["grafana"]["image"].split(":")[1]
    sdk = importlib.metadata.version("grafana-foundation-sdk").split("!")[-1]
    assert grafana.split(".")[:2] == sdk.split(".")[:2], (grafana, sdk)
    assert schema_errors(DASH) == []


@pytest.mark.parametrize("change, where", [
    (lambda d: d["panels"][1]["targets"][0].update(legendFormt="x"), "legendFormt"),
    (lambda d: d["panels"][1]["options"]["legend"].update(placment="bottom"), "placment"),
    (lambda d: d["panels"][1].update(gridpos={}), "gridpos"),
    (lambda d: d["panels"][1]["fieldConfig"]["defaults"]["custom"].update(drawStyle="lines"), "draw_style"),
    (lambda d: d["panels"][1]["options"]["tooltip"].update(mode="many"), "tooltip.mode"),
    (lambda d: d["panels"][1]["gridPos"].update(h="8"), "grid_pos.h"),
    (lambda d: d["panels"][1]["targets"][0].update(range="yes"), "range"),
    (lambda d: d.update(graphTooltip=7), "graph_tooltip"),
    (lambda d: d["panels"][1].update(type="timeserie"), "timeserie"),
], ids=["target-key", "option-key", "panel-key", "enum", "option-enum", "int", "bool", "dashboard-enum",
        "panel-type"])
def test_the_schema_check_catches_what_grafana_would_ignore_or_refuse(change, where: str) -> None:
    broken = copy.deepcopy(DASH)
    change(broken)
    errors = schema_errors(broken)
    assert errors and all(where in e for e in errors), errors


# --- provisioning, Prometheus and compose ----------------------------------------

def _mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to docker/) of a service's bind mounts."""
    return {dst: src for src, dst, *_ in (v.split(":") for v in SERVICES[service].get("volumes", []))}


def test_every_bind_mount_is_a_file_of_the_repository() -> None:
    for name in SERVICES:
        for src in _mounts(name).values():
            assert src.startswith("./") and (DOCKER / src).exists(), (name, src)
    assert (DOCKER / SERVICES["ponder"]["build"]["context"] / SERVICES["ponder"]["build"]["dockerfile"]).is_file()


def test_grafana_loads_the_provisioning_and_the_dashboard_folder() -> None:
    mounts = _mounts("grafana")
    assert {mounts["/etc/grafana/provisioning/datasources"], mounts["/etc/grafana/provisioning/dashboards"]} == {
        "./grafana/provisioning/datasources", "./grafana/provisioning/dashboards"}
    assert PROVIDER["type"] == "file"
    folder = DOCKER / mounts[PROVIDER["options"]["path"]]
    assert DASHBOARD in folder.glob("*.json")
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{PROVIDER['options']['path']}/{DASHBOARD.name}"


def test_the_datasource_is_the_compose_prometheus_at_its_scrape_interval() -> None:
    host_port = DATASOURCE["url"].removeprefix("http://")
    host, port = host_port.split(":")
    assert host in SERVICES and SERVICES[host]["image"].startswith("prom/prometheus:")
    assert any(p.endswith(f":{port}") for p in SERVICES[host]["ports"])
    assert DATASOURCE["jsonData"]["timeInterval"] == PROMETHEUS["global"]["scrape_interval"]


def test_prometheus_scrapes_ponder_with_the_key_compose_writes() -> None:
    (job,) = PROMETHEUS["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in SERVICES and any(p.endswith(f":{port}") for p in SERVICES[host]["ports"])
    assert job["authorization"]["type"] == "Bearer"
    prometheus_service = SERVICES["prometheus"]
    (script,) = prometheus_service["command"]
    assert f"> {job['authorization']['credentials_file']}" in script
    assert "$$PONDER_API_KEY" in script and "exec /bin/prometheus" in script
    assert prometheus_service["environment"]["PONDER_API_KEY"] == SERVICES["ponder"]["environment"]["PONDER_API_KEY"]
    assert _mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
