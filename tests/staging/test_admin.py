"""Knobs at run time through the admin endpoint, and the REST reads replay's verify relies on."""

from __future__ import annotations

from typing import Any

from tests.staging.conftest import admin_headers, call, headers, scan
from traces.event import ticket_code


def test_knobs_change_at_run_time_and_injected_errors_leave_state_intact(standin: Any) -> None:
    url = f"{standin.url}/admin/v1/knobs"
    status, body, _ = call(
        "POST",
        url,
        headers=admin_headers(standin),
        json={"endpoints": {"rpc:scan_ticket_atomic": {"error_rate": 1.0, "latency": "1ms"}}},
    )
    assert status == 200 and body["endpoints"]["rpc:scan_ticket_atomic"]["error_rate"] == 1.0
    try:
        before = standin.end_state()
        status, body, _ = call(
            "POST",
            f"{standin.url}/rest/v1/rpc/scan_ticket_atomic",
            headers=headers(standin),
            json={"p_ticket_code": ticket_code(2, 40), "p_event_id": 2},
        )
        assert status == 500 and "injected fault" in body["message"]
        assert standin.end_state() == before
        assert (
            call("GET", url, headers=admin_headers(standin))[1]["endpoints"][
                "rpc:scan_ticket_atomic"
            ]["latency"]
            == "1ms"
        )
    finally:
        status, body, _ = call("POST", url + "?replace=1", headers=admin_headers(standin), json={})
    assert status == 200 and body["endpoints"] == {}
    assert scan(standin, ticket_code(2, 40), 2)["outcome"] == "valid"
    stats = call("GET", f"{standin.url}/admin/v1/stats", headers=admin_headers(standin))[1]
    assert stats["injected_errors"] >= 1 and stats["db_jobs"] >= 1


def test_rest_reads_with_filters_order_and_exact_count(standin: Any) -> None:
    status, rows, hdrs = call(
        "GET",
        f"{standin.url}/rest/v1/tickets",
        headers=headers(standin, Prefer="count=exact"),
        params={
            "select": "code,event_id",
            "event_id": "eq.2",
            "order": "code.desc",
            "limit": "3",
            "offset": "1",
        },
    )
    # a counted partial page is 206 Partial Content (PostgREST RangeQuery.rangeStatus)
    assert status == 206 and [r["code"] for r in rows] == [ticket_code(2, n) for n in (48, 47, 46)]
    assert hdrs["Content-Range"] == "1-3/50"
    status, rows, _ = call(
        "GET",
        f"{standin.url}/rest/v1/events",
        params={"select": "id,allow_reentry"},
        headers={"apikey": standin.publishable_key},
    )
    assert status == 200 and rows == [
        {"id": 1, "allow_reentry": True},
        {"id": 2, "allow_reentry": True},
    ]
    status, body, _ = call(
        "GET",
        f"{standin.url}/rest/v1/rpc/event_revenue",
        params={"p_event_id": "2"},
        headers=headers(standin),
    )
    assert status == 200 and set(body) == {
        "event_id",
        "currency",
        "revenue_cents",
        "orders",
        "tickets_sold",
    }
