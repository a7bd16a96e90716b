"""Acting on the worker: contract and `vllm serve` targets, and a reconciler with timeouts, retries and backoff."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import httpx

from guard.common.types import ActionEvent, Desired
from headroom.auth import bearer_headers
from headroom.contract import DesiredStatus, Maintenance, MaintenanceRequest, StateRequest, WorkerState, WorkerStatus

log = logging.getLogger("headroom.guard.actuator")


@dataclass(frozen=True)
class Outcome:
    """What one call to the worker did: ok (200), accepted (202, slow transition), refused (409/422), error."""

    result: str
    detail: str = ""
    state: WorkerStatus | None = None  # the worker's status when its answer carried one


def _status(body: object) -> WorkerStatus | None:
    """The worker's status from a 200/202 body; None when the body is not one (the next read fetches it)."""
    try:
        return WorkerStatus.model_validate(body)
    except ValueError:
        return None


def _outcome(response: httpx.Response) -> Outcome:
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code in (200, 202):
        return Outcome("ok" if response.status_code == 200 else "accepted", "", _status(body))
    detail = body.get("detail") if isinstance(body, dict) else None
    result = "refused" if response.status_code in (409, 422) else "error"
    return Outcome(result, f"HTTP {response.status_code}: {detail or response.text[:200]}")


class ContractTarget:
    """headroom's worker control contract: GET/PUT /control/state, PUT /control/maintenance."""

    kind = "contract"

    def __init__(self, base_url: str, token: str | None, timeout: float, transport: httpx.BaseTransport | None = None):
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=bearer_headers(token), transport=transport)

    def read(self) -> WorkerStatus:
        """GET /control/state, parsed (httpx.HTTPError when unreachable, ValueError when not the contract's shape)."""
        response = self.client.get("/control/state")
        response.raise_for_status()
        return WorkerStatus.model_validate(response.json())

    def apply(self, desired: Desired) -> Outcome:
        body = StateRequest(state=desired.state, reason=desired.reason[:500], requested_by="headroom-guard",
                            concurrency=desired.concurrency if desired.state == WorkerState.THROTTLED else None,
                            level=desired.level if desired.state == WorkerState.FREED else None)
        return _outcome(self.client.put("/control/state", json=body.model_dump(mode="json", exclude_none=True)))

    def set_maintenance(self, on: bool, reason: str, retry_after: int) -> Outcome:
        body = MaintenanceRequest(on=on, reason=reason, retry_after_seconds=retry_after)
        return _outcome(self.client.put("/control/maintenance", json=body.model_dump(mode="json")))

    def close(self) -> None:
        self.client.close()


class VllmServeTarget:
    """A plain `vllm serve` in dev mode: paused -> /pause, freed -> /sleep?level=, running -> /wake_up + /resume."""

    kind = "vllm-serve"

    def __init__(self, base_url: str, token: str | None, timeout: float, transport: httpx.BaseTransport | None = None):
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, headers=bearer_headers(token), transport=transport)
        self.applied: Desired | None = None

    def read(self) -> WorkerStatus:
        sleeping = self.client.get("/is_sleeping")
        sleeping.raise_for_status()
        paused = self.client.get("/is_paused")
        is_paused = paused.status_code == 200 and bool(paused.json().get("is_paused"))
        state = (WorkerState.FREED if sleeping.json().get("is_sleeping")
                 else WorkerState.PAUSED if is_paused else WorkerState.RUNNING)
        return WorkerStatus(state=state, desired=accepted_status(self.applied))

    def _post(self, path: str, **params) -> httpx.Response:
        return self.client.post(path, params=params or None)

    def apply(self, desired: Desired) -> Outcome:
        if desired.state == WorkerState.THROTTLED:
            return Outcome("refused", "vllm serve has no concurrency control; throttling is not possible")
        if desired.state == WorkerState.PAUSED:
            steps = [("/pause", {})]
        elif desired.state == WorkerState.FREED:
            steps = [("/sleep", {"level": desired.level})]
        else:
            steps = [("/wake_up", {}), ("/resume", {})]
        for path, params in steps:
            response = self._post(path, **params)
            if response.status_code >= 300:
                return Outcome(
                    "error" if response.status_code >= 500 else "refused", f"{path}: HTTP {response.status_code}")
        self.applied = desired
        return Outcome("ok")

    def set_maintenance(self, on: bool, reason: str, retry_after: int) -> Outcome:
        return Outcome("ok", "vllm serve has no maintenance mode; the guard pauses it instead")

    def close(self) -> None:
        self.client.close()


def accepted_status(desired: Desired | None) -> DesiredStatus:
    """The contract's echo of a desired state a target took on itself (vllm serve, cgroup); empty when none."""
    if desired is None:
        return DesiredStatus()
    return DesiredStatus(state=desired.state, concurrency=desired.concurrency, level=desired.level)


def in_sync(observed: WorkerStatus | None, desired: Desired) -> bool:
    """Whether the worker already has `desired` as its accepted desired state (idempotent reconcile)."""
    return observed is not None and observed.desired.key() == desired.key()


class Reconciler:
    """Brings the worker to the desired state; after a failure waits base * 2^n (capped) before trying again."""

    def __init__(self, target, dry_run: bool, backoff_base: float, backoff_max: float):
        self.target, self.dry_run = target, dry_run
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.observed: WorkerStatus | None = None
        self.failures = 0
        self.next_attempt_at = 0.0
        self.last_dry_key: tuple | None = None
        self.read_error: str | None = None

    def read(self) -> WorkerState | None:
        """The worker's current state, None when unreachable or not speaking the contract (remembered in read_error)."""
        try:
            self.observed = self.target.read()
            self.read_error = None
        except (httpx.HTTPError, ValueError) as err:
            self.observed, self.read_error = None, f"{type(err).__name__}: {err}"
        return self.observed.state if self.observed else None

    def _failed(self, now: float) -> None:
        self.failures += 1
        self.next_attempt_at = now + min(self.backoff_max, self.backoff_base * 2 ** (self.failures - 1))

    def _call(self, action: str, now: float, fn) -> list[ActionEvent]:
        try:
            outcome = fn()
        except (httpx.HTTPError, ValueError) as err:  # ValueError: a desired state the contract cannot carry
            outcome = Outcome("error", f"{type(err).__name__}: {err}")
        if outcome.result in ("ok", "accepted"):
            self.failures, self.next_attempt_at = 0, 0.0
            if outcome.state is not None:
                self.observed = outcome.state
        else:
            self._failed(now)
        return [ActionEvent(action, outcome.result, outcome.detail)]

    def reconcile(self, desired: Desired, maintenance: Maintenance, now: float,
                  urgent: bool = False) -> list[ActionEvent]:
        """Zero or more action events; idempotent: nothing is sent when the worker already agrees. An `urgent` wish
        (the fast path's free) is sent at once, whatever the backoff after earlier failures says."""
        want_maint = maintenance.on
        have_maint = self.observed is not None and self.observed.maintenance.on
        state_ok = in_sync(self.observed, desired)
        if state_ok and want_maint == have_maint:
            return []
        if self.dry_run:
            key = (desired.key(), want_maint)
            if key == self.last_dry_key:
                return []
            self.last_dry_key = key
            return [ActionEvent(
                f"set_{desired.state}", "dry_run", f"would set the worker to {desired.describe()} ({desired.reason})")]
        if now < self.next_attempt_at and not urgent:
            return []
        events: list[ActionEvent] = []
        if want_maint != have_maint:
            events += self._call(
                "maintenance_on" if want_maint else "maintenance_off", now, lambda: self.target.set_maintenance(
                    want_maint, maintenance.reason or "", int(maintenance.retry_after_seconds or 60)))
        if not state_ok and not any(e.result == "error" for e in events):
            [sent] = self._call(f"set_{desired.state}", now, lambda: self.target.apply(desired))
            events.append(replace(sent, message=sent.message or f"worker -> {desired.describe()}: {desired.reason}"))
        return events

    def close(self) -> None:
        self.target.close()


def build_target(kind: str, url: str, token: str | None, timeout: float, transport=None):
    cls = VllmServeTarget if kind == "vllm-serve" else ContractTarget
    return cls(url, token, timeout, transport)


class ActingThread:
    """Runs the reconciler beside the loops: submit() records the latest wish and returns at once (acting never
    blocks observing); the thread applies the newest wish, skipping any it superseded while a call was in flight,
    and reads the worker's state every `read_every` seconds, wishes or not (the tick uses the last one read)."""

    def __init__(self, reconciler: Reconciler, on_events, clock=None, read_every: float = 0.25):
        import threading
        import time

        self.reconciler, self.on_events, self.clock, self.read_every = (
            reconciler, on_events, clock or time.time, read_every)
        self.cond = threading.Condition()
        self.wish: tuple[Desired, Maintenance, bool] | None = None  # (desired, maintenance, urgent)
        self.stopping = False
        self.busy_since: float | None = None  # when the call in flight began (None: idle)
        self.thread = threading.Thread(target=self._run, name="headroom-acting", daemon=True)

    def start(self) -> "ActingThread":
        self.thread.start()
        return self

    def submit(self, desired: Desired, maintenance: Maintenance, urgent: bool = False) -> None:
        """The newest wish; `urgent` skips the reconciler's backoff. An urgent wish still waiting is neither made
        routine by a later wish for the same state nor undone by a milder routine one (a tick that has not seen the
        freeze)."""
        with self.cond:
            pending = self.wish
            if pending is not None and pending[2] and not urgent:
                if desired.severity < pending[0].severity:
                    return
                urgent = pending[0].key() == desired.key()
            self.wish = (desired, maintenance, urgent)
            self.cond.notify()

    def _run(self) -> None:
        import time

        read_at = float("-inf")
        while True:
            with self.cond:
                if self.wish is None and not self.stopping:
                    self.cond.wait(self.read_every)
                if self.stopping:
                    return
                wish, self.wish = self.wish, None
            if wish is not None:
                if self.reconciler.observed is None and not wish[2]:  # know what the worker has (urgent: send first)
                    self.reconciler.read()
                self._apply(*wish)
            if time.monotonic() - read_at >= self.read_every:  # a wish every tick must not starve the reads
                self.reconciler.read()
                read_at = time.monotonic()

    def _apply(self, desired: Desired, maintenance: Maintenance, urgent: bool = False) -> None:
        now = self.clock()
        self.busy_since = now
        try:
            events = self.reconciler.reconcile(desired, maintenance, now, urgent)
        except Exception as err:  # a bug in one call must not end acting
            log.exception("reconcile failed")
            events = [ActionEvent(f"set_{desired.state}", "error", repr(err))]
        finally:
            self.busy_since = None
        if events:
            self.on_events(events, now)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread.is_alive():
            self.thread.join(timeout=10)
