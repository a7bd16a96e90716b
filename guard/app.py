"""The guard service: create_app(settings, deps) builds the FastAPI app; serve() binds and runs it."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable

from fastapi import FastAPI

from guard.targets.actuator import Reconciler, build_target
from guard.http.api import build_router
from guard.core.facade import GuardFacade
from guard.http.routes_freeze import build_freeze_router
from guard.core.manager import Manager
from guard.core.manager_protect import gpu_froze
from guard.http.metrics import build_registry
from guard.sources.observer import Observer, build_source
from guard.common.store import Store
from guard.http.views import fast_path_stuck
from headroom import gate
from headroom.auth import bearer_dependency, load_or_create_token
from headroom.dbfile import install_store_handlers
from headroom.settings_base import base_url

log = logging.getLogger("headroom.guard")
STORE_RETRY_SECONDS = 2.0  # how often what waits in memory is written again while the store fails
THAW_RETRY_SECONDS = 5.0  # without a fast path, how often a thaw the kernel refused is tried again from frozen.json


@dataclass
class Deps:
    """What the app is wired to; tests inject fakes (observer, reconciler, clock) and may drive ticks by hand."""

    manager: Manager
    token: str
    run_scheduler: bool = True


def build_deps(
    settings, source_transport=None, worker_transport=None, clock: Callable[[], float] | None = None
) -> Deps:
    """Real dependencies from the configuration: source, store in the state dir, worker target, token."""
    guard = settings.guard
    token = load_or_create_token(settings.state_dir, guard.token or None)
    clock = clock or time.time  # one clock through the source, the store and the manager
    observer = Observer(build_source(guard, source_transport, clock))
    store = Store(settings.state_dir, guard.events_max, on_corrupt=guard.store_on_corrupt, clock=clock)
    reconciler = target = None
    if guard.worker_kind == "cgroup":
        from guard.targets.cgroup_target import build_cgroup_target
        from guard.targets.cgroup_hierarchies import gpu_process_bytes

        target = build_cgroup_target(guard, store)  # refuses a cgroup it cannot safely act on, before anything starts
    elif guard.worker_url:
        target = build_target(
            guard.worker_kind, guard.worker_url, token, guard.worker_timeout_seconds, worker_transport
        )
    if target is not None:
        reconciler = Reconciler(
            target, guard.dry_run, guard.worker_backoff_base_seconds, guard.worker_backoff_max_seconds
        )
    manager = Manager(guard, observer, store, reconciler, clock=clock)
    manager.set_worker_warning(undriven_worker_warning(settings, target is not None))
    if manager.worker_warning:
        log.warning("%s", manager.worker_warning)
    if guard.worker_kind == "cgroup":  # "freed" needs the GPU memory of the worker's processes gone too
        target.gpu_processes = lambda: gpu_process_bytes(manager.snapshot.gpus)
    return Deps(manager, token)


def undriven_worker_warning(settings, driven: bool) -> str | None:
    """A worker enabled in the config that this guard does not drive is unprotected: say so (log, status, page)."""
    worker = getattr(settings, "worker", None)
    if driven or worker is None or not worker.enabled:
        return None
    return (
        "[worker] enabled = true but this guard does not drive it ([guard.worker] url is empty), so it is never "
        f'throttled, paused or freed: set [guard.worker] url = "{base_url(worker.listen)}" '
        "(`headroom up` does this for the worker it starts)"
    )


def _retry_store(store: Store) -> None:
    """Write what waited in memory once the disk has room again (a no-op while the store works)."""
    try:
        if store.unrecorded() or not store.health.writable:
            store.retry()
    except Exception:
        log.exception("store retry failed")


def _retry_thaws(state_dir) -> None:
    """Without a fast path: thaw records a refused thaw left in frozen.json (a no-op when there are none)."""
    from guard.protect.frozenfile import records_path
    from guard.protect.recovery import thaw_and_log

    if records_path(state_dir).exists() and records_path(state_dir).stat().st_size > 2:  # more than "[]"
        thaw_and_log(state_dir)


def build_protection(guard, manager: Manager):
    """(fast path, GPU freeze watch) over the configured domain and GPUs; None for what is disabled."""
    if not guard.fast_path.enabled:
        return None, None
    from guard.protect.domain import DomainReader
    from guard.protect.fastpath import FastPath
    from guard.protect.freezer import Freezer

    freezer = Freezer(guard, manager.store, worker_pids=manager.worker_pids, facts=manager.freeze_facts)
    for item in freezer.recover():  # always, even with freezing off now: a previous guard may have left some
        log.warning("recovered pid %s (%s), left frozen by a previous guard", item.pid, item.comm)
    # Kept with freezing off too: it freezes nothing then (freeze() checks freeze_enabled), but it retries a thaw the
    # kernel refused at recovery, and /v1/frozen and /metrics show that record.
    fast = FastPath(
        guard,
        DomainReader(guard.memory_domain, swap_reserve=guard.swap_reserve),
        manager,
        freezer,
        worker_bytes=lambda: max(
            manager.worker_pids.rss_bytes(), manager.wake.footprint_bytes, float(guard.worker_footprint or 0)
        ),  # what the worker takes back on waking: not its RSS alone, which is ~0 if the tick freed it first
    )
    return fast, build_gpu_watch(guard, manager, freezer)


def build_gpu_watch(guard, manager: Manager, freezer, nvml=None):
    """The freezer on GPUs when the gpu rule has a freeze level and NVML answers; it frees the worker on a freeze."""
    if freezer is None or "freeze" not in guard.gpu.enter:
        return None
    from exporter.nvml import Nvml
    from guard.protect.gpufreeze import GpuFreezeWatch

    on_event = partial(gpu_froze, manager, free_level=guard.free_level)  # it hands on facts; it decides nothing
    return GpuFreezeWatch.from_settings(guard, nvml or Nvml(), freezer, on_event=on_event)


def _safe_tick(manager: Manager) -> None:
    try:
        manager.tick()
    except Exception:  # a bug in one tick must not stop the next ones
        log.exception("guard tick failed")


@asynccontextmanager
async def lifespan(app: FastAPI):
    deps: Deps = app.state.deps
    scheduler = None
    if deps.run_scheduler:
        if deps.manager.settings.mlock:
            from guard.protect.lockmem import lock_memory

            locked, _, note = lock_memory()
            (log.info if locked else log.warning)(note)
        deps.manager.start_background(*build_protection(deps.manager.settings, deps.manager))
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 1})
        scheduler.add_job(
            _safe_tick, "interval", args=[deps.manager], seconds=deps.manager.settings.tick_seconds, id="tick"
        )
        scheduler.add_job(_retry_store, "interval", args=[deps.manager.store], seconds=STORE_RETRY_SECONDS, id="store")
        if deps.manager.fastpath is None:  # no freezer to retry a refused thaw: the records are retried from the file
            scheduler.add_job(
                _retry_thaws, "interval", args=[deps.manager.store.path.parent], seconds=THAW_RETRY_SECONDS, id="thaw"
            )
        _safe_tick(deps.manager)  # first observation before serving, so /readyz is meaningful at once
        scheduler.start()
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        manager = deps.manager
        manager.stop_background()  # thaws whatever the fast path froze
        if deps.run_scheduler and manager.settings.mlock:
            from guard.protect.lockmem import unlock_memory

            unlock_memory()
        manager.observer.close()
        if manager.reconciler is not None:
            manager.reconciler.close()
        manager.store.close()


def create_app(settings, deps: Deps | None = None) -> FastAPI:
    """The guard's app; nothing is built at import time."""
    deps = deps or build_deps(settings)
    app = FastAPI(
        title="headroom guard",
        version="0.1.0",
        lifespan=lifespan,
        description="Leases RAM/GPU headroom to test launches and throttles, pauses or frees the worker.",
    )
    app.state.deps, app.state.manager = deps, deps.manager  # the manager for the lifespan and tests; routes get front
    app.state.front = front = GuardFacade(deps.manager)
    app.state.registry = build_registry(front.view, deps.manager.settings)
    auth = bearer_dependency(deps.token)  # one object: the gate finds the guarded routes by it
    app.include_router(build_router(auth, deps.manager.settings))
    app.include_router(build_freeze_router(auth))
    install_store_handlers(
        app, "the guard's state database", lambda request: request.app.state.front.settings.retry_after_seconds
    )
    gate.install(app, deps.token, auth)
    return app


def serve(settings) -> None:
    """Run the guard until SIGINT/SIGTERM. First of all, whatever the settings, thaw what a previous guard left frozen:
    before the port, the store, the token or the worker's cgroup can fail (each of those ends the start)."""
    from guard.protect.recovery import recover_at_start
    from headroom.serving import bind, make_server

    recover_at_start(settings.state_dir, hold=True)
    sock = bind(settings.guard.listen, "guard")
    app = create_app(settings)
    log.info("guard listening on http://%s", settings.guard.listen)
    front = app.state.front
    make_server(app, healthy=lambda: fast_path_stuck(front.view(), front.settings) is None).run(sockets=[sock])
