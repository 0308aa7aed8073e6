"""The sink: t_us stamped as round(now * 1e6), seq in emit order, payloads packed as pack_payload does."""

import simpy
from hypothesis import given
from hypothesis import strategies as st

from models.sink import ListSink, StreamSink
from traces.event import Event, pack_payload


class Clock:
    now = 0.0


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200), st.integers(1, 17))
def test_stamps_seq_and_payloads(times, batch):
    clock = Clock()
    sink = ListSink(clock, batch=batch)
    seqs = []
    for i, t in enumerate(sorted(times)):
        clock.now = t
        seqs.append(
            sink.emit(
                "k",
                f"a:{i}",
                None if i % 2 else "rpc:x",
                {"i": i, "t": t},
                i - 1 if i else None,
                "ok" if i % 3 else None,
            )
        )
    sink.flush()
    assert seqs == list(range(len(times)))
    for i, (e, t) in enumerate(zip(sink.events, sorted(times), strict=True)):
        assert type(e) is Event
        assert e == Event(
            round(t * 1e6),
            i,
            "k",
            f"a:{i}",
            None if i % 2 else "rpc:x",
            pack_payload({"i": i, "t": t}),
            i - 1 if i else None,
            "ok" if i % 3 else None,
        )


def test_streams_in_bounded_batches():
    env = simpy.Environment()
    batches = []
    sink = StreamSink(env, batches.append, batch=10)
    for _i in range(35):
        sink.emit("k", "a", None, {}, None, None)
        assert len(sink._buf) < 10  # never more than a batch held
    sink.flush()
    assert [len(b) for b in batches] == [10, 10, 10, 5]
    assert sink.count == sink.emitted == 35
