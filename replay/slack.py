"""Work a sender does between its deadlines, a short step at a time: result batches, collections.

A sender's loop has two kinds of work: the sends, each due at its deadline, and the rest: taking
the result rows as an Arrow batch and writing it, the progress counts, a garbage collection. Done
whenever it comes up, the rest delays the sends: taking 1,000 rows as one batch costs 1-2 ms, a
young-generation collection up to 2 ms, and every request due meanwhile goes out that late (it is
the receiver's p99.9). :class:`Slack` holds that work as jobs, generators that yield after each
short step (a column of a batch), and runs a step only where it fits: in the slack before the next
deadline, and only if the longest step seen lately fits in what is left. A job that has found no
such slack for ``overdue_s`` runs one step per wake-up anyway (and one more for each further
``overdue_s`` it waits), so a sender with no slack at all (a rate beyond what it sustains) still
writes its rows, and they do not pile up. Outside the paced part of a run (before the
first deadline, while answers drain) a job runs whole at once.

Garbage collection is the other job: while pacing, the scheduler's loop collects the young
generation itself, in the slack, whenever enough new objects have accumulated (``YOUNG``), so the
interpreter's own collection (its threshold raised by ``replay.shards.quiet_gc``) does not fall in
the middle of a burst. How many are new is more than ``gc.get_count()`` says: the interpreter
counts allocations less deallocations of any generation, so a sender that frees its old read-ahead
as it reads new shows a count near zero while the young generation fills with the new. Left to the
count, a 5,000/s replay collected once in 4 s, at 1.4 s, and that collection (23,000 objects, the
whole read-ahead) took 24 ms: every request due meanwhile went out that late. The owner says how
many objects it made (``fresh``) and how many it keeps alive (``held``): the first makes the
collections frequent and short, the second prices the older generations, which hold the
read-ahead, so they are only collected where a slack holds them.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Iterator

now = time.monotonic
Job = Iterator[None]  # a generator: one short step per next()

YOUNG = 2_000  # collect the young generation in the slack once about this many objects are new
GC_MIDDLE_EVERY = 10  # ... and the middle one every this many young collections
GC_OLD_EVERY = 50  # ... and the oldest every this many middle ones, if the slack holds it


def _none() -> int:
    return 0


def run_whole(job: Job) -> None:
    """Run a job to its end at once."""
    for _ in job:
        pass


class Slack:
    """Jobs run a step at a time in the slack between deadlines (see the module's docstring)."""

    __slots__ = (
        "jobs",
        "names",
        "paced",
        "step_s",
        "overdue_s",
        "young_s_per_object",
        "older_s",
        "collections",
        "fresh",
        "held",
        "_since",
    )

    def __init__(self, overdue_s: float = 0.2) -> None:
        self.jobs: deque[tuple[float, str, Job]] = deque()  # (overdue at, name, job), oldest first
        self.names: set[str] = set()  # names of the jobs waiting
        self.paced = False  # while False, a job runs whole when it is added
        self.step_s = 0.00005  # the longest step seen lately: a step starts only if this fits
        self.overdue_s = overdue_s  # longer kept rows waiting: +25 MB at 16,000 rows/s for 1 s
        # a collection costs about this much per object it scans: 0.7-1.8 us seen in a sender
        # (objects among the bytes of requests read ahead; 0.16 us packed together); the middle
        # and the oldest at least as long as their last
        self.young_s_per_object = 1e-6
        self.older_s = [0.0005, 0.005]
        self.collections = [0, 0, 0]  # collections made here, by generation
        self.fresh = 0  # objects the owner made since the last collection (see young())
        self.held: Callable[[], int] = _none  # objects the owner keeps alive now (its read-ahead)
        self._since = [0, 0]

    def start(self) -> None:
        """The paced part begins: jobs wait for slack from now on, and what is alive now (the
        events read ahead, the requests built) is left out of every later collection."""
        self.paced = True
        gc.freeze()  # until finish()
        self.fresh = 0

    def want(self, name: str, make: Callable[[], Job]) -> None:
        """Add the job `make()` unless one of that name is waiting (a flush asked for twice is one)."""
        if not self.paced:
            run_whole(make())
            return
        if name in self.names:
            return
        self.names.add(name)
        self.jobs.append((now() + self.overdue_s, name, make()))

    def run(self, until: float) -> None:
        """Steps while the longest seen fits before `until`; one anyway if the oldest job is
        overdue; then a young collection if it is due and fits."""
        jobs = self.jobs
        while jobs and until - now() > self.step_s:
            self._step()
        if jobs and (late := now() - jobs[0][0]) >= 0.0:
            # one step, and one more for each overdue_s it is late: a sender far behind may wake
            # only every few tens of ms (hundreds of answers between), and one step a wake-up
            # let its rows wait for seconds
            for _ in range(1 + int(late / self.overdue_s)):
                self._step()
                if not jobs:
                    break
        young = self.young()
        if young >= YOUNG and until - now() > self.young_s_per_object * young:
            self._collect(until, young)  # (the young one fits: maybe an older one too)

    def young(self) -> int:
        """About how many objects the young generation holds: the interpreter's count, which
        others' deallocations lower, plus what the owner made since the last collection and
        still keeps (what it freed has left the generation)."""
        return gc.get_count()[0] + min(self.fresh, self.held())

    def finish(self) -> None:
        """Run every waiting job to its end (the paced part of the run is over); what start()
        froze is collectable again."""
        if self.paced:
            gc.unfreeze()
        self.paced = False
        while self.jobs:
            _, name, job = self.jobs.popleft()
            self.names.discard(name)
            run_whole(job)

    def _step(self) -> None:
        t0 = now()
        _, name, job = self.jobs[0]
        try:
            next(job)
        except StopIteration:
            self.jobs.popleft()
            self.names.discard(name)
        except BaseException:
            self.jobs.popleft()
            self.names.discard(name)
            raise
        took = now() - t0
        # the estimate follows a longer step at once and forgets it slowly (over ~100 steps)
        self.step_s = took if took > self.step_s else self.step_s * 0.99 + took * 0.01

    def _collect(self, until: float, young: int) -> None:
        since = self._since  # young collections since a middle one, middle since an old one
        per = self.young_s_per_object
        # by generation: an older one holds at least what the owner keeps alive, and costs at
        # least what it cost last time
        older = per * (young + self.held())
        cost = (per * young, max(older, self.older_s[0]), max(older, self.older_s[1]))
        gen = 0
        if since[0] >= GC_MIDDLE_EVERY:
            gen = 2 if since[1] >= GC_OLD_EVERY else 1
        while gen and until - now() <= cost[gen]:
            gen -= 1  # no slack for the older generation now: the young one, and later
        if until - now() <= cost[gen]:
            return  # later (garbage that piles up meets the interpreter's threshold: quiet_gc)
        t0 = now()
        gc.collect(gen)
        took = now() - t0
        self.fresh = 0
        if gen == 0:
            self.young_s_per_object = max(took / max(young, 1), self.young_s_per_object * 0.9)
            since[0] += 1
        else:
            self.older_s[gen - 1] = took
            since[0] = 0
            since[1] = since[1] + 1 if gen == 1 else 0
        self.collections[gen] += 1
