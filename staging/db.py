"""SQLite in WAL mode behind an asyncio face: one writer thread, a small pool of reader threads.

Every write is a job `fn(conn, changes) -> result` run on the single writer connection. The
writer drains its queue in batches and runs a batch in one transaction, each job inside its own
savepoint (a failing job rolls back alone). Results are handed back only after COMMIT, so a
reply never precedes durability and row changes are published only once committed. Because one
thread applies jobs one after the other, a job's read-then-write is atomic: that is what makes
"admit a ticket at most once" hold under any concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("gaterush.staging")

Job = Callable[..., Any]
_STOP = object()
MAX_BATCH = 512


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection set up for this stand-in: WAL, NORMAL sync, autocommit (explicit transactions)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA cache_size=-32000")
    if readonly:
        conn.execute("PRAGMA query_only=1")
    return conn


class Database:
    """The stand-in's storage: `await write(job, ...)` on the one writer, `await read(fn, ...)` on a pool."""

    def __init__(self, path: str, *, readers: int = 2) -> None:
        self.path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer_conn = connect(path)
        self._readers = ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="gaterush-sqlite-read"
        )
        self._reader_conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_commit: Callable[[list[Any]], None] | None = None
        self.batches = 0
        self.jobs = 0
        self.closed = False

    @property
    def writer_connection(self) -> sqlite3.Connection:
        """The writer's connection, for setup before start() (schema, seeding)."""
        return self._writer_conn

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the writer thread; results come back on `loop`."""
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_writer, name="gaterush-sqlite-writer", daemon=True
        )
        self._thread.start()

    async def write(self, job: Job, *args: Any) -> Any:
        """Run `job(conn, changes, *args)` on the writer in a transaction; its result once committed."""
        if self.closed:
            raise RuntimeError("database is closed")
        assert self._loop is not None
        fut = self._loop.create_future()
        self._queue.put((job, args, fut))
        return await fut

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(conn, *args)` on a reader connection (a consistent snapshot per statement)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(self._readers, self._read, fn, args)

    def _read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return fn(conn, *args)

    def _run_writer(self) -> None:
        conn = self._writer_conn
        q = self._queue
        loop = self._loop
        assert loop is not None
        stopping = False
        while not stopping:
            first = q.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            changes: list[Any] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job, args, fut in batch:
                    mark = len(changes)
                    conn.execute("SAVEPOINT job")
                    try:
                        result = job(conn, changes, *args)
                    except Exception as exc:  # the job's own failure: undo it alone
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        del changes[mark:]
                        outcomes.append((fut, None, exc))
                    else:
                        conn.execute("RELEASE job")
                        outcomes.append((fut, result, None))
                conn.execute("COMMIT")
            except Exception as exc:  # the transaction itself failed: every job of the batch fails
                log.exception("writer transaction failed")
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                outcomes = [(fut, None, exc) for _, _, fut in batch]
                changes = []
            self.batches += 1
            self.jobs += len(batch)
            with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._deliver, outcomes, changes)

    def _deliver(
        self,
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
        changes: list[Any],
    ) -> None:
        for fut, result, exc in outcomes:
            if fut.cancelled():
                continue
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)
        if changes and self.on_commit is not None:
            try:
                self.on_commit(changes)
            except Exception:
                log.exception("publishing row changes failed")

    def close(self) -> None:
        """Finish queued writes, checkpoint the WAL into the main file and close every connection."""
        if self.closed:
            return
        self.closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
        self._readers.shutdown(wait=True)
        with self._lock:
            for c in self._reader_conns:
                with contextlib.suppress(Exception):
                    c.close()
        with contextlib.suppress(Exception):
            self._writer_conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._writer_conn.close()


def remove_database_files(path: str) -> None:
    """Delete a database file and its WAL companions, if present."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
