"""Acquire a lease (queueing up to a deadline), keep it alive with heartbeats, release it: for run, lease() and
pytest."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Callable, Iterator

from headroom.client.http import POLL_SECONDS, Answer, GuardClient
from headroom.client.progress import ProgressLine, describe_shortfall
from headroom.config import load_settings
from headroom.discover import find_config
from headroom.sizes import parse_size

log = logging.getLogger("headroom.lease")


class LeaseNotGranted(Exception):
    """The guard refused, or the wait ran out; `answer` has the reason and the shortfall per resource."""

    def __init__(self, answer: Answer, waited_seconds: float = 0.0):
        self.answer = answer
        self.waited_seconds = waited_seconds
        super().__init__(describe_refusal(answer, waited_seconds))


def describe_refusal(answer: Answer, waited: float = 0.0) -> str:
    text = {"stale": "the guard's signals are stale", "waiting": f"still queued after {waited:.0f}s"}.get(
        answer.status, "refused"
    )
    if answer.reason:
        text += f": {answer.reason}"
    if answer.shortfall and "short by" not in answer.reason:  # the guard's reason may already give it
        text += f" ({describe_shortfall(answer.shortfall)})"
    return text


def lease_body(
    holder: str,
    gpu: str | int | None = None,
    ram: str | int | None = None,
    gpu_index: str | None = None,
    ttl_seconds: int = 60,
    free_worker: bool = False,
    pid: int | None = None,
) -> dict:
    body = {
        "holder": holder,
        "gpu_bytes": parse_size(gpu or 0),
        "ram_bytes": parse_size(ram or 0),
        "ttl_seconds": ttl_seconds,
        "free_worker": free_worker,
        "gpu": str(gpu_index) if gpu_index is not None else "any",
    }
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


def acquire(
    client: GuardClient,
    body: dict,
    wait_seconds: float = 0.0,
    progress: Callable[[Answer, float], None] | None = None,
    clock=time.monotonic,
) -> Lease:
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


def client_settings(config: str | None = None):
    """(settings, how they were found) for lease() and the pytest plugin: the same discovery as the CLI."""
    found = find_config(config)
    return load_settings(found.path), found.how


def acquire_showing(client: GuardClient, body: dict, wait: float, prefix: str) -> Lease:
    """acquire() with a progress line on stderr while queued (position, what is freed, time waited)."""
    progress = ProgressLine(prefix=prefix)
    start = time.monotonic()
    try:
        held = acquire(client, body, wait, progress.update)
    except LeaseNotGranted as err:
        progress.finish(f"{prefix}: not granted after {err.waited_seconds:.0f}s")
        raise
    progress.finish(f"{prefix}: granted after {time.monotonic() - start:.0f}s")
    return held


@contextlib.contextmanager
def lease(
    gpu: str | int | None = None,
    ram: str | int | None = None,
    *,
    holder: str = "python",
    gpu_index: str | None = None,
    wait: float = 0.0,
    free_worker: bool = False,
    ttl_seconds: int = 60,
    config: str | None = None,
    url: str | None = None,
) -> Iterator[Lease]:
    """`with lease(gpu="14GiB", ram="2GiB"): load_model()` holds headroom for the block.

    CUDA_VISIBLE_DEVICES is yours to set. While queued it prints a line to stderr (live on a terminal, every few
    seconds otherwise).
    """
    settings, found = client_settings(config)
    client = GuardClient.from_settings(settings, url, found)
    try:
        body = lease_body(holder, gpu, ram, gpu_index, ttl_seconds, free_worker, os.getpid())
        held = acquire_showing(client, body, wait, f"headroom lease {holder}")
        held.start_heartbeats()
        try:
            yield held
        finally:
            held.release()
    finally:
        client.close()
