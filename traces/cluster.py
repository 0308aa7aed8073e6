"""Connecting to a Dask distributed scheduler named ``dask://HOST:PORT``: sim/ sweeps and what-if
and replay/ shards share it (it lives here, below both, so neither imports the other).

Dask's ``distributed`` is optional (``pip install 'gaterush[dask]'``); only ``--scheduler`` needs it.
"""

from __future__ import annotations

from typing import Any

DASK_EXTRA = "pip install 'gaterush[dask]'"


class ClusterError(ValueError):
    """A --scheduler that cannot be used: malformed, unreachable, or Dask not installed."""


def scheduler_address(scheduler: str) -> str:
    """The tcp:// address of a ``dask://HOST:PORT`` scheduler (ClusterError if malformed)."""
    if not scheduler.startswith("dask://") or not scheduler.removeprefix("dask://"):
        raise ClusterError(f"--scheduler {scheduler!r}: expected dask://HOST:PORT")
    return "tcp://" + scheduler.removeprefix("dask://")


def dask_client(scheduler: str, timeout: str = "10s") -> Any:
    """A distributed.Client connected to ``dask://HOST:PORT`` (ClusterError when it cannot be)."""
    address = scheduler_address(scheduler)
    try:
        from distributed import Client  # noqa: PLC0415 - optional: only --scheduler needs it
    except ImportError:
        raise ClusterError(
            f"--scheduler needs Dask's `distributed` package: {DASK_EXTRA}"
        ) from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"--scheduler {scheduler!r}: cannot reach the scheduler: {e}") from None
