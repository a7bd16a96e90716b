"""A real Prometheus and Alertmanager for tests, configured from the shipped files with only intervals and addresses changed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.helpers import REPO, free_port, stop_process, wait_for

RULES = REPO / "alerts" / "headroom.rules.yml"
ALERTMANAGER = REPO / "alerts" / "alertmanager.yml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARDS = REPO / "dashboards"


def prometheus_config(targets: dict[str, list[str]], alertmanager: str, interval: str = "1s") -> dict:
    """deploy/prometheus/prometheus.yml with 1 s intervals, the repo's rule file, and test addresses per job."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    config["global"].update({"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval})
    config["rule_files"] = [str(RULES)]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job.pop("scrape_interval", None)
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def alertmanager_config(webhook_url: str, token_file: Path) -> dict:
    """alerts/alertmanager.yml with the guard's address and token file, and waits short enough for a test.

    Routes, matchers, grouping keys, inhibitions and receivers are the shipped ones."""
    config = yaml.safe_load(ALERTMANAGER.read_text())

    def shorten(route: dict) -> None:
        for key, value in (("group_wait", "0s"), ("group_interval", "1s"), ("repeat_interval", "1m")):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


class Server:
    """One Prometheus or Alertmanager process on a free loopback port; stopped by PID."""

    def __init__(self, argv: list[str], port: int, log: Path):
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._alive() and httpx.get(self.url + "/-/ready", timeout=2).status_code == 200, 20, what=f"{argv[0]} ready")

    def _alive(self) -> bool:
        assert self.proc.poll() is None, f"exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
        return True

    def stop(self) -> None:
        stop_process(self.proc)


def start_prometheus(binary: str, tmp: Path, config: dict) -> Server:
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return Server([binary, f"--config.file={path}", f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                   "--log.level=warn"], port, tmp / "prometheus.log")


def start_alertmanager(binary: str, tmp: Path, config: dict) -> Server:
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return Server([binary, f"--config.file={path}", f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
                   "--cluster.listen-address=", "--log.level=warn"], port, tmp / "alertmanager.log")


def query(prometheus: Server, expr: str) -> list[dict]:
    response = httpx.get(prometheus.url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    return body["data"]["result"]


def firing(prometheus: Server, alertname: str, **labels) -> list[dict]:
    alerts = httpx.get(prometheus.url + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == alertname and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every panel target and annotation query in dashboards/*.json."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = yaml.safe_load(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, f'{panel["title"]} [{target["refId"]}]', target["expr"]))
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                found.append((path.name, f'annotation: {annotation["name"]}', annotation["expr"]))
    return found


def substitute(expr: str, instance: str, rate_interval: str = "10s") -> str:
    """What Grafana sends for one instance: template variables replaced."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    expr = re.sub(r"\$\{?instance\}?", instance, expr)
    assert "$" not in expr, f"unreplaced variable in {expr}"
    return expr


__all__ = ["alertmanager_config", "prometheus_config", "start_alertmanager", "start_prometheus", "query", "firing",
           "dashboard_targets", "substitute"]
