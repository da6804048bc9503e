"""The shipped Grafana dashboard read as data: its PromQL, the metric names in it,
and the names ponder and vLLM export (tests/unit/test_dashboard.py checks the files
offline, tests/integration/test_dashboard_metrics.py against a live /metrics)."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from server.metrics import Metrics

DOCKER = Path(__file__).resolve().parents[1] / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "ponder.json"

# What prometheus_client appends to a family's name in the text format (counters'
# and histograms' ``_created`` series are left out: a dashboard has no use for them).
SERIES_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}

# vLLM's metrics the dashboard may read: vLLM's PrometheusStatLogger registers these
# whatever the engine's configuration (the speculative-decoding, LoRA, KV-connector and
# kv_cache_metrics ones only when those are on), each with these labels.
VLLM_METRICS = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
}
VLLM_LABELS = ("model_name", "engine")


@dataclass(frozen=True)
class Family:
    name: str  # as registered: no _total, no _bucket
    type: str
    labels: tuple[str, ...]

    def series(self) -> tuple[str, ...]:
        """The sample names this family has on /metrics."""
        return tuple(self.name + s for s in SERIES_SUFFIXES[self.type])

    def labels_of(self, series: str) -> set[str]:
        return {*self.labels, "le"} if series.endswith("_bucket") else set(self.labels)


def ponder_families() -> list[Family]:
    """ponder's own metrics, read from a fresh ``Metrics`` (no engine, no server)."""
    found = [v for v in vars(Metrics()).values() if isinstance(v, MetricWrapperBase)]
    # _labelnames is prometheus_client's only record of a family's labels before a
    # first sample; it has been there since the library's first releases.
    return [Family(m._name, m._type, tuple(m._labelnames)) for m in found]


def vllm_families() -> list[Family]:
    return [Family(name, kind, VLLM_LABELS) for name, kind in VLLM_METRICS.items()]


def series_index(families: list[Family]) -> dict[str, Family]:
    return {s: f for f in families for s in f.series()}


_VLLM_KINDS = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}


def vllm_source_metrics() -> dict[str, str]:
    """Name -> type of every metric the installed vLLM's PrometheusStatLogger creates,
    read from its source text (``self._gauge_cls(name="vllm:...")``) without importing vLLM."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin is not None, "vLLM is not installed"
    tree = ast.parse((Path(spec.origin).parent / "v1" / "metrics" / "loggers.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _VLLM_KINDS:
            for kw in node.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    found[kw.value.value] = _VLLM_KINDS[node.func.attr]
    return found


# --- PromQL --------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
# Words of PromQL that are not followed by "(" (functions and aggregations are).
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                      "and", "or", "unless", "atan2", "inf", "nan"})


def _plain(expr: str) -> str:
    """``expr`` with string literals emptied and Grafana's variables gone."""
    return _VARIABLE.sub(" ", _STRING.sub('""', expr))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside label
    matchers, ranges and grouping lists that are not a function, an aggregation
    (followed by "(") or a keyword. Names may contain ":" (vLLM's do)."""
    text = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", _plain(expr))))
    names = set()
    for m in _IDENT.finditer(text):
        if m.group().lower() not in KEYWORDS and not text[m.end():].lstrip().startswith("("):
            names.add(m.group())
    return names


def label_names(expr: str) -> set[str]:
    """The label names an expression matches on or groups by."""
    text = _RANGE.sub(" ", _plain(expr))
    labels = {m for block in _MATCHERS.findall(text) for m in _MATCHER_LABEL.findall(block)}
    labels |= {part.strip() for group in _GROUPING.findall(text) for part in group.split(",") if part.strip()}
    return labels


# --- the dashboard --------------------------------------------------------------

def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels a collapsed row keeps inside it included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    return {name for _, target in targets(dashboard) for name in metric_names(target["expr"])}


def exposed_names(metrics_text: str) -> tuple[set[str], set[str]]:
    """(sample names, declared families) on a Prometheus text page. A labelled family
    that has had no sample yet is only declared (its ``# TYPE`` line); for a counter
    prometheus_client declares the ``_total`` name."""
    samples, declared = set(), set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            declared.update((name + s for s in SERIES_SUFFIXES[kind]) if kind == "histogram" else (name,))
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return samples, declared
