"""Bookkeeping of one outage of one server, shared by the clients that ride outages out (the retrieval client, the
OpenAI-compatible model backend).

A client calls :meth:`OutageLog.failed` on every transient failure (it returns how long the outage has lasted, to
compare with the budget) and :meth:`OutageLog.recovered` on every success. The log shows one line when an outage
starts, one per ``report_every_s`` while it lasts and one when the server answers again, whatever the number of
requests that fail meanwhile. Thread-safe: one instance is shared by every request of a client.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["OutageLog", "REPORT_EVERY_S"]

REPORT_EVERY_S = 60.0


class OutageLog:
    def __init__(
        self,
        what: str,
        url: str,
        budget_s: float,
        logger: logging.Logger,
        clock=time.monotonic,
        report_every_s: float = REPORT_EVERY_S,
    ) -> None:
        self.what, self.url, self.budget_s, self.logger, self.clock = what, url, budget_s, logger, clock
        self.report_every_s = report_every_s
        self.started: float | None = None
        self.last_report = 0.0
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self, reason: str) -> float:
        """Record one failed attempt; returns how long the outage has lasted, in seconds."""
        with self._lock:
            now = self.clock()
            self.failures += 1
            if self.started is None:
                self.started = self.last_report = now
                self.logger.warning(
                    "%s %s unavailable (%s); retrying for up to %.0fs",
                    self.what,
                    self.url,
                    reason,
                    self.budget_s,
                )
            elif now - self.last_report >= self.report_every_s:
                self.last_report = now
                self.logger.warning(
                    "%s %s still unavailable after %.0fs of %.0fs (%d failed attempts; last: %s)",
                    self.what,
                    self.url,
                    now - self.started,
                    self.budget_s,
                    self.failures,
                    reason,
                )
            return now - self.started

    def recovered(self) -> None:
        """The server answered: close the outage (one log line) if one was open."""
        with self._lock:
            if self.started is not None:
                self.logger.warning(
                    "%s %s answering again after %.1fs (%d failed attempts)",
                    self.what,
                    self.url,
                    self.clock() - self.started,
                    self.failures,
                )
                self.started, self.failures = None, 0
