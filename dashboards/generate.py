"""Writes the Grafana dashboards (dashboards/*.json) from one description, so every dashboard shares its conventions.

Run `python dashboards/generate.py` after editing panels.py; tests/alerts/test_dashboards.py fails when the
committed JSON is stale. Conventions (grafana.py): a `datasource` variable (any Prometheus), an `instance`
variable on every dashboard, queries that filter on `instance="$instance"`, schemaVersion 39 (Grafana 11).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from grafana import dashboard  # noqa: E402  (this folder is not a package)
from panels import gpu_panels, guard_panels, host_panels, worker_panels  # noqa: E402


def build_all() -> dict[str, dict]:
    """File name -> dashboard."""
    return {
        "headroom-host.json": dashboard("headroom-host", "headroom: host", "RAM, swap, memory pressure, cgroups and OOM kills of one host.",
                                        "headroom_memory_total_bytes", host_panels(), oom_annotations=True),
        "headroom-gpus.json": dashboard("headroom-gpus", "headroom: GPUs", "Memory per GPU and per process, utilization, temperature, power, Xid errors.",
                                        "headroom_gpus", gpu_panels(), oom_annotations=True),
        "headroom-guard.json": dashboard("headroom-guard", "headroom: guard", "The guard's level per resource, its actions on the worker, admissions and leases.",
                                         "headroom_guard_overall_level", guard_panels(), oom_annotations=False),
        "headroom-worker.json": dashboard("headroom-worker", "headroom: worker", "The batch worker's state, queue by priority and throughput.",
                                          "headroom_worker_state", worker_panels(), oom_annotations=False),
    }


def render(board: dict) -> str:
    return json.dumps(board, indent=2) + "\n"


def main() -> int:
    for name, board in build_all().items():
        (HERE / name).write_text(render(board))
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
