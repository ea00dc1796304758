"""Progress lines for long exports: done/total, rate over this run's own work, and ETA.

A line at most every `every_s` seconds (and always at the end), on stderr, so that logs stay readable when the
output is a file rather than a terminal. Work skipped on resume counts as done but not toward the rate.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    def __init__(self, total: int | None, *, unit: str = "texts", every_s: float = 10.0,
                 stream: TextIO | None = None, clock=time.monotonic):
        self.total, self.unit, self.every_s = total, unit, every_s
        self.stream = stream or sys.stderr
        self.clock = clock
        self.done = 0
        self.done_this_run = 0
        self.started = clock()
        self.last_line = -float("inf")
        self.last_reported = -1

    def skip(self, count: int) -> None:
        """Work a previous run already did: counted as done, not toward the rate, whose clock starts after the
        skipping that comes before this run's first work."""
        self.done += count
        if not self.done_this_run:
            self.started = self.clock()

    def advance(self, count: int, *, note: str = "") -> None:
        self.done += count
        self.done_this_run += count
        if self.clock() - self.last_line >= self.every_s:
            self.report(note)

    def finish(self) -> None:
        """The final line, unless the last one already said the same."""
        if self.last_reported != self.done:
            self.report()

    def rate(self) -> float:
        elapsed = self.clock() - self.started
        return self.done_this_run / elapsed if elapsed > 0 else 0.0

    def line(self, note: str = "") -> str:
        rate = self.rate()
        parts = [f"{self.done:,}" + (f"/{self.total:,} {self.unit} ({100 * self.done / max(self.total, 1):.1f}%)"
                                     if self.total else f" {self.unit}"),
                 f"{rate:.1f} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration(max(self.total - self.done, 0) / rate)}")
        if note:
            parts.append(note)
        return " · ".join(parts)

    def report(self, note: str = "") -> None:
        self.last_line, self.last_reported = self.clock(), self.done
        print(f"[export] {self.line(note)}", file=self.stream, flush=True)
