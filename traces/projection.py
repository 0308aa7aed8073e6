"""The expected end state of a trace: an incremental fold over its events.

Writers fold every event they write and store the result in the header (`counts`, `targets`,
`expected`), so a header always equals `project(events)` of its own events. `verify` compares the
target's end state with `expected`.

What counts (the models' `expect` says what the target should answer):
- a scan is an event with target rpc:scan_ticket_atomic (or kind "scan"); `scans` counts them by
  expected outcome. A `valid` scan admits its ticket the first time (`admitted`), and again after an
  `exited` pass-out (`reentries`); `exits` counts pass-outs and `inside` = admitted + reentries - exits.
- a checkout is kind "checkout" (stripe:payment_intents.create); a confirm with expect `succeeded`
  or `declined` counts in payments_succeeded / payments_declined; kind "abandon" counts in abandoned.
- a webhook (fn:stripe-webhook, or kind "webhook") expected `processed` changes the end state:
  `payment_intent.succeeded` creates an order of metadata.quantity tickets (default 1) worth
  `amount`; `charge.refunded` counts a refund of `amount_refunded` (default `amount`), subtracted
  from revenue_cents. Webhooks expected `duplicate` change nothing.
- `by_event` holds admitted, orders, tickets_sold and revenue_cents per venue event id (string keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa

from traces.event import (
    ABANDON,
    CHECKOUT,
    CONFIRM,
    DECLINED,
    EXITED,
    PROCESSED,
    SCAN,
    SUBSCRIBE,
    SUCCEEDED,
    TARGET_PI_CONFIRM,
    TARGET_PI_CREATE,
    TARGET_SCAN,
    TARGET_WEBHOOK,
    VALID,
    VIEW,
    WEBHOOK,
    Event,
    unpack_payload,
)
from traces.schema import no_gc

# Categories of events the projection distinguishes.
_SCAN, _WEBHOOK, _CHECKOUT, _CONFIRM, _ABANDON, _VIEW, _SUBSCRIBE, _OTHER = range(8)


def _category(kind: str, target: str | None) -> int:
    if target == TARGET_SCAN or kind == SCAN:
        return _SCAN
    if target == TARGET_WEBHOOK or kind == WEBHOOK:
        return _WEBHOOK
    if target == TARGET_PI_CREATE or kind == CHECKOUT:
        return _CHECKOUT
    if target == TARGET_PI_CONFIRM or kind == CONFIRM:
        return _CONFIRM
    if kind == ABANDON:
        return _ABANDON
    if kind == VIEW:
        return _VIEW
    if kind == SUBSCRIBE:
        return _SUBSCRIBE
    return _OTHER


def _needs_payload(cat: int, expect: str | None) -> bool:
    return (cat == _SCAN and expect in (VALID, EXITED)) or (cat == _WEBHOOK and expect == PROCESSED)


def _int(v: Any, default: int = 0) -> int:
    """A Stripe-ish number (metadata values are strings) as an int, `default` if unusable."""
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


_NOT_DECODED = object()


def _decode_many(raws: list[bytes]) -> list[Any]:
    """Decode many msgpack payloads in one call (framed as one array); junk becomes a marker."""
    n = len(raws)
    head = (
        bytes([0x90 | n])
        if n < 16
        else b"\xdc" + n.to_bytes(2, "big")
        if n < 65536
        else b"\xdd" + n.to_bytes(4, "big")
    )
    if all(raws):  # an empty payload would shift every item after it
        try:
            out = msgpack.unpackb(head + b"".join(raws), raw=False, strict_map_key=False)
            if len(out) == n:
                return out
        except Exception:  # noqa: S110 - a payload is not msgpack: decode one by one below
            pass
    out = []
    for raw in raws:
        try:
            out.append(unpack_payload(raw))
        except Exception:
            out.append(_NOT_DECODED)
    return out


class Projection:
    """Expected end state, folded one event (`add`) or one RecordBatch (`add_batch`) at a time."""

    __slots__ = (
        "events",
        "counts",
        "targets",
        "_outcomes",
        "_exited",
        "admitted",
        "reentries",
        "exits",
        "orders",
        "tickets_sold",
        "revenue_cents",
        "refunds",
        "refunded_cents",
        "by_event",
        "_cat_cache",
    )

    def __init__(self) -> None:
        self.events = 0
        self.counts: dict[str, int] = {}
        self.targets: dict[str, int] = {}
        self._outcomes: dict[tuple[int, str | None], int] = {}
        self._exited: set[Any] = set()  # tickets out on a pass-out (bounded by the attendance)
        self.admitted = self.reentries = self.exits = 0
        self.orders = self.tickets_sold = self.revenue_cents = 0
        self.refunds = self.refunded_cents = 0
        self.by_event: dict[str, dict[str, int]] = {}
        self._cat_cache: dict[tuple[str, str | None], int] = {}

    def _cat(self, kind: str, target: str | None) -> int:
        key = (kind, target)
        cat = self._cat_cache.get(key)
        if cat is None:
            cat = self._cat_cache[key] = _category(kind, target)
        return cat

    def add(self, e: Event) -> None:
        """Fold one event."""
        kind, target, expect = e[2], e[4], e[7]
        self.events += 1
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + 1
        if target is not None:
            self.targets[target] = self.targets.get(target, 0) + 1
        cat = self._cat(kind, target)
        key = (cat, expect)
        self._outcomes[key] = self._outcomes.get(key, 0) + 1
        if _needs_payload(cat, expect):
            self._effect(cat, expect, e[5])

    def add_many(self, events: Iterable[Event]) -> None:
        """Fold many events in order."""
        add = self.add
        with no_gc():  # decoded payloads are trees: no cycles for the GC to find
            for e in events:
                add(e)

    def add_batch(self, batch: pa.RecordBatch) -> None:
        """Fold a RecordBatch of traces.schema.SCHEMA column-wise; equal to add() on each row."""
        n = batch.num_rows
        if n == 0:
            return
        self.events += n
        keys, values = [], []
        for name in ("kind", "target", "expect"):
            col = batch.column(name)
            if not pa.types.is_dictionary(col.type):
                col = col.dictionary_encode()
            vals = col.dictionary.to_pylist() + [None]
            idx = (
                col.indices.fill_null(len(vals) - 1).to_numpy(zero_copy_only=False).astype(np.int64)
            )
            keys.append(idx)
            values.append(vals)
        nk, nt = len(values[0]), len(values[1])
        combo = (keys[2] * nt + keys[1]) * nk + keys[0]
        uniq, inverse, tally = np.unique(combo, return_inverse=True, return_counts=True)
        decode_codes = []
        for u, c in zip(uniq.tolist(), tally.tolist(), strict=True):
            ki, rest = u % nk, u // nk
            ti, ei = rest % nt, rest // nt
            kind, target, expect = values[0][ki], values[1][ti], values[2][ei]
            self.counts[kind] = self.counts.get(kind, 0) + c
            if target is not None:
                self.targets[target] = self.targets.get(target, 0) + c
            cat = self._cat(kind, target)
            key = (cat, expect)
            self._outcomes[key] = self._outcomes.get(key, 0) + c
            if _needs_payload(cat, expect):
                decode_codes.append((u, cat, expect))
        if decode_codes:
            wanted = {
                int(np.searchsorted(uniq, u)): (cat, expect) for u, cat, expect in decode_codes
            }
            rows = np.flatnonzero(np.isin(inverse, list(wanted)))
            payloads = batch.column("payload").take(pa.array(rows)).to_pylist()
            effect = self._apply
            with no_gc():  # decoded payloads are trees: no cycles for the GC to find
                decoded = _decode_many(payloads)
                for row, data in zip(inverse[rows].tolist(), decoded, strict=True):
                    cat, expect = wanted[row]
                    effect(cat, expect, data)

    def _for_event(self, event_id: Any) -> dict[str, int]:
        key = str(event_id)
        d = self.by_event.get(key)
        if d is None:
            d = self.by_event[key] = {
                "admitted": 0,
                "orders": 0,
                "tickets_sold": 0,
                "revenue_cents": 0,
            }
        return d

    def _effect(self, cat: int, expect: str | None, raw: bytes) -> None:
        try:
            data = unpack_payload(raw)
        except Exception:  # a recorded payload that is not msgpack: counted, but changes nothing
            return
        self._apply(cat, expect, data)

    def _apply(self, cat: int, expect: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            return
        if cat == _SCAN:
            code = data.get("ticket_code")
            if isinstance(code, list | dict):  # unhashable junk from recorded traffic
                code = repr(code)
            if expect == EXITED:
                self.exits += 1
                self._exited.add(code)
            elif code in self._exited:
                self._exited.discard(code)
                self.reentries += 1
            else:
                self.admitted += 1
                self._for_event(data.get("event_id"))["admitted"] += 1
            return
        obj = data.get("data")
        obj = obj.get("object") if isinstance(obj, dict) else None
        if not isinstance(obj, dict):
            return
        etype = data.get("type")
        if etype == "payment_intent.succeeded":
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            amount = _int(obj.get("amount"))
            quantity = _int(meta.get("quantity"), 1)
            self.orders += 1
            self.tickets_sold += quantity
            self.revenue_cents += amount
            per = self._for_event(meta.get("event_id"))
            per["orders"] += 1
            per["tickets_sold"] += quantity
            per["revenue_cents"] += amount
        elif etype == "charge.refunded":
            refunded = _int(obj.get("amount_refunded", obj.get("amount")))
            self.refunds += 1
            self.refunded_cents += refunded
            self.revenue_cents -= refunded
            meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
            self._for_event(meta.get("event_id"))["revenue_cents"] -= refunded

    def _n(self, cat: int, expect: str | None = ..., exclude_none: bool = False) -> int:
        if expect is not ...:
            return self._outcomes.get((cat, expect), 0)
        return sum(
            c
            for (ct, ex), c in self._outcomes.items()
            if ct == cat and not (exclude_none and ex is None)
        )

    def result(self) -> dict[str, Any]:
        """The expected end state as a plain dict with sorted keys (JSON- and msgpack-ready)."""
        scans: dict[str, int] = {}
        for (cat, ex), c in self._outcomes.items():
            if cat == _SCAN and ex is not None:
                scans[ex] = scans.get(ex, 0) + c
        out = {
            "abandoned": self._n(_ABANDON),
            "admitted": self.admitted,
            "by_event": {k: dict(sorted(v.items())) for k, v in sorted(self.by_event.items())},
            "checkouts": self._n(_CHECKOUT),
            "exits": self.exits,
            "inside": self.admitted + self.reentries - self.exits,
            "orders": self.orders,
            "payments_declined": self._n(_CONFIRM, DECLINED),
            "payments_succeeded": self._n(_CONFIRM, SUCCEEDED),
            "reentries": self.reentries,
            "refunded_cents": self.refunded_cents,
            "refunds": self.refunds,
            "revenue_cents": self.revenue_cents,
            "scans": dict(sorted(scans.items())),
            "subscriptions": self._n(_SUBSCRIBE),
            "tickets_sold": self.tickets_sold,
            "views": self._n(_VIEW),
            "webhooks": self._n(_WEBHOOK),
            "webhooks_duplicate": self._n(_WEBHOOK, "duplicate"),
            "webhooks_processed": self._n(_WEBHOOK, PROCESSED),
        }
        return out

    def sorted_counts(self) -> dict[str, int]:
        """Events per kind, keys sorted."""
        return dict(sorted(self.counts.items()))

    def sorted_targets(self) -> dict[str, int]:
        """Events per target, keys sorted."""
        return dict(sorted(self.targets.items()))


def project(events: Iterable[Event]) -> dict[str, Any]:
    """The expected end state of a sequence of events (see the module docstring)."""
    p = Projection()
    p.add_many(events)
    return p.result()
