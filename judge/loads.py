"""Dashboard loads: the views of one viewer's load grouped into one `dashboard_load` row.

A viewer's dashboard load is several requests (events, tickets, revenue) sharing a ``load`` id in
their payloads; how long the viewer waited is the load's, first view scheduled to last view
answered. The replay's scheduler (measured views) and sim/'s prediction (predicted views) feed
every finished view to a :class:`Loads` and write the rows it flushes, so both group alike:

* a load is the views of one actor sharing a load id (a view without one is a load of its own);
* ``seq``, ``scheduled`` and ``sent`` are the first view's (the earliest scheduled; the lower seq
  on a tie), ``done`` the last completion;
* a load with any failed view is failed (judge.metrics.request_failed, per view): its ``status``
  is 0 if any view got no answer, else the highest of its views' statuses, and its ``error`` the
  first view's error (in the order above) among the views that have one. A failed load counts in
  no ``dashboard_load`` sample (judge.metrics.from_table): its views count in http_req_failed.

The result does not depend on the order views are fed in (views of a load answer in any order).
Times are whatever unit the caller gives (the scheduler's monotonic seconds, sim's microseconds).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from judge.rows import DASHBOARD_LOAD, DASHBOARD_TARGET

VIEW_KIND = "view"  # the kind of a view event (traces.event.VIEW), the kind of a load row


@dataclass(frozen=True, slots=True)
class Load:
    """One dashboard load, aggregated from its views (times in the unit they were fed in)."""

    actor: str
    seq: int
    scheduled: Any
    sent: Any
    done: Any
    status: int
    error: str | None

    def row(self, us: Callable[[Any], int] = int) -> dict[str, Any]:
        """The load as a result row (judge.rows.SCHEMA's columns); `us` turns a time into µs."""
        return {
            "seq": self.seq, "target": DASHBOARD_TARGET, "kind": VIEW_KIND, "actor": self.actor,
            "scheduled_us": us(self.scheduled), "sent_us": us(self.sent), "done_us": us(self.done),
            "status": self.status, "error": self.error, "bytes_sent": 0, "bytes_received": 0,
            "outcome": None, "expect": None, "metric": DASHBOARD_LOAD, "group": None,
        }  # fmt: skip


def _worse(a: int, b: int) -> int:
    """The status a load keeps of two views': no answer (0) first, then the highest."""
    return 0 if a == 0 or b == 0 else max(a, b)


class Loads:
    """Aggregates finished views into dashboard loads: `add` each view, `flush` at the end."""

    def __init__(self) -> None:
        self._loads: dict[tuple[str, Hashable], Load] = {}
        self._error_at: dict[tuple[str, Hashable], tuple[Any, int]] = {}

    def __len__(self) -> int:
        return len(self._loads)

    def add(
        self,
        actor: str,
        load: Hashable | None,
        seq: int,
        scheduled: Any,
        sent: Any,
        done: Any,
        status: int,
        error: str | None,
    ) -> None:
        """One finished view of `actor`'s load `load` (None: the view is a load of its own)."""
        key = (actor, ("seq", seq) if load is None else load)
        cur = self._loads.get(key)
        if error:
            at = self._error_at.get(key)
            if at is None or (scheduled, seq) < at:
                self._error_at[key] = (scheduled, seq)
            else:
                error = None  # an earlier view's error stays
        if cur is None:
            self._loads[key] = Load(actor, seq, scheduled, sent, done, status, error or None)
            return
        first = (scheduled, seq) < (cur.scheduled, cur.seq)
        self._loads[key] = Load(
            actor,
            seq if first else cur.seq,
            scheduled if first else cur.scheduled,
            sent if first else cur.sent,
            max(done, cur.done),
            _worse(status, cur.status),
            error or cur.error,
        )

    def flush(self) -> list[Load]:
        """Every load aggregated so far (in the order their first view was fed), and forget them."""
        out = list(self._loads.values())
        self._loads.clear()
        self._error_at.clear()
        return out
