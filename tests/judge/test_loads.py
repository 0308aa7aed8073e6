"""Dashboard loads: one rule for measured and predicted views, whatever order the views finish in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from judge import metrics as m
from judge.loads import Loads
from judge.rows import DASHBOARD_LOAD, SCHEMA

views = st.lists(
    st.tuples(
        st.sampled_from(("viewer:1", "viewer:2")),  # actor
        st.sampled_from((None, 0, 1)),  # load id
        st.integers(0, 10),  # scheduled
        st.integers(0, 3),  # sent - scheduled
        st.integers(0, 20),  # done - sent
        st.sampled_from((0, 200, 204, 304, 401, 404, 500, 503)),  # status
        st.sampled_from((None, "", "timeout", "reset")),  # error
    ),
    max_size=12,
)


def feed(vs: list[tuple]) -> list:
    loads = Loads()
    for seq, (actor, load, sched, dsent, ddone, status, error) in vs:
        loads.add(actor, load, seq, sched, sched + dsent, sched + dsent + ddone, status, error)
    return loads.flush()


def numbered(vs: list[tuple]) -> list[tuple]:
    return list(enumerate(vs))


@given(vs=views, data=st.data())
def test_the_order_views_finish_in_does_not_change_the_loads(vs, data):
    rows = numbered(vs)
    shuffled = data.draw(st.permutations(rows))
    key = lambda ld: (ld.actor, ld.seq)  # noqa: E731
    assert sorted(feed(rows), key=key) == sorted(feed(shuffled), key=key)


def loads_of(rows: list[tuple]) -> list[list[tuple]]:
    """The views of each load: one actor's views sharing a load id (no id: a load of its own)."""
    groups: dict = {}
    for seq, v in rows:
        groups.setdefault((v[0], ("seq", seq) if v[1] is None else v[1]), []).append((seq, v))
    return list(groups.values())


@given(vs=views)
def test_a_load_is_failed_when_any_of_its_views_is(vs):
    rows = numbered(vs)
    by_first = {(ld.actor, ld.seq): ld for ld in feed(rows)}
    for members in loads_of(rows):
        seq, first = min(members, key=lambda sv: (sv[1][2], sv[0]))
        ld = by_first[(first[0], seq)]
        any_failed = any(m.request_failed("", v[5], v[6], None, None) for _, v in members)
        assert m.request_failed("dashboard", ld.status, ld.error, None, None) == any_failed


@given(vs=views)
def test_a_load_spans_its_first_view_to_its_last_answer(vs):
    rows = numbered(vs)
    loads = feed(rows)
    assert len(loads) == len(loads_of(rows))
    by_first = {(ld.actor, ld.seq): ld for ld in loads}
    for members in loads_of(rows):
        seq, first = min(members, key=lambda sv: (sv[1][2], sv[0]))
        ld = by_first[(first[0], seq)]
        assert ld.scheduled == first[2] and ld.sent == first[2] + first[3]
        assert ld.done == max(v[2] + v[3] + v[4] for _, v in members)


def test_failed_loads_are_no_dashboard_load_samples():
    loads = Loads()
    loads.add("viewer:1", 7, 1, 0, 0, 900, 200, None)
    loads.add("viewer:1", 7, 2, 0, 0, 1500, 200, None)  # load 7: 1.5 s
    loads.add("viewer:2", 8, 3, 0, 0, 100, 200, None)
    loads.add("viewer:2", 8, 4, 0, 0, 60_000, 0, "timeout")  # load 8 failed: no sample
    rows = [ld.row(lambda t: t * 1000) for ld in loads.flush()]
    assert [r["metric"] for r in rows] == [DASHBOARD_LOAD] * 2
    assert rows[1]["status"] == 0 and rows[1]["error"] == "timeout"
    mt = m.from_table(pa.Table.from_pylist(rows, schema=SCHEMA))
    assert mt.get("dashboard_load").values.tolist() == [1500.0]
    assert np.isnan(mt.value("http_req_failed", "rate"))  # loads are no HTTP requests
