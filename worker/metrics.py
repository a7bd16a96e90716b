"""The worker's /metrics: a collector that reads the controller and the store on every scrape (own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from headroom.contract import DESIRABLE, WorkerState
from worker.batches import BatchStatus

P = "headroom_worker_"


class WorkerCollector:
    def __init__(self, controller):
        self.controller = controller

    def collect(self):
        controller = self.controller
        snap = controller.snapshot()
        with controller.lock:
            c = controller.counters
            requests, frees = dict(c.requests), dict(c.frees)
            tokens = (c.prompt_tokens, c.generated_tokens, c.steps, c.free_seconds, c.wakes, c.wake_seconds)
            loop = (c.iteration_seconds, c.requeued)
        yield from _state_families(snap)
        yield from _queue_families(snap, controller.store.batch_status_counts())
        yield _by_label(P + "requests", "Requests this process finished, by outcome.", "outcome", requests)
        yield CounterMetricFamily(P + "prompt_tokens", "Prompt tokens of finished requests.", value=tokens[0])
        yield CounterMetricFamily(P + "generated_tokens", "Tokens generated (completion tokens).", value=tokens[1])
        yield CounterMetricFamily(
            P + "steps", "Engine iterations run (continuous batching: one step() each).", value=tokens[2]
        )
        yield CounterMetricFamily(P + "iteration_seconds", "Seconds spent in engine iterations.", value=loop[0])
        yield CounterMetricFamily(
            P + "requeued", "Requests aborted in flight (pause, throttle, free) and queued again.", value=loop[1]
        )
        yield _by_label(P + "frees", "Times the engine was freed, by method.", "method", frees)
        yield CounterMetricFamily(P + "free_seconds", "Seconds spent freeing the engine.", value=tokens[3])
        yield CounterMetricFamily(
            P + "wakes", "Times the engine was woken (rebuilt or woken from sleep).", value=tokens[4]
        )
        yield CounterMetricFamily(P + "wake_seconds", "Seconds spent waking the engine.", value=tokens[5])
        yield from _store_families(controller.store)


def _by_label(name: str, doc: str, label: str, values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _state_families(snap):
    state = GaugeMetricFamily(P + "state", "1 for the worker's current state.", labels=["state"])
    for name in WorkerState:
        state.add_metric([name.value], 1.0 if snap["state"] == name else 0.0)
    yield state
    yield GaugeMetricFamily(
        P + "state_since_timestamp_seconds", "When the current state began (unix seconds).", value=snap["since"]
    )
    desired = GaugeMetricFamily(P + "desired_state", "1 for the last accepted desired state.", labels=["state"])
    for name in DESIRABLE:
        desired.add_metric([name.value], 1.0 if snap["desired"]["state"] == name else 0.0)
    yield desired
    if snap["concurrency"] is not None:
        yield GaugeMetricFamily(
            P + "concurrency_limit",
            "Most requests run at once now (absent when paused or freed).",
            value=snap["concurrency"],
        )
    yield GaugeMetricFamily(
        P + "in_flight_requests", "Requests the engine holds now (counted by the engine).", value=snap["in_flight"]
    )
    yield GaugeMetricFamily(
        P + "maintenance", "1 while maintenance mode is on.", value=1.0 if snap["maintenance"]["on"] else 0.0
    )
    engine = snap["engine"]
    yield GaugeMetricFamily(
        P + "engine_loaded",
        "1 while the engine can serve (0 while starting, freed or asleep).",
        value=1.0 if engine["loaded"] else 0.0,
    )
    yield GaugeMetricFamily(
        P + "engine_freed", "1 while the engine is freed.", value=1.0 if snap["state"] == WorkerState.FREED else 0.0
    )
    info = GaugeMetricFamily(P + "engine_info", "The engine's kind and model.", labels=["kind", "model"])
    info.add_metric([engine["kind"], engine["model"] or ""], 1.0)
    yield info
    if snap["free_level"] is not None:
        yield GaugeMetricFamily(P + "free_level", "The level the engine is freed at.", value=snap["free_level"])
    for key, name in (
        ("last_free_seconds", "last_free_duration_seconds"),
        ("last_wake_seconds", "last_wake_duration_seconds"),
    ):
        if snap[key] is not None:
            yield GaugeMetricFamily(P + name, f"Duration of the last {name.split('_')[1]}.", value=snap[key])


def _queue_families(snap, batch_counts):
    depth = GaugeMetricFamily(
        P + "queue_depth", "Unfinished requests (queued or running), by priority.", labels=["priority"]
    )
    for priority, value in snap["queue"].items():
        depth.add_metric([priority], value)
    yield depth
    batches = GaugeMetricFamily(P + "batches", "Batches in the store, by status.", labels=["status"])
    for status in BatchStatus:
        batches.add_metric([status.value], batch_counts.get(status, 0))
    yield batches


def _store_families(store):
    view = store.health_view()
    with store.health.lock:
        errors = dict(store.health.errors)
    yield _by_label(P + "store_errors", "Writes to the job database that failed, by operation.", "operation", errors)
    yield GaugeMetricFamily(
        P + "store_writable",
        "1 while the job database can be written (0: disk full or failing).",
        value=1.0 if view["writable"] else 0.0,
    )
    yield GaugeMetricFamily(
        P + "store_corrupt_files",
        "Corrupt job databases moved aside and still in the state dir.",
        value=len(view["corrupt_files"]),
    )


def build_registry(controller) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(WorkerCollector(controller))
    return registry
