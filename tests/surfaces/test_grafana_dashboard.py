"""The example Grafana dashboard queries only metrics the exporter emits, and every gauge is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from batchwatch.observability import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "batchwatch.json"


def test_the_dashboard_uses_exported_metrics_only(sqlite_engine_only):
    text = generate_latest(metrics.metrics_registry(sqlite_engine_only, ["fraud"])).decode()
    exported = {family.name for family in text_string_to_metric_families(text)}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queries.append(dashboard["templating"]["list"][0]["query"]["query"])
    used = {name for query in queries for name in re.findall(r"batchwatch_[a-z_]+", query)}
    assert used and used <= exported, f"the dashboard queries metrics nobody exports: {sorted(used - exported)}"
    assert len(exported) == 21
    for name in exported:
        assert f"`{name}" in metrics.__doc__, f"{name} is not documented in batchwatch.observability.metrics"
