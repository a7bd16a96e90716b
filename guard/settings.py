"""The [guard] section of the configuration: sources, thresholds with hysteresis, leases, the worker target."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from exporter.units import is_unit_name
from headroom.settings_base import Section, listen_validator
from guard.signals import Resource, ResolvedRule, resolve
from headroom.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]  # "512MiB" or a number of bytes in the file; an int after load

LEVEL_NAMES = ("warn", "throttle", "pause", "free", "freeze")


class Rule(Section):
    """Enter thresholds per level for one resource, plus its hysteresis (grace, hold, band)."""

    # Value at which each level is entered; a level left out is never entered for this resource.
    enter: dict[Literal["warn", "throttle", "pause", "free", "freeze"], float | int | str] = Field(default_factory=dict)
    # Value band: a level is left only once the value is better than enter by this much (kubelet's min-reclaim).
    band: float | int | str = 0
    # Grace: the value must stay past a threshold this long before the level is entered.
    grace_seconds: float = Field(default=1.0, ge=0, le=3600)
    # Hold: the value must stay better than the exit threshold this long before the level is left.
    hold_seconds: float = Field(default=30.0, ge=0, le=86400)


def _ram_rule() -> Rule:
    # earlyoom SIGTERMs at 10 % available and Ray kills at 95 % used; headroom only throttles/pauses, so it starts earlier.
    # freeze at 5 %: a 3 GB/s loader crosses 5 % of a 3 GiB domain in ~50 ms, five 10 ms fast-path polls; a freeze only
    # stops the grower (it resumes unharmed), so it may come early. Below it the kernel's own reserves are close.
    return Rule(enter={"warn": "25%", "throttle": "20%", "pause": "15%", "free": "10%", "freeze": "5%"}, band="5%",
                grace_seconds=1.0, hold_seconds=30.0)


def _gpu_rule() -> Rule:
    # vLLM pre-allocates most of a GPU on purpose, so low GPU free is normal; only warn. Room is made by leases with free_worker.
    return Rule(enter={"warn": "3%"}, band="2%", grace_seconds=5.0, hold_seconds=30.0)


def _psi_rule() -> Rule:
    # systemd-oomd kills at PSI full > 60 % over 10 s for 30 s; headroom reacts at far lower stall ratios, gently.
    return Rule(enter={"warn": 0.05, "throttle": 0.10, "pause": 0.20, "free": 0.40}, band=0.03,
                grace_seconds=3.0, hold_seconds=30.0)


def _swap_rule() -> Rule:
    # Swap-in bytes/s: sustained swap-in is thrashing even when free swap looks fine (what earlyoom users ask for).
    return Rule(enter={"warn": "1MiB", "throttle": "16MiB", "pause": "64MiB"}, band="512KiB",
                grace_seconds=2.0, hold_seconds=30.0)


def _predict_rule() -> Rule:
    # Seconds until the domain is exhausted at the recent slope; kubelet's 10 s polling is too slow, so act on the trend.
    return Rule(enter={"warn": 120, "throttle": 60, "pause": 20}, band=20, grace_seconds=1.0, hold_seconds=30.0)


class GuardSettings(Section):
    _rules: dict[Resource, ResolvedRule] = PrivateAttr(default_factory=dict)

    # Address of the lease API, status page and /metrics.
    listen: str = "127.0.0.1:9841"
    # API token (at least 16 characters); empty means $HEADROOM_TOKEN or the state dir's generated token file.
    token: str = ""
    # Observe + decide + act period; Ray's memory monitor refreshes every 250 ms, earlyoom polls at 100-1000 ms.
    tick_seconds: float = Field(default=0.25, ge=0.05, le=60)
    # Log decisions and "would act" events, never call the worker (dry run).
    dry_run: bool = False
    # Where signals come from: the local exporter's /metrics, or a Prometheus server's query API (fleet mode).
    source: Literal["exporter", "prometheus"] = "exporter"
    # The exporter's /metrics URL (its default listen address).
    exporter_url: str = "http://127.0.0.1:9840/metrics"
    # Prometheus base URL for source = "prometheus".
    prometheus_url: str = "http://127.0.0.1:9090"
    # Query preset: headroom's own metric names, or node_exporter + dcgm-exporter names.
    prometheus_preset: Literal["headroom", "node_exporter_dcgm"] = "headroom"
    # Per-signal PromQL overrides (keys as in guard/promsource.py); {instance} and {cgroup} are substituted.
    prometheus_queries: dict[str, str] = Field(default_factory=dict)
    # The instance label value this guard's host has in Prometheus (fleet mode).
    prometheus_instance: str = ""
    # A request to the source gives up after this long (a tick must stay short).
    source_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    # Signals older than this are stale: admissions are refused and the worker is left as it is.
    stale_after_seconds: float = Field(default=3.0, gt=0, le=600)
    # Memory domain: "host" (MemAvailable) or a cgroup path such as "/headroom.slice" (limit - usage + reclaimable).
    memory_domain: str = "host"
    # Thresholds as available RAM in the domain ("%" of its total, or a size).
    ram: Rule = Field(default_factory=_ram_rule)
    # Thresholds as free memory on each GPU ("%" of its total, or a size).
    gpu: Rule = Field(default_factory=_gpu_rule)
    # Thresholds on the PSI memory "full" avg10 ratio (0..1).
    psi: Rule = Field(default_factory=_psi_rule)
    # Thresholds on the swap-in rate in bytes per second.
    swap: Rule = Field(default_factory=_swap_rule)
    # Thresholds on predicted seconds until the domain's available RAM reaches zero.
    predict: Rule = Field(default_factory=_predict_rule)
    # Window of recent samples the exhaustion slope is fitted over (a model load takes ~10 s).
    predict_window_seconds: float = Field(default=10.0, ge=1, le=600)
    # --- fast path: a thread reads the domain straight from the kernel and freezes/frees within milliseconds ---
    # Run the fast path (it needs the memory domain on this host: /proc/meminfo or the domain's cgroup files).
    fast_path: bool = True
    # Its poll interval shrinks with the headroom left above the freeze threshold (earlyoom's rule), from tick_seconds
    # down to this; 10 ms keeps a 3 GB/s grower to ~30 MB between two looks.
    fast_path_min_interval_seconds: float = Field(default=0.01, ge=0.001, le=1)
    # The fastest growth the interval is sized for, per second: a model load from NVMe or page cache reads 1-3 GB/s.
    fast_path_max_rate: Size = Field(default="3GiB", validate_default=True)
    # Also wake on the kernel's notifications (cgroup v1 memory thresholds via eventfd), not only on the poll.
    fast_path_notify: bool = True
    # Lock the guard's pages in RAM (mlockall) so a thrashing host cannot page it out while it must act.
    mlock: bool = True
    # Once a value is back beyond every threshold by the band, its level is left after this hold instead of the
    # rule's hold_seconds: 2 s (8 ticks) shows the memory stays back, and leaves the worker's wake-up (1-2 s for the
    # contract worker re-taking its memory) inside the 5 s target; a new grower is still caught by the fast path.
    recovery_hold_seconds: float = Field(default=2.0, ge=0, le=3600)
    # How long freeing the worker takes until the guard has measured it (the measured value replaces it): with less
    # time than that to exhaustion, a level is entered without its grace.
    free_seconds_estimate: float = Field(default=2.0, ge=0, le=600)
    # --- end of the fast path block ---
    # Concurrency the worker is throttled to at the throttle level.
    throttle_concurrency: int = Field(default=1, ge=1, le=4096)
    # Free level used when RAM is calm; 1 offloads weights to CPU RAM, so under RAM pressure 2 is always used.
    free_level: Literal[1, 2] = 2
    # Admissions are refused at or above this level (on any resource).
    admit_below_level: Literal["warn", "throttle", "pause", "free"] = "throttle"
    # Kept free beyond every lease, like kubelet's eviction-hard memory.available<100Mi but larger for a GPU box.
    ram_margin: Size = Field(default="512MiB", validate_default=True)
    # GPU bytes kept free beyond every lease (CUDA context and fragmentation).
    gpu_margin: Size = Field(default="256MiB", validate_default=True)
    # Longest lease TTL a client may ask for; heartbeats keep a lease alive.
    max_ttl_seconds: int = Field(default=86400, ge=1)
    # Longest a POST may long-poll while queued.
    max_wait_seconds: int = Field(default=600, ge=0)
    # GET /v1/events needs the token (events carry alert payloads); false opens them, e.g. for the status page.
    events_need_token: bool = True
    # Retry-After suggested to a refused client.
    retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    # Worker control endpoint; empty means no worker is driven (leases and signals only).
    worker_url: str = ""
    # "contract": headroom's worker control contract; "vllm-serve": a plain `vllm serve` in dev mode; "cgroup": any worker, through its cgroup.
    worker_kind: Literal["contract", "vllm-serve", "cgroup"] = "contract"
    # Timeout of each worker request (the worker holds a PUT up to its control_wait_seconds, 2 s); backoff doubles from base to max.
    worker_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    worker_backoff_base_seconds: float = Field(default=0.5, gt=0, le=60)
    worker_backoff_max_seconds: float = Field(default=15.0, gt=0, le=600)
    # worker_kind = "cgroup": the worker's cgroup path ("/system.slice/my-worker.service") or systemd unit ("my-worker.service").
    worker_cgroup: str = ""
    # argv that stops the worker to free it, e.g. ["systemctl", "stop", "my-worker.service"]; unset: SIGTERM, then SIGKILL.
    worker_stop: list[str] | None = None
    # argv that starts it again once the lease that freed it ends; unset: the status says a person must restart it.
    worker_start: list[str] | None = None
    # How long worker_stop (or SIGTERM) gets before the processes left in the cgroup get SIGKILL; also worker_start's limit.
    worker_stop_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # The throttle level: "refuse" (nothing can be throttled from outside; the pause level still freezes) or "pause" (freeze).
    worker_cgroup_throttle: Literal["refuse", "pause"] = "refuse"
    # Recent events kept in the state database.
    events_max: int = Field(default=1000, ge=10, le=1_000_000)
    # --- freeze: the process the kernel would kill is frozen at the freeze level, the worker freed, then it is thawed ---
    # Freeze at all (the freeze level's threshold is `freeze` in the ram and gpu rules).
    freeze_enabled: bool = True
    # Longest a process stays frozen when freeing the worker has not made room; then on_no_room applies.
    # 20 s: freeing the worker took 1.3-6.5 s in the measured runs (a step up to 4.8 s plus the engine shutdown).
    freeze_max_seconds: float = Field(default=20.0, gt=0, le=3600)
    # After freeze_max_seconds: "thaw" leaves the outcome to the kernel, exactly as without headroom, so enabling the
    # guard never kills a process that would have lived; "terminate" sends SIGTERM, then SIGKILL after the grace.
    on_no_room: Literal["thaw", "terminate"] = "thaw"
    # Between SIGTERM and SIGKILL when on_no_room = "terminate".
    freeze_terminate_grace_seconds: float = Field(default=5.0, ge=0, le=600)
    # Never frozen: "unit:NAME.service", "cgroup:/PATH" (and below it), "command:NAME" (comm or argv[0] basename).
    freeze_protect: list[str] = Field(default_factory=lambda: ["unit:sshd.service", "command:sshd", "command:systemd"])
    # Never freeze the worker's processes, or headroom's own (its guard, exporter, CLI, worker).
    freeze_protect_worker: bool = True
    freeze_protect_headroom: bool = True
    # "auto": the cgroup freezer where the process has a cgroup of its own, else SIGSTOP to its process group.
    freeze_method: Literal["auto", "cgroup", "sigstop"] = "auto"
    # GPU: fastest and slowest NVML poll (the interval shrinks as a GPU's free memory nears the freeze threshold).
    freeze_gpu_poll_min_seconds: float = Field(default=0.01, gt=0, le=10)
    freeze_gpu_poll_max_seconds: float = Field(default=0.5, gt=0, le=60)
    # --- end of the freeze block ---
    # A state database that fails PRAGMA quick_check at start (truncated, garbage, damaged pages): "move_aside" renames
    # it to guard.sqlite3.corrupt-<time> (kept, never deleted), logs, raises an event, a metric and an alert, and starts
    # fresh; "refuse" exits 5 before serving. move_aside is the default: a guard that refuses to start protects nothing,
    # and the file holds only leases and events, which are kept in the moved file.
    store_on_corrupt: Literal["move_aside", "refuse"] = "move_aside"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return listen_validator(value)

    @field_validator("freeze_protect")
    @classmethod
    def _protect(cls, value: list[str]) -> list[str]:
        for entry in value:
            kind, _, name = entry.partition(":")
            if kind not in ("unit", "cgroup", "command") or not name:
                raise ValueError(f"expected unit:NAME, cgroup:/PATH or command:NAME, got {entry!r}")
            if kind == "cgroup" and not name.startswith("/"):
                raise ValueError(f"a cgroup path begins with '/', got {entry!r}")
        return value

    @field_validator("memory_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if value != "host" and not value.startswith("/"):
            raise ValueError("expected 'host' or a cgroup path beginning with '/', e.g. /headroom.slice")
        return value

    @field_validator("worker_stop", "worker_start")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(arg.strip() for arg in value)):
            raise ValueError(f"expected a non-empty argv list such as [\"systemctl\", \"stop\", \"my-worker\"], got {value!r} "
                             "(leave the key out to use signals / a person's restart)")
        return value

    @model_validator(mode="after")
    def _cgroup_worker(self) -> "GuardSettings":
        target = self.worker_cgroup
        if self.worker_kind == "cgroup" and not (target.startswith("/") or is_unit_name(target)):
            raise ValueError(f"worker_cgroup: worker_kind = \"cgroup\" needs a cgroup path beginning with '/' or a systemd "
                             f"unit name such as my-worker.service, got {target!r}")
        return self

    @model_validator(mode="after")
    def _amounts(self) -> "GuardSettings":
        """Every rule parsed once, here: the tick, admission and the views read numbers from `rules`."""
        self._rules = {resource: resolve(getattr(self, resource.value), resource) for resource in Resource}
        return self

    @property
    def rules(self) -> dict[Resource, ResolvedRule]:
        return self._rules
