"""Logging for every part's process: one format on stderr, chatty libraries held to warnings unless debugging."""

from __future__ import annotations

import logging
import sys

# Libraries that log every tick or request at INFO (4 ticks a second would flood the journal).
CHATTY_LOGGERS = ("apscheduler", "httpx", "httpcore")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level.lower() != "debug":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
