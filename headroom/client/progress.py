"""What a queued client shows while it waits: position, what is being freed, time waited; quiet enough for a CI log."""

from __future__ import annotations

import sys
import time

from headroom.client.http import Answer
from headroom.sizes import format_size

LOG_EVERY_SECONDS = 5.0  # not a terminal: one line this often, so a CI log shows the wait without flooding


def describe_shortfall(shortfall: dict) -> str:
    """{"ram_bytes": N} -> "ram short by 1.2 GiB"."""
    parts = []
    for resource, value in sorted(shortfall.items()):
        name = resource.removesuffix("_bytes")
        parts.append(f"{name} short by {format_size(value)}" if isinstance(value, (int, float)) else f"{name}: {value}")
    return ", ".join(parts)


def describe_wait(answer: Answer, waited: float) -> str:
    """One line: waited, position, what the guard is doing for this request, and what is short."""
    text = f"queued {waited:.0f}s, position {answer.position or 1}"
    if answer.lease.get("frees_worker"):
        text += ", the guard is freeing the worker to make room"
    elif answer.reason:
        text += f", {answer.reason}"
    if answer.shortfall and "short by" not in text:
        text += f" ({describe_shortfall(answer.shortfall)})"
    return text


class ProgressLine:
    """One live line on a terminal ('\\r' rewrites), or a line every LOG_EVERY_SECONDS into a log."""

    def __init__(self, stream=None, prefix: str = "headroom", every: float = LOG_EVERY_SECONDS):
        self.stream = stream or sys.stderr
        self.prefix = prefix
        self.every = every
        self.tty = self.stream.isatty()
        self._last: float | None = None
        self.shown = False

    def update(self, answer: Answer, waited: float) -> None:
        text = f"{self.prefix}: {describe_wait(answer, waited)}"
        if self.tty:
            self.stream.write("\r" + text[:200] + "\x1b[K")
            self.stream.flush()
            self.shown = True
        elif self._last is None or time.monotonic() - self._last >= self.every:
            self._last = time.monotonic()
            print(text, file=self.stream, flush=True)
            self.shown = True

    def done(self, text: str) -> None:
        print(("\r\x1b[K" if self.tty else "") + text, file=self.stream, flush=True)

    def finish(self, text: str) -> None:
        """Close the wait with `text`, only when something was shown (a lease granted at once prints nothing)."""
        if self.shown:
            self.done(text)
