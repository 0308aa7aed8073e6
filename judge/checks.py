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

from collections.abc import Callable
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

    `target_of(row)` is a row's target, for the check names.
    """
    n = len(table)
    grouped = np.zeros(n, bool)
    lead = np.zeros(n, bool)
    lead_passed = np.zeros(n, bool)
    lead_check = np.full(n, "", dtype=object)
    if "group" not in table.column_names or not n:
        return GroupVerdicts(grouped, lead, lead_passed, lead_check, (), 0)
    group = table["group"]
    has_group = pc.is_valid(group).to_numpy(zero_copy_only=False) & candidates
    idx = np.flatnonzero(has_group)
    if not len(idx):
        return GroupVerdicts(grouped, lead, lead_passed, lead_check, (), 0)
    groups = pc.take(group, pa.array(idx)).to_pylist()
    expects = pc.take(table["expect"], pa.array(idx)).to_pylist()
    outcomes = pc.take(table["outcome"], pa.array(idx)).to_pylist()
    seqs = pc.take(table["seq"], pa.array(idx)).to_numpy(zero_copy_only=False)
    # Sort by (group, seq): a group's rows in trace order, so admissions split at exits.
    order = sorted(range(len(idx)), key=lambda i: (groups[i], int(seqs[i])))
    failed: list[FailedGroup] = []
    failed_count = 0

    def close(members: list[int], check: str) -> None:
        nonlocal failed_count
        if not members:
            return
        want = sum(expects[i] in (PROCESSED, VALID) for i in members)
        win = PROCESSED if check == WEBHOOK_CHECK else VALID
        lose = DUPLICATE if check == WEBHOOK_CHECK else ALREADY_SCANNED
        won = sum(outcomes[i] == win for i in members)
        lost = sum(outcomes[i] == lose for i in members)
        ok = won == want and won + lost == len(members)
        rows = idx[members]
        grouped[rows] = True
        first = rows[int(np.argmin(seqs[members]))]
        lead[first] = True
        lead_passed[first] = ok
        lead_check[first] = name = f"{target_of(first)} {check}"
        if not ok:
            failed_count += 1
            if len(failed) < MAX_LISTED:
                reqs = tuple((int(seqs[i]), expects[i], outcomes[i]) for i in members)
                failed.append(FailedGroup(name, groups[members[0]], reqs))

    members: list[int] = []
    current: str | None = None
    for i in order:
        g = groups[i]
        if g != current:
            close(
                members,
                WEBHOOK_CHECK if (current or "").startswith(WEBHOOK_GROUP) else TICKET_CHECK,
            )
            members, current = [], g
        if g.startswith(TICKET_GROUP) and expects[i] not in (VALID, ALREADY_SCANNED):
            # an exit (or another per-request outcome) ends the admission; it is judged alone
            close(members, TICKET_CHECK)
            members = []
            continue
        if g.startswith(WEBHOOK_GROUP) and expects[i] not in _WEBHOOK_EXPECTS:
            continue
        members.append(i)
    close(members, WEBHOOK_CHECK if (current or "").startswith(WEBHOOK_GROUP) else TICKET_CHECK)
    return GroupVerdicts(grouped, lead, lead_passed, lead_check, tuple(failed), failed_count)
