"""JSON views of the published view (headroom per resource, leases) and the status page's static files."""

from __future__ import annotations

import html
from dataclasses import asdict
from importlib import resources

from guard.core.leases import gpu_room, ram_room
from guard.core.published import Published
from guard.common.signals import SIGNALS, Resource, ResolvedRule, subjects
from guard.common.swaproom import room_bytes
from guard.common.types import ACTIVE, Lease, LeaseStatus, ResourceState
from headroom.sizes import format_size

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def lease_view(lease: Lease, now: float) -> dict:
    view = asdict(lease)
    view["expires_in_seconds"] = round(lease.expires_at - now, 3) if lease.status == LeaseStatus.GRANTED else None
    return view


def _resource(rs: ResourceState | None) -> dict:
    rs = rs or ResourceState()
    return {"level": rs.level.label, "value": rs.value, "why": rs.why}


def thresholds(rule: ResolvedRule, total: float | None) -> dict[str, float]:
    """Available (free) bytes at which each level is entered, for the bars' marks."""
    if not total:
        return {}
    return {level.label: value for level, value in rule.at(total).enter.items()}


def worker_view(view, settings) -> dict:
    observed = view.worker
    seen = (
        observed.model_dump(mode="json", include={"queue", "concurrency", "since", "engine", "note", "cgroup"})
        if observed
        else {}
    )
    return {
        "desired": asdict(view.decision.desired),
        "observed": view.snapshot.worker_state,
        "error": view.worker_error,
        "driven": view.driven,
        "dry_run": settings.dry_run,
        "queue": seen.get("queue"),
        "concurrency": seen.get("concurrency"),
        "since": seen.get("since"),
        "engine": seen.get("engine"),
        "note": seen.get("note") or None,
        "cgroup": seen.get("cgroup"),
        "held_back": view.wake_held,
        "warning": view.worker_warning,
    }


def swap_view(snap, settings) -> dict:
    """Swap as room: what the domain may still swap, the reserve kept out of it, and RAM + the rest (the ram rule's
    value)."""
    return {
        "free_bytes": snap.swap_free_bytes,
        "reserve_bytes": settings.swap_reserve,
        "room_bytes": room_bytes(snap.ram_available_bytes, snap.swap_free_bytes, settings.swap_reserve),
    }


def fast_path_stuck(read: Published, settings) -> str | None:
    """Why the fast path counts as stuck (no look finished for longer than stale_after_seconds), or None."""
    stuck = read.fast.stuck_seconds if read.fast is not None else 0.0
    if stuck > settings.stale_after_seconds:
        return f"the fast path has not finished a look for {stuck:.1f} s (stuck: a blocked read or lock)"
    return None


def frozen_view(read: Published, settings) -> dict:
    """What the freezer holds frozen now and how its freezes ended; the same view for the API, page, CLI and --watch."""
    freezer = read.freezer
    if freezer is None:
        return {"enabled": False, "processes": [], "outcomes": {}}
    processes = [
        {
            "pid": fp.pid,
            "comm": fp.comm,
            "method": fp.method,
            "cgroup": fp.cgroup,
            "reason": fp.reason,
            "rss_bytes": fp.rss_bytes,
            "frozen_at": fp.frozen_at,
            "frozen_seconds": round(seconds, 3),
            "no_room_in_seconds": round(max(0.0, settings.freeze_max_seconds - seconds), 3),
            "thaw_error": freezer.thaw_errors.get(fp.pid),
            "members": [pid for pid, _ in fp.members],
            "growth_bytes": fp.score,
            "passed": list(fp.passed),
            "tty": fp.tty,
            "why": why_frozen(fp),
        }
        for fp, seconds in freezer.frozen
    ]
    return {
        "enabled": settings.freeze_enabled,
        "on_no_room": settings.on_no_room,
        "freeze_max_seconds": settings.freeze_max_seconds,
        "processes": processes,
        "outcomes": dict(freezer.outcomes),
    }


def headroom_view(read: Published, settings) -> dict:
    """Per resource, what admission would use now and why, from the published view; never measured here."""
    view = read.guard
    snap, decision, state, leases = view.snapshot, view.decision, view.state, view.leases
    ram = {
        **ram_room(snap, leases, settings),
        "total_bytes": snap.ram_total_bytes,
        **_resource(state.resources.get(Resource.RAM)),
        "thresholds": thresholds(settings.rules[Resource.RAM], snap.ram_total_bytes),
    }
    gpus = [
        {
            "gpu": g.gpu,
            "uuid": g.uuid,
            **gpu_room(snap, g, leases, settings),
            **_resource(state.resources.get(f"gpu:{g.gpu}")),
            "thresholds": thresholds(settings.rules[Resource.GPU], g.total_bytes),
        }
        for g in snap.gpus
    ]
    return {
        "observed_at": snap.taken_at,
        "domain": snap.domain,
        "stale": decision.stale,
        "level": decision.level.label,
        "reasons": list(decision.reasons),
        "admissions_open": decision.admissions_open,
        "ram": ram,
        "swap": swap_view(snap, settings),
        "gpus": gpus,
        "signals": {
            name: _resource(state.resources.get(name))
            for signal in SIGNALS.values()
            if signal.listed
            for name, _ in subjects(signal, snap)
        },
        "worker": worker_view(view, settings),
        "maintenance": view.maintenance.as_dict(),
        "frozen": frozen_view(read, settings),
        "leases": {status.value: sum(l.status == status for l in leases) for status in ACTIVE},
        "store": read.store,
    }


def static_file(name: str) -> tuple[bytes, str] | None:
    """(content, media type) of a file shipped in guard/static, or None; only plain names with a known suffix."""
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        return None
    path = resources.files("guard.http").joinpath("static", name)
    if not path.is_file():
        return None
    return path.read_bytes(), STATIC_TYPES[suffix]


def status_page(view) -> str:
    """The status page's HTML with the current level filled in (its script then reads the same JSON API as the CLI)."""
    found = static_file("status.html")
    page = found[0].decode() if found else "<!doctype html><title>headroom</title><h1>headroom guard: __LEVEL__</h1>"
    decision = view.decision
    level = decision.level.label + (" (signals stale)" if decision.stale else "")
    return page.replace("__LEVEL__", html.escape(level))


def why_frozen(fp) -> str:
    """Who and why in one line: what it grew, the crossing, and the growers passed over with their reason."""
    text = f"grew {format_size(fp.score)}: {fp.reason}" if fp.score else fp.reason
    if fp.moved_from is not None:
        text += " (frozen in a freezer cgroup the guard made for its tree)"
    passed = "; ".join(f"{p['comm']} ({p['pid']}): {p['why']}" for p in fp.passed[:3])
    return text + (f"; passed over: {passed}" if passed else "")
