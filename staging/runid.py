"""The one rule for a row's run id: the `X-Gaterush-Run` header, else Stripe `metadata.gaterush_run`.

Every row the stand-in writes (scans, table writes, PaymentIntents, customers, refunds, orders
and their tickets, webhook events) takes its run id from here, so `staging state --run` and
`cleanup --run` see all of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from staging.errors import PostgrestError

RUN_HEADER = "X-Gaterush-Run"
RUN_METADATA = "gaterush_run"
MAX_RUN_ID = 200


def _valid(run: str, where: str) -> str:
    if not run or len(run) > MAX_RUN_ID or not run.isprintable():
        raise PostgrestError(400, "GR400", f"{where} must be 1..{MAX_RUN_ID} printable characters")
    return run


def run_id(headers: Mapping[str, str] | None, metadata: Any = None) -> str | None:
    """The run id of a request: its header, else the metadata's `gaterush_run`, else None."""
    run = headers.get(RUN_HEADER) if headers is not None else None
    if run is not None:
        return _valid(run, RUN_HEADER)
    if isinstance(metadata, Mapping):
        md = metadata.get(RUN_METADATA)
        if isinstance(md, str) and md:
            return _valid(md, f"metadata.{RUN_METADATA}")
    return None
