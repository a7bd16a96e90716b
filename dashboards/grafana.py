"""Builders for Grafana dashboard JSON: panels, targets, variables and the grid layout (no panel content here)."""

from __future__ import annotations

DS = {"type": "prometheus", "uid": "${datasource}"}
I = 'instance="$instance"'
RI = "$__rate_interval"
LEVELS = [("0", "ok", "green"), ("1", "warn", "yellow"), ("2", "throttle", "orange"), ("3", "pause", "red"), ("4", "free", "purple")]


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref, "range": not instant, "instant": instant}
    if fmt != "time_series":
        t["format"] = fmt
    return t


def targets(*pairs, **kw) -> list[dict]:
    """(expr, legend) pairs -> targets A, B, C..."""
    return [target(e, l, chr(ord("A") + n), **kw) for n, (e, l) in enumerate(pairs)]


def mappings(values: list[tuple[str, str, str]]) -> list[dict]:
    return [{"type": "value", "options": {v: {"text": t, "color": c, "index": n} for n, (v, t, c) in enumerate(values)}}]


def panel(kind: str, title: str, description: str, tgts: list[dict], unit: str = "short", w: int = 12, h: int = 8,
          options: dict | None = None, custom: dict | None = None, thresholds: list | None = None,
          maps: list | None = None, extra: dict | None = None, minv=None, maxv=None) -> dict:
    defaults: dict = {"unit": unit}
    if custom:
        defaults["custom"] = custom
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in thresholds]}
    if maps:
        defaults["mappings"] = maps
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    p = {"type": kind, "title": title, "description": description, "datasource": DS, "targets": tgts,
         "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options or {}, "_w": w, "_h": h}
    p.update(extra or {})
    return p


def timeseries(title, description, tgts, unit="short", stack=False, **kw) -> dict:
    custom = {"fillOpacity": 20 if stack else 10, "lineWidth": 1, "showPoints": "never",
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    if kw.get("thresholds"):
        custom["thresholdsStyle"] = {"mode": "dashed"}
    options = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, tgts, unit, custom=custom, options=options, **kw)


def stat(title, description, tgts, unit="short", text_mode="auto", **kw) -> dict:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background",
               "graphMode": "none", "textMode": text_mode, "justifyMode": "auto", "orientation": "auto"}
    kw.setdefault("w", 4)
    kw.setdefault("h", 4)
    return panel("stat", title, description, tgts, unit, options=options, **kw)


def bargauge(title, description, tgts, unit="percentunit", **kw) -> dict:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}
    return panel("bargauge", title, description, tgts, unit, options=options, minv=0, maxv=1, **kw)


def table(title, description, tgts, unit="short", hide=("Time", "__name__", "job"), rename=None, **kw) -> dict:
    transformations = [{"id": "merge", "options": {}},
                       {"id": "organize", "options": {"excludeByName": {k: True for k in hide}, "renameByName": rename or {}}}]
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    for t in tgts:
        t.update({"instant": True, "range": False, "format": "table"})
    return panel("table", title, description, tgts, unit, options=options, extra={"transformations": transformations}, **kw)


def state_timeline(title, description, tgts, maps, **kw) -> dict:
    options = {"showValue": "auto", "mergeValues": True, "rowHeight": 0.9, "alignValue": "left",
               "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    return panel("state-timeline", title, description, tgts, "short", options=options, maps=maps,
                 custom={"fillOpacity": 80, "lineWidth": 0}, **kw)


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_w": 24, "_h": 1}


def layout(panels: list[dict]) -> list[dict]:
    """Place panels left to right, wrapping at 24 columns; ids in order."""
    x = y = line_h = 0
    for n, p in enumerate(panels, start=1):
        w, h = p.pop("_w"), p.pop("_h")
        if x + w > 24 or p["type"] == "row":
            x, y, line_h = 0, y + line_h, 0
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        p["id"] = n
        x, line_h = x + w, max(line_h, h)
    return panels


def instance_variable(metric: str) -> dict:
    return {"name": "instance", "label": "instance", "type": "query", "datasource": DS,
            "query": {"qryType": 1, "query": f"label_values({metric}, instance)", "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "definition": f"label_values({metric}, instance)", "refresh": 2, "sort": 1, "multi": False, "includeAll": False,
            "current": {}, "options": [], "hide": 0}


def datasource_variable() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "refresh": 1,
            "current": {}, "options": [], "hide": 0, "regex": ""}


# OOM kills as annotations: a victim series that is new or rose within the last minute, titled with the victim.
OOM_ANNOTATION = {
    "name": "OOM kills", "enable": True, "iconColor": "red", "datasource": DS, "step": "15s",
    "expr": f"(increase(headroom_oom_kill_victims_total{{{I}}}[1m]) > 0) or "
            f"(headroom_oom_kill_victims_total{{{I}}} unless headroom_oom_kill_victims_total{{{I}}} offset 1m)",
    "titleFormat": "OOM kill: {{comm}}", "textFormat": "cgroup {{cgroup}}, unit {{unit}}", "tagKeys": "comm,unit",
    "useValueForTime": False,
}


def dashboard(uid: str, title: str, description: str, instance_metric: str, panels: list[dict], oom_annotations: bool) -> dict:
    annotations = [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]
    if oom_annotations:
        annotations.append(OOM_ANNOTATION)
    return {
        "uid": uid, "title": title, "description": description, "tags": ["headroom"], "editable": True,
        "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s", "graphTooltip": 1,
        "time": {"from": "now-3h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
        "annotations": {"list": annotations},
        "templating": {"list": [datasource_variable(), instance_variable(instance_metric)]},
        "links": [{"title": "headroom", "type": "dashboards", "tags": ["headroom"], "asDropdown": True, "includeVars": True, "keepTime": True}],
        "panels": layout(panels),
    }
