"""The [guard] settings' parts: a signal's Rule (and each default), and the sub-tables [guard.freeze],
[guard.fast_path], [guard.worker], [guard.leases] and [guard.prometheus]."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from exporter.units import is_unit_name
from headroom.settings_base import Section
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
    # earlyoom SIGTERMs at 10 % available and Ray kills at 95 % used; headroom only throttles/pauses, so it starts
    # earlier.
    # freeze at 5 %: a 3 GB/s loader crosses 5 % of a 3 GiB domain in ~50 ms, five 10 ms fast-path polls; a freeze only
    # stops the grower (it resumes unharmed), so it may come early. Below it the kernel's own reserves are close.
    return Rule(enter={"warn": "25%", "throttle": "20%", "pause": "15%", "free": "10%", "freeze": "5%"}, band="5%",
                grace_seconds=1.0, hold_seconds=30.0)


def _gpu_rule() -> Rule:
    # vLLM pre-allocates most of a GPU on purpose, so low GPU free is normal; only warn. Room is made by leases with
    # free_worker.
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
    # Seconds until the domain is exhausted at the recent slope; kubelet's 10 s polling is too slow, so act on the
    # trend.
    return Rule(enter={"warn": 120, "throttle": 60, "pause": 20}, band=20, grace_seconds=1.0, hold_seconds=30.0)


def _gpu_temperature_rule() -> Rule:
    # Off by default: a GPU throttles its own clocks near its slowdown temperature (83-90 C on data-centre parts);
    # set e.g. enter = {warn = 83, throttle = 88} to warn first and then lower the worker's concurrency.
    return Rule(enter={}, band=5, grace_seconds=5.0, hold_seconds=30.0)


class FreezeSettings(Section):
    """[guard.freeze]: the process the kernel would kill is frozen at the freeze level, the worker freed, then it is
    thawed."""

    enabled: bool = Field(
        True,
        description="Freeze at all (the freeze level's threshold is `freeze` in the ram and gpu rules).")
    max_seconds: float = Field(
        default=20.0, gt=0, le=3600,
        description=("Longest a process stays frozen when freeing the worker has not made room; then on_no_room "
                     "applies. 20 s: freeing the worker took 1.3-6.5 s in the measured runs (a step up to 4.8 s plus"
                     " the engine shutdown)."))
    on_no_room: Literal["thaw", "terminate"] = Field(
        "thaw",
        description=("After max_seconds: \"thaw\" leaves the outcome to the kernel, exactly as without headroom, so "
                     "enabling the guard never kills a process that would have lived; \"terminate\" sends SIGTERM, "
                     "then SIGKILL after the grace."))
    terminate_grace_seconds: float = Field(
        default=5.0, ge=0, le=600,
        description="Between SIGTERM and SIGKILL when on_no_room = \"terminate\".")
    protect: list[str] = Field(
        default_factory=lambda: ["cgroup:/system.slice", "cgroup:/init.scope", "unit:sshd.service", "command:sshd",
                                 "command:sshd-session", "command:systemd"],
        description=("Never frozen: \"unit:NAME.service\", \"cgroup:/PATH\" (and below it, in any hierarchy), "
                     "\"command:NAME\" (its comm, from /proc/PID/stat). The defaults keep a systemd host's services "
                     "(system.slice, init.scope) and ssh out; remove \"cgroup:/system.slice\" to let a unit's test be "
                     "frozen."))
    protect_worker: bool = Field(
        True,
        description="Never freeze the worker's processes.")
    protect_headroom: bool = Field(
        True, description="Never freeze headroom's own processes (its guard, exporter, CLI, worker).")
    method: Literal["auto", "cgroup"] = Field(
        "auto",
        description=("Always a cgroup freezer (invisible to a shell's job control): the tree's own cgroup when it "
                     "holds exactly that tree, else one the guard makes in the v1 freezer hierarchy; neither: not "
                     "frozen."))
    gpu_poll_min_seconds: float = Field(
        default=0.01, gt=0, le=10,
        description=("GPU: fastest NVML poll (the interval shrinks as a GPU's free memory nears the freeze "
                     "threshold)."))
    gpu_poll_max_seconds: float = Field(default=0.5, gt=0, le=60, description="GPU: slowest NVML poll.")

    @field_validator("protect")
    @classmethod
    def _protect(cls, value: list[str]) -> list[str]:
        for entry in value:
            kind, _, name = entry.partition(":")
            if kind not in ("unit", "cgroup", "command") or not name:
                raise ValueError(f"expected unit:NAME, cgroup:/PATH or command:NAME, got {entry!r}")
            if kind == "cgroup" and not name.startswith("/"):
                raise ValueError(f"a cgroup path begins with '/', got {entry!r}")
        return value


class FastPathSettings(Section):
    """[guard.fast_path]: a thread reads the domain straight from the kernel and freezes/frees within milliseconds."""

    enabled: bool = Field(
        True,
        description=("Run the fast path (it needs the memory domain on this host: /proc/meminfo or the domain's cgroup "
                     "files)."))
    min_interval_seconds: float = Field(
        default=0.01, ge=0.001, le=1,
        description=("Its poll interval shrinks with the headroom left above the freeze threshold (earlyoom's rule),"
                     " from tick_seconds down to this; 10 ms keeps a 3 GB/s grower to ~30 MB between two looks."))
    max_rate: Size = Field(
        default="3GiB", validate_default=True,
        description=("The fastest growth the interval is sized for, per second: a model load from NVMe or page cache"
                     " reads 1-3 GB/s."))
    notify: bool = Field(
        True,
        description=("Also wake on the kernel's notifications (cgroup v1 memory thresholds via eventfd), not only on"
                     " the poll."))


class WorkerTarget(Section):
    """[guard.worker]: the worker the guard drives, what it asks of it per level, and when a freed one may wake."""

    url: str = Field(
        "",
        description="Worker control endpoint; empty means no worker is driven (leases and signals only).")
    kind: Literal["contract", "vllm-serve", "cgroup"] = Field(
        "contract",
        description=("\"contract\": headroom's worker control contract; \"vllm-serve\": a plain `vllm serve` in dev "
                     "mode; \"cgroup\": any worker, through its cgroup."))
    timeout_seconds: float = Field(
        default=5.0, gt=0, le=60,
        description="Timeout of each worker request (the worker holds a PUT up to its control_wait_seconds, 2 s).")
    backoff_base_seconds: float = Field(
        default=0.5, gt=0, le=60, description=("After a failed worker call, the first wait before the next; it "
                                               "doubles per failure."))
    backoff_max_seconds: float = Field(
        default=15.0, gt=0, le=600, description="The longest wait between failed worker calls.")
    cgroup: str = Field(
        "",
        description=("kind = \"cgroup\": the worker's cgroup path (\"/system.slice/my-worker.service\") or systemd unit"
                     " (\"my-worker.service\")."))
    stop: list[str] | None = Field(
        None,
        description=("argv that stops the worker to free it, e.g. [\"systemctl\", \"stop\", \"my-worker.service\"]; "
                     "unset: SIGTERM, then SIGKILL."))
    start: list[str] | None = Field(
        None,
        description=("argv that starts it again once the lease that freed it ends; unset: the status says a person "
                     "must restart it."))
    stop_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description=("How long stop (or SIGTERM) gets before the processes left in the cgroup get SIGKILL; also "
                     "start's limit."))
    cgroup_throttle: Literal["refuse", "pause"] = Field(
        "refuse",
        description=("The throttle level: \"refuse\" (nothing can be throttled from outside; the pause level still "
                     "freezes) or \"pause\" (freeze)."))
    throttle_concurrency: int = Field(
        default=1, ge=1, le=4096,
        description="Concurrency the worker is throttled to at the throttle level.")
    free_level: Literal[1, 2] = Field(
        2,
        description=("Free level used when RAM is calm; 1 offloads weights to CPU RAM, so under RAM pressure 2 is "
                     "always used."))
    footprint: Size = Field(
        default=0, validate_default=True,
        description=("What the worker takes back when it wakes; 0: the most it was seen holding before its last free "
                     "(its processes' RSS, or its cgroup's anonymous and shared memory)."))
    wake_backoff_window_seconds: float = Field(
        default=600.0, ge=0, le=86400,
        description=("Free/wake cycles within this window count as repeats: each one doubles the wait before the "
                     "next wake."))
    wake_backoff_max_seconds: float = Field(
        default=120.0, ge=0, le=86400,
        description=("The longest a repeat wake is held back by the doubling (a real engine takes tens of seconds to"
                     " load)."))

    @field_validator("stop", "start")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not all(arg.strip() for arg in value)):
            raise ValueError(f"expected a non-empty argv list such as [\"systemctl\", \"stop\", \"my-worker\"], got "
                             f"{value!r} (leave the key out to use signals / a person's restart)")
        return value

    @model_validator(mode="after")
    def _cgroup_worker(self) -> "WorkerTarget":
        target = self.cgroup
        if self.kind == "cgroup" and not (target.startswith("/") or is_unit_name(target)):
            raise ValueError(f"guard.worker.cgroup: kind = \"cgroup\" needs a cgroup path beginning with '/' or a "
                             f"systemd unit name such as my-worker.service, got {target!r}")
        return self


class LeaseSettings(Section):
    """[guard.leases]: admission, margins, the queue and what a refused client is told."""

    admit_below_level: Literal["warn", "throttle", "pause", "free"] = Field(
        "throttle",
        description="Admissions are refused at or above this level (on any resource).")
    ram_margin: Size = Field(
        default="512MiB", validate_default=True,
        description=("Kept free beyond every lease, like kubelet's eviction-hard memory.available<100Mi but larger "
                     "for a GPU box."))
    gpu_margin: Size = Field(
        default="256MiB", validate_default=True,
        description="GPU bytes kept free beyond every lease (CUDA context and fragmentation).")
    max_ttl_seconds: int = Field(
        default=86400, ge=1,
        description="Longest lease TTL a client may ask for; heartbeats keep a lease alive.")
    max_wait_seconds: int = Field(default=600, ge=0, description="Longest a POST may long-poll while queued.")
    backfill_max_pass_seconds: float = Field(
        default=60.0, ge=0, le=86400,
        description=("A later request that fits is granted past a waiting one (backfill) only while that does not "
                     "delay it; one whose start no lease end can make room for is passed over at most this long, "
                     "then nothing is granted past it. 0: strict order."))
    queue_poll_grace_seconds: float = Field(
        default=6.0, ge=1, le=600,
        description=("A waiting request whose client has not polled (or held a long-poll open) for this long is "
                     "withdrawn: a killed client must not keep its place nor keep the worker freed. Waiting answers "
                     "say to poll back within half of it."))
    retry_after_seconds: int = Field(
        default=5, ge=1, le=3600,
        description="Retry-After suggested to a refused client.")


class PrometheusSettings(Section):
    """[guard.prometheus]: the query API read when source = "prometheus" (fleet mode)."""

    url: str = Field(
        "http://127.0.0.1:9090",
        description="Prometheus base URL for source = \"prometheus\".")
    preset: Literal["headroom", "node_exporter_dcgm"] = Field(
        "headroom",
        description="Query preset: headroom's own metric names, or node_exporter + dcgm-exporter names.")
    queries: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Per-signal PromQL overrides (keys as in guard/sources/promsource.py); {instance} and {cgroup} are "
            "substituted."
        ),
    )
    instance: str = Field("", description="The instance label value this guard's host has in Prometheus (fleet mode).")
