"""Thawing what a guard recorded, with no guard running: `headroom thaw --all`, the unit's ExecStopPost=, `headroom up`
after a guard died, and the guard's own first act at start (before its port, its store or its worker can fail)."""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from guard.protect.frozenfile import boot_id, read_records, records_path, take_lock, write_records
from guard.protect.thawing import release
from headroom.paths import default_state_dir

log = logging.getLogger("headroom.guard.recovery")


@dataclass
class ThawReport:
    """What one pass over the records did, one line per record."""

    thawed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # kept in the file: retried by the next pass or the next guard
    dropped: list[str] = field(default_factory=list)  # from another boot: nothing of it exists any more

    def lines(self) -> list[str]:
        return ([f"thawed {line}" for line in self.thawed] + [f"NOT thawed {line}" for line in self.failed]
                + [f"dropped {line}" for line in self.dropped])


def thaw_recorded(state_dir: Path, procfs: Path = Path("/proc"), cgroupfs: Path = Path("/sys/fs/cgroup")) -> ThawReport:
    """Thaw every record in `state_dir`/frozen.json, and only those: a process only while its pid has the recorded
    start time, a cgroup only while a recorded process is still in it. A refused thaw keeps its record (narrowed to
    what is still stopped); one record's error never stops the others. Raises OSError when the file is unreadable."""
    from guard.protect.freezer import FrozenProcess

    path = records_path(state_dir)
    items = read_records(path)
    report, kept, this_boot = ThawReport(), [], boot_id()
    for item in items:
        try:
            fp = FrozenProcess.from_json(item)
        except (TypeError, ValueError) as err:
            report.failed.append(f"an unreadable record {item!r:.200}: {err}")
            kept.append(item)
            continue
        what = f"pid {fp.pid} ({fp.comm}, {fp.method}{' ' + fp.cgroup if fp.cgroup else ''})"
        if fp.boot_id and fp.boot_id != this_boot:
            report.dropped.append(f"{what}: frozen in another boot")
            continue
        try:
            result = release(fp, procfs, cgroupfs, verify=True)
        except Exception as err:  # noqa: BLE001 one record's surprise never leaves the others frozen
            result = None
            report.failed.append(f"{what}: {err}")
            kept.append(item)
        if result is None:
            continue
        if result.error is None:
            report.thawed.append(f"{what}: {result.note}")
        else:
            report.failed.append(f"{what}: {result.error}")
            kept.append({**item, "members": [list(m) for m in result.left]})
    if items:
        handled = {item.get("pid") for item in items}
        written_meanwhile = [item for item in read_records(path) if item.get("pid") not in handled]  # a running guard's
        write_records(path, written_meanwhile + kept)
    return report


def thaw_and_log(state_dir: Path) -> ThawReport | None:
    """thaw_recorded, logged one line per record; never raises (None when the records cannot be read)."""
    try:
        report = thaw_recorded(Path(state_dir))
    except Exception as err:  # noqa: BLE001 the caller goes on; the records stay for the next try
        log.error("could not read the freeze records in %s: %s", state_dir, err)
        return None
    for line in report.lines():
        (log.error if line.startswith("NOT") else log.warning)("thawing the records: %s", line)
    return report


def recover_at_start(state_dir: Path, hold: bool = False) -> ThawReport | None:
    """Thaw what a guard that is gone left frozen: the guard's first act (`hold`: it then owns the state dir's records
    for its life), and what `headroom up` does after its guard died. Skipped while another guard holds the records."""
    if take_lock(Path(state_dir), hold) is False:
        log.warning("a running guard holds %s: its freeze records are its own, not thawed here", state_dir)
        return None
    return thaw_and_log(state_dir)


def state_dir_unvalidated(config: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The state dir as a config that failed validation still names it: $HEADROOM_STATE_DIR, the file's top-level
    `state_dir`, else the default. Used only to thaw the records before the error ends the command."""
    if environ.get("HEADROOM_STATE_DIR"):
        return Path(environ["HEADROOM_STATE_DIR"])
    path = config or environ.get("HEADROOM_CONFIG")
    if path:
        try:
            with open(path, "rb") as handle:
                value = tomllib.load(handle).get("state_dir")
            if isinstance(value, str) and value:
                return Path(value)
        except (OSError, tomllib.TOMLDecodeError):
            pass
    return default_state_dir()
