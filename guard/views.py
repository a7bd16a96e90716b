"""JSON and HTML views of the engine's state: headroom per resource, leases, a minimal status page."""

from __future__ import annotations

import html
from dataclasses import asdict

from guard.leases import gpu_room, ram_room
from guard.types import Lease, Level, ResourceState
from headroom.sizes import format_size


def lease_view(lease: Lease, now: float) -> dict:
    view = asdict(lease)
    view["expires_in_seconds"] = round(lease.expires_at - now, 3) if lease.status == "granted" else None
    return view


def _resource(rs: ResourceState | None) -> dict:
    rs = rs or ResourceState()
    return {"level": rs.level.label, "value": rs.value, "why": rs.why}


def headroom_view(engine) -> dict:
    """Per resource, what admission would use now and why; read under the lock, never measured here."""
    with engine.lock:
        snap, decision, state = engine.snapshot, engine.decision, engine.state
        leases = engine.leases()
        ram = {**ram_room(snap, leases, engine.settings), "total_bytes": snap.ram_total_bytes,
               **_resource(state.resources.get("ram"))}
        gpus = [{"gpu": g.gpu, "uuid": g.uuid, **gpu_room(snap, g, leases, engine.settings),
                 **_resource(state.resources.get(f"gpu:{g.gpu}"))} for g in snap.gpus]
        reconciler = engine.reconciler
        return {
            "observed_at": snap.taken_at, "domain": snap.domain, "stale": decision.stale,
            "level": decision.level.label, "reasons": list(decision.reasons),
            "admissions_open": decision.admissions_open, "ram": ram, "gpus": gpus,
            "signals": {name: _resource(state.resources.get(name)) for name in ("psi", "swap", "predict")},
            "worker": {"desired": asdict(decision.desired), "observed": snap.worker_state,
                       "error": reconciler.read_error if reconciler else None, "driven": reconciler is not None,
                       "dry_run": engine.settings.dry_run},
            "maintenance": engine.maintenance,
            "leases": {"granted": sum(l.status == "granted" for l in leases), "waiting": sum(l.status == "waiting" for l in leases)},
        }


def status_page(engine) -> str:
    """A page a person reads at a glance (a later issue makes it rich)."""
    view = headroom_view(engine)
    ram = view["ram"]
    rows = [("level", view["level"] + (" (signals stale)" if view["stale"] else "")),
            ("RAM admissible", f"{format_size(ram['admissible_bytes'])} of {format_size(ram['available_bytes'])} available"),
            *[(f"GPU {g['gpu']} admissible", format_size(g["admissible_bytes"])) for g in view["gpus"]],
            ("worker", f"{view['worker']['observed'] or '-'} (wanted: {view['worker']['desired']['state']})"),
            ("maintenance", "on: " + str(view["maintenance"].get("reason")) if view["maintenance"].get("on") else "off"),
            ("leases", f"{view['leases']['granted']} granted, {view['leases']['waiting']} waiting"),
            ("why", "; ".join(view["reasons"]) or "all clear")]
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return (f"<!doctype html><title>headroom guard</title><meta http-equiv=refresh content=2>"
            f"<h1>headroom guard: {html.escape(view['level'])}</h1><table>{body}</table>"
            f"<p><a href=/docs>API</a> · <a href=/metrics>metrics</a> · <a href=/v1/events>events</a></p>")


__all__ = ["headroom_view", "lease_view", "status_page", "Level"]
