"""Hypothesis strategies shared by every package's tests: events, traces and headers.

- events(): one arbitrary, well-formed Event (unicode strings, empty or arbitrary payloads,
  None target/after/expect, int64 extremes).
- traces(): a list of events sorted by (t_us, seq) with unique seq, each `after` naming an
  earlier event's seq; day=True gives domain-shaped events (scans, checkouts, webhooks, views)
  whose payloads follow the conventions of traces/event.py.
- headers(): a TraceHeader whose values a trace file can hold (JSON-representable, no NaN).
"""

from __future__ import annotations

from hypothesis import strategies as st

from traces import event as ev
from traces.event import Event, pack_payload
from traces.header import Inventory, TraceHeader, VenueEvent

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
big_or_small_ints = st.one_of(
    st.integers(min_value=-1000, max_value=10**7),
    st.sampled_from([0, 1, INT64_MIN, INT64_MAX]),
    int64s,
)

# Any unicode but lone surrogates, which no UTF-8 file can hold.
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=24)
names = st.one_of(
    texts, st.sampled_from(["scan", "arrive", "webhook", "view", "attendee:1", "stripe"])
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.floats(allow_nan=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
msgpack_values = st.recursive(
    st.one_of(json_scalars, st.binary(max_size=16)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)

payloads = st.one_of(
    st.just(b""),
    st.binary(max_size=48),
    msgpack_values.map(pack_payload),
)


@st.composite
def events(draw: st.DrawFn, t_us: st.SearchStrategy[int] = int64s) -> Event:
    """One arbitrary well-formed Event."""
    return Event(
        t_us=draw(t_us),
        seq=draw(int64s),
        kind=draw(names),
        actor=draw(names),
        target=draw(st.none() | texts | st.just(ev.TARGET_SCAN)),
        payload=draw(payloads),
        after=draw(st.none() | int64s),
        expect=draw(st.none() | texts | st.just(ev.VALID)),
    )


# Domain-shaped events: (kind, target, expect choices, payload strategy)
_codes = st.builds(ev.ticket_code, st.integers(1, 2), st.integers(0, 6))
_scan_payloads = st.fixed_dictionaries(
    {
        "ticket_code": _codes,
        "event_id": st.integers(1, 2),
        "gate": st.sampled_from(["A", "B"]),
        "lane": st.integers(0, 3),
        "direction": st.sampled_from(["in", "out"]),
    }
)
_pi = st.fixed_dictionaries(
    {
        "id": st.integers(0, 99).map(lambda i: f"pi_sim_{i}"),
        "object": st.just("payment_intent"),
        "amount": st.integers(0, 100_000),
        "currency": st.just("usd"),
        "status": st.just("succeeded"),
        "metadata": st.fixed_dictionaries(
            {
                "event_id": st.sampled_from(["1", "2", 1]),
                "quantity": st.sampled_from(["1", "2", "4", 3]),
                "buyer": st.just("buyer:1"),
                "order_ref": st.just("o1"),
            }
        ),
    }
)
_webhook_payloads = st.fixed_dictionaries(
    {
        "id": st.integers(0, 99).map(lambda i: f"evt_{i}"),
        "object": st.just("event"),
        "type": st.sampled_from(
            ["payment_intent.succeeded", "charge.refunded", "payment_intent.created"]
        ),
        "created": st.just(1_700_000_000),
        "data": st.fixed_dictionaries({"object": _pi}),
        "livemode": st.just(False),
    }
)
_DAY = [
    (
        ev.SCAN,
        ev.TARGET_SCAN,
        [ev.VALID, ev.ALREADY_SCANNED, ev.INVALID, ev.WRONG_EVENT, ev.EXITED, None],
        _scan_payloads,
    ),
    (ev.ARRIVE, None, [None], st.just({})),
    (
        ev.CHECKOUT,
        ev.TARGET_PI_CREATE,
        [None, ev.OK],
        st.just({"amount": 5000, "currency": "usd", "quantity": 2}),
    ),
    (
        ev.CONFIRM,
        ev.TARGET_PI_CONFIRM,
        [ev.SUCCEEDED, ev.DECLINED],
        st.just({"payment_method": "pm_card_visa"}),
    ),
    (ev.ABANDON, None, [None], st.just({})),
    (ev.WEBHOOK, ev.TARGET_WEBHOOK, [ev.PROCESSED, ev.DUPLICATE], _webhook_payloads),
    (ev.VIEW, ev.TARGET_REST_EVENTS, [None], st.just({"load": 1, "query": {"select": "*"}})),
    (
        ev.SUBSCRIBE,
        ev.TARGET_REALTIME_TICKETS,
        [None],
        st.just({"table": "tickets", "filter": "event_id=eq.1"}),
    ),
]


@st.composite
def day_events(draw: st.DrawFn) -> tuple[str, str | None, str | None, bytes, str]:
    """(kind, target, expect, payload, actor) of one domain-shaped event."""
    kind, target, expects, payload = draw(st.sampled_from(_DAY))
    actor = (
        "stripe"
        if kind == ev.WEBHOOK
        else draw(st.sampled_from(["attendee:1", "buyer:2", "viewer:3"]))
    )
    return kind, target, draw(st.sampled_from(expects)), pack_payload(draw(payload)), actor


@st.composite
def traces(
    draw: st.DrawFn, min_size: int = 0, max_size: int = 40, day: bool = False
) -> list[Event]:
    """Events sorted by (t_us, seq), seq unique, every `after` the seq of an earlier event."""
    n = draw(st.integers(min_size, max_size))
    start = draw(st.one_of(st.just(0), st.integers(-(10**6), 10**9), st.just(INT64_MAX - 10**9)))
    gaps = draw(st.lists(st.one_of(st.just(0), st.integers(0, 10**6)), min_size=n, max_size=n))
    times, t = [], start
    for g in gaps:
        t = min(t + g, INT64_MAX)
        times.append(t)
    # seq: unique; usually increasing with time (as the models emit), sometimes shuffled within a tick
    seqs = draw(st.lists(st.integers(0, 10**12), min_size=n, max_size=n, unique=True))
    if draw(st.booleans()):
        seqs.sort()
    rows = sorted(zip(times, seqs, strict=True))
    out: list[Event] = []
    for i, (t_us, seq) in enumerate(rows):
        after = None
        if i and draw(st.integers(0, 3)) == 0:
            after = out[draw(st.integers(0, i - 1))].seq
        if day:
            kind, target, expect, payload, actor = draw(day_events())
            out.append(Event(t_us, seq, kind, actor, target, payload, after, expect))
        else:
            e = draw(events(t_us=st.just(t_us)))
            out.append(e._replace(seq=seq, after=after))
    return out


inventories = st.builds(
    Inventory,
    events=st.lists(
        st.builds(
            VenueEvent,
            id=st.integers(1, 10**6),
            name=texts,
            capacity=st.integers(0, 10**6),
            presold=st.integers(0, 10**6),
            price_cents=st.integers(0, 10**6),
            currency=st.sampled_from(["usd", "eur", "gbp"]),
        ),
        max_size=3,
    ).map(tuple),
    allow_reentry=st.booleans(),
)


def headers() -> st.SearchStrategy[TraceHeader]:
    """A TraceHeader a writer accepts (counts/targets/expected are left for the writer to fill)."""
    return st.builds(
        TraceHeader,
        scenario=st.dictionaries(texts, json_values, max_size=5),
        seed=st.none() | st.integers(0, 2**63 - 1),
        origin_unix_us=st.integers(0, 4 * 10**15),
        inventory=inventories,
        source=st.sampled_from(["simulate", "record", "import:har", "transform:slice"]),
    )
