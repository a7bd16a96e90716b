"""The Grafana dashboards: generated JSON is current, and every dashboard follows the same conventions.

Whether each query returns data from the real processes is checked in test_end_to_end.py."""

from __future__ import annotations

import importlib.util
import json
import re

from tests.alerts.stack import DASHBOARDS, dashboard_targets


def generator():
    spec = importlib.util.spec_from_file_location("headroom_dashboards_generate", DASHBOARDS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_the_generator_writes():
    gen = generator()
    boards = gen.build_all()
    assert sorted(boards) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, board in boards.items():
        assert (DASHBOARDS / name).read_text() == gen.render(board), f"dashboards/{name} is stale: run python dashboards/generate.py"


def test_every_dashboard_has_the_instance_variable_and_every_query_uses_it():
    uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"] not in uids
        uids.add(board["uid"])
        names = [v["name"] for v in board["templating"]["list"]]
        assert names == ["datasource", "instance"], path.name
    for board, title, expr in dashboard_targets():
        selectors = re.findall(r"\b(headroom_\w+|up)(\{[^}]*\})?", expr)
        assert selectors, (board, title)
        for metric, matchers in selectors:
            assert 'instance="$instance"' in matchers, f"{board} / {title}: {metric} does not filter on $instance"


def test_panels_have_titles_descriptions_and_units():
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["title"] and panel["description"], (path.name, panel["title"])
            assert panel["fieldConfig"]["defaults"]["unit"], (path.name, panel["title"])
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, (path.name, panel["title"])
