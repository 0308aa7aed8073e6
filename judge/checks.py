"""Checks that judge what the system promises, not an order the network does not keep.

A per-request check compares a response's outcome with the event's ``expect``. That is right where
the order is causal (an ``after`` dependency, one actor's sequential requests), and wrong where no
order is guaranteed: two deliveries of one Stripe event race each other (Stripe promises at least
once, in no order), and two scans of one ticket at two lanes (a shared screenshot, a rescan racing
its first scan) reach the database in whichever order the network gives them. The model predicts
*which* delivery or scan comes first; the target promises only that one of them wins. So rows that
share a group are judged together, whatever order they arrived in:

* ``evt:<Stripe event id>`` (webhook deliveries expecting ``processed`` or ``duplicate``): the
  event is processed exactly as many times as expected (once), every other delivery answers
  ``duplicate``.
* ``ticket:<event id>/<ticket code>`` (scans): the scans of one ticket are split into admissions at
  each scan expected to be an exit (``exited``); within one admission, the scans expecting
  ``valid`` or ``already_scanned`` are admitted exactly as many times as expected (at most once),
  and every other one answers ``already_scanned``. Exits, invalid and wrong-event scans stay
  per-request checks.

A group is one sample of the ``checks`` metric (tagged like its first row), named after what it
holds: ``fn:stripe-webhook processes each Stripe event once``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from traces.event import Event, unpack_payload

WEBHOOK_GROUP = "evt:"
TICKET_GROUP = "ticket:"
PROCESSED, DUPLICATE = "processed", "duplicate"
VALID, ALREADY_SCANNED, EXITED = "valid", "already_scanned", "exited"
_WEBHOOK_EXPECTS = frozenset((PROCESSED, DUPLICATE))
_SCAN_EXPECTS = frozenset((VALID, ALREADY_SCANNED, EXITED))
GROUPED_EXPECTS = _WEBHOOK_EXPECTS | _SCAN_EXPECTS  # only these events can have a group
WEBHOOK_CHECK = "processes each Stripe event once"
TICKET_CHECK = "admits each ticket once per entry"
MAX_LISTED = 20  # failed groups listed (with their requests) for the report


def group_of(event: Event) -> str | None:
    """The check group of an event's request (module docstring), or None for a per-request check."""
    return group_in(event.expect, _payload(event)) if event.expect in GROUPED_EXPECTS else None


def group_in(expect: str | None, payload: dict) -> str | None:
    """group_of for an event whose payload is decoded already (the scheduler's hot path)."""
    if expect in _WEBHOOK_EXPECTS:
        ev_id = payload.get("id") if payload.get("object") == "event" else None
        return f"{WEBHOOK_GROUP}{ev_id}" if isinstance(ev_id, str) and ev_id else None
    if expect in _SCAN_EXPECTS:
        code = payload.get("ticket_code")
        if not isinstance(code, str) or not code:
            return None
        return f"{TICKET_GROUP}{payload.get('event_id', '')}/{code}"
    return None


def _payload(event: Event) -> dict:
    try:
        p = unpack_payload(event.payload)
    except Exception:  # noqa: BLE001 - an unreadable payload is a build error reported elsewhere
        return {}
    return p if isinstance(p, dict) else {}


@dataclass(frozen=True, slots=True)
class FailedGroup:
    """A group check that failed: what it holds, and each request's (seq, expected, outcome)."""

    check: str
    group: str
    requests: tuple[tuple[int, str | None, str | None], ...]


@dataclass(frozen=True, slots=True, eq=False)
class GroupVerdicts:
    """Group checks over a result table: which rows are judged as groups, and the groups' verdicts.

    ``grouped`` marks every row judged inside a group (not a check of its own); ``lead`` the row
    that stands for its group (its first by seq), ``lead_passed`` the group's verdict on that row
    and ``lead_check`` the group's check name (empty elsewhere).
    """

    grouped: np.ndarray
    lead: np.ndarray
    lead_passed: np.ndarray
    lead_check: np.ndarray  # object array of check names ("" outside leads)
    failed: tuple[FailedGroup, ...]
    failed_count: int


def judge_groups(
    table: pa.Table, target_of: Callable[[int], str], candidates: np.ndarray
) -> GroupVerdicts:
    """Judge the group checks of a result table's `candidates` rows (request rows with an expect).

    `target_of(row)` is a row's target, for the check names. Columnar: the rows sorted by
    (group, seq), split into judged units (a group; for a ticket, each admission), then counted
    per unit with np.add.reduceat.
    """
    n = len(table)
    grouped = np.zeros(n, bool)
    lead = np.zeros(n, bool)
    lead_passed = np.zeros(n, bool)
    lead_check = np.full(n, "", dtype=object)
    if "group" not in table.column_names or not n:
        return GroupVerdicts(grouped, lead, lead_passed, lead_check, (), 0)
    has_group = pc.is_valid(table["group"]).to_numpy(zero_copy_only=False) & candidates
    idx = np.flatnonzero(has_group)
    if not len(idx):
        return GroupVerdicts(grouped, lead, lead_passed, lead_check, (), 0)
    take = pa.array(idx)
    groups = pc.dictionary_encode(pc.take(table["group"], take).combine_chunks())
    labels = groups.dictionary.to_pylist()
    rank = np.empty(len(labels), np.int64)  # a group's place in string order (as sorted() has it)
    rank[np.argsort(np.array(labels, dtype=object), kind="stable")] = np.arange(len(labels))
    code = groups.indices.to_numpy(zero_copy_only=False)
    seqs = pc.take(table["seq"], take).to_numpy(zero_copy_only=False)
    order = np.lexsort((seqs, rank[code]))  # by (group, seq); stable on ties
    rows, code, seqs = idx[order], code[order], seqs[order]
    expect = pc.take(pc.take(table["expect"], take), pa.array(order))
    outcome = pc.take(pc.take(table["outcome"], take), pa.array(order))

    def among(col: pa.ChunkedArray | pa.Array, values: Iterable[str]) -> np.ndarray:
        return pc.is_in(col, pa.array(list(values), pa.string())).to_numpy(zero_copy_only=False)

    webhook = np.array([g.startswith(WEBHOOK_GROUP) for g in labels], bool)[code]
    ticket = np.array([g.startswith(TICKET_GROUP) for g in labels], bool)[code]
    admission = among(expect, (VALID, ALREADY_SCANNED))
    # a ticket's exit (or another per-request outcome) ends its admission and is judged alone; a
    # webhook group judges its deliveries; any other group judges all its rows
    member = np.where(ticket, admission, np.where(webhook, among(expect, _WEBHOOK_EXPECTS), True))
    new_group = np.ones(len(rows), bool)
    new_group[1:] = code[1:] != code[:-1]
    ended = ticket & ~admission  # this row ends its ticket's admission: the next row starts one
    start = new_group.copy()
    start[1:] |= ended[:-1]
    unit = np.cumsum(start)[member]
    if not len(unit):
        return GroupVerdicts(grouped, lead, lead_passed, lead_check, (), 0)
    first = np.flatnonzero(np.concatenate(([True], unit[1:] != unit[:-1])))
    hook_m = webhook[member]
    win = np.where(webhook, among(outcome, (PROCESSED,)), among(outcome, (VALID,)))[member]
    lose = np.where(webhook, among(outcome, (DUPLICATE,)), among(outcome, (ALREADY_SCANNED,)))
    lose = lose[member]
    want = np.add.reduceat(among(expect, (PROCESSED, VALID))[member].astype(np.int64), first)
    won = np.add.reduceat(win.astype(np.int64), first)
    lost = np.add.reduceat(lose.astype(np.int64), first)
    size = np.diff(np.append(first, len(unit)))
    ok = (won == want) & (won + lost == size)
    member_rows = rows[member]
    grouped[member_rows] = True
    leads = member_rows[first]
    lead[leads] = True
    lead_passed[leads] = ok
    names = [f"{target_of(int(r))} {WEBHOOK_CHECK if h else TICKET_CHECK}"
             for r, h in zip(leads, hook_m[first], strict=True)]  # fmt: skip
    lead_check[leads] = names
    bad = np.flatnonzero(~ok)
    failed: list[FailedGroup] = []
    if len(bad):
        m_seqs, m_code = seqs[member], code[member]
        m_expect = pc.filter(expect, pa.array(member)).to_pylist()
        m_outcome = pc.filter(outcome, pa.array(member)).to_pylist()
        ends = np.append(first, len(unit))
        for u in bad[:MAX_LISTED]:
            lo, hi = ends[u], ends[u + 1]
            reqs = tuple((int(m_seqs[i]), m_expect[i], m_outcome[i]) for i in range(lo, hi))
            failed.append(FailedGroup(names[u], labels[m_code[lo]], reqs))
    return GroupVerdicts(grouped, lead, lead_passed, lead_check, tuple(failed), len(bad))
