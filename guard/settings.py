"""The [guard] section of the configuration: sources, thresholds with hysteresis, leases, the worker target."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from exporter.units import is_unit_name
from headroom.settings_base import Section, listen_validator
from guard.signals import SIGNALS, Resource, ResolvedRule, resolve
from guard.settings_checks import threshold_problems
from headroom.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]  # "512MiB" or a number of bytes in the file; an int after load

LEVEL_NAMES = ("warn", "throttle", "pause", "free", "freeze")


class Rule(Section):
    """Enter thresholds per level for one resource, plus its hysteresis (grace, hold, band)."""

    enter: dict[Literal["warn", "throttle", "pause", "free", "freeze"], float | int | str] = Field(
        default_factory=dict,
        description="Value at which each level is entered; a level left out is never entered for this resource.")
    band: float | int | str = Field(
        0,
        description=("Value band: a level is left only once the value is better than enter by this much (kubelet's min-"
                     "reclaim)."))
    grace_seconds: float = Field(
        default=1.0, ge=0, le=3600,
        description="Grace: the value must stay past a threshold this long before the level is entered.")
    hold_seconds: float = Field(
        default=30.0, ge=0, le=86400,
        description="Hold: the value must stay better than the exit threshold this long before the level is left.")


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


def _gpu_temperature_rule() -> Rule:
    # Off by default: a GPU throttles its own clocks near its slowdown temperature (83-90 C on data-centre parts);
    # set e.g. enter = {warn = 83, throttle = 88} to warn first and then lower the worker's concurrency.
    return Rule(enter={}, band=5, grace_seconds=5.0, hold_seconds=30.0)


class GuardSettings(Section):
    _rules: dict[Resource, ResolvedRule] = PrivateAttr(default_factory=dict)

    listen: str = Field("127.0.0.1:9841", description="Address of the lease API, status page and /metrics.")
    token: str = Field(
        "",
        description=("API token (at least 16 characters); empty means $HEADROOM_TOKEN or the state dir's generated token "
                     "file."))
    tick_seconds: float = Field(
        default=0.25, ge=0.05, le=60,
        description=("Observe + decide + act period; Ray's memory monitor refreshes every 250 ms, earlyoom polls at "
                     "100-1000 ms."))
    dry_run: bool = Field(
        False,
        description="Log decisions and \"would act\" events, never call the worker (dry run).")
    source: Literal["exporter", "prometheus"] = Field(
        "exporter",
        description=("Where signals come from: the local exporter's /metrics, or a Prometheus server's query API (fleet "
                     "mode)."))
    exporter_url: str = Field(
        "http://127.0.0.1:9840/metrics",
        description="The exporter's /metrics URL (its default listen address).")
    prometheus_url: str = Field(
        "http://127.0.0.1:9090",
        description="Prometheus base URL for source = \"prometheus\".")
    prometheus_preset: Literal["headroom", "node_exporter_dcgm"] = Field(
        "headroom",
        description="Query preset: headroom's own metric names, or node_exporter + dcgm-exporter names.")
    prometheus_queries: dict[str, str] = Field(
        default_factory=dict,
        description=("Per-signal PromQL overrides (keys as in guard/promsource.py); {instance} and {cgroup} are "
                     "substituted."))
    prometheus_instance: str = Field(
        "",
        description="The instance label value this guard's host has in Prometheus (fleet mode).")
    source_timeout_seconds: float = Field(
        default=1.0, gt=0, le=30,
        description="A request to the source gives up after this long (a tick must stay short).")
    stale_after_seconds: float = Field(
        default=3.0, gt=0, le=600,
        description="Signals older than this are stale: admissions are refused and the worker is left as it is.")
    memory_domain: str = Field(
        "host",
        description=("Memory domain: \"host\" (MemAvailable) or a cgroup path such as \"/headroom.slice\" (limit - usage + "
                     "reclaimable)."))
    ram: Rule = Field(
        default_factory=_ram_rule,
        description=("Thresholds as room before a kill in the domain: available RAM plus usable swap (free swap - "
                     "swap_reserve; \"%\" of its RAM total, or a size)."))
    gpu: Rule = Field(
        default_factory=_gpu_rule,
        description="Thresholds as free memory on each GPU (\"%\" of its total, or a size).")
    psi: Rule = Field(
        default_factory=_psi_rule,
        description="Thresholds on the PSI memory \"full\" avg10 ratio (0..1).")
    swap: Rule = Field(default_factory=_swap_rule, description="Thresholds on the swap-in rate in bytes per second.")
    predict: Rule = Field(
        default_factory=_predict_rule,
        description="Thresholds on predicted seconds until the domain's available RAM reaches zero.")
    gpu_temperature: Rule = Field(
        default_factory=_gpu_temperature_rule,
        description=("Thresholds on each GPU's core temperature in degrees Celsius (the exporter's "
                     "headroom_gpu_temperature_celsius); warn and throttle only; none by default (off)."))
    predict_window_seconds: float = Field(
        default=10.0, ge=1, le=600,
        description="Window of recent samples the exhaustion slope is fitted over (a model load takes ~10 s).")
    # --- swap and the worker's return: room is RAM + usable swap; a freed worker wakes only where it fits ---
    swap_reserve: Size = Field(
        default="256MiB", validate_default=True,
        description=("Free swap not counted as room: what the kernel cannot swap out in the time the guard needs to act "
                     "(docs/guard.md: measured swap-out rate x 0.5 s, rounded up). A domain without swap is unchanged."))
    worker_footprint: Size = Field(
        default=0, validate_default=True,
        description=("What the worker takes back when it wakes; 0: the most it was seen holding before its last free "
                     "(its processes' RSS, or its cgroup's anonymous and shared memory)."))
    wake_backoff_window_seconds: float = Field(
        default=600.0, ge=0, le=86400,
        description="Free/wake cycles within this window count as repeats: each one doubles the wait before the next wake.")
    wake_backoff_max_seconds: float = Field(
        default=120.0, ge=0, le=86400,
        description="The longest a repeat wake is held back by the doubling (a real engine takes tens of seconds to load).")
    # --- fast path: a thread reads the domain straight from the kernel and freezes/frees within milliseconds ---
    fast_path: bool = Field(
        True,
        description=("Run the fast path (it needs the memory domain on this host: /proc/meminfo or the domain's cgroup "
                     "files)."))
    fast_path_min_interval_seconds: float = Field(
        default=0.01, ge=0.001, le=1,
        description=("Its poll interval shrinks with the headroom left above the freeze threshold (earlyoom's rule), from "
                     "tick_seconds down to this; 10 ms keeps a 3 GB/s grower to ~30 MB between two looks."))
    fast_path_max_rate: Size = Field(
        default="3GiB", validate_default=True,
        description=("The fastest growth the interval is sized for, per second: a model load from NVMe or page cache reads"
                     " 1-3 GB/s."))
    fast_path_notify: bool = Field(
        True,
        description=("Also wake on the kernel's notifications (cgroup v1 memory thresholds via eventfd), not only on the "
                     "poll."))
    mlock: bool = Field(
        True,
        description="Lock the guard's pages in RAM (mlockall) so a thrashing host cannot page it out while it must act.")
    recovery_hold_seconds: float = Field(
        default=2.0, ge=0, le=3600,
        description=("Once a value is back beyond every threshold by the band, its level is left after this hold instead "
                     "of the rule's hold_seconds: 2 s (8 ticks) shows the memory stays back, and leaves the worker's wake-"
                     "up (1-2 s for the contract worker re-taking its memory) inside the 5 s target; a new grower is still"
                     " caught by the fast path."))
    free_seconds_estimate: float = Field(
        default=2.0, ge=0, le=600,
        description=("How long freeing the worker takes until the guard has measured it (the measured value replaces it): "
                     "with less time than that to exhaustion, a level is entered without its grace."))
    # --- end of the fast path block ---
    throttle_concurrency: int = Field(
        default=1, ge=1, le=4096,
        description="Concurrency the worker is throttled to at the throttle level.")
    free_level: Literal[1, 2] = Field(
        2,
        description=("Free level used when RAM is calm; 1 offloads weights to CPU RAM, so under RAM pressure 2 is always "
                     "used."))
    admit_below_level: Literal["warn", "throttle", "pause", "free"] = Field(
        "throttle",
        description="Admissions are refused at or above this level (on any resource).")
    ram_margin: Size = Field(
        default="512MiB", validate_default=True,
        description=("Kept free beyond every lease, like kubelet's eviction-hard memory.available<100Mi but larger for a "
                     "GPU box."))
    gpu_margin: Size = Field(
        default="256MiB", validate_default=True,
        description="GPU bytes kept free beyond every lease (CUDA context and fragmentation).")
    max_ttl_seconds: int = Field(
        default=86400, ge=1,
        description="Longest lease TTL a client may ask for; heartbeats keep a lease alive.")
    max_wait_seconds: int = Field(default=600, ge=0, description="Longest a POST may long-poll while queued.")
    backfill_max_pass_seconds: float = Field(
        default=60.0, ge=0, le=86400,
        description=("A later request that fits is granted past a waiting one (backfill) only while that does not delay it;"
                     " one whose start no lease end can make room for is passed over at most this long, then nothing is "
                     "granted past it. 0: strict order."))
    queue_poll_grace_seconds: float = Field(
        default=6.0, ge=1, le=600,
        description=("A waiting request whose client has not polled (or held a long-poll open) for this long is withdrawn:"
                     " a killed client must not keep its place nor keep the worker freed. Waiting answers say to poll "
                     "back within half of it."))
    events_need_token: bool = Field(
        True,
        description=("GET /v1/events needs the token (events carry alert payloads); false opens them, e.g. for the status "
                     "page."))
    retry_after_seconds: int = Field(
        default=5, ge=1, le=3600,
        description="Retry-After suggested to a refused client.")
    worker_url: str = Field(
        "",
        description="Worker control endpoint; empty means no worker is driven (leases and signals only).")
    worker_kind: Literal["contract", "vllm-serve", "cgroup"] = Field(
        "contract",
        description=("\"contract\": headroom's worker control contract; \"vllm-serve\": a plain `vllm serve` in dev mode; "
                     "\"cgroup\": any worker, through its cgroup."))
    worker_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60,
        description="Timeout of each worker request (the worker holds a PUT up to its control_wait_seconds, 2 s).")
    worker_backoff_base_seconds: float = Field(
        default=0.5, gt=0, le=60, description="After a failed worker call, the first wait before the next; it doubles per failure.")
    worker_backoff_max_seconds: float = Field(
        default=15.0, gt=0, le=600, description="The longest wait between failed worker calls.")
    worker_cgroup: str = Field(
        "",
        description=("worker_kind = \"cgroup\": the worker's cgroup path (\"/system.slice/my-worker.service\") or systemd unit"
                     " (\"my-worker.service\")."))
    worker_stop: list[str] | None = Field(
        None,
        description=("argv that stops the worker to free it, e.g. [\"systemctl\", \"stop\", \"my-worker.service\"]; unset: "
                     "SIGTERM, then SIGKILL."))
    worker_start: list[str] | None = Field(
        None,
        description=("argv that starts it again once the lease that freed it ends; unset: the status says a person must "
                     "restart it."))
    worker_stop_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description=("How long worker_stop (or SIGTERM) gets before the processes left in the cgroup get SIGKILL; also "
                     "worker_start's limit."))
    worker_cgroup_throttle: Literal["refuse", "pause"] = Field(
        "refuse",
        description=("The throttle level: \"refuse\" (nothing can be throttled from outside; the pause level still freezes) "
                     "or \"pause\" (freeze)."))
    events_max: int = Field(default=1000, ge=10, le=1_000_000, description="Recent events kept in the state database.")
    # --- freeze: the process the kernel would kill is frozen at the freeze level, the worker freed, then it is thawed ---
    freeze_enabled: bool = Field(
        True,
        description="Freeze at all (the freeze level's threshold is `freeze` in the ram and gpu rules).")
    freeze_max_seconds: float = Field(
        default=20.0, gt=0, le=3600,
        description=("Longest a process stays frozen when freeing the worker has not made room; then on_no_room applies. "
                     "20 s: freeing the worker took 1.3-6.5 s in the measured runs (a step up to 4.8 s plus the engine "
                     "shutdown)."))
    on_no_room: Literal["thaw", "terminate"] = Field(
        "thaw",
        description=("After freeze_max_seconds: \"thaw\" leaves the outcome to the kernel, exactly as without headroom, so "
                     "enabling the guard never kills a process that would have lived; \"terminate\" sends SIGTERM, then "
                     "SIGKILL after the grace."))
    freeze_terminate_grace_seconds: float = Field(
        default=5.0, ge=0, le=600,
        description="Between SIGTERM and SIGKILL when on_no_room = \"terminate\".")
    freeze_protect: list[str] = Field(
        default_factory=lambda: ["cgroup:/system.slice", "cgroup:/init.scope", "unit:sshd.service", "command:sshd",
                                 "command:sshd-session", "command:systemd"],
        description=("Never frozen: \"unit:NAME.service\", \"cgroup:/PATH\" (and below it, in any hierarchy), \"command:NAME\" "
                     "(its comm, from /proc/PID/stat). The defaults keep a systemd host's services (system.slice, "
                     "init.scope) and ssh out; remove \"cgroup:/system.slice\" to let a unit's test be frozen."))
    freeze_protect_worker: bool = Field(
        True,
        description="Never freeze the worker's processes.")
    freeze_protect_headroom: bool = Field(
        True, description="Never freeze headroom's own processes (its guard, exporter, CLI, worker).")
    freeze_method: Literal["auto", "cgroup"] = Field(
        "auto",
        description=("Always a cgroup freezer (invisible to a shell's job control): the tree's own cgroup when it holds "
                     "exactly that tree, else one the guard makes in the v1 freezer hierarchy; neither: not frozen."))
    freeze_gpu_poll_min_seconds: float = Field(
        default=0.01, gt=0, le=10,
        description=("GPU: fastest NVML poll (the interval shrinks as a GPU's free memory nears the freeze "
                     "threshold)."))
    freeze_gpu_poll_max_seconds: float = Field(default=0.5, gt=0, le=60, description="GPU: slowest NVML poll.")
    # --- end of the freeze block ---
    store_on_corrupt: Literal["move_aside", "refuse"] = Field(
        "move_aside",
        description=("A state database that fails PRAGMA quick_check at start (truncated, garbage, damaged pages): "
                     "\"move_aside\" renames it to guard.sqlite3.corrupt-<time> (kept, never deleted), logs, raises an "
                     "event, a metric and an alert, and starts fresh; \"refuse\" exits 5 before serving. move_aside is the "
                     "default: a guard that refuses to start protects nothing, and the file holds only leases and events, "
                     "which are kept in the moved file."))

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
        self._rules = {resource: resolve(getattr(self, signal.setting), resource) for resource, signal in SIGNALS.items()}
        problems = threshold_problems(self._rules, self)
        if problems:
            raise ValueError(problems[0])
        return self

    @property
    def rules(self) -> dict[Resource, ResolvedRule]:
        return self._rules
