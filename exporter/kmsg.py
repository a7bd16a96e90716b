"""Kernel log records (/dev/kmsg): record parsing, and OOM-kill victims and GPU Xid errors read out of them.

OOM reports come in three shapes, all handled here:
- 5.x+: `oom-kill:...,task_memcg=/X,task=C,pid=N,uid=U` then `<scope>: Killed process N (C) total-vm:...`.
- 4.19-5.0: the same `oom-kill:` line, `<scope>: Kill process N (C) score S or sacrifice child`, then a bare
  `Killed process M (C) total-vm:...` (M may be a child of N).
- before 4.19 (RHEL/CentOS 7's 3.10, Ubuntu 18.04's 4.15): `Task in /X killed as a result of limit of /Y` (memcg
  OOMs only), the `Kill process ... or sacrifice child` line, then the bare
  `Killed process M (C)[, UID U,] total-vm:...`.
"""

from __future__ import annotations

import re

from exporter.types import KmsgRecord, OomVictim, XidError
from exporter.units import unit_of_cgroup

_SCOPE = r"(?P<scope>Out of memory(?: \([^)]*\))?|Memory cgroup out of memory)"
_KILLED = re.compile(
    r"^(?:" + _SCOPE + r": )?Killed process (?P<pid>\d+) \((?P<comm>.*)\),? (?:UID \d+, )?(?P<rest>total-vm:.*)$"
)
_CHOSEN = re.compile(
    r"^" + _SCOPE + r": Kill process (?P<pid>\d+) \((?P<comm>.*)\) score (?P<score>\d+) or sacrifice child$"
)
_TASK_IN = re.compile(r"^Task in (?P<task>.+?) killed(?: as a result of limit of (?P<limit>.+))?$")
_KB_FIELD = re.compile(r"([a-z-]+):(\d+)kB")
_SCORE_ADJ = re.compile(r"oom_score_adj:(-?\d+)")
_OOM_KILL = re.compile(r"^oom-kill:(?P<body>.*?)(?:,task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+))$")
_XID = re.compile(r"NVRM: Xid \(PCI:(?P<bus>[0-9A-Fa-f:.]+)\): (?P<xid>\d+)(?:, pid=(?P<pid>\d+))?")
_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")


def parse_kmsg_records(text: str) -> list[KmsgRecord]:
    """Records in /dev/kmsg format: 'prio,seq,usec,flags[,...];message' then ' KEY=value' continuation lines."""
    records: list[KmsgRecord] = []
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith(" "):
            if records:
                key, _, value = line[1:].partition("=")
                records[-1].fields[key] = unescape(value)
            continue
        header, sep, message = line.partition(";")
        parts = header.split(",")
        if not sep or len(parts) < 3:
            continue  # not a kmsg record (e.g. a truncated line)
        try:
            records.append(KmsgRecord(int(parts[0]), int(parts[1]), int(parts[2]), unescape(message)))
        except ValueError:
            continue
    return records


def unescape(message: str) -> str:
    """kmsg writes bytes below 32, of 127 and above, and the backslash as \\xNN: runs decode as UTF-8 (bad bytes:
    U+FFFD)."""
    if "\\x" not in message:
        return message
    return _ESCAPES.sub(lambda m: bytes.fromhex(m.group(0).replace("\\x", "")).decode("utf-8", "replace"), message)


def _modern_fields(body: str) -> dict:
    """The keys of an `oom-kill:` line before `,task=`; the cgroup paths are read whole (they may hold commas)."""
    fields: dict = {}
    memcg = re.search(r"(?:^|,)oom_memcg=(.*?)(?:,task_memcg=|$)", body)
    task_memcg = re.search(r"(?:^|,)task_memcg=(.*)$", body)
    head = body[: min(m.start() for m in (memcg, task_memcg) if m)] if (memcg or task_memcg) else body
    for part in head.split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    fields["global_oom"] = "global_oom" in head.split(",")
    if memcg:
        fields["oom_memcg"] = memcg.group(1)
    if task_memcg:
        fields["task_memcg"] = task_memcg.group(1)
    return fields


class OomAssembler:
    """Joins the lines of one OOM report (see the module doc for the three shapes) into one victim per kill."""

    def __init__(self) -> None:
        self._pending: dict[int, dict] = {}  # pid -> fields of its `oom-kill:` line (4.19+)
        self._chosen: dict | None = None  # the last `Kill process ... or sacrifice child` line (before 5.1)
        self._task_in: tuple[str, str] | None = None

    def feed(self, record: KmsgRecord, boot_time: float) -> OomVictim | None:
        message = record.message
        if " invoked oom-killer: " in message:  # a new report starts: forget what an unfinished one left
            self._chosen, self._task_in = None, None
            return None
        if message.startswith("oom-kill:"):
            self._remember_modern(message)
            return None
        if message.startswith("Task in "):
            match = _TASK_IN.match(message)
            if match:
                self._task_in = (match.group("task"), match.group("limit") or "")
            return None
        chosen = _CHOSEN.match(message)
        if chosen:
            self._chosen = {"scope": chosen.group("scope"), "pid": int(chosen.group("pid"))}
            return None
        killed = _KILLED.match(message)
        return self._victim(killed, record, boot_time) if killed else None

    def _remember_modern(self, message: str) -> None:
        match = _OOM_KILL.match(message)
        if not match:
            return
        fields = _modern_fields(match.group("body"))
        fields["task"] = match.group("task")
        self._pending[int(match.group("pid"))] = fields
        if len(self._pending) > 64:  # a 'Killed process' line was lost: forget the oldest
            self._pending.pop(next(iter(self._pending)))

    def _context(self, pid: int, scope: str | None) -> tuple[dict, str | None]:
        """The `oom-kill:` fields and the scope for the victim `pid` (a sacrificed child takes its parent's)."""
        chosen = self._chosen or {}
        info = self._pending.pop(pid, None)
        if info is None and chosen.get("pid") in self._pending:
            info = self._pending.pop(chosen["pid"])
        info = dict(info or {})
        if self._task_in and "task_memcg" not in info:
            info["task_memcg"], info["oom_memcg"] = self._task_in
        return info, scope or chosen.get("scope")

    def _victim(self, match: re.Match, record: KmsgRecord, boot_time: float) -> OomVictim:
        pid = int(match.group("pid"))
        info, scope = self._context(pid, match.group("scope"))
        self._chosen, self._task_in = None, None
        sizes = {key: int(value) * 1024 for key, value in _KB_FIELD.findall(match.group("rest"))}
        rss_parts = [sizes[key] for key in ("anon-rss", "file-rss", "shmem-rss") if key in sizes]
        score = _SCORE_ADJ.search(match.group("rest"))
        cgroup = info.get("task_memcg", "")
        scope = scope or ""
        return OomVictim(
            pid=pid,
            comm=match.group("comm"),
            cgroup=cgroup,
            unit=unit_of_cgroup(cgroup),
            constraint=info.get("constraint", "CONSTRAINT_MEMCG" if scope.startswith("Memory cgroup") else ""),
            global_oom=bool(info.get("global_oom")) or scope.startswith("Out of memory"),
            time_seconds=round(boot_time + record.timestamp_us / 1e6, 6),
            rss_bytes=sum(rss_parts) if rss_parts else None,
            anon_rss_bytes=sizes.get("anon-rss"),
            total_vm_bytes=sizes.get("total-vm"),
            oom_score_adj=int(score.group(1)) if score else None,
            oom_memcg=info.get("oom_memcg", ""),
        )


def parse_xid(record: KmsgRecord, boot_time: float) -> XidError | None:
    """An NVIDIA driver 'NVRM: Xid (PCI:...): N, ...' line, or None."""
    match = _XID.search(record.message)
    if not match:
        return None
    return XidError(
        pci_bus=match.group("bus").lower(),
        xid=int(match.group("xid")),
        pid=int(match.group("pid")) if match.group("pid") else None,
        time_seconds=round(boot_time + record.timestamp_us / 1e6, 6),
        message=record.message,
    )
