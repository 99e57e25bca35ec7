"""Progress for people and for logs: a bar on a terminal, otherwise a plain line every `every` seconds."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("tft")


def on_terminal() -> bool:
    return sys.stderr.isatty()


class Ticker:
    """`tick(message)` logs the message at most once every `every` seconds (for piped output)."""

    def __init__(self, every: float = 30.0):
        self.every, self.last = every, time.monotonic()

    def tick(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            log.info("%s", message)
