"""Follows the kernel log continuously and keeps OOM-kill victims and Xid errors (the exporter's only loop)."""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from exporter.kmsg import OomAssembler, parse_kmsg_records, parse_xid
from exporter.types import OomVictim, XidError

log = logging.getLogger("headroom.exporter.kmsg")
RETRY_OPEN_SECONDS = 30.0


@dataclass
class KmsgState:
    """What the follower has seen; copied out under the lock for each scrape."""

    victims: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))
    victim_counts: collections.Counter = field(default_factory=collections.Counter)  # (comm, cgroup, unit) -> n
    xid_counts: collections.Counter = field(default_factory=collections.Counter)  # (pci_bus, xid) -> n
    xid_last: dict = field(default_factory=dict)  # pci_bus -> unix time
    last_kill_time: float | None = None
    victim_last: dict = field(default_factory=dict)  # (comm, cgroup, unit) -> unix time of its latest kill
    overruns: int = 0  # EPIPE: the kernel ring buffer overwrote records before we read them
    error: str | None = None  # why the log cannot be read right now


class KmsgFollower:
    """Reads `path` (the /dev/kmsg character device, or a regular file in tests) and updates KmsgState."""

    def __init__(self, path: Path, boot_time: float, events_max: int = 100, reader=os.read):
        self.path = path
        self.boot_time = boot_time
        self.state = KmsgState(victims=collections.deque(maxlen=events_max))
        self.lock = threading.Lock()
        self._read = reader
        self._assembler = OomAssembler()
        self._buffer = ""
        self._fd: int | None = None
        self._is_device = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backlog: int | None = None  # while reading the log's backlog at start: the kills found in it

    def start(self) -> None:
        """Read the backlog now (so /events is complete at start), then follow in a daemon thread."""
        self._try_open()
        if self._fd is not None:
            self._backlog = 0
            self.drain()
            if self._backlog:  # counted and listed, but not news: one line, not one WARNING per old kill
                log.info("the kernel log holds %d OOM kill(s) from before this start (in /events and the counters)",
                         self._backlog)
            self._backlog = None
        self._thread = threading.Thread(target=self._run, name="kmsg-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=3)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _try_open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as err:
            hint = (
                " (needs root or CAP_SYSLOG when kernel.dmesg_restrict=1)"
                if err.errno in (errno.EACCES, errno.EPERM)
                else ""
            )
            message = f"cannot read {self.path}: {err.strerror}{hint}; OOM victims are not reported"
            with self.lock:
                if self.state.error != message:
                    log.warning("%s", message)
                self.state.error = message
            return
        self._is_device = stat.S_ISCHR(os.fstat(self._fd).st_mode)
        with self.lock:
            if self.state.error:
                log.info("reading %s again", self.path)
            self.state.error = None

    def drain(self) -> None:
        """Read everything available now, without blocking."""
        while True:
            try:
                chunk = self._read(self._fd, 65536)
            except BlockingIOError:
                break
            except BrokenPipeError:
                with self.lock:
                    self.state.overruns += 1
                log.warning("kernel log overrun: some records were overwritten before they were read")
                continue
            if not chunk:
                break
            self._buffer += chunk.decode("utf-8", "replace")
            if self._is_device:
                self._consume()
        self._consume()

    def _consume(self) -> None:
        text, sep, tail = self._buffer.rpartition("\n")
        if not sep:
            return
        self._buffer = tail
        for record in parse_kmsg_records(text):
            self._handle(record)

    def _handle(self, record) -> None:
        victim = self._assembler.feed(record, self.boot_time)
        if victim is not None:
            self._record_victim(victim)
            return
        xid = parse_xid(record, self.boot_time)
        if xid is not None:
            self._record_xid(xid)

    def _record_victim(self, victim: OomVictim) -> None:
        if self._backlog is None:
            log.warning("OOM kill: pid %d (%s) in %s %s", victim.pid, victim.comm, victim.cgroup or "?", victim.unit)
        else:
            self._backlog += 1
        key = (victim.comm, victim.cgroup, victim.unit)
        with self.lock:
            self.state.victim_last[key] = max(self.state.victim_last.get(key, 0.0), victim.time_seconds)
            self.state.victims.append(victim)
            self.state.victim_counts[(victim.comm, victim.cgroup, victim.unit)] += 1
            self.state.last_kill_time = max(self.state.last_kill_time or 0.0, victim.time_seconds)

    def _record_xid(self, xid: XidError) -> None:
        with self.lock:
            self.state.xid_counts[(xid.pci_bus, xid.xid)] += 1
            self.state.xid_last[xid.pci_bus] = max(self.state.xid_last.get(xid.pci_bus, 0.0), xid.time_seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._fd is None:
                if self._stop.wait(RETRY_OPEN_SECONDS):
                    return
                self._try_open()
                continue
            if self._is_device:
                poller = select.poll()
                poller.register(self._fd, select.POLLIN)
                if not poller.poll(1000):
                    continue
            elif self._stop.wait(0.5):
                return
            try:
                self.drain()
            except OSError as err:
                with self.lock:
                    self.state.error = f"reading {self.path} failed: {err.strerror}"
                log.warning("reading %s failed: %s", self.path, err)
                os.close(self._fd)
                self._fd = None

    def snapshot(self) -> KmsgState:
        with self.lock:
            s = self.state
            return KmsgState(
                victims=collections.deque(s.victims, maxlen=s.victims.maxlen),
                victim_counts=collections.Counter(s.victim_counts),
                xid_counts=collections.Counter(s.xid_counts),
                xid_last=dict(s.xid_last),
                last_kill_time=s.last_kill_time,
                victim_last=dict(s.victim_last),
                overruns=s.overruns,
                error=s.error,
            )


def precise_boot_time(clock=time.clock_gettime, tries: int = 5) -> float:
    """Unix time at boot to the microsecond: CLOCK_REALTIME minus CLOCK_BOOTTIME, read together (the tightest of
    `tries`)."""
    best_gap, best = float("inf"), 0.0
    for _ in range(tries):
        before = clock(time.CLOCK_REALTIME)
        since_boot = clock(time.CLOCK_BOOTTIME)
        after = clock(time.CLOCK_REALTIME)
        if after - before < best_gap:
            best_gap, best = after - before, (before + after) / 2 - since_boot
    return best


def parse_btime(text: str) -> float | None:
    """btime from /proc/stat text (whole seconds), or None."""
    for line in text.splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def read_boot_time(procfs: Path, clock=time.clock_gettime) -> float:
    """Boot time that kmsg timestamps count from.

    /proc/stat's btime is truncated to the second (kill times came out up to 1 s early), so the precise clock
    difference is used whenever it agrees with btime; a procfs root from elsewhere (a fixture tree, another
    boot) keeps its own btime.
    """
    precise = precise_boot_time(clock)
    try:
        btime = parse_btime((procfs / "stat").read_text())
    except OSError:
        btime = None
    if btime is None or -1e-3 <= precise - btime < 1.0 + 1e-3:
        return precise
    return btime
