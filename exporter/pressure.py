"""Memory pressure stall information (PSI): parser, reader and the `pressure` collector."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter.types import PressureLine

WINDOWS = (("10s", "avg10_ratio"), ("60s", "avg60_ratio"), ("300s", "avg300_ratio"))


def parse_pressure(text: str) -> tuple[PressureLine, ...]:
    """'some avg10=1.00 avg60=0.50 avg300=0.10 total=1234' lines -> PressureLine per kind."""
    lines = []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        fields = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
        try:
            lines.append(
                PressureLine(
                    kind=parts[0],
                    avg10_ratio=float(fields["avg10"]) / 100,
                    avg60_ratio=float(fields["avg60"]) / 100,
                    avg300_ratio=float(fields["avg300"]) / 100,
                    stalled_seconds_total=int(fields["total"]) / 1e6,
                )
            )
        except (KeyError, ValueError) as err:
            raise ValueError(f"malformed pressure line {line!r}: {err}") from None
    return tuple(lines)


def read_pressure(path: Path) -> tuple[PressureLine, ...] | None:
    """None when the kernel has no PSI (file missing): no data, not an error."""
    try:
        return parse_pressure(path.read_text())
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == 95:  # EOPNOTSUPP: psi=0 on the kernel command line
            return None
        raise


def pressure_families(rows: list[tuple[dict[str, str], tuple[PressureLine, ...]]], prefix: str):
    """The stall counter and the avg ratios; each row is (extra labels such as {"cgroup": ...}, its PSI lines)."""
    names = list(rows[0][0]) if rows else []
    stalled = CounterMetricFamily(
        f"{prefix}_stalled_seconds",
        "Time tasks were stalled waiting for memory (PSI total); kind=some: at least one, full: all.",
        labels=names + ["kind"],
    )
    ratio = GaugeMetricFamily(
        f"{prefix}_ratio",
        "Share of wall time stalled on memory over the window (PSI avg10/avg60/avg300 as 0..1).",
        labels=names + ["kind", "window"],
    )
    for labels, lines in rows:
        values = list(labels.values())
        for line in lines:
            stalled.add_metric(values + [line.kind], line.stalled_seconds_total)
            for window, attr in WINDOWS:
                ratio.add_metric(values + [line.kind, window], getattr(line, attr))
    return stalled, ratio


class PressureCollector:
    """Host memory PSI from /proc/pressure/memory."""

    name = "pressure"

    def __init__(self, procfs: Path):
        self.path = procfs / "pressure" / "memory"

    def collect(self):
        lines = read_pressure(self.path)
        if lines is None:
            return
        yield from pressure_families([({}, lines)], "headroom_pressure_memory")
