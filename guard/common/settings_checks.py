"""Checks that a [guard] configuration means something: thresholds in order, and (on this host, before serving) a
memory_domain cgroup and worker programs that exist. Each problem is one line naming the key, the value, the
expectation."""

from __future__ import annotations

import shutil
from pathlib import Path

from exporter.cgroupfs import detect_memory_root
from guard.common.signals import SIGNALS, Resource, ResolvedRule


def order_problem(resource: Resource, rule: ResolvedRule, written: dict) -> str | None:
    """A more severe level must be entered at a worse value than a milder one (for RAM: less available); levels written
    in different units (a percentage and a size) are not compared."""
    worse_is_higher, key = SIGNALS[resource].higher_is_worse, SIGNALS[resource].setting
    levels = sorted(rule.enter)
    for milder_index, milder in enumerate(levels):
        for severe in levels[milder_index + 1 :]:
            a, b = rule.enter[milder], rule.enter[severe]
            if a.share != b.share:
                continue
            if (b.value < a.value) if worse_is_higher else (b.value > a.value):
                relation = "at or above" if worse_is_higher else "at or below"
                return (
                    f"guard.{key}.enter.{severe.label} = {written[severe.label]!r}: expected a value {relation} "
                    f"enter.{milder.label} = {written[milder.label]!r} ({severe.label} is the more severe level)"
                )
    return None


def threshold_problems(rules: dict[Resource, ResolvedRule], settings) -> list[str]:
    problems = []
    for resource, rule in rules.items():
        found = order_problem(resource, rule, getattr(settings, SIGNALS[resource].setting).enter)
        if found:
            problems.append(found)
    return problems


def host_problems(settings, cgroupfs: Path | None = None) -> list[str]:
    """What this host lacks for `settings` (a root settings object): the memory domain's cgroup when this host's
    exporter reads it, and the worker's stop / start programs."""
    guard = settings.guard
    problems = []
    domain = guard.memory_domain
    if domain != "host" and guard.source == "exporter":
        root = cgroupfs or settings.exporter.cgroupfs
        found = detect_memory_root(Path(root))
        where = found[0] / domain.lstrip("/") if found else None
        if where is None:
            problems.append(
                f'guard.memory_domain = {domain!r}: no memory cgroup hierarchy under {root}; expected "host" '
                "or a cgroup on a host with the memory controller"
            )
        elif not where.is_dir():
            problems.append(
                f"guard.memory_domain = {domain!r}: no such memory cgroup ({where}); expected an existing "
                'cgroup such as /headroom.slice (start its unit first), or "host"'
            )
    for key in ("stop", "start"):
        argv = getattr(guard.worker, key)
        if argv and shutil.which(argv[0]) is None:
            problems.append(
                f"guard.worker.{key} = {argv!r}: {argv[0]!r} is not an executable program here (not found on "
                "PATH or not executable); expected an argv whose first item is a program, e.g. "
                '["systemctl", "stop", "my-worker.service"]'
            )
    return problems
