"""A viewer's messages about another shard's writes, timed when the rows are read.

With ``--workers N`` a viewer's socket is opened by its own shard only (replay.realtime), but the
writes it hears about may have been sent by any shard, and only the sending shard knows when a
write completed. So the viewer's shard writes a ``realtime_message`` row for a message about
another shard's write: ``seq`` the write's, ``scheduled_us = sent_us = done_us`` the message's
arrival. Reading the rows (one log, or the shard files merged) turns each into the
``realtime_update_latency`` row it stands for: from the write's completion (the ``done_us`` of
that seq's request row) to the message, 0 when the message beat the response. Every shard's
times are on the run's agreed timeline, so the value is off by at most the two shards' clock
uncertainties (the result header's ``clocks``). A message whose write failed, or whose row never
arrived (its shard was lost), is no sample, as on one sender.

Seqs are a run's own: the files of several runs reported together (``gaterush report a.grr
b.grr``) share seqs, so a message is matched only with a write of its own run (``runs``: each
row's run, as judge.metrics.merge_tables labels them from the headers' ``run_id``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from judge.rows import REALTIME_UPDATE_LATENCY

REALTIME_MESSAGE = "realtime_message"


def time_messages(table: pa.Table, runs: np.ndarray | None = None) -> pa.Table:
    """The table with each ``realtime_message`` row whose write is in it made a latency row.

    `runs`: a label for each row's run (None: every row is of one run); a message is matched only
    with a write of its own run.
    """
    if "metric" not in table.column_names or not len(table):
        return table
    is_msg = pc.fill_null(pc.equal(table["metric"], REALTIME_MESSAGE), False)
    if not pc.any(is_msg).as_py():
        return table
    if runs is not None:
        runs = np.asarray(runs)
        if len(runs) != len(table):
            raise ValueError(f"runs: {len(runs)} labels for {len(table)} rows")
        labels = np.unique(runs)
        if len(labels) > 1:
            return pa.concat_tables(
                [_time_one_run(table.filter(pa.array(runs == r)), is_msg.filter(pa.array(runs == r)))
                 for r in labels]
            )  # fmt: skip
    return _time_one_run(table, is_msg)


def _time_one_run(table: pa.Table, is_msg: pa.ChunkedArray | pa.Array) -> pa.Table:
    """time_messages within the rows of one run (`is_msg`: which rows are messages)."""
    msgs = table.filter(is_msg)
    rest = table.filter(pc.invert(is_msg))
    status = pc.fill_null(rest["status"], 0)
    ok = pc.and_(pc.greater(status, 0), pc.less(status, 400))
    writes = rest.filter(pc.and_(pc.is_null(rest["metric"]), ok))
    at = pc.index_in(msgs["seq"], value_set=writes["seq"])
    found = pc.is_valid(at)
    unmatched = msgs.filter(pc.invert(found))  # their write may be in another shard's file
    msgs, at = msgs.filter(found), at.filter(found)
    write_done = pc.take(writes["done_us"], at)
    names = msgs.column_names
    for name, col in (
        ("scheduled_us", write_done),
        ("sent_us", write_done),
        ("done_us", pc.max_element_wise(msgs["done_us"], write_done)),
        ("metric", pa.array([REALTIME_UPDATE_LATENCY] * len(msgs), pa.string())),
    ):
        msgs = msgs.set_column(names.index(name), name, col)
    return pa.concat_tables([rest, msgs, unmatched])
