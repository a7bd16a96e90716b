"""Who the freezer may freeze and how: only a grower, its own process tree, by a cgroup freezer, never the protected."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from guard.protect import cgroupctl
from guard.protect.growth import MIN_GROWTH_BYTES
from guard.protect.procinfo import ProcInfo, Stat, descendants, is_headroom, read_cmdline, read_proc, stats_of

NOT_FROZEN_HERE = ("already stopped", "a zombie")  # a tree member in these states is frozen with it harmlessly


@dataclass(frozen=True)
class Protected:
    """The facts, gathered once per freeze, about who must never be frozen."""

    pids: dict[int, str] = field(default_factory=dict)  # pid -> who: that process alone
    trees: dict[int, str] = field(default_factory=dict)  # pid -> who (the worker, a lease, headroom up): and below it
    cgroups: dict[str, str] = field(default_factory=dict)  # cgroup path (any hierarchy) -> who: it and below
    rules: tuple[str, ...] = ()  # freeze_protect entries


@dataclass(frozen=True)
class Candidate:
    """The tree to freeze and how."""

    info: ProcInfo  # its top process
    growth: int  # bytes the tree grew within the window
    method: str  # "cgroup-v2" | "cgroup-v1"
    cgroup: cgroupctl.FreezerCgroup  # its own cgroup, or one the guard makes for it (moved_from set)
    tree: frozenset[int]  # the processes chosen (the top one and its descendants in the domain)
    moved_from: str | None = None  # the v1 freezer cgroup its processes leave for the guard's (given back at thaw)

    @property
    def members(self) -> tuple[tuple[int, int], ...]:
        return ((self.info.pid, self.info.stat.start_ticks),)


@dataclass(frozen=True)
class Passed:
    """A grower the freezer did not freeze, and why (named in the freeze event)."""

    pid: int
    comm: str
    growth: int
    why: str

    def to_json(self) -> dict:
        return {"pid": self.pid, "comm": self.comm, "growth_bytes": self.growth, "why": self.why}


def protect_reason(info: ProcInfo, protected: Protected) -> str | None:
    """Why `info` must never be frozen, or None. Pure: facts only, never the command line."""
    if info.pid == 1:
        return "PID 1"
    if info.kernel_thread:
        return "kernel thread"
    if info.pid in protected.pids:
        return protected.pids[info.pid]
    if info.oom_score_adj == -1000:
        return "oom_score_adj -1000 (its owner asked that it never be killed)"
    if info.stat.state in ("Z", "X"):
        return "a zombie (it holds no memory)"
    if info.stat.state in ("T", "t") or info.tracer_pid:
        return "already stopped or traced (job control, a debugger): never resumed by the guard"
    paths = info.cgroups.values()
    for top, who in protected.cgroups.items():
        if any(path == top or path.startswith(top.rstrip("/") + "/") for path in paths):
            return f"in {who}'s cgroup {top}"
    for rule in protected.rules:
        kind, _, name = rule.partition(":")
        if kind == "command" and name == info.stat.comm:
            return f"protected by {rule}"
        if kind == "unit" and any(name in path.split("/") for path in paths):
            return f"protected by {rule}"
        if kind == "cgroup" and any(path == name or path.startswith(name.rstrip("/") + "/") for path in paths):
            return f"protected by {rule}"
    return None


def frozen_elsewhere(info: ProcInfo, cgroupfs: Path) -> str | None:
    """A cgroup of the process that someone else froze (docker pause, systemctl freeze, a paused worker)."""
    for key, version in (("", 2), ("freezer", 1)):
        path = info.cgroups.get(key)
        if not path or path == "/" or path.startswith(cgroupctl.GUARD_GROUP + "/"):
            continue
        cg = cgroupctl.freezer_of(cgroupfs, path, version)
        if cg is not None and (cgroupctl.is_frozen(cg) or _asked_frozen(cg)):
            return f"in cgroup {path}, frozen by someone else: the guard neither freezes nor thaws it"
    return None


def _asked_frozen(cg: cgroupctl.FreezerCgroup) -> bool:
    try:
        if cg.version == 2:
            return (cg.directory / "cgroup.freeze").read_text().strip() == "1"
        return (cg.directory / "freezer.state").read_text().strip() != "THAWED"
    except OSError:
        return False


def headroom_family(procfs: Path = Path("/proc")) -> dict[int, str]:
    """`headroom up` and its parts (the exporter, the worker) when it is the guard's parent, read once at start (never
    on the fast path); the guard itself is protected by its pid."""
    parent = os.getppid()
    with contextlib.suppress(OSError):
        cmdline = read_cmdline(parent, procfs)
        if parent > 1 and is_headroom(cmdline):
            return {parent: "headroom's own process (headroom up and its parts)"}
    return {}


class Chooser:
    """Ranks the domain's growers by growth and picks the first whose own tree may be frozen, with the method."""

    def __init__(self, method: str, procfs: Path, cgroupfs: Path):
        self.method, self.procfs, self.cgroupfs = method, procfs, cgroupfs

    def pick(self, growth: dict[int, int], domain: set[int], protected: Protected, skip: set[int],
             exempt: frozenset[int] = frozenset()) -> tuple[Candidate | None, list[Passed]]:
        """The biggest grower that may be frozen (or None), and the growers passed over with the reason. Only the
        domain's processes are read (a child that lives in another memory cgroup is not this domain's problem)."""
        stats = stats_of(domain, self.procfs)
        guarded = dict(protected.pids)
        for pid, who in protected.trees.items():  # the worker's engine, a lease's children, headroom's parts
            guarded.update({child: who for child in descendants(pid, stats) if child not in guarded and pid > 1})
        facts = Protected(guarded, {}, protected.cgroups, protected.rules)
        ranked = sorted(((g, pid) for pid, g in growth.items() if pid in domain and g >= MIN_GROWTH_BYTES),
                        reverse=True)
        passed: list[Passed] = []
        tried: set[int] = set()
        for value, pid in ranked:
            if pid in exempt and pid in stats:
                passed.append(Passed(pid, stats[pid].comm, value, "thawed by hand or by on_no_room: a person or the "
                                                                  "kernel decides now, it is never frozen again"))
                continue
            if pid not in stats or pid in skip:
                continue
            top = self._top(pid, stats, domain, facts, skip)
            if top in tried:
                continue
            tried.add(top)
            info = read_proc(top, self.procfs, stats[top])
            tree = descendants(top, stats) - skip
            total = sum(max(0, growth.get(p, 0)) for p in tree)
            why = "gone" if info is None else self._why_not(info, tree, stats, facts)
            if why is None:
                candidate, why = self._method(info, total, frozenset(tree))
                if candidate is not None:
                    return candidate, passed
            passed.append(Passed(top, stats[top].comm, total, why))
        return None, passed

    def _top(self, pid: int, stats: dict[int, Stat], domain: set[int], facts: Protected, skip: set[int]) -> int:
        """Up through parents running the same program (a fork of it, same comm) in the domain: a forking grower is
        frozen as a whole, never its shell or supervisor."""
        top = pid
        while True:
            parent = stats[top].ppid
            if (parent in (0, 1) or parent not in stats or parent not in domain or parent in facts.pids
                    or parent in skip or stats[parent].comm != stats[top].comm):
                return top
            top = parent

    def _why_not(self, info: ProcInfo, tree: set[int], stats: dict[int, Stat], facts: Protected) -> str | None:
        why = protect_reason(info, facts) or frozen_elsewhere(info, self.cgroupfs)
        if why is not None:
            return why
        for pid in tree - {info.pid}:
            member = read_proc(pid, self.procfs, stats.get(pid))
            if member is None:
                continue
            reason = protect_reason(member, facts) or frozen_elsewhere(member, self.cgroupfs)
            if reason is not None and not reason.startswith(NOT_FROZEN_HERE):
                return f"its tree holds {member.stat.comm} ({pid}): {reason}"
        return None

    def _method(self, info: ProcInfo, growth: int, tree: frozenset[int]) -> tuple[Candidate | None, str]:
        """Its own cgroup when that holds exactly its tree; else a v1 freezer cgroup the guard makes for it."""
        own = cgroupctl.freezer_of_pid(info.pid, self.procfs, self.cgroupfs)
        if own is not None:
            inside = set(cgroupctl.pids(own))
            if info.pid in inside and inside <= tree:
                return Candidate(info, growth, f"cgroup-v{own.version}", own, tree), ""
        return self.made(info, growth, tree)

    def made(self, info: ProcInfo, growth: int, tree: frozenset[int]) -> tuple[Candidate | None, str]:
        """A cgroup the guard makes in the v1 freezer hierarchy, for a tree whose processes all sit at its root."""
        made = cgroupctl.made_for(self.cgroupfs, info.pid, info.stat.start_ticks)
        if made is None:
            return None, ("no cgroup holds exactly its tree, and without a v1 freezer hierarchy the guard cannot make "
                          "one without changing memory accounting (a pure cgroup v2 host): not frozen")
        for pid in tree:
            member = info if pid == info.pid else read_proc(pid, self.procfs)
            if member is not None and member.cgroups.get("freezer", "/") != "/":
                where = member.cgroups["freezer"]
                return None, f"{member.stat.comm} ({pid}) is in freezer cgroup {where} of someone else"
        return Candidate(info, growth, "cgroup-v1", made, tree, moved_from="/"), ""

