"""Logging set-up: one format, and a throttle so a broker outage is reported, not flooded.

aiokafka logs every failed connection attempt at ERROR level, ten times a second while a broker is away.
The throttle lets each message template through once per ``every`` seconds per logger and counts the rest.
"""

from __future__ import annotations

import logging
import sys
import time


class Throttle(logging.Filter):
    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self.suppressed = 0
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self.suppressed += 1
            return False
        self._last[key] = now
        if len(self._last) > 10_000:  # message templates are few; this only guards against formatted text
            self._last.clear()
        return True


def setup_logging(level: str = "INFO") -> Throttle:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    throttle = Throttle()
    handler.addFilter(throttle)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, getattr(logging, level)))
    return throttle
