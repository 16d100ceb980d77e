"""The Grafana dashboard in the chart: valid dashboard JSON over exactly the metrics the
operator exports (names are a contract: a typo here is an empty panel in production)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "charts/stagecoach/dashboards/stagecoach.json"

HISTOGRAMS = {"stagecoach_stage_duration_seconds", "stagecoach_queue_wait_seconds",
              "stagecoach_reconcile_duration_seconds"}
COUNTERS = {"stagecoach_stage_retries_total", "stagecoach_tokens_total",
            "stagecoach_cost_usd_total", "stagecoach_stage_cache_total"}
GAUGES = {"stagecoach_pipelines"}
LABELS = {
    "stagecoach_stage_duration_seconds": {"pipeline", "stage", "outcome"},
    "stagecoach_stage_retries_total": {"pipeline", "stage", "error_class"},
    "stagecoach_pipelines": {"phase"},
    "stagecoach_tokens_total": {"provider", "model", "kind"},
    "stagecoach_cost_usd_total": {"provider", "model"},
    "stagecoach_stage_cache_total": {"result"},
    "stagecoach_queue_wait_seconds": {"provider"},
    "stagecoach_reconcile_duration_seconds": set(),
}
SERIES = (COUNTERS | GAUGES
          | {f"{h}_{s}" for h in HISTOGRAMS for s in ("bucket", "count", "sum")})
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
NAME = re.compile(r"\bstagecoach_[a-z0-9_]+")


def test_names_and_labels_match_what_the_operator_exports() -> None:
    from prometheus_client.metrics import MetricWrapperBase
    from stagecoach.operator.metrics import Metrics

    m = Metrics()
    exported = {w._name: set(w._labelnames) for w in vars(m).values()
                if isinstance(w, MetricWrapperBase)}
    for name, labels in LABELS.items():
        base = name.removesuffix("_total")
        assert base in exported, f"the operator does not export {name}"
        assert exported[base] == labels, (name, exported[base], labels)


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def family(series: str) -> str:
    for h in HISTOGRAMS:
        if series.startswith(h + "_"):
            return h
    return series


def test_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    d = load()
    assert d["schemaVersion"] >= 36 and d["title"] and d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    for p in panels(d):
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys()
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"] and all(t["expr"] for t in p["targets"])


def test_every_expression_uses_only_the_operators_metrics() -> None:
    d = load()
    used: set[str] = set()
    exprs = [t["expr"] for p in panels(d) for t in p.get("targets", [])]
    exprs += [v["definition"] for v in d["templating"]["list"] if "definition" in v]
    for expr in exprs:
        for name in NAME.findall(expr):
            assert name in SERIES, f"unknown metric {name} in {expr}"
            used.add(family(name))
        for metric, matchers in SELECTOR.findall(expr):
            assert metric in SERIES, f"unknown metric {metric} in {expr}"
            for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*[=!]~?", matchers):
                assert label in LABELS[family(metric)], f"{metric} has no label {label}"
        for grouping in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            labels = {x.strip() for x in grouping.split(",")} - {"le"}
            families = {family(n) for n in NAME.findall(expr)}
            assert labels <= set().union(*(LABELS[f] for f in families)), expr
    assert used == set(LABELS), f"metrics without a panel: {set(LABELS) - used}"


def test_histograms_are_read_through_buckets_and_counters_through_rates() -> None:
    for p in panels(load()):
        for t in p.get("targets", []):
            expr = t["expr"]
            if "_bucket" in expr:
                assert "histogram_quantile" in expr
            for counter in COUNTERS:
                if counter in expr:
                    assert re.search(r"\b(rate|increase)\(" + counter, expr), expr
