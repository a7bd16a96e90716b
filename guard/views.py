"""JSON views of the manager's published state (headroom per resource, leases) and the status page's static files."""

from __future__ import annotations

import html
from dataclasses import asdict
from importlib import resources

from guard.leases import gpu_room, ram_room
from guard.signals import SIGNALS, Resource, ResolvedRule, subjects
from guard.swaproom import room_bytes
from guard.types import ACTIVE, Lease, ResourceState
from headroom.sizes import format_size

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def lease_view(lease: Lease, now: float) -> dict:
    view = asdict(lease)
    view["expires_in_seconds"] = round(lease.expires_at - now, 3) if lease.status == "granted" else None
    return view


def _resource(rs: ResourceState | None) -> dict:
    rs = rs or ResourceState()
    return {"level": rs.level.label, "value": rs.value, "why": rs.why}


def thresholds(rule: ResolvedRule, total: float | None) -> dict[str, float]:
    """Available (free) bytes at which each level is entered, for the bars' marks."""
    if not total:
        return {}
    return {level.label: value for level, value in rule.at(total).enter.items()}


def worker_view(manager, view) -> dict:
    observed = view.worker
    seen = observed.model_dump(mode="json", include={"queue", "concurrency", "since", "engine", "note", "cgroup"}) if observed else {}
    return {"desired": asdict(view.decision.desired), "observed": view.snapshot.worker_state,
            "error": view.worker_error, "driven": manager.reconciler is not None,
            "dry_run": manager.settings.dry_run, "queue": seen.get("queue"),
            "concurrency": seen.get("concurrency"), "since": seen.get("since"), "engine": seen.get("engine"),
            "note": seen.get("note") or None, "cgroup": seen.get("cgroup"),
            "held_back": view.wake_held, "warning": getattr(manager, "worker_warning", None)}


def swap_view(snap, settings) -> dict:
    """Swap as room: what the domain may still swap, the reserve kept out of it, and RAM + the rest (the ram rule's value)."""
    return {"free_bytes": snap.swap_free_bytes, "reserve_bytes": settings.swap_reserve,
            "room_bytes": room_bytes(snap.ram_available_bytes, snap.swap_free_bytes, settings.swap_reserve)}


def freezer_of(manager):
    """The guard's freezer: set on the manager, or the fast path's; None when the guard has none (or freezing is off)."""
    found = getattr(manager, "freezer", None)
    return found if found is not None else getattr(getattr(manager, "fastpath", None), "freezer", None)


def fast_path_stuck(manager) -> str | None:
    """Why the fast path counts as stuck (no look finished for longer than stale_after_seconds), or None."""
    fast = getattr(manager, "fastpath", None)
    stuck = fast.stuck_seconds() if fast is not None else 0.0
    if stuck > manager.settings.stale_after_seconds:
        return f"the fast path has not finished a look for {stuck:.1f} s (stuck: a blocked read or lock)"
    return None


def frozen_view(manager) -> dict:
    """What the freezer holds frozen now and how its freezes ended; the same view for the API, page, CLI and --watch."""
    freezer = freezer_of(manager)
    settings = manager.settings
    if freezer is None:
        return {"enabled": False, "processes": [], "outcomes": {}}
    processes = [{"pid": fp.pid, "comm": fp.comm, "method": fp.method, "cgroup": fp.cgroup, "reason": fp.reason,
                  "rss_bytes": fp.rss_bytes, "frozen_at": fp.frozen_at, "frozen_seconds": round(seconds, 3),
                  "no_room_in_seconds": round(max(0.0, settings.freeze_max_seconds - seconds), 3),
                  "thaw_error": freezer.thaw_error(fp.pid), "members": [pid for pid, _ in fp.members],
                  "growth_bytes": fp.score, "passed": list(fp.passed), "tty": fp.tty, "why": why_frozen(fp)}
                 for fp, seconds in ((fp, freezer.frozen_seconds(fp)) for fp in freezer.frozen())]
    return {"enabled": settings.freeze_enabled, "on_no_room": settings.on_no_room,
            "freeze_max_seconds": settings.freeze_max_seconds, "processes": processes, "outcomes": dict(freezer.outcomes)}


def headroom_view(manager) -> dict:
    """Per resource, what admission would use now and why, from the manager's published view; never measured here."""
    view = manager.view
    snap, decision, state, leases, settings = view.snapshot, view.decision, view.state, view.leases, manager.settings
    ram = {**ram_room(snap, leases, settings), "total_bytes": snap.ram_total_bytes,
           **_resource(state.resources.get(Resource.RAM)), "thresholds": thresholds(settings.rules[Resource.RAM], snap.ram_total_bytes)}
    gpus = [{"gpu": g.gpu, "uuid": g.uuid, **gpu_room(snap, g, leases, settings),
             **_resource(state.resources.get(f"gpu:{g.gpu}")), "thresholds": thresholds(settings.rules[Resource.GPU], g.total_bytes)}
            for g in snap.gpus]
    return {
        "observed_at": snap.taken_at, "domain": snap.domain, "stale": decision.stale,
        "level": decision.level.label, "reasons": list(decision.reasons),
        "admissions_open": decision.admissions_open, "ram": ram, "swap": swap_view(snap, settings), "gpus": gpus,
        "signals": {name: _resource(state.resources.get(name)) for signal in SIGNALS.values() if signal.listed
                    for name, _ in subjects(signal, snap)},
        "worker": worker_view(manager, view),
        "maintenance": view.maintenance.as_dict(),
        "frozen": frozen_view(manager),
        "leases": {status.value: sum(l.status == status for l in leases) for status in ACTIVE},
        "store": manager.store.health_view(),
    }


def static_file(name: str) -> tuple[bytes, str] | None:
    """(content, media type) of a file shipped in guard/static, or None; only plain names with a known suffix."""
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        return None
    path = resources.files("guard").joinpath("static", name)
    if not path.is_file():
        return None
    return path.read_bytes(), STATIC_TYPES[suffix]


def status_page(manager) -> str:
    """The status page's HTML with the current level filled in (its script then reads the same JSON API as the CLI)."""
    found = static_file("status.html")
    page = found[0].decode() if found else "<!doctype html><title>headroom</title><h1>headroom guard: __LEVEL__</h1>"
    decision = manager.view.decision
    level = decision.level.label + (" (signals stale)" if decision.stale else "")
    return page.replace("__LEVEL__", html.escape(level))



def why_frozen(fp) -> str:
    """Who and why in one line: what it grew, the crossing, and the growers passed over with their reason."""
    text = f"grew {format_size(fp.score)}: {fp.reason}" if fp.score else fp.reason
    if fp.moved_from is not None:
        text += " (frozen in a freezer cgroup the guard made for its tree)"
    passed = "; ".join(f"{p['comm']} ({p['pid']}): {p['why']}" for p in fp.passed[:3])
    return text + (f"; passed over: {passed}" if passed else "")
