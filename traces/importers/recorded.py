"""A recorded request as an event payload: its business content and the request as sent.

The one assembly the recording proxy and the HAR importer share, so a request captured either way
becomes the same payload (traces.importers.endpoints for the content, .request for the request).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from traces import event as ev
from traces.importers.endpoints import Endpoint, api_path, decode_body, parse_query, payload_for
from traces.importers.request import REQUEST, capture, signature_state


def recorded_payload(
    ep: Endpoint,
    method: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | str | None,
    status: int | None,
    *,
    run_id: str | None = None,
    now_unix: float | None = None,
) -> dict[str, Any]:
    """The payload of a recorded request: payload_for's content plus REQUEST (format version 2)."""
    ctype = next((v for k, v in headers if k.lower() == "content-type"), None)
    payload = payload_for(ep, method, path, parse_query(query), decode_body(body, ctype))
    request = capture(method, api_path(path), query, headers, body, run_id=run_id)
    if ep.kind == ev.WEBHOOK:
        request["signature"] = signature_state(
            headers, status, time.time() if now_unix is None else now_unix
        )
    return {**payload, REQUEST: request}
