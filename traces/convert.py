"""Convert a trace between .parquet and .grt, streaming and without loss.

The output is written to a temporary file next to it and renamed when complete, so a failed
conversion leaves no half-written trace behind. The writer re-folds the header's counts, targets
and expected end state from the events, so a converted trace is always self-consistent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from traces.event import TraceError
from traces.header import TraceHeader
from traces.io import open_reader, open_writer, trace_format
from traces.outputs import atomic, refuse_inputs
from traces.schema import batch_to_events


@dataclass(frozen=True, slots=True)
class Converted:
    """What convert() wrote."""

    header: TraceHeader  # the output's finished header
    events: int
    problem: str | None  # with salvage=True: why the input ended early (None if it did not)


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, salvage: bool = False) -> Converted:
    """Copy every event and the header of `src` into `dst` (formats from the suffixes).

    A truncated or corrupt input is a TraceError and nothing is written, unless salvage=True:
    then `dst` holds every complete event before the damage and `problem` says what it was.
    """
    src, dst = Path(src), Path(dst)
    trace_format(dst)
    refuse_inputs(dst, src)
    problem = None
    n = 0
    with open_reader(src) as reader, atomic(dst) as tmp:
        header = reader.header
        with open_writer(tmp, header) as writer:
            try:
                for batch in reader.batches():
                    writer.write_many(batch_to_events(batch))
                    n += batch.num_rows
            except TraceError as err:
                if not salvage or not str(err).startswith(str(src)):
                    raise
                problem = str(err)
    return Converted(header=writer.header, events=n, problem=problem)
