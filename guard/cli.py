"""`headroom status` asks a running guard for headroom, leases and events; `headroom thaw` thaws a frozen process."""

from __future__ import annotations

import argparse
import json

from headroom.auth import bearer_headers, read_token
from headroom.cliargs import settings_command
from headroom.detail import describe_detail
from headroom.errors import EXIT_CONFIG, EXIT_NO, EXIT_UNREACHABLE, HeadroomError
from headroom.settings_base import base_url
from headroom.sizes import format_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """`status` and `thaw`: clients of a running guard (`headroom guard` itself is served by headroom.cli)."""
    status = subparsers.add_parser("status", help="show headroom, level, worker state, leases and recent events")
    settings_command(status, _status)
    status.add_argument("--url", help="guard base URL (default: from [guard] listen)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--events", type=int, default=10, metavar="N", help="recent events to show (default 10)")
    status.add_argument("--watch", action="store_true", help="a live view in the terminal, redrawn every --interval; Ctrl-C ends it")
    status.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="--watch refresh period (default 2)")
    thaw = subparsers.add_parser("thaw", help="thaw a process the guard froze (it is then never frozen again)")
    settings_command(thaw, _thaw)
    thaw.add_argument("pid", type=int, help="the frozen process's pid (`headroom status` lists them)")
    thaw.add_argument("--url", help="guard base URL (default: from [guard] listen)")


def fetch_status(base: str, events: int, full: bool = False, token: str | None = None) -> dict:
    """The guard's JSON API in one dict; `full` adds history and top memory users (what --watch and the page show).

    Events need the token (unless guard.events_need_token is off): it is sent when this user can read it.
    """
    import httpx

    try:
        with httpx.Client(base_url=base, timeout=5.0, headers=bearer_headers(token)) as client:
            status = {"headroom": client.get("/v1/headroom").raise_for_status().json(),
                      "leases": client.get("/v1/leases").raise_for_status().json()["leases"],
                      "events": _events(client, events)}
            if full:
                status["history"] = client.get("/v1/history").raise_for_status().json()
                status["top"] = client.get("/v1/top", params={"limit": 8}).raise_for_status().json()
            return status
    except httpx.HTTPError as err:
        raise HeadroomError(f"cannot reach the guard at {base}: {err} (is `headroom guard` running?)", EXIT_UNREACHABLE) from None


def _events(client, events: int) -> list[dict]:
    """Recent events, or one note saying the token is needed to see them."""
    response = client.get("/v1/events", params={"limit": max(1, events)})
    if response.status_code == 401:
        return [{"id": 0, "at": 0, "kind": "note", "message": "events need the API token (the state dir's 'token' file)",
                 "data": {}}]
    return response.raise_for_status().json()["events"]


def render(status: dict) -> str:
    """The human form of `headroom status`."""
    h = status["headroom"]
    lines = [f"level: {h['level']}" + ("  (signals stale)" if h["stale"] else "") + f"   domain: {h['domain']}",
             f"RAM: {format_size(h['ram']['admissible_bytes'])} admissible ({format_size(h['ram']['available_bytes'])} available, "
             f"{format_size(h['ram']['reserved_bytes'])} reserved, {format_size(h['ram']['margin_bytes'])} margin)"]
    swap = h.get("swap") or {}
    if swap.get("free_bytes"):
        lines.append(f"swap: {format_size(swap['free_bytes'])} the domain may still use ({format_size(swap['reserve_bytes'])} "
                     f"reserve); room before a kill {format_size(swap['room_bytes'] or 0)} (RAM + usable swap)")
    for gpu in h["gpus"]:
        lines.append(f"GPU {gpu['gpu']}: {format_size(gpu['admissible_bytes'])} admissible of {format_size(gpu['total_bytes'])}")
    worker = h["worker"]
    lines.append(f"worker: {worker['observed'] or '-'} (wanted {worker['desired']['state']})" if worker["driven"] else "worker: not driven")
    if worker.get("note"):
        lines.append(f"worker note: {worker['note']}")
    if worker.get("held_back"):
        lines.append(f"worker held back: {worker['held_back']}")
    if h["maintenance"].get("on"):
        lines.append(f"maintenance: on ({h['maintenance'].get('reason')})")
    for reason in h["reasons"]:
        lines.append(f"why: {reason}")
    lines += frozen_lines(h.get("frozen") or {})
    lines.append(f"leases: {len(status['leases'])}")
    for lease in status["leases"]:
        lines.append(f"  {lease['id']} {lease['status']:8} {lease['holder']}: ram {format_size(lease['ram_bytes'])}, "
                     f"gpu {format_size(lease['gpu_bytes'])}" + (f" on {lease['gpu_chosen']}" if lease["gpu_chosen"] else ""))
    lines.append("recent events:")
    lines += [f"  #{e['id']} {e['kind']}: {e['message']}" for e in status["events"]]
    return "\n".join(lines)


def frozen_lines(frozen: dict) -> list[str]:
    """One line per frozen process, with how long and what happens next; nothing when none is frozen."""
    lines = []
    for p in frozen.get("processes", []):
        lines.append(f"FROZEN: pid {p['pid']} {p['comm']} ({format_size(p['rss_bytes'])}) by {p['method']} for "
                     f"{p['frozen_seconds']:.1f} s, {frozen['on_no_room']} in {p['no_room_in_seconds']:.0f} s "
                     f"unless room is made: {p['reason']}  (`headroom thaw {p['pid']}` thaws it now)")
    return lines


def _thaw(args: argparse.Namespace, settings) -> int:
    import httpx

    base = base_url(settings.guard.listen, args.url)
    token = settings.guard.token or read_token(settings.state_dir)
    try:
        with httpx.Client(base_url=base, timeout=10.0, headers=bearer_headers(token)) as client:
            response = client.post(f"/v1/frozen/{args.pid}/thaw")
    except httpx.HTTPError as err:
        raise HeadroomError(f"cannot reach the guard at {base}: {err} (is `headroom guard` running?)", EXIT_UNREACHABLE) from None
    if response.status_code == 200:
        print(f"thawed {args.pid}")
        return 0
    message = f"the guard did not thaw {args.pid} ({response.status_code}): {describe_detail(response)}"
    raise HeadroomError(message, EXIT_NO if response.status_code == 404 else EXIT_CONFIG)


def _status(args: argparse.Namespace, settings) -> int:
    base = base_url(settings.guard.listen, args.url)
    token = settings.guard.token or read_token(settings.state_dir)
    if args.watch:
        from guard.watch import watch

        return watch(lambda: fetch_status(base, max(args.events, 10), full=True, token=token), max(0.2, args.interval))
    status = fetch_status(base, args.events, token=token)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
