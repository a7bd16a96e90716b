"""`headroom status` asks a running guard for headroom, leases and events; `headroom thaw` thaws a frozen process."""

from __future__ import annotations

import argparse
import json
import re

from guard.common.signals import label_of
from headroom.auth import bearer_headers, read_token
from headroom.cliargs import client_command, url_arg
from headroom.detail import describe_detail
from headroom.discover import read_pointer, token_source
from headroom.errors import EXIT_CONFIG, EXIT_NO, EXIT_UNREACHABLE, HeadroomError
from headroom.settings_base import base_url
from headroom.sizes import format_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """`status` and `thaw`: clients of a running guard (`headroom guard` itself is served by headroom.cli)."""
    status = subparsers.add_parser("status", help="show headroom, level, worker state, leases and recent events")
    client_command(status, _status)
    status.add_argument("--url", type=url_arg, help="guard base URL (default: from [guard] listen)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--events", type=int, default=10, metavar="N", help="recent events to show (default 10)")
    status.add_argument(
        "--watch", action="store_true", help="a live view in the terminal, redrawn every --interval; Ctrl-C ends it"
    )
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="--watch refresh period (default 2)"
    )
    thaw = subparsers.add_parser(
        "thaw",
        help="thaw a process the guard froze (it is then never frozen again), or with "
        "--all every recorded freeze, with no guard running",
    )
    client_command(thaw, _thaw)
    thaw.add_argument("pid", type=int, nargs="?", help="the frozen process's pid (`headroom status` lists them)")
    thaw.add_argument(
        "--all",
        action="store_true",
        help="thaw everything the state dir's frozen.json records, without "
        "asking a guard (the guard unit's ExecStopPost=); exit 1 while one stays frozen",
    )
    thaw.add_argument(
        "--force",
        action="store_true",
        help="with --all: thaw even while a guard holds the records (a guard that hangs)",
    )
    thaw.add_argument("--url", type=url_arg, help="guard base URL (default: from [guard] listen)")


def fetch_status(
    base: str,
    events: int,
    full: bool = False,
    token: str | None = None,
    tried: str = "",
    token_from: str = "the state dir's 'token' file",
) -> dict:
    """The guard's JSON API in one dict; `full` adds history and top memory users (what --watch and the page show).

    Events need the token (unless guard.events_need_token is off): it is sent when this user can read it.
    """
    import httpx

    try:
        with httpx.Client(base_url=base, timeout=5.0, headers=bearer_headers(token)) as client:
            status = {
                "headroom": client.get("/v1/headroom").raise_for_status().json(),
                "leases": client.get("/v1/leases").raise_for_status().json()["leases"],
                "events": _events(client, events, token_from),
            }
            if full:
                status["history"] = client.get("/v1/history").raise_for_status().json()
                status["top"] = client.get("/v1/top", params={"limit": 8}).raise_for_status().json()
            return status
    except httpx.HTTPError as err:
        where = f" ({tried})" if tried else ""
        raise HeadroomError(
            f"cannot reach the guard at {base}{where}: {err} (is `headroom guard` running? `headroom up` starts it)",
            EXIT_UNREACHABLE,
        ) from None


def _events(client, events: int, token_from: str) -> list[dict]:
    """Recent events, or one note saying the token is needed to see them."""
    response = client.get("/v1/events", params={"limit": max(1, events)})
    if response.status_code == 401:
        return [{"id": 0, "at": 0, "kind": "note", "message": f"events need the API token ({token_from})", "data": {}}]
    return response.raise_for_status().json()["events"]


def render(status: dict) -> str:
    """The human form of `headroom status`: every resource and signal with its level and why, worker, leases, events."""
    h = status["headroom"]
    ram = h["ram"]
    lines = [
        f"level: {h['level']}" + ("  (signals stale)" if h["stale"] else "") + f"   domain: {h['domain']}",
        f"RAM: {ram.get('level', 'ok')}, {format_size(ram['admissible_bytes'])} admissible "
        f"({format_size(ram['available_bytes'])} available, {format_size(ram['reserved_bytes'])} reserved, "
        f"{format_size(ram['margin_bytes'])} margin)" + _why(ram),
    ]
    for gpu in h["gpus"]:
        lines.append(
            f"GPU {gpu['gpu']}: {gpu.get('level', 'ok')}, {format_size(gpu['admissible_bytes'])} admissible "
            f"of {format_size(gpu['total_bytes'])}" + _why(gpu)
        )
    swap = h.get("swap") or {}
    if swap.get("free_bytes"):
        lines.append(
            f"swap room: {format_size(swap['free_bytes'])} the domain may still use "
            f"({format_size(swap['reserve_bytes'])} reserve); room before a kill "
            f"{format_size(swap['room_bytes'] or 0)} (RAM + usable swap)"
        )
    if not h["gpus"]:
        lines.append("GPUs: none (NVML reports no GPU; lease RAM only: drop --gpu)")
    for name, signal in (h.get("signals") or {}).items():
        lines.append(f"{label_of(name)}: {signal.get('level', 'ok')}" + _why(signal, "no signal yet"))
    lines += worker_lines(h["worker"], status.get("up_worker"))
    if h["maintenance"].get("on"):
        lines.append(f"maintenance: on ({h['maintenance'].get('reason')})")
    for reason in h["reasons"]:
        lines.append(f"why: {reason}")
    lines += frozen_lines(h.get("frozen") or {})
    lines.append(f"leases: {len(status['leases'])}")
    for lease in status["leases"]:
        lines.append(
            f"  {lease['id']} {lease['status']:8} {lease['holder']}: ram {format_size(lease['ram_bytes'])}, "
            f"gpu {format_size(lease['gpu_bytes'])}" + (f" on {lease['gpu_chosen']}" if lease["gpu_chosen"] else "")
        )
    lines.append("recent events (oldest first):")
    events = sorted(status["events"], key=lambda e: (e.get("at") or 0, e.get("id") or 0))
    lines += [f"  {_clock(e.get('at'))} {e['kind']}: {e['message']}" for e in events]
    return "\n".join(lines)


def _why(resource: dict, otherwise: str = "") -> str:
    why = re.sub(r"^[\w:]+( \w+)?: ", "", resource.get("why") or "") or otherwise  # "ram ok: 4 GiB" -> "4 GiB"
    return f"  ({why})" if why else ""


def _clock(at) -> str:
    """An event's time as the user's local date and time; '-' for a note without one."""
    import datetime

    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def worker_lines(worker: dict, up_worker: dict | None = None) -> list[str]:
    """The worker as the guard drives it, a warning when it is enabled but not driven, and what `headroom up` saw."""
    if worker["driven"]:
        lines = [f"worker: {worker['observed'] or 'unreachable'} (wanted {worker['desired']['state']})"]
    else:
        lines = ["worker: not driven" + (f"  WARNING: {worker['warning']}" if worker.get("warning") else "")]
    if worker.get("note"):
        lines.append(f"worker note: {worker['note']}")
    if worker.get("held_back"):
        lines.append(f"worker held back: {worker['held_back']}")
    if worker.get("error"):
        lines.append(f"worker error: {worker['error']}")
    if up_worker and up_worker.get("state") == "failed":
        lines.append(f"worker: FAILED to start under `headroom up`: {up_worker.get('error')}")
    return lines


def frozen_lines(frozen: dict) -> list[str]:
    """One line per frozen process, with how long and what happens next; nothing when none is frozen."""
    lines = []
    for p in frozen.get("processes", []):
        lines.append(
            f"FROZEN: pid {p['pid']} {p['comm']} ({format_size(p['rss_bytes'])}) by {p['method']} for "
            f"{p['frozen_seconds']:.1f} s, {frozen['on_no_room']} in {p['no_room_in_seconds']:.0f} s "
            f"unless room is made: {p.get('why') or p['reason']}  (`headroom thaw {p['pid']}` thaws it now)"
        )
        if p.get("thaw_error"):
            lines.append(f"  THAW REFUSED for pid {p['pid']}: {p['thaw_error']} (retried every second)")
    return lines


def _thaw(args: argparse.Namespace, settings) -> int:
    import httpx

    if args.all == (args.pid is not None):
        raise HeadroomError("thaw: give either a pid or --all", EXIT_CONFIG)
    if args.all:
        return thaw_all(settings.state_dir, args.force)

    base = base_url(settings.guard.listen, args.url)
    token, token_from = token_source(settings.state_dir, settings.guard.token or None)
    found = getattr(args, "found", None)
    tried = "--url" if args.url else f"[guard] listen from {found.how if found else 'the configuration'}"
    try:
        with httpx.Client(base_url=base, timeout=10.0, headers=bearer_headers(token)) as client:
            response = client.post(f"/v1/frozen/{args.pid}/thaw")
    except httpx.HTTPError as err:
        raise HeadroomError(
            f"cannot reach the guard at {base} ({tried}): {err} (is `headroom guard` running?)", EXIT_UNREACHABLE
        ) from None
    if response.status_code == 401:
        raise HeadroomError(f"the guard at {base} refused the token ({token_from})", EXIT_CONFIG)
    if response.status_code == 200:
        print(f"thawed {args.pid}")
        return 0
    message = f"the guard did not thaw {args.pid} ({response.status_code}): {describe_detail(response)}"
    raise HeadroomError(message, EXIT_NO if response.status_code == 404 else EXIT_CONFIG)


def _status(args: argparse.Namespace, settings) -> int:
    base = base_url(settings.guard.listen, args.url)
    token, token_from = token_source(settings.state_dir, settings.guard.token or None)
    found = getattr(args, "found", None)
    tried = "--url" if args.url else f"[guard] listen from {found.how if found else 'the configuration'}"
    if args.watch:
        from guard.http.watch import watch

        return watch(
            lambda: fetch_status(base, max(args.events, 10), True, token, tried, token_from), max(0.2, args.interval)
        )
    status = fetch_status(base, args.events, token=token, tried=tried, token_from=token_from)
    running = read_pointer()  # what `headroom up` of this user saw of its worker (it may have failed to start)
    if running and running.get("guard_url") == base:
        status["up_worker"] = running.get("worker")
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def thaw_all(state_dir, force: bool = False) -> int:
    """`headroom thaw --all`: the records in the state dir, thawed here (no guard needed); exit 1 while one is refused,
    or while a running guard holds them (it thaws its own; `--force` for one that hangs)."""
    from guard.protect.frozenfile import take_lock
    from guard.protect.recovery import thaw_recorded

    if not force and take_lock(state_dir, hold=False) is False:
        raise HeadroomError(
            f"a running guard holds the freeze records in {state_dir}: `headroom thaw PID` asks it, "
            "stopping it thaws everything, `headroom thaw --all --force` thaws without it",
            EXIT_NO,
        )
    try:
        report = thaw_recorded(state_dir)
    except OSError as err:
        raise HeadroomError(f"cannot read the freeze records in {state_dir}: {err}", EXIT_NO) from None
    for line in report.lines():
        print(line)
    if report.failed:
        raise HeadroomError(
            f"{len(report.failed)} recorded freeze(s) could not be thawed; their records are kept "
            "(run `headroom thaw --all` again with the rights to signal them)",
            EXIT_NO,
        )
    if not report.lines():
        print("nothing recorded as frozen")
    return 0
