"""Property: record -> replay -> record again gives the same requests (method, path, query, kept
headers, body) for arbitrary requests; and a recording of a v1 trace (today's format before the
request was kept) still reads and replays."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from judge.resultlog import iter_rows
from replay.builders import BuildContext, Credentials, build_request
from replay.engine import ReplayConfig, run_replay
from replay.record import recorder_in_thread
from staging.server import standin_in_thread
from traces.event import FORMAT_VERSION
from traces.header import Inventory, VenueEvent
from traces.importers.request import REQUEST
from traces.io import open_reader

INVENTORY = Inventory(events=(VenueEvent(1, "Final", 100, 10, 2500),))
V1_TRACE = Path(__file__).resolve().parents[1] / "data" / "record" / "v1_recorded.grt"
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.,()*", min_size=1, max_size=10)
values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12
)


@st.composite
def requests_(draw: st.DrawFn) -> dict:
    """One arbitrary request to a gaterush target: Supabase REST/RPC/function or a Stripe call."""
    kind = draw(st.sampled_from(["rest", "rpc", "fn", "stripe"]))
    name = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
    headers = {}
    for header, choices in (
        ("Accept", ["application/json", "application/vnd.pgrst.object+json", "text/csv"]),
        ("Prefer", ["count=exact", "return=representation", "return=minimal,count=planned"]),
        ("Range", ["0-9", "10-"]),
        ("Idempotency-Key", ["k-1", "order-77"]),
    ):
        if draw(st.booleans()):
            headers[header] = draw(st.sampled_from(choices))
    if kind == "stripe":
        method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
        path = draw(st.sampled_from([f"/v1/{name}", f"/v1/{name}/x_1", f"/v1/{name}/x_1/cancel"]))
        params = draw(st.lists(st.tuples(words, values), max_size=4, unique_by=lambda p: p[0]))
        if method == "POST":
            return {"method": method, "path": path, "headers": {
                **headers, "Content-Type": "application/x-www-form-urlencoded"},
                "body": urlencode(params), "query": []}  # fmt: skip
        return {"method": method, "path": path, "headers": headers, "query": params, "body": None}
    base = {"rest": "/rest/v1/", "rpc": "/rest/v1/rpc/", "fn": "/functions/v1/"}[kind]
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PATCH", "DELETE"]))
    query = draw(st.lists(st.tuples(words, values), max_size=4))
    body = None
    if method in ("POST", "PATCH"):
        form = draw(st.sampled_from(["json", "text"]))
        if form == "json":
            obj = draw(st.dictionaries(words, st.one_of(values, st.integers(-99, 99),
                                                        st.booleans(), st.none()), max_size=4))  # fmt: skip
            body, headers["Content-Type"] = json.dumps(obj), "application/json"
        else:
            body, headers["Content-Type"] = draw(values) or "x", "text/plain"
    return {"method": method, "path": base + name, "headers": headers, "query": query, "body": body}


def send(url: str, r: dict, key: str) -> None:
    data = r["body"].encode() if isinstance(r["body"], str) else None
    requests.request(
        r["method"],
        url + r["path"] + ("?" + urlencode(r["query"]) if r["query"] else ""),
        headers={**r["headers"], "apikey": key},
        data=data,
        timeout=30,
    )


def sent_as(events) -> list[dict]:
    out = []
    for e in events:
        req = dict(e.data()[REQUEST])
        req["headers"] = sorted(map(tuple, req["headers"]))
        req.pop("ref", None)
        out.append(req)
    return out


@pytest.fixture(scope="module")
def standin():
    with standin_in_thread(inventory=INVENTORY, deliver_webhooks=False) as s:
        yield s


@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(requests_(), min_size=1, max_size=5))
def test_record_replay_record_gives_the_same_requests(standin, tmp_path_factory, reqs) -> None:
    d = tmp_path_factory.mktemp("rrr")
    first, second = d / "first.grt", d / "second.grt"
    with recorder_in_thread(standin.url, first) as rec:
        for r in reqs:
            send(
                rec.url,
                r,
                standin.stripe_key if r["path"].startswith("/v1/") else standin.anon_key,
            )
    with open_reader(first) as f:
        recorded = list(f)
    assert len(recorded) == len(reqs)
    with recorder_in_thread(standin.url, second) as rec:
        ctx = BuildContext(supabase_url=rec.url, stripe_url=rec.url, run_id="gr-prop",
                           keys=Credentials(anon_key=standin.anon_key, stripe_key=standin.stripe_key))  # fmt: skip
        for e in recorded:
            q = build_request(ctx, e, 1_700_000_000)
            requests.request(q.method, q.origin + q.path, headers=dict(q.headers),
                             data=q.body or None, timeout=30)  # fmt: skip
    with open_reader(second) as f:
        again = list(f)
    assert sent_as(again) == sent_as(recorded)
    assert [(e.target, e.kind) for e in again] == [(e.target, e.kind) for e in recorded]


@pytest.mark.timeout(120)
def test_a_v1_recording_still_reads_and_replays(tmp_path: Path) -> None:
    """tests/data/record/v1_recorded.grt was written by gaterush record before format 2."""
    with open_reader(V1_TRACE) as r:
        header, events = r.header, list(r)
    assert header.version == 1 < FORMAT_VERSION
    assert all(REQUEST not in e.data() for e in events)
    out = tmp_path / "res.grr"
    with standin_in_thread(inventory=INVENTORY) as fresh:
        cfg = ReplayConfig(trace=str(V1_TRACE), out=str(out), target=fresh.url, stripe=fresh.url,
                           speed=10.0, progress=False)  # fmt: skip
        assert run_replay(cfg, env=fresh.env(), progress=None) is not None
    _, rows = iter_rows(out)
    got = [(r.target, r.expect, r.outcome) for r in rows if r.expect is not None]
    assert len(got) == len(events) and all(e == o for _, e, o in got), got
