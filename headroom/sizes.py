"""The one parser for byte sizes people type: 14GiB, 512MiB, 14G (1024-based, as systemd reads it), 14GB (10^9)."""

from __future__ import annotations

import re

_BINARY = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_DECIMAL = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
# The whole grammar, also published in the OpenAPI schemas (ASCII digits and blanks only; a fraction needs a unit
# prefix; at most 20 digits, so no arithmetic can overflow). Case: 14G = 14g = 14GiB = 14gib; 14GB (upper B) = 14 *
# 10^9.
SIZE_PATTERN = (
    r"^[ \t]*(?:[0-9]{1,20}(?:\.[0-9]{1,9})?[ \t]*[KMGTPkmgtp](?:[Ii][Bb]|[Bb])?"
    r"|[0-9]{1,20}[ \t]*[Bb]?)[ \t]*$"
)
_SIZE_RE = re.compile(r"^[ \t]*([0-9]{1,20})(?:\.([0-9]{1,9}))?[ \t]*([KMGTPkmgtp]?)([Ii][Bb]|[Bb])?[ \t]*$")

SIZE_HELP = "a size such as 14GiB, 512MiB, 14G (1024-based), 14GB (10^9) or a number of bytes"


def parse_size(text: str | int) -> int:
    """Bytes for `text`; raises ValueError naming what was expected (never OverflowError: digits are bounded)."""
    if isinstance(text, bool):
        raise ValueError(f"expected {SIZE_HELP}, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative, got {text}")
        return text
    shown = repr(text) if len(str(text)) <= 60 else repr(str(text)[:60]) + "..."
    match = _SIZE_RE.fullmatch(str(text))
    if match and match.group(2) and not match.group(3):
        raise ValueError(f"a number of bytes must be whole, got {shown}")
    if not match or not re.fullmatch(SIZE_PATTERN, str(text)):
        raise ValueError(f"expected {SIZE_HELP}, got {shown}")
    whole, fraction, prefix, suffix = match.group(1), match.group(2) or "", match.group(3).upper(), match.group(4) or ""
    factor = _DECIMAL[prefix] if suffix == "B" and prefix else _BINARY[prefix]
    scale = 10 ** len(fraction)
    return (int(whole) * scale + int(fraction or "0")) * factor // scale


def format_size(n_bytes: float | None) -> str:
    """Human form with binary units, e.g. 1.5 GiB; '-' for None."""
    if n_bytes is None:
        return "-"
    sign = "-" if n_bytes < 0 else ""
    value = abs(float(n_bytes))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    return f"{sign}{value:.1f} TiB"


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str | int | float) -> float:
    """Seconds for '10m', '30s', '1.5h', '250ms' or a plain number of seconds; ValueError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a duration must not be negative, got {text}")
        return float(text)
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"expected a duration such as 30s, 10m, 1h or a number of seconds, got {text!r}")
    return float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
