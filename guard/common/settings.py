"""The [guard] section of the configuration: sources, thresholds with hysteresis, and its sub-tables (freeze, fast
path, worker, leases, prometheus). Keys that moved into a sub-table are still read flat, with a deprecation line."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from guard.common.settings_checks import threshold_problems
from guard.common.settings_sections import (
    LEVEL_NAMES,
    FastPathSettings,
    FreezeSettings,
    LeaseSettings,
    PrometheusSettings,
    Rule,
    Size,
    WorkerTarget,
    _gpu_rule,
    _gpu_temperature_rule,
    _predict_rule,
    _psi_rule,
    _ram_rule,
    _swap_rule,
)
from guard.common.signals import SIGNALS, Resource, ResolvedRule, resolve
from headroom.config_moved import Moved, upgrade
from headroom.settings_base import Section, listen_validator

__all__ = [
    "GuardSettings",
    "Rule",
    "Size",
    "LEVEL_NAMES",
    "FastPathSettings",
    "FreezeSettings",
    "LeaseSettings",
    "PrometheusSettings",
    "WorkerTarget",
]

# Where each key of an earlier, flat [guard] now lives: read from files, $HEADROOM_GUARD__* and keyword arguments.
MOVED: Moved = {
    "freeze_enabled": ("freeze", "enabled"),
    "freeze_max_seconds": ("freeze", "max_seconds"),
    "on_no_room": ("freeze", "on_no_room"),
    "freeze_terminate_grace_seconds": ("freeze", "terminate_grace_seconds"),
    "freeze_protect": ("freeze", "protect"),
    "freeze_protect_worker": ("freeze", "protect_worker"),
    "freeze_protect_headroom": ("freeze", "protect_headroom"),
    "freeze_method": ("freeze", "method"),
    "freeze_gpu_poll_min_seconds": ("freeze", "gpu_poll_min_seconds"),
    "freeze_gpu_poll_max_seconds": ("freeze", "gpu_poll_max_seconds"),
    "fast_path": ("fast_path", "enabled"),
    "fast_path_min_interval_seconds": ("fast_path", "min_interval_seconds"),
    "fast_path_max_rate": ("fast_path", "max_rate"),
    "fast_path_notify": ("fast_path", "notify"),
    "worker_url": ("worker", "url"),
    "worker_kind": ("worker", "kind"),
    "worker_timeout_seconds": ("worker", "timeout_seconds"),
    "worker_backoff_base_seconds": ("worker", "backoff_base_seconds"),
    "worker_backoff_max_seconds": ("worker", "backoff_max_seconds"),
    "worker_cgroup": ("worker", "cgroup"),
    "worker_stop": ("worker", "stop"),
    "worker_start": ("worker", "start"),
    "worker_stop_timeout_seconds": ("worker", "stop_timeout_seconds"),
    "worker_cgroup_throttle": ("worker", "cgroup_throttle"),
    "throttle_concurrency": ("worker", "throttle_concurrency"),
    "free_level": ("worker", "free_level"),
    "worker_footprint": ("worker", "footprint"),
    "wake_backoff_window_seconds": ("worker", "wake_backoff_window_seconds"),
    "wake_backoff_max_seconds": ("worker", "wake_backoff_max_seconds"),
    "admit_below_level": ("leases", "admit_below_level"),
    "ram_margin": ("leases", "ram_margin"),
    "gpu_margin": ("leases", "gpu_margin"),
    "max_ttl_seconds": ("leases", "max_ttl_seconds"),
    "max_wait_seconds": ("leases", "max_wait_seconds"),
    "backfill_max_pass_seconds": ("leases", "backfill_max_pass_seconds"),
    "queue_poll_grace_seconds": ("leases", "queue_poll_grace_seconds"),
    "retry_after_seconds": ("leases", "retry_after_seconds"),
    "prometheus_url": ("prometheus", "url"),
    "prometheus_preset": ("prometheus", "preset"),
    "prometheus_queries": ("prometheus", "queries"),
    "prometheus_instance": ("prometheus", "instance"),
}


class GuardSettings(Section):
    MOVED: ClassVar[Moved] = MOVED
    _rules: dict[Resource, ResolvedRule] = PrivateAttr(default_factory=dict)

    listen: str = Field("127.0.0.1:9841", description="Address of the lease API, status page and /metrics.")
    token: str = Field(
        "",
        description=(
            "API token (at least 16 characters); empty means $HEADROOM_TOKEN or the state dir's generated token file."
        ),
    )
    tick_seconds: float = Field(
        default=0.25,
        ge=0.05,
        le=60,
        description=(
            "Observe + decide + act period; Ray's memory monitor refreshes every 250 ms, earlyoom polls at 100-1000 ms."
        ),
    )
    dry_run: bool = Field(False, description='Log decisions and "would act" events, never call the worker (dry run).')
    source: Literal["exporter", "prometheus"] = Field(
        "exporter",
        description=(
            "Where signals come from: the local exporter's /metrics, or a Prometheus server's query API (fleet mode)."
        ),
    )
    exporter_url: str = Field(
        "http://127.0.0.1:9840/metrics", description="The exporter's /metrics URL (its default listen address)."
    )
    source_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="A request to the source gives up after this long (a tick must stay short).",
    )
    stale_after_seconds: float = Field(
        default=3.0,
        gt=0,
        le=600,
        description="Signals older than this are stale: admissions are refused and the worker is left as it is.",
    )
    memory_domain: str = Field(
        "host",
        description=(
            'Memory domain: "host" (MemAvailable) or a cgroup path such as "/headroom.slice" '
            "(limit - usage + reclaimable)."
        ),
    )
    # --- one rule per signal of guard/common/signals.py (its row names the key) ---
    ram: Rule = Field(
        default_factory=_ram_rule,
        description=(
            "Thresholds as room before a kill in the domain: available RAM plus usable swap (free swap - "
            'swap_reserve; "%" of its RAM total, or a size).'
        ),
    )
    gpu: Rule = Field(
        default_factory=_gpu_rule, description='Thresholds as free memory on each GPU ("%" of its total, or a size).'
    )
    psi: Rule = Field(default_factory=_psi_rule, description='Thresholds on the PSI memory "full" avg10 ratio (0..1).')
    swap: Rule = Field(default_factory=_swap_rule, description="Thresholds on the swap-in rate in bytes per second.")
    predict: Rule = Field(
        default_factory=_predict_rule,
        description="Thresholds on predicted seconds until the domain's available RAM reaches zero.",
    )
    gpu_temperature: Rule = Field(
        default_factory=_gpu_temperature_rule,
        description=(
            "Thresholds on each GPU's core temperature in degrees Celsius (the exporter's "
            "headroom_gpu_temperature_celsius); warn and throttle only; none by default (off)."
        ),
    )
    predict_window_seconds: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="Window of recent samples the exhaustion slope is fitted over (a model load takes ~10 s).",
    )
    swap_reserve: Size = Field(
        default="256MiB",
        validate_default=True,
        description=(
            "Free swap not counted as room: what the kernel cannot swap out in the time the guard needs to "
            "act (docs/guard.md: measured swap-out rate x 0.5 s, rounded up). A domain without swap is "
            "unchanged."
        ),
    )
    recovery_hold_seconds: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description=(
            "Once a value is back beyond every threshold by the band, its level is left after this hold "
            "instead of the rule's hold_seconds: 2 s (8 ticks) shows the memory stays back, and leaves the "
            "worker's wake-up (1-2 s for the contract worker re-taking its memory) inside the 5 s target; a"
            " new grower is still caught by the fast path."
        ),
    )
    free_seconds_estimate: float = Field(
        default=2.0,
        ge=0,
        le=600,
        description=(
            "How long freeing the worker takes until the guard has measured it (the measured value replaces"
            " it): with less time than that to exhaustion, a level is entered without its grace."
        ),
    )
    mlock: bool = Field(
        True,
        description=(
            "Lock the guard's pages in RAM (mlockall) so a thrashing host cannot page it out while it must act."
        ),
    )
    events_need_token: bool = Field(
        True,
        description=(
            "GET /v1/events needs the token (events carry alert payloads); false opens them, e.g. for the status page."
        ),
    )
    events_max: int = Field(default=1000, ge=10, le=1_000_000, description="Recent events kept in the state database.")
    store_on_corrupt: Literal["move_aside", "refuse"] = Field(
        "move_aside",
        description=(
            "A state database that fails PRAGMA quick_check at start (truncated, garbage, damaged pages): "
            '"move_aside" renames it to guard.sqlite3.corrupt-<time> (kept, never deleted), logs, raises an'
            ' event, a metric and an alert, and starts fresh; "refuse" exits 5 before serving. move_aside '
            "is the default: a guard that refuses to start protects nothing, and the file holds only leases"
            " and events, which are kept in the moved file."
        ),
    )
    # --- sub-tables ---
    freeze: FreezeSettings = Field(default_factory=FreezeSettings)
    fast_path: FastPathSettings = Field(default_factory=FastPathSettings)
    worker: WorkerTarget = Field(default_factory=WorkerTarget)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        return upgrade(data, MOVED, "guard")

    def __getattr__(self, name: str) -> Any:
        """An old flat name read by code (`settings.freeze_enabled`) is its sub-table's key."""
        if name in MOVED:
            table, key = MOVED[name]
            return getattr(getattr(self, table), key)
        return super().__getattr__(name)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_validator(value)

    @field_validator("memory_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if value != "host" and not value.startswith("/"):
            raise ValueError("expected 'host' or a cgroup path beginning with '/', e.g. /headroom.slice")
        return value

    @model_validator(mode="after")
    def _amounts(self) -> "GuardSettings":
        """Every rule parsed once, here: the tick, admission and the views read numbers from `rules`."""
        self._rules = {
            resource: resolve(getattr(self, signal.setting), resource) for resource, signal in SIGNALS.items()
        }
        problems = threshold_problems(self._rules, self)
        if problems:
            raise ValueError(problems[0])
        return self

    @property
    def rules(self) -> dict[Resource, ResolvedRule]:
        return self._rules
