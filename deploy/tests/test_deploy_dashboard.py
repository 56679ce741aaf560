"""The Grafana dashboard: valid JSON Grafana imports (a datasource variable, unique panel ids,
panels that do not overlap) whose queries name only metrics the services' source defines.
tests/e2e/test_monitoring_metrics.py checks the same queries against the running services."""

from __future__ import annotations

import json
import re
from typing import Any

from .conftest import DEPLOY
from .test_deploy_alerts import SUFFIXES, exported_metrics

DASHBOARD = DEPLOY / "monitoring" / "dashboard.json"
METRIC = re.compile(r"\b((?:gateway|ai_runner|job_store|webhook_ingest|jobs_consumer)_\w+)")


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return found


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"]) == ("datasource", "datasource")
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
            assert panel["targets"], panel["title"]


def test_queries_name_metrics_the_services_define() -> None:
    exported = exported_metrics()
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert expr.count("(") == expr.count(")"), panel["title"]
            for series in METRIC.findall(expr):
                base = next((series[: -len(s)] for s in SUFFIXES if series.endswith(s)), series)
                assert base in exported or series in exported, (panel["title"], series)
