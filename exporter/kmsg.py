"""Kernel log records (/dev/kmsg): record parsing, and OOM-kill victims and GPU Xid errors read out of them."""

from __future__ import annotations

import re

from exporter.types import KmsgRecord, OomVictim, XidError
from exporter.units import unit_of_cgroup

_KILLED = re.compile(
    r"^(?P<scope>Out of memory(?: \([^)]*\))?|Memory cgroup out of memory): "
    r"Killed process (?P<pid>\d+) \((?P<comm>.*)\) (?P<rest>total-vm:.*)$"
)
_KB_FIELD = re.compile(r"([a-z-]+):(\d+)kB")
_SCORE_ADJ = re.compile(r"oom_score_adj:(-?\d+)")
_OOM_KILL = re.compile(r"^oom-kill:(?P<body>.*?)(?:,task=(?P<task>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+))$")
_XID = re.compile(r"NVRM: Xid \(PCI:(?P<bus>[0-9A-Fa-f:.]+)\): (?P<xid>\d+)(?:, pid=(?P<pid>\d+))?")


def parse_kmsg_records(text: str) -> list[KmsgRecord]:
    """Records in /dev/kmsg format: 'prio,seq,usec,flags[,...];message' then ' KEY=value' continuation lines."""
    records: list[KmsgRecord] = []
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith(" "):
            if records:
                key, _, value = line[1:].partition("=")
                records[-1].fields[key] = value
            continue
        header, sep, message = line.partition(";")
        parts = header.split(",")
        if not sep or len(parts) < 3:
            continue  # not a kmsg record (e.g. a truncated line)
        try:
            records.append(KmsgRecord(int(parts[0]), int(parts[1]), int(parts[2]), _unescape(message)))
        except ValueError:
            continue
    return records


def _unescape(message: str) -> str:
    """kmsg escapes non-printable bytes as \\xNN."""
    if "\\x" not in message:
        return message
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), message)


class OomAssembler:
    """Joins the 'oom-kill:' line (cgroup, task) with the 'Killed process' line (pid, RSS) into one victim."""

    def __init__(self) -> None:
        self._pending: dict[int, dict[str, str]] = {}

    def feed(self, record: KmsgRecord, boot_time: float) -> OomVictim | None:
        message = record.message
        if message.startswith("oom-kill:"):
            match = _OOM_KILL.match(message)
            if match:
                fields = dict(part.split("=", 1) for part in match.group("body").split(",") if "=" in part)
                fields["global_oom"] = "global_oom" in match.group("body")
                fields["task"] = match.group("task")
                self._pending[int(match.group("pid"))] = fields
                if len(self._pending) > 64:  # a 'Killed process' line was lost: forget the oldest
                    self._pending.pop(next(iter(self._pending)))
            return None
        match = _KILLED.match(message)
        if not match:
            return None
        return self._victim(match, record, boot_time)

    def _victim(self, match: re.Match, record: KmsgRecord, boot_time: float) -> OomVictim:
        pid = int(match.group("pid"))
        info = self._pending.pop(pid, {})
        sizes = {key: int(value) * 1024 for key, value in _KB_FIELD.findall(match.group("rest"))}
        rss_parts = [sizes[key] for key in ("anon-rss", "file-rss", "shmem-rss") if key in sizes]
        score = _SCORE_ADJ.search(match.group("rest"))
        cgroup = info.get("task_memcg", "")
        scope = match.group("scope")
        return OomVictim(
            pid=pid,
            comm=match.group("comm"),
            cgroup=cgroup,
            unit=unit_of_cgroup(cgroup),
            constraint=info.get("constraint", "CONSTRAINT_MEMCG" if scope.startswith("Memory cgroup") else ""),
            global_oom=scope.startswith("Out of memory"),
            time_seconds=round(boot_time + record.timestamp_us / 1e6, 3),
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
        time_seconds=round(boot_time + record.timestamp_us / 1e6, 3),
        message=record.message,
    )
