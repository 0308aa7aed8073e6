"""The result row's columns and measurement names: one format for measured and predicted results.

replay/ writes these rows for every request it sends (judge.resultlog documents each column);
sim/ predicts the same rows through the backend capacity model, so one set of metrics and
thresholds judges both. It lives here because both may import traces/ and neither the other.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("target", pa.string()),
        ("kind", pa.string()),
        ("actor", pa.string()),
        ("scheduled_us", pa.int64()),
        ("sent_us", pa.int64()),
        ("done_us", pa.int64()),
        ("status", pa.int32()),
        ("error", pa.string()),
        ("bytes_sent", pa.int64()),
        ("bytes_received", pa.int64()),
        ("outcome", pa.string()),
        ("expect", pa.string()),
        ("metric", pa.string()),
        ("group", pa.string()),
    ]
)

# Columns a result file may lack (written before the column existed): read as nulls.
OPTIONAL_COLUMNS = ("metric", "group")

# Values of the `metric` column (null = an HTTP request).
DROPPED_EVENTS = "dropped_events"
DASHBOARD_LOAD = "dashboard_load"
REALTIME_UPDATE_LATENCY = "realtime_update_latency"
REALTIME_JOIN = "realtime_join"
DASHBOARD_TARGET = "dashboard"  # the target of a dashboard_load row
