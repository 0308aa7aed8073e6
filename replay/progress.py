"""The replay's live progress line, from the counts the senders report (never from the rows).

Every sender (this process, a local worker, a Dask task) takes its rows as one Arrow batch per
flush and reports the batch's judge.resultlog.RowCounts with it: requests, failed ones (the
judge's rule), drops and the batch's p95. The line adds the counts up; its p95 is the latest
batch's of the slowest sender, a recent figure (the summary at the end has the run's own).
"""

from __future__ import annotations

import time
from typing import IO

from judge.resultlog import RowCounts

now = time.monotonic


class Progress:
    """Counts what the senders report and prints the live line on stderr."""

    def __init__(self, expected: int, duration_s: float, stream: IO[str] | None) -> None:
        self.expected = expected
        self.duration_s = duration_s
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.rows = self.done = self.errors = self.dropped = 0
        self.p95: dict[int, float] = {}  # sender -> its latest batch's p95 (ms)
        self.t0 = now()
        self.last_t = self.t0
        self.last_done = 0
        self.last_print = 0.0

    def add(self, counts: RowCounts, sender: int = 0) -> None:
        """Count one batch a sender wrote or sent."""
        self.rows += counts.rows
        self.done += counts.requests
        self.errors += counts.failed
        self.dropped += counts.dropped
        if counts.p95_ms is not None:
            self.p95[sender] = counts.p95_ms

    def p95_ms(self) -> float | None:
        """The p95 of http_req_duration of the latest batch of the slowest sender (ms)."""
        return max(self.p95.values(), default=None)

    def line(self) -> str:
        """The progress line: elapsed, sent/expected, rate, recent p95, errors, drops."""
        t = now()
        rate = (self.done - self.last_done) / max(1e-9, t - self.last_t)
        self.last_t, self.last_done = t, self.done
        p95 = self.p95_ms()
        return (
            f"replay {t - self.t0:6.1f}s{f'/{self.duration_s:.1f}s' if self.duration_s else ''}  sent {self.done}/{self.expected}  "
            f"{rate:,.0f}/s  p95 {'-' if p95 is None else f'{p95:.1f} ms'}  errors {self.errors}  dropped {self.dropped}"
        )

    def tick(self, final: bool = False) -> None:
        """Print the line (every second on a terminal, every 10 s in a log, and at the end)."""
        if self.stream is None:
            return
        t = now()
        every = 1.0 if self.tty else 10.0
        if not final and t - self.last_print < every:
            return
        self.last_print = t
        text = self.line()
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
