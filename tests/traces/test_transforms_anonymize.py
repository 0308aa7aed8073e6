"""anonymize: no original code, email or name survives, and equal inputs map to equal tokens."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces import event as ev
from traces import transforms as tf
from traces.event import Event, pack_payload
from traces.header import Inventory, TraceHeader, VenueEvent
from traces.projection import project

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8)
emails = st.builds(lambda a, b: f"{a}@{b}.com", words, words)
person_names = st.builds(lambda a, b: f"{a.title()} {b.title()}", words, words)
codes = st.one_of(
    words.map(lambda w: f"QR-{w}"), st.integers(10**5, 10**6).map(lambda i: f"TKT{i}")
)


@st.composite
def personal_traces(draw: st.DrawFn) -> tuple[list[Event], set[str], set[str], set[str]]:
    """Recorded-looking events carrying codes, emails and names, and the sets of each used."""
    pool_codes = draw(st.lists(codes, min_size=1, max_size=5, unique=True))
    pool_emails = draw(st.lists(emails, min_size=1, max_size=4, unique=True))
    pool_names = draw(st.lists(person_names, min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        shape = draw(st.sampled_from(["scan", "checkout", "webhook", "view"]))
        code, email, name = (
            draw(st.sampled_from(pool_codes)),
            draw(st.sampled_from(pool_emails)),
            draw(st.sampled_from(pool_names)),
        )
        if shape == "scan":
            payload = {
                "ticket_code": code,
                "event_id": 1,
                "gate": "A",
                "lane": 0,
                "direction": "in",
            }
            out.append(
                Event(
                    i,
                    i,
                    ev.SCAN,
                    f"ip:10.0.0.{i % 3}",
                    ev.TARGET_SCAN,
                    pack_payload(payload),
                    None,
                    ev.VALID,
                )
            )
        elif shape == "checkout":
            payload = {
                "amount": 5000,
                "currency": "usd",
                "quantity": 1,
                "event_id": 1,
                "buyer": email,
                "order_ref": "o1",
            }
            out.append(
                Event(
                    i, i, ev.CHECKOUT, f"user:{email}", ev.TARGET_PI_CREATE, pack_payload(payload)
                )
            )
        elif shape == "webhook":
            charge = {
                "id": "ch_3NSn9mGFzsjrzPXD1KNg2RWE",
                "object": "charge",
                "billing_details": {
                    "email": email,
                    "name": name,
                    "phone": "+44 20 7946 0958",
                    "address": {"city": "Leeds", "line1": "1 Road"},
                },
                "payment_method_details": {
                    "card": {
                        "brand": "visa",
                        "last4": "4242",
                        "exp_month": 6,
                        "exp_year": 2030,
                        "fingerprint": "X9tjRRaRwHlxwlv2",
                    }
                },
                "receipt_email": email,
                "description": f"tickets for {name} <{email}>",
                "metadata": {"ticket_code": code},
            }
            payload = {
                "id": f"evt_{i}",
                "object": "event",
                "type": "charge.succeeded",
                "data": {"object": charge},
            }
            out.append(
                Event(
                    i,
                    i,
                    ev.WEBHOOK,
                    "stripe",
                    ev.TARGET_WEBHOOK,
                    pack_payload(payload),
                    None,
                    ev.PROCESSED,
                )
            )
        else:
            payload = {"query": {"select": "*", "email": f"eq.{email}"}}
            out.append(
                Event(
                    i, i, ev.VIEW, f"viewer:{name}", ev.TARGET_REST_TICKETS, pack_payload(payload)
                )
            )
    return out, set(pool_codes), set(pool_emails), set(pool_names)


def text_of(events: list[Event]) -> str:
    return "\n".join(f"{e.actor} {e.data()!r}" for e in events)


def values_at(events: list[Event], key: str) -> list[str]:
    found = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == key and isinstance(v, str):
                    found.append(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for e in events:
        walk(e.data())
    return found


def _holds(haystack, secret):
    """Whether `secret` survives in `haystack`: a short number (a card's last4, a part of a phone
    number) only as a number of its own, since a pseudonym's hex may hold the same digits by
    chance; anything else anywhere."""
    if len(secret) <= 4 and secret.isdigit():
        around = rb"[0-9A-Za-z]" if isinstance(secret, bytes) else r"[0-9A-Za-z]"
        pattern = (rb"(?<!%s)%s(?!%s)" % (around, re.escape(secret), around)
                   if isinstance(secret, bytes)
                   else rf"(?<!{around}){re.escape(secret)}(?!{around})")  # fmt: skip
        return re.search(pattern, haystack) is not None
    return secret in haystack


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=personal_traces(), key=st.binary(min_size=1, max_size=32))
def test_anonymize_leaves_no_original_and_maps_equal_to_equal(case, key: bytes) -> None:
    trace, pool_codes, pool_emails, pool_names = case
    header, out = tf.anonymize(TraceHeader(), trace, key)
    out = list(out)
    text = text_of(out)
    for secret in (
        pool_codes | pool_emails | pool_names | {"4242", "X9tjRRaRwHlxwlv2", "Leeds", "7946"}
    ):
        assert not _holds(text, secret)
        assert not any(_holds(e.payload, secret.encode()) for e in out)
    # the same code maps to the same token everywhere, different codes to different tokens
    mapping: dict[str, str] = {}
    for before, after in zip(
        values_at(trace, "ticket_code"), values_at(out, "ticket_code"), strict=True
    ):
        assert mapping.setdefault(before, after) == after
    assert len(set(mapping.values())) == len(mapping)
    # and the anonymized trace keeps its shape: kinds, targets, times, expected end state
    assert [(e.t_us, e.seq, e.kind, e.target, e.expect) for e in out] == [
        (e.t_us, e.seq, e.kind, e.target, e.expect) for e in trace
    ]
    assert project(out) == project(trace)
    assert key.hex() not in repr(header.to_dict())
    # the same key gives the same output; another key another
    assert list(tf.anonymize(TraceHeader(), trace, key)[1]) == out
    other = list(tf.anonymize(TraceHeader(), trace, key + b"x")[1])
    assert other != out


@FAST
@given(presold=st.integers(1, 3000), key=st.binary(min_size=1, max_size=8))
def test_anonymize_permutes_inventory_codes_within_the_inventory(presold: int, key: bytes) -> None:
    """Pre-sold codes stay codes the stand-in seeds (the trace still replays), one to one."""
    anon = tf.Anonymizer(key, Inventory(events=(VenueEvent(7, "x", presold, presold, 100),)))
    sample = range(min(presold, 300))
    mapped = [anon.code(ev.ticket_code(7, i)) for i in sample]
    numbers = [int(c.split("-")[1]) for c in mapped]
    assert all(c.startswith("T7-") for c in mapped)
    assert all(0 <= n < presold for n in numbers)
    assert len(set(numbers)) == len(numbers)
    assert anon.code(ev.ticket_code(7, presold + 5)).startswith("TK")  # past the inventory: a token


def test_anonymize_keeps_test_payment_methods_and_event_ids() -> None:
    trace = [
        Event(
            0,
            0,
            ev.CONFIRM,
            "buyer:1",
            ev.TARGET_PI_CONFIRM,
            pack_payload({"payment_method": "pm_card_visa"}),
            None,
            ev.SUCCEEDED,
        )
    ]
    out = list(tf.anonymize(TraceHeader(), trace, "k")[1])
    assert out[0].data() == {"payment_method": "pm_card_visa"}
    assert out[0].actor.startswith("buyer:") and out[0].actor != "buyer:1"


def test_anonymize_needs_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        tf.anonymize(TraceHeader(), [], b"")


def test_anonymize_reaches_into_recorded_requests() -> None:
    # a recording keeps the request as sent (traces.importers.request): its form body, query and
    # path hold the same personal data as the business payload, and must lose it the same way
    from traces.importers.request import REQUEST, body_of

    _, body = body_of(
        b"amount=8500&currency=usd&receipt_email=ann%40example.com&metadata[buyer]=ann%40example.com",
        "application/x-www-form-urlencoded",
    )
    payload = {
        "buyer": "ann@example.com",
        REQUEST: {
            "method": "POST",
            "path": "/v1/customers/cus_Q1w2e3r4t5y6",
            "query": [["email", "ann@example.com"]],
            "body": body,
        },
    }
    e = Event(
        0, 1, ev.CHECKOUT, "buyer:ann@example.com", ev.TARGET_PI_CREATE, pack_payload(payload)
    )
    _, out = tf.anonymize(TraceHeader(), [e], b"k")
    (a,) = list(out)
    assert b"ann" not in a.payload and "ann" not in a.actor
    assert b"cus_Q1w2e3r4t5y6" not in a.payload
    got = ev.unpack_payload(a.payload)
    # the same person gets the same token inside the request as in the payload
    assert got["buyer"] == got[REQUEST]["body"]["metadata"]["buyer"]
    assert got[REQUEST]["body"]["amount"] == "8500"  # business values stay


def test_anonymize_replaces_a_percent_encoded_email_with_the_same_token() -> None:
    # a recorded path or query string keeps an address percent-encoded: it is the same person
    from traces.importers.request import REQUEST

    payload = {
        "email": "Ann@example.com",
        REQUEST: {"method": "GET", "path": "/rest/v1/orders?email=ann%40Example.com&select=*"},
        "ref": "ann%40example.com",
    }
    e = Event(0, 1, ev.VIEW, "viewer:1", ev.TARGET_REST_TICKETS, pack_payload(payload))
    _, out = tf.anonymize(TraceHeader(), [e], b"k")
    (a,) = list(out)
    assert b"ann" not in a.payload.lower()
    got = ev.unpack_payload(a.payload)
    token = got["email"].partition("@")[0]
    assert got["ref"] == f"{token}%40anon.invalid"
    assert f"email={token}%40anon.invalid&select=*" in got[REQUEST]["path"]
