"""The stand-in's logic without a network: scans and webhooks against a reference model and
traces.projection (what verify compares), PostgREST queries against Python, keys, knobs, throttle."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from staging.endstate import delete_run_job, end_state
from staging.errors import FunctionError, PostgrestError
from staging.keys import AuthError, Gatekeeper, Keys, sign_jwt, verify_jwt
from staging.knobs import KnobError, Knobs, knobs_from_dict, merge_knobs, parse_latency
from staging.postgrest import Catalog, content_range, parse_query, run_read
from staging.scans import ScanArgs, parse_scan_args, scan_job
from staging.schema import REST_TABLES, create_schema, seed_inventory
from staging.throttle import Throttle
from staging.webhooks import webhook_job
from traces.event import TARGET_SCAN, TARGET_WEBHOOK, Event, pack_payload, ticket_code
from traces.header import Inventory, VenueEvent
from traces.projection import project

ALL = frozenset({"tickets", "scans", "orders"})


def db(allow_reentry: bool = True, presold: int = 5) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    create_schema(conn)
    seed_inventory(
        conn,
        Inventory(
            events=(VenueEvent(1, "A", 100, presold, 1000), VenueEvent(2, "B", 100, presold, 500)),
            allow_reentry=allow_reentry,
        ),
    )
    return conn


# --- scans against a reference model and the projection --------------------------------------

scan_ops = st.lists(
    st.tuples(
        st.integers(0, 5), st.sampled_from([1, 1, 1, 2]), st.sampled_from(["in", "in", "out"])
    ),
    max_size=60,
)


def reference(ops: list[tuple[int, int, str]], allow: bool) -> list[str]:
    state: dict[int, tuple[bool, bool]] = {}  # ticket -> (ever admitted, inside)
    out = []
    for n, ev, d in ops:
        if n == 5:
            out.append("invalid")
            continue
        if ev != 1:
            out.append("wrong_event")
            continue
        ever, inside = state.get(n, (False, False))
        if d == "in":
            if inside or (ever and not allow):
                out.append("already_scanned")
            else:
                out.append("valid")
                state[n] = (True, True)
        elif inside and allow:
            out.append("exited")
            state[n] = (True, False)
        else:
            out.append("invalid" if not ever or not allow else "already_scanned")
    return out


@settings(max_examples=60, deadline=None)
@given(ops=scan_ops, allow=st.booleans())
def test_scans_follow_the_reference_model_and_match_the_projection(
    ops: list[tuple[int, int, str]], allow: bool
) -> None:
    conn = db(allow)
    got = []
    for n, ev, d in ops:
        code = "FORGED" if n == 5 else ticket_code(1, n)
        changes: list[Any] = []
        got.append(scan_job(conn, changes, ScanArgs(code, ev, "A", "1", d), "run", ALL)["outcome"])
    want = reference(ops, allow)
    assert got == want
    events = [
        Event(
            i,
            i,
            "scan",
            f"a:{n}",
            TARGET_SCAN,
            pack_payload(
                {
                    "ticket_code": "FORGED" if n == 5 else ticket_code(1, n),
                    "event_id": ev,
                    "direction": d,
                }
            ),
            None,
            w,
        )
        for i, ((n, ev, d), w) in enumerate(zip(ops, want, strict=True))
    ]
    expected, actual = project(events), end_state(conn)
    for key in ("admitted", "reentries", "exits", "inside", "scans"):
        assert actual[key] == expected[key], key
    assert actual["by_event"].get("1", {}).get("admitted", 0) == expected["by_event"].get(
        "1", {}
    ).get("admitted", 0)
    assert end_state(conn, "other-run")["admitted"] == 0


def test_scan_answer_names_the_first_scan() -> None:
    conn = db()
    first = scan_job(conn, [], ScanArgs(ticket_code(1, 0), 1, None, None, "in"), None, ALL)
    again = scan_job(conn, [], ScanArgs(ticket_code(1, 0), 1, None, None, "in"), None, ALL)
    assert (
        first["first_scanned_at"]
        == again["first_scanned_at"]
        == again["ticket"]["first_scanned_at"]
    )
    assert again["ticket"]["inside"] is True


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"p_ticket_code": "x"}, "p_event_id"),
        ({"p_ticket_code": "x", "p_event_id": True}, "p_event_id"),
        ({"p_ticket_code": "x", "p_event_id": 1, "p_gate": {"a": 1}}, "p_gate"),
        ("text", "JSON object"),
    ],
)
def test_scan_arguments_are_checked(body: Any, needle: str) -> None:
    with pytest.raises(PostgrestError) as err:
        parse_scan_args(body)
    assert needle in json.dumps(err.value.body)


def test_scan_accepts_numeric_strings_like_postgrest() -> None:
    assert parse_scan_args({"p_ticket_code": "x", "p_event_id": "7"}).event_id == 7


# --- webhooks: any order, any duplicates, same end state, equal to the projection ----------------


def _ev(kind: str, pi: str, qty: int) -> dict[str, Any]:
    md = {"event_id": "1", "quantity": str(qty)}
    if kind == "s":
        return {
            "id": f"evt_s_{pi}",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": pi,
                    "object": "payment_intent",
                    "amount": 1000 * qty,
                    "metadata": md,
                }
            },
        }
    if kind == "c":
        return {
            "id": f"evt_c_{pi}",
            "type": "checkout.session.completed",
            "data": {
                "object": {
                    "id": f"cs_{pi}",
                    "payment_intent": pi,
                    "payment_status": "paid",
                    "amount_total": 1000 * qty,
                    "metadata": md,
                }
            },
        }
    return {
        "id": f"evt_r_{pi}",
        "type": "charge.refunded",
        "data": {
            "object": {
                "id": f"ch_{pi}",
                "object": "charge",
                "payment_intent": pi,
                "amount": 1000 * qty,
                "amount_refunded": 1000 * qty,
                "metadata": md,
            }
        },
    }


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(1, 3), st.booleans(), st.booleans()), min_size=1, max_size=8
    ),
    dups=st.lists(st.integers(0, 100), max_size=10),
    seed=st.integers(0, 2**32),
)
def test_webhooks_in_any_order_with_duplicates_reach_the_projected_end_state(
    plan: list[tuple[int, bool, bool]], dups: list[int], seed: int
) -> None:
    events = []
    for i, (qty, session, refund) in enumerate(plan):
        events.append(_ev("s", f"pi_{i}", qty))
        if session:
            events.append(_ev("c", f"pi_{i}", qty))
        if refund:
            events.append(_ev("r", f"pi_{i}", qty))
    deliveries = events + [events[d % len(events)] for d in dups]
    random.Random(seed).shuffle(deliveries)
    conn = db()
    seen: set[str] = set()
    trace = []
    for i, ev in enumerate(deliveries):
        outcome = webhook_job(conn, [], ev, "r1", ALL)
        assert outcome == ("duplicate" if ev["id"] in seen else "processed")
        seen.add(ev["id"])
        trace.append(
            Event(i, i, "webhook", "stripe", TARGET_WEBHOOK, pack_payload(ev), None, outcome)
        )
    expected, actual = project(trace), end_state(conn)
    for key in (
        "orders",
        "tickets_sold",
        "revenue_cents",
        "refunds",
        "refunded_cents",
        "webhooks",
        "webhooks_processed",
        "webhooks_duplicate",
    ):
        assert actual[key] == expected[key], key
    assert actual["by_event"]["1"]["revenue_cents"] == expected["by_event"]["1"]["revenue_cents"]
    assert (
        conn.execute("SELECT COUNT(*) FROM pending_refunds").fetchone()[0] == 0
    )  # every early refund applied
    deleted = delete_run_job(conn, [], "r1")
    assert deleted["orders"] == len(plan) and end_state(conn)["orders"] == 0


def test_a_failing_webhook_is_not_recorded_so_its_retry_is_processed() -> None:
    conn = db()
    bad = {
        "id": "evt_bad",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_x", "amount": 5}},
    }
    conn.execute("SAVEPOINT job")
    with pytest.raises(FunctionError, match="metadata"):
        webhook_job(conn, [], bad, None, ALL)
    conn.execute("ROLLBACK TO job")
    conn.execute("RELEASE job")
    bad["data"]["object"]["metadata"] = {"event_id": "1", "quantity": "1"}
    assert webhook_job(conn, [], bad, None, ALL) == "processed"


# --- PostgREST reads against Python ------------------------------------------------------------

rows_st = st.lists(
    st.tuples(st.integers(0, 9), st.one_of(st.none(), st.integers(-5, 5)), st.booleans()),
    min_size=0,
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(
    rows=rows_st,
    op=st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]),
    v=st.integers(-5, 5),
    desc=st.booleans(),
    limit=st.integers(0, 40),
    offset=st.integers(0, 10),
    neg=st.booleans(),
)
def test_filters_order_limit_offset_match_python(
    rows: list[tuple[int, int | None, bool]],
    op: str,
    v: int,
    desc: bool,
    limit: int,
    offset: int,
    neg: bool,
) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, g INTEGER, n INTEGER, b BOOLEAN)")
    conn.executemany("INSERT INTO t(g, n, b) VALUES (?,?,?)", rows)
    cat = Catalog(
        {"t": {"id": "int", "g": "int", "n": "int", "b": "bool"}}, {"t": frozenset({"id"})}, {}
    )
    q = parse_query(
        cat,
        "t",
        [
            ("select", "id,n"),
            ("n", f"{'not.' if neg else ''}{op}.{v}"),
            ("order", f"g.{'desc' if desc else 'asc'},id"),
            ("limit", str(limit)),
            ("offset", str(offset)),
        ],
    )
    got = [r["id"] for r in run_read(conn, cat, q, False)[0]]
    cmp = {
        "eq": lambda a: a == v,
        "neq": lambda a: a != v,
        "gt": lambda a: a > v,
        "gte": lambda a: a >= v,
        "lt": lambda a: a < v,
        "lte": lambda a: a <= v,
    }[op]
    # SQL three-valued logic: a NULL never passes a comparison, negated or not
    keep = [(i + 1, g) for i, (g, n, _) in enumerate(rows) if n is not None and (cmp(n) != neg)]
    keep.sort(key=lambda x: x[0])
    keep.sort(key=lambda x: x[1], reverse=desc)
    assert got == [i for i, _ in keep][offset : offset + limit]


def test_in_and_is_filters_and_content_range() -> None:
    conn = db()
    cat = Catalog.read(conn, REST_TABLES)
    q = parse_query(
        cat, "tickets", [("id", "in.(1,2,3)"), ("inside", "is.false"), ("code", "like.T1*")]
    )
    rows, total = run_read(conn, cat, q, True)
    assert [r["id"] for r in rows] == [1, 2, 3] and total == 3
    assert all(r["inside"] is False for r in rows)  # booleans as booleans
    assert content_range(0, 20, 3573) == "0-19/3573" and content_range(5, 0, 0) == "*/0"
    assert content_range(10, 5, None) == "10-14/*"
    for bad in (
        [("nope", "eq.1")],
        [("id", "eq")],
        [("order", "id.sideways")],
        [("select", "users(*)")],
        [("id", "eq.\u0661")],  # an Arabic-Indic digit is not an integer to PostgreSQL
        [("limit", "\u00b2")],
        [("offset", "9223372036854775808")],
    ):
        with pytest.raises(PostgrestError):
            parse_query(cat, "tickets", bad)


def test_rest_columns_cover_the_schema() -> None:
    cat = Catalog.read(db(), REST_TABLES)
    assert {"code", "first_scanned_at", "run_id"} <= set(cat.types["tickets"])
    assert set(cat.types["event_revenue"]) == {
        "event_id",
        "currency",
        "revenue_cents",
        "orders",
        "tickets_sold",
    }
    assert cat.types["tickets"]["inside"] == "bool" and cat.types["tickets"]["id"] == "int"
    assert {"id", "code"} <= cat.unique["tickets"]


# --- keys ---------------------------------------------------------------------------------------


@given(
    claims=st.dictionaries(
        st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.text(max_size=8)), max_size=4
    )
)
def test_jwt_round_trip_and_forgery(claims: dict[str, Any]) -> None:
    claims.pop("exp", None)
    token = sign_jwt(claims, "s" * 32)
    assert verify_jwt(token, "s" * 32) == claims
    with pytest.raises(ValueError):
        verify_jwt(token, "t" * 32)
    with pytest.raises(ValueError):
        verify_jwt(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], "s" * 32)


def test_gatekeeper_follows_supabase_rules() -> None:
    k = Keys.generate()
    g = Gatekeeper(k)
    assert g.check(k.anon_key, f"Bearer {k.anon_key}") == "anon"
    assert g.check(k.anon_key, None) == "anon"
    assert g.check(k.publishable_key, None) == "anon"
    assert g.check(k.publishable_key, f"Bearer {k.service_key}") == "service_role"
    # supabase-py and supabase-js send an sb_ key as apikey and as Bearer
    # (https://supabase.com/docs/guides/api/api-keys)
    assert g.check(k.publishable_key, f"Bearer {k.publishable_key}") == "anon"
    assert g.check(k.secret_key, f"Bearer {k.secret_key}") == "service_role"
    expired = sign_jwt({"role": "authenticated", "exp": 1}, k.jwt_secret)
    for apikey, auth in [
        (None, None),
        ("x", None),
        (k.publishable_key, f"Bearer {k.secret_key}"),  # an sb_ Bearer must be the apikey itself
        (k.anon_key, f"Bearer {expired}"),
        (k.anon_key, "Basic abc"),
    ]:
        with pytest.raises(AuthError) as err:
            g.check(apikey, auth)
        assert err.value.status == 401
    with pytest.raises(AuthError):
        g.check_admin(k.anon_key, f"Bearer {k.anon_key}")
    g.check_admin(k.secret_key, None)
    g.stripe_check(f"Bearer {k.stripe_key}")
    for bad in (None, "Bearer sk_test_other", "Bearer sk_live_x", "Bearer rk_live_x"):
        with pytest.raises(AuthError):
            g.stripe_check(bad)
    assert Keys.from_dict(k.to_dict()) == k


# --- knobs and throttle -------------------------------------------------------------------------


@given(
    spec=st.sampled_from(
        ["20ms", "uniform:10ms..50ms", "exp:5ms", "normal:20ms,5ms", "lognormal:20ms,0.5", "1.5s"]
    ),
    seed=st.integers(0, 1000),
)
def test_latency_specs_round_trip_and_never_sample_negative(spec: str, seed: int) -> None:
    lat = parse_latency(spec, "k")
    assert parse_latency(lat.spec(), "k") == lat
    rng = random.Random(seed)
    assert all(lat.sample(rng) >= 0 for _ in range(50))


def test_knobs_resolve_by_name_kind_then_star_and_errors_name_the_key() -> None:
    k = knobs_from_dict(
        {
            "endpoints": {
                "rpc:scan_ticket_atomic": {"workers": 4},
                "rpc:*": {"latency": "5ms"},
                "*": {"error_rate": 0.1},
            }
        }
    )
    assert k.for_endpoint("rpc:scan_ticket_atomic").workers == 4
    assert k.for_endpoint("rpc:event_revenue").latency is not None
    assert k.for_endpoint("rest:tickets").error_rate == 0.1
    k2 = merge_knobs(k, {"endpoints": {"rpc:scan_ticket_atomic": {"workers": 0}}})
    assert "rpc:scan_ticket_atomic" not in k2.endpoints  # back to inert: falls through to rpc:*
    assert knobs_from_dict(k.to_dict()) == k
    for bad, key in [
        ({"endpoints": {"rpc:x": {"workers": 1.5}}}, "endpoints.rpc:x.workers"),
        ({"endpoints": {"rpc:x": {"speed": 1}}}, "endpoints.rpc:x.speed"),
        ({"endpoints": {"scan": {}}}, "endpoints.scan"),
        ({"delivery": {"duplicate_rate": 2}}, "delivery.duplicate_rate"),
        ({"endpoints": {"rpc:x": {"latency": "gamma:3ms"}}}, "endpoints.rpc:x.latency"),
        ({"colour": 1}, "colour"),
    ]:
        with pytest.raises(KnobError, match=key.replace("*", r"\*")):
            knobs_from_dict(bad)


def test_throttle_caps_concurrency_at_workers_and_injects_errors() -> None:
    knobs = knobs_from_dict(
        {"endpoints": {"rpc:a": {"workers": 3, "latency": "1ms"}, "rpc:b": {"error_rate": 1.0}}}
    )
    t = Throttle(lambda: knobs, random.Random(1))
    inside = peak = 0

    async def work() -> int:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.001)
        inside -= 1
        return 1

    async def go() -> int:
        return sum(await asyncio.gather(*(t.run("rpc:a", work) for _ in range(30))))

    assert asyncio.run(go()) == 30 and peak == 3

    async def failing() -> None:
        await t.run("rpc:b", work)

    with pytest.raises(Exception, match="injected fault"):
        asyncio.run(failing())
    assert t.injected_errors == 1 and Knobs().for_endpoint("rpc:a").inert
