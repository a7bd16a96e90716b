"""Acquire a lease (queueing up to a deadline), keep it alive with heartbeats, release it: for run, lease() and pytest."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Callable, Iterator

from headroom.client.http import POLL_SECONDS, Answer, GuardClient
from headroom.config import load_settings
from headroom.sizes import format_size, parse_size

log = logging.getLogger("headroom.lease")


class LeaseNotGranted(Exception):
    """The guard refused, or the wait ran out; `answer` has the reason and the shortfall per resource."""

    def __init__(self, answer: Answer, waited_seconds: float = 0.0):
        self.answer = answer
        self.waited_seconds = waited_seconds
        super().__init__(describe_refusal(answer, waited_seconds))


def describe_shortfall(shortfall: dict) -> str:
    parts = []
    for resource, value in sorted(shortfall.items()):
        parts.append(f"{resource} short by {format_size(value)}" if isinstance(value, (int, float)) else f"{resource}: {value}")
    return ", ".join(parts)


def describe_refusal(answer: Answer, waited: float = 0.0) -> str:
    text = {"stale": "the guard's signals are stale", "waiting": f"still queued after {waited:.0f}s"}.get(answer.status, "refused")
    if answer.reason:
        text += f": {answer.reason}"
    if answer.shortfall:
        text += f" ({describe_shortfall(answer.shortfall)})"
    return text


def lease_body(holder: str, gpu: str | int | None = None, ram: str | int | None = None, gpu_index: str | None = None,
               ttl_seconds: int = 60, free_worker: bool = False, pid: int | None = None) -> dict:
    body = {"holder": holder, "gpu_bytes": parse_size(gpu or 0), "ram_bytes": parse_size(ram or 0),
            "ttl_seconds": ttl_seconds, "free_worker": free_worker, "gpu": str(gpu_index) if gpu_index is not None else "any"}
    if pid:
        body["pid"] = pid
    return body


class Lease:
    """A granted lease; heartbeats keep it alive (renewing the TTL) until release()."""

    def __init__(self, client: GuardClient, answer: Answer):
        self.client = client
        self.answer = answer
        self.id: str = answer.lease["id"]
        self.gpu: str | None = answer.lease.get("gpu_chosen")
        self.ttl_seconds: float = float(answer.lease.get("ttl_seconds") or 60)
        self.lost: str | None = None  # why heartbeats stopped working (the guard expired or forgot the lease)
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register_pid(self, pid: int) -> None:
        """Tell the guard which process uses the lease, so its memory is not counted twice."""
        self._pid = pid
        self.client.heartbeat(self.id, pid)

    def start_heartbeats(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = max(1.0, self.ttl_seconds / 3)
        while not self._stop.wait(interval):
            try:
                self.client.heartbeat(self.id, self._pid)
            except Exception as err:  # keep trying: a guard restart keeps its leases
                log.warning("heartbeat for lease %s failed: %s", self.id, err)
                self.lost = str(err)

    def release(self) -> None:
        self._stop.set()
        try:
            self.client.release(self.id)
        except Exception as err:
            log.warning("releasing lease %s failed (it expires after its TTL): %s", self.id, err)


def acquire(client: GuardClient, body: dict, wait_seconds: float = 0.0,
            progress: Callable[[Answer, float], None] | None = None, clock=time.monotonic) -> Lease:
    """A granted Lease, waiting in the guard's queue up to `wait_seconds`; LeaseNotGranted otherwise."""
    start = clock()
    answer = client.request(body, wait_seconds=wait_seconds)
    while answer.status == "waiting":
        waited = clock() - start
        remaining = wait_seconds - waited
        if remaining <= 0:
            with contextlib.suppress(Exception):
                client.release(answer.lease_id)
            raise LeaseNotGranted(answer, waited)
        if progress:
            progress(answer, waited)
        answer = client.poll(answer.lease_id, min(remaining, POLL_SECONDS))
    if answer.status != "granted":
        raise LeaseNotGranted(answer, clock() - start)
    return Lease(client, answer)


@contextlib.contextmanager
def lease(gpu: str | int | None = None, ram: str | int | None = None, *, holder: str = "python", gpu_index: str | None = None,
          wait: float = 0.0, free_worker: bool = False, ttl_seconds: int = 60, config: str | None = None,
          url: str | None = None) -> Iterator[Lease]:
    """`with lease(gpu="14GiB", ram="2GiB"): load_model()` holds headroom for the block (CUDA_VISIBLE_DEVICES is yours to set)."""
    client = GuardClient.from_settings(load_settings(config), url)
    try:
        held = acquire(client, lease_body(holder, gpu, ram, gpu_index, ttl_seconds, free_worker, os.getpid()), wait)
        held.start_heartbeats()
        try:
            yield held
        finally:
            held.release()
    finally:
        client.close()
