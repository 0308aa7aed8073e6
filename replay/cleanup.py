"""Delete what a run created at its target, so a staging project does not fill up with test data.

At a gaterush stand-in, its admin endpoint (``DELETE /admin/v1/runs/<run>``) does it. At a
Supabase project, every row a replay creates carries the run id (the ``X-Gaterush-Run`` header and
Stripe's ``metadata.gaterush_run`` end in a ``run_id`` column, as replay.verify reads them): the
rows with ``run_id=eq.<run>`` are deleted through PostgREST, children before parents (scans,
webhook events, tickets, then orders), with the service-role key, since the anon key may not
delete. A table the project does not expose (404) is skipped and reported.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from replay.verify import EndStateError, Tables, auth_headers, base_url, request

CLEANUP_ORDER = ("scans", "webhook_events", "tickets", "orders")  # children first (foreign keys)


@dataclass(frozen=True, slots=True)
class Cleanup:
    """What a cleanup removed: rows per table, and the tables the target does not expose."""

    deleted: Mapping[str, int]
    skipped: tuple[str, ...] = ()
    dry_run: bool = False

    def render(self, run_id: str) -> str:
        """One line for the terminal."""
        total = sum(v for k, v in self.deleted.items() if k != "tickets_restored")
        verb = "would delete" if self.dry_run else "deleted"
        line = f"run {run_id}: {verb} {total} row(s): " + ", ".join(
            f"{k} {v}" for k, v in self.deleted.items()
        )
        if self.skipped:
            line += f" (not exposed, skipped: {', '.join(self.skipped)})"
        return line


def cleanup_at(
    url: str,
    *,
    run_id: str,
    api_key: str,
    tables: Tables = Tables(),  # noqa: B008 - frozen
    dry_run: bool = False,
    timeout: float = 30.0,
) -> Cleanup:
    """Delete a run's rows at a target: the stand-in's admin endpoint, else PostgREST by run id."""
    if not run_id.strip():
        raise EndStateError("--run: expected a non-empty run id")
    base = base_url(url)
    headers = auth_headers(api_key)
    if not dry_run:
        try:
            data, _ = request(
                "DELETE", f"{base}/admin/v1/runs/{urllib.parse.quote(run_id, safe='')}", headers,
                timeout,
            )  # fmt: skip
        except EndStateError as e:
            if e.status not in (404, 405):
                raise
        else:
            if isinstance(data, dict) and isinstance(data.get("deleted"), dict):
                return Cleanup({k: int(v) for k, v in data["deleted"].items()})
    return rest_cleanup(base, run_id=run_id, headers=headers, tables=tables, dry_run=dry_run,
                        timeout=timeout)  # fmt: skip


def rest_cleanup(
    base: str,
    *,
    run_id: str,
    headers: Mapping[str, str],
    tables: Tables,
    dry_run: bool,
    timeout: float,
) -> Cleanup:
    """PostgREST `DELETE /rest/v1/<table>?run_id=eq.<run>` on each table (HEAD counts on a dry run)."""
    deleted: dict[str, int] = {}
    skipped: list[str] = []
    q = urllib.parse.urlencode({"run_id": f"eq.{run_id}"})
    for field in CLEANUP_ORDER:
        table = getattr(tables, field)
        url = f"{base}/rest/v1/{table}?{q}"
        h = {**headers, "Prefer": "count=exact" if dry_run else "return=minimal,count=exact"}
        try:
            _, resp = request("HEAD" if dry_run else "DELETE", url, h, timeout)
        except EndStateError as e:
            if e.status == 404:
                skipped.append(table)
                continue
            raise
        cr = {k.lower(): v for k, v in resp.items()}.get("content-range", "")
        total = cr.rpartition("/")[2]
        deleted[table] = int(total) if total.isdigit() else 0
    return Cleanup(deleted, tuple(skipped), dry_run)
