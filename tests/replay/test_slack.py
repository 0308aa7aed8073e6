"""Work between deadlines (replay.slack): steps only where they fit, overdue work still done, in order."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from judge.rows import RowBuffer
from replay import slack as slack_mod
from replay.slack import Slack, run_whole

STEP = 0.0001  # each step of a test job takes this long on the fake clock


class Clock:
    """A fake monotonic clock that steps move forward."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(slack_mod, "now", c)
    monkeypatch.setattr(slack_mod.gc, "get_count", lambda: (0, 0, 0))  # no collections here
    return c


def job(log: list[tuple[str, int]], name: str, steps: int, clock: Clock) -> Iterator[None]:
    for i in range(steps):
        clock.t += STEP
        log.append((name, i))
        yield


def test_outside_pacing_a_job_runs_whole_when_asked(clock: Clock) -> None:
    log: list[tuple[str, int]] = []
    s = Slack()
    s.want("rows", lambda: job(log, "a", 3, clock))
    assert log == [("a", 0), ("a", 1), ("a", 2)] and not s.jobs


def test_steps_run_only_while_the_longest_step_fits_before_the_deadline(clock: Clock) -> None:
    log: list[tuple[str, int]] = []
    s = Slack()
    s.paced = True
    s.want("rows", lambda: job(log, "a", 10, clock))
    s.run(clock.t + 0.00004)  # less than a step's first estimate (50 us): nothing starts
    assert log == []
    s.run(clock.t + 0.00035)  # room for three steps of 100 us
    assert log == [("a", 0), ("a", 1), ("a", 2)]
    assert clock.t <= 100.0 + 0.00035 + 1e-12  # no step ran past the deadline


def test_a_job_asked_for_twice_while_waiting_is_one(clock: Clock) -> None:
    log: list[tuple[str, int]] = []
    s = Slack()
    s.paced = True
    s.want("rows", lambda: job(log, "a", 1, clock))
    s.want("rows", lambda: job(log, "b", 1, clock))
    s.finish()
    assert log == [("a", 0)]
    s.paced = True
    s.want("rows", lambda: job(log, "c", 1, clock))  # done: the name is free again
    s.finish()
    assert log == [("a", 0), ("c", 0)]


def test_an_overdue_job_runs_a_step_per_wakeup_without_slack(clock: Clock) -> None:
    log: list[tuple[str, int]] = []
    s = Slack(overdue_s=1.0)
    s.paced = True
    s.want("rows", lambda: job(log, "a", 3, clock))
    s.run(clock.t - 1.0)  # behind schedule, not yet overdue: nothing
    assert log == []
    clock.t += 1.0
    s.run(clock.t - 1.0)
    s.run(clock.t - 1.0)
    assert log == [("a", 0), ("a", 1)]


@pytest.mark.parametrize("periods", [0, 1, 3, 7])
def test_a_job_late_by_k_overdue_periods_runs_k_plus_one_steps_a_wakeup(
    clock: Clock, periods: int
) -> None:
    """A sender far behind wakes rarely: one step a wake-up kept its rows for seconds."""
    log: list[tuple[str, int]] = []
    s = Slack(overdue_s=0.2)
    s.paced = True
    s.want("rows", lambda: job(log, "a", 20, clock))
    clock.t += 0.2 + periods * 0.2 + 0.01
    s.run(clock.t - 1.0)  # no slack at all
    assert len(log) == periods + 1
    s.want("rows", lambda: job(log, "b", 1, clock))  # still waiting: the same job goes on
    clock.t += 10.0
    s.run(clock.t - 1.0)
    assert log == [("a", i) for i in range(20)] and not s.jobs  # it ends: no step past it


def test_a_failing_step_reaches_the_caller_and_leaves_no_job(clock: Clock) -> None:
    def bad() -> Iterator[None]:
        yield
        raise ValueError("result column 'seq': bad")

    s = Slack()
    s.paced = True
    s.want("rows", bad)
    with pytest.raises(ValueError, match="seq"):
        s.run(clock.t + 1.0)
    assert not s.jobs and not s.names


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=6),
    st.lists(st.tuples(st.floats(-0.001, 0.001), st.floats(0, 0.6)), max_size=40),
)
def test_every_step_of_every_job_runs_once_in_order(
    clock: Clock, sizes: list[int], wakeups: list[tuple[float, float]]
) -> None:
    """Whatever the slack at each wake-up, finish() leaves every step run once, jobs first come
    first served, and a step never started short of its estimate unless its job was overdue."""
    log: list[tuple[str, int]] = []
    s = Slack(overdue_s=0.5)
    s.paced = True
    for n, steps in enumerate(sizes):
        s.want(f"j{n}", lambda n=n, steps=steps: job(log, f"j{n}", steps, clock))
    starts: list[float] = []  # the clock at each step's start
    for room, wait in wakeups:
        clock.t += wait
        until = clock.t + room
        late = clock.t - s.jobs[0][0] if s.jobs else -1.0
        before = len(log)
        s.run(until)
        starts += [clock.t - STEP * (len(log) - before - i) for i in range(len(log) - before)]
        short = [t for t in starts[before:] if until - t <= STEP - 1e-12]
        # once a step has been timed, none starts short of it, but those an overdue job gets
        # (one, and one for each overdue_s it is late), which may start the next job's too
        owed = 1 + int(late / 0.5) if late >= 0 else 0
        assert len(short) <= owed + (1 if before == 0 else 0)
    s.finish()
    assert log == [(f"j{n}", i) for n, steps in enumerate(sizes) for i in range(steps)]


def test_the_young_generation_is_collected_in_the_slack_only(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    monkeypatch.setattr(slack_mod.gc, "get_count", lambda: (slack_mod.YOUNG, 0, 0))
    monkeypatch.setattr(slack_mod.gc, "collect", lambda g: made.append(g))
    s = Slack()
    s.paced = True
    s.run(clock.t + 0.00001)  # no room for a collection's last cost
    assert made == []
    for _ in range(slack_mod.GC_MIDDLE_EVERY + 1):
        s.run(clock.t + 0.01)
    assert made == [0] * slack_mod.GC_MIDDLE_EVERY + [1]  # the middle one, in its turn


def test_a_young_generation_the_count_hides_is_collected_at_its_price(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a sender frees its old read-ahead as it reads new: the interpreter's count stays at 0
    # while the young generation fills; what the owner made and keeps is what a collection scans
    made: list[int] = []
    monkeypatch.setattr(slack_mod.gc, "collect", lambda g: made.append(g))
    s = Slack()
    s.paced = True
    kept = [24_000]
    s.held = lambda: kept[0]
    s.fresh = 24_000  # the whole read-ahead, made since the last collection: ~24 ms to scan
    s.run(clock.t + 0.01)
    assert made == []  # 10 ms of slack does not hold it: a 24 ms collection would delay sends
    s.run(clock.t + 0.03)
    assert made == [0] and s.fresh == 0  # it fits: collected, and counted afresh
    s.fresh, kept[0] = 3 * slack_mod.YOUNG, 0  # made as much, but freed it all since
    s.run(clock.t + 1.0)
    assert made == [0]  # nothing new is left in the young generation: nothing to collect


def test_an_older_generation_is_priced_by_what_the_owner_keeps(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    monkeypatch.setattr(slack_mod.gc, "collect", lambda g: made.append(g))
    s = Slack()
    s.paced = True
    s.held = lambda: 30_000  # its read-ahead, in the older generations once it has survived one
    for _ in range(slack_mod.GC_MIDDLE_EVERY):
        s.fresh = slack_mod.YOUNG
        s.run(clock.t + 0.01)
    assert made == [0] * slack_mod.GC_MIDDLE_EVERY
    s.fresh = slack_mod.YOUNG
    s.run(clock.t + 0.01)  # the middle one's turn, but it scans ~32,000 objects: the young one
    assert made[-1] == 0
    s.fresh = slack_mod.YOUNG
    s.run(clock.t + 0.05)
    assert made[-1] == 1


def rows(n: int, start: int = 0) -> list[tuple]:
    return [(i, "rpc:scan_ticket_atomic", "scan", f"a{i}", i, i + 1, i + 2, 200, None, 1, 2,
             "valid", "valid", None, None) for i in range(start, start + n)]  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(0, 40), st.integers(1, 16))
def test_a_batch_taken_in_steps_is_the_batch_and_later_rows_go_to_the_next(
    first: int, later: int, after_step: int
) -> None:
    steps_buf, whole_buf = RowBuffer(limit=10**9), RowBuffer(limit=10**9)
    for r in rows(first):
        steps_buf.append(*r)
        whole_buf.append(*r)
    expected = whole_buf.take()
    steps = steps_buf.take_steps()
    got = None
    for n in range(100):
        if n == after_step:
            for r in rows(later, 1000):
                steps_buf.append(*r)  # appended while the batch is being taken
        try:
            next(steps)
        except StopIteration as done:
            got = done.value
            break
    assert got is not None and expected is not None and got.equals(expected)
    rest = steps_buf.take()
    assert (rest.num_rows if rest is not None else 0) == later


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 60), st.integers(1, 25))
def test_batches_of_at_most_most_rows_are_the_rows_in_order(n: int, most: int) -> None:
    """Rows piled up (a sender behind) are taken `most` at a time, oldest first, none lost."""
    buf, whole = RowBuffer(limit=10**9), RowBuffer(limit=10**9)
    for r in rows(n):
        buf.append(*r)
        whole.append(*r)
    got = []
    while (batch := run_whole_value(buf.take_steps(most))) is not None:
        assert 1 <= batch.num_rows <= most
        got.append(batch)
    assert len(buf) == 0 and len(got) == -(-n // most)
    expected = whole.take()
    if expected is None:
        assert not got
    else:
        assert pa.concat_batches(got).equals(expected)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 60), st.integers(1, 12), st.booleans(), st.integers(0, 30))
def test_shipping_takes_full_batches_and_all_only_when_asked(
    n: int, limit: int, everything: bool, later: int
) -> None:
    """A flush ships the first batch, then only full ones (the rest waits for the next flush),
    and everything at a run's last flush; rows appended while it ships are never lost."""
    buf = RowBuffer(limit=limit)
    for r in rows(n):
        buf.append(*r)
    shipped: list[pa.RecordBatch] = []

    def ship(batch: pa.RecordBatch) -> Iterator[None]:
        yield
        shipped.append(batch)
        for r in rows(later if len(shipped) == 1 else 0, 1000):
            buf.append(*r)  # rows come while the batch goes

    run_whole(buf.ship_steps(ship, everything))
    assert all(1 <= b.num_rows <= limit for b in shipped)
    # the first batch is what there was; after it, only full ones, and the rest at the last flush
    assert all(b.num_rows == limit for b in shipped[1 : len(shipped) - everything])
    got = [s for b in shipped for s in b.column("seq").to_pylist()]
    left = buf.take()
    rest = left.column("seq").to_pylist() if left is not None else []
    assert got + rest == list(range(n)) + (list(range(1000, 1000 + later)) if n else [])
    assert not rest if everything else len(rest) < limit


def run_whole_value(steps: Iterator[None]) -> object:
    """Run a generator to its end; what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def test_an_empty_buffer_takes_nothing_in_steps_too() -> None:
    with pytest.raises(StopIteration) as done:
        next(RowBuffer().take_steps())
    assert done.value.value is None


def test_run_whole_runs_a_job_to_its_end() -> None:
    seen: list[int] = []

    def three() -> Iterator[None]:
        for i in range(3):
            seen.append(i)
            yield

    run_whole(three())
    assert seen == [0, 1, 2]


def test_while_sending_collections_are_rare_and_the_gil_is_handed_over_quickly() -> None:
    import gc
    import sys

    from replay.shards import GIL_SWITCH_S, quiet_gc

    before = (gc.get_threshold(), sys.getswitchinterval())
    with quiet_gc():
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_S)
        assert gc.get_threshold()[0] >= 100_000
    assert (gc.get_threshold(), sys.getswitchinterval()) == before
