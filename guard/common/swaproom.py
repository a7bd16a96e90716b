"""Swap as room before a kill (pure): what swap a domain may still use (host, cgroup v1 memsw, v2 memory.swap.max),
zram discounted, less the reserve; the kernel kills only when RAM and that swap are both gone."""

from __future__ import annotations


ZRAM_SHARE = 0.5  # a page swapped to zram still costs RAM: ~1/2-1/3 of it at the usual 2-3x compression


def host_swap_free(swap_free: float, ram_backed: float = 0.0) -> float:
    """The host's usable free swap: SwapFree with zram's free space counted at ZRAM_SHARE (zswap needs nothing: its pool
    is RAM that MemAvailable already misses, and the backing device's free slots are real room)."""
    return max(0.0, swap_free - ram_backed * (1 - ZRAM_SHARE))


def cgroup_swap_free(allowance: float | None, used: float | None, host_free: float) -> float:
    """Swap a cgroup may still use: its allowance (v1 memsw limit - limit, v2 memory.swap.max) less what it has swapped,
    never more than the host has free; an unlimited allowance is bounded by the host alone."""
    if allowance is None:
        return host_free
    return max(0.0, min(allowance - (used or 0.0), host_free))


def swap_room(swap_free: float | None, reserve: float) -> float:
    """What of the free swap counts as room: all but the reserve (the swap-out the kernel cannot do in time)."""
    return max(0.0, (swap_free or 0.0) - reserve)


def room_bytes(ram_available: float | None, swap_free: float | None, reserve: float) -> float | None:
    """What is left before the kernel kills: RAM available plus the swap room; None without a RAM value."""
    return None if ram_available is None else ram_available + swap_room(swap_free, reserve)
