"""`headroom status --watch`: the status page's picture in the terminal (rich), redrawn every couple of seconds."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from headroom.sizes import format_size

LEVEL_STYLE = {"ok": "bold white on green", "warn": "bold black on yellow", "throttle": "bold white on dark_orange",
               "pause": "bold white on red", "free": "bold white on purple",
               "freeze": "bold white on dark_blue", "stale": "bold white on grey50"}
MARK_STYLE = {"warn": "yellow", "throttle": "dark_orange", "pause": "red", "free": "purple"}
EVENT_STYLE = {"oom_kill": "bold red", "action": "blue", "decision": "dark_orange", "level": "dark_orange",
               "admission": "red", "alert": "magenta", "freeze": "bold white on dark_blue", "thaw": "cyan"}
SPARK = "▁▂▃▄▅▆▇█"


def chip(level: str) -> Text:
    return Text(f" {level.upper()} ", style=LEVEL_STYLE.get(level, "bold"))


def bar(total: float, available: float, reserved: float, thresholds: dict, width: int) -> Text:
    """used █ / reserved ▒ / free ░, with a ┃ where each level is entered."""
    total = total or 1.0
    used = max(0.0, total - available)
    cells_used = round(min(1.0, used / total) * width)
    cells_reserved = min(width - cells_used, round(min(reserved, available) / total * width))
    chars = [("█", "blue")] * cells_used + [("▒", "yellow")] * cells_reserved
    chars += [("░", "grey50")] * (width - len(chars))
    for level, at in thresholds.items():
        pos = min(width - 1, max(0, int((total - at) / total * width)))
        chars[pos] = ("┃", MARK_STYLE.get(level, "white"))
    text = Text()
    for char, style in chars:
        text.append(char, style=style)
    return text


def sparkline(values: list[float], top: float, width: int = 60) -> str:
    """The last `width` buckets of `values` (oldest first) as block characters scaled to `top`."""
    if not values or top <= 0:
        return ""
    step = max(1, len(values) // width + (len(values) % width > 0))
    buckets = [max(values[i:i + step]) for i in range(0, len(values), step)][-width:]
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in buckets)


def resource_lines(h: dict, width: int) -> list[Text]:
    """Per resource: name, level and figures; the bar across the width; why (three lines, readable at 80 columns)."""
    lines = []
    resources = [(f"RAM {h['domain']}", h["ram"])] + [(f"GPU {g['gpu']}", g) for g in h["gpus"]]
    for name, r in resources:
        lines.append(
            Text.assemble(
                (name + " ", "bold"),
                chip(r["level"]),
                (f"  {format_size(r['available_bytes'])} free of {format_size(r['total_bytes'])}", "bold"),
                (
                    f" · reserved {format_size(r['reserved_bytes'])} · admissible {format_size(r['admissible_bytes'])}",
                    "",
                ),
            )
        )
        lines.append(
            bar(
                r["total_bytes"] or 0,
                r["available_bytes"],
                r["reserved_bytes"],
                r["thresholds"],
                max(10, min(100, width)),
            )
        )
        legend = "  ".join(f"┃{level}" for level in r["thresholds"])
        lines.append(Text.assemble((r["why"] or "no signal", "dim"), (f"   █ used ▒ reserved ░ free  {legend}", "dim")))
    return lines


def history_lines(h: dict, history: dict | None) -> Text:
    text = Text()
    if not history or not history.get("samples"):
        return text
    samples = history["samples"]
    ram = [s["ram"]["used_bytes"] or 0 for s in samples]
    text.append(f"RAM used, last {int(history['window_seconds'] // 60)} min  ", style="dim")
    text.append(sparkline(ram, h["ram"]["total_bytes"] or max(ram) or 1, 50), style="blue")
    acted = [m for m in history["marks"] if m["kind"] == "action"]
    if acted:
        last = acted[-1]
        text.append(
            f"\nguard last acted {time.strftime('%H:%M:%S', time.localtime(last['t']))}: {last['message'][:90]}",
            style=EVENT_STYLE["action"],
        )
    return text


def worker_text(h: dict) -> Text:
    w = h["worker"]
    if not w["driven"]:
        return Text("worker: not driven", style="dim")
    q = w.get("queue") or {}
    text = Text.assemble(
        ("worker ", "dim"), (w["observed"] or "unreachable", "bold"), ("  wanted ", "dim"), w["desired"]["state"]
    )
    if w["desired"].get("reason"):
        text.append(f" ({w['desired']['reason']})", style="dim")
    if w.get("queue") is not None:
        text.append(f"   queue {q.get('production', 0)} production · {q.get('test', 0)} test · {q.get('bulk', 0)} bulk")
    if h["maintenance"].get("on"):
        text.append(f"   maintenance: {h['maintenance'].get('reason')}", style="bold red")
    return text


def frozen_text(h: dict) -> Text:
    """A loud line per process the guard holds frozen; nothing when none is."""
    frozen = h.get("frozen") or {}
    text = Text()
    for p in frozen.get("processes", []):
        if text:
            text.append("\n")
        text.append(" FROZEN ", style=EVENT_STYLE["freeze"])
        text.append(
            f" pid {p['pid']} {p['comm']} {format_size(p['rss_bytes'])} by {p['method']} for "
            f"{p['frozen_seconds']:.0f} s",
            style="bold",
        )
        text.append(
            f" · {frozen['on_no_room']} in {p['no_room_in_seconds']:.0f} s unless room is made · "
            f"headroom thaw {p['pid']}",
            style="dim",
        )
    return text


def leases_table(leases: list[dict], now: float) -> Table:
    table = Table(title="leases", title_justify="left", box=None, show_edge=False, header_style="dim")
    for name in ("holder", "status", "RAM", "GPU", "age", "pid"):
        table.add_column(name, justify="right" if name in ("RAM", "GPU", "age", "pid") else "left", no_wrap=True)
    for lease in leases:
        gpu = (
            format_size(lease["gpu_bytes"]) + (f" on {lease['gpu_chosen']}" if lease["gpu_chosen"] else "")
            if lease["gpu_bytes"]
            else "-"
        )
        table.add_row(
            Text(lease["holder"], style="bold"),
            Text(lease["status"], style="green" if lease["status"] == "granted" else "yellow"),
            format_size(lease["ram_bytes"]) if lease["ram_bytes"] else "-",
            gpu,
            f"{max(0, now - lease['created_at']):.0f} s",
            str(lease["pid"] or "-"),
        )
    if not leases:
        table.add_row(Text("none", style="dim"), "", "", "", "", "")
    return table


def top_table(top: dict | None) -> Table:
    table = Table(title="top memory users", title_justify="left", box=None, show_edge=False, header_style="dim")
    for name in ("pid", "process", "memory", "unit / cgroup"):
        table.add_column(
            name, justify="right" if name in ("pid", "memory") else "left", no_wrap=True, overflow="ellipsis"
        )
    for p in (top or {}).get("gpu_processes", [])[:3]:
        table.add_row(
            str(p["pid"]), f"{p['comm']} (GPU {p['gpu']})", format_size(p["gpu_bytes"]), p["unit"] or p["cgroup"]
        )
    for p in (top or {}).get("processes", [])[:6]:
        table.add_row(str(p["pid"]), p["comm"], format_size(p["rss_bytes"]), p["unit"] or p["cgroup"])
    return table


def events_table(events: list[dict]) -> Table:
    table = Table(title="recent events", title_justify="left", box=None, show_edge=False, show_header=False)
    table.add_column("time", no_wrap=True, style="dim")
    table.add_column("kind", no_wrap=True)
    table.add_column("message", overflow="fold")
    for e in list(reversed(events))[:10]:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(e["at"])),
            Text(e["kind"], style=EVENT_STYLE.get(e["kind"], "dim")),
            e["message"],
        )
    return table


def screen(status: dict, width: int = 100) -> Group:
    """The whole picture from `fetch_status(..., full=True)`, for a terminal `width` columns wide."""
    h = status["headroom"]
    level = "stale" if h["stale"] else h["level"]
    head = Text.assemble(
        ("headroom guard ", "bold"),
        chip(level),
        (
            f"  domain {h['domain']} · admissions {'open' if h['admissions_open'] else 'closed'} · "
            f"updated {time.strftime('%H:%M:%S')}",
            "dim",
        ),
    )
    why = Text("why: " + "; ".join(h["reasons"]) if h["reasons"] else "all clear", style="dim")
    now = (status.get("history") or {}).get("now") or h["observed_at"]
    memory = Panel(
        Group(*resource_lines(h, width - 4), history_lines(h, status.get("history"))),
        title="memory",
        title_align="left",
    )
    return Group(
        head,
        why,
        memory,
        worker_text(h),
        frozen_text(h),
        leases_table(status["leases"], now),
        top_table(status.get("top")),
        events_table(status["events"]),
    )


def watch(fetch, interval: float = 2.0, console: Console | None = None) -> int:
    """Redraw `screen(fetch())` every `interval` seconds until Ctrl-C (exit 0); an unreachable guard is shown, not
    fatal."""
    console = console or Console()
    try:
        with Live(Text("connecting…"), console=console, auto_refresh=False, transient=False) as live:
            while True:
                try:
                    live.update(screen(fetch(), console.width), refresh=True)
                except Exception as err:  # the guard restarting or unreachable: say so and try again
                    live.update(Panel(Text(str(err), style="bold red"), title="headroom status"), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        return 0
