"""Wake-ups at absolute deadlines for the scheduler, precise to tens of microseconds, without a spin.

A pacer calls ``tick()`` when the deadline ``tick`` last returned has come; ``tick`` sends what is
due and returns the next deadline (``time.monotonic()`` seconds), or None when it has sent all.

:class:`TimerfdPacer` (Linux) arms a ``timerfd`` on CLOCK_MONOTONIC (the clock of
``time.monotonic``) for the next absolute deadline, in nanoseconds, and the event loop watches it
like a socket (``loop.add_reader``): one epoll wake-up per deadline, answers processed in between,
no thread and no core spent waiting. It is armed ``lead_s`` early, and the last few microseconds are
waited out in a tight loop, so the wake-up's own latency (a few tens of microseconds, more on a busy
machine) is not added to the send. The lead follows that latency (:class:`Lead`: about its median,
at most ``lead_s``), so the loop spends little time waiting: at 1,000 requests/s on a 2-core VM a
fixed 50 us lead cost about 30 us of CPU per request (145 against 112 us, bench.profile_replay).
Deadlines closer together than that precision share one wake-up
(each still sent at its own time, never early): arming a timer costs more than the wait (a timer
armed near now costs 15-30 us in a VM, where reprogramming the timer traps to the hypervisor).
Behind schedule the timer is not armed at all: the fired, unread fd stays readable, so the loop
reads the answers that are in and calls the pacer again. :class:`LoopPacer` is the fallback where timerfd is missing:
sleep on the loop's (millisecond) timers until ``spin_s`` before the deadline, then yield to the
loop in a tight loop until it has come: as precise, but it spends a core doing so.

:func:`due` is the pure part: which deadlines of a sorted run go out in one wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence

now = time.monotonic
Tick = Callable[[], "float | None"]

CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


def due(deadlines: Sequence[float], t: float, window: float, limit: int) -> int:
    """How many of the first sorted `deadlines` go out in a wake-up at `t`: those due by t + window.

    At most `limit`, so a sender behind schedule still lets answers in between batches.
    """
    n = 0
    horizon = t + window
    for d in deadlines:
        if d > horizon or n >= limit:
            break
        n += 1
    return n


@functools.cache
def _libc(hold_gil: bool = False) -> ctypes.CDLL:
    """The C library, looked up once (find_library runs ``ldconfig -p``: milliseconds a call).

    `hold_gil`: its functions keep the GIL through the call (ctypes.PyDLL), for calls that never
    block: arming the timer costs 2.4 us a call warm this way, 3.9 with the GIL let go and taken
    back.
    """
    kind = ctypes.PyDLL if hold_gil else ctypes.CDLL
    return kind(ctypes.util.find_library("c"), use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Timerfd:
    """A non-blocking CLOCK_MONOTONIC timerfd armed at absolute times: os (3.13+) or libc by ctypes."""

    def __init__(self) -> None:
        if hasattr(os, "timerfd_create"):  # Python 3.13+
            self.fd = os.timerfd_create(CLOCK_MONOTONIC, flags=TFD_NONBLOCK | TFD_CLOEXEC)
            self._set_ns = os.timerfd_settime_ns
            self.arm = self._arm_os
            return
        libc = _libc(hold_gil=True)  # neither call blocks
        create, settime = libc.timerfd_create, libc.timerfd_settime  # AttributeError: no timerfd
        create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        settime.restype = ctypes.c_int
        fd = create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._spec = _Itimerspec()
        self._value = self._spec.it_value
        self._ref = ctypes.addressof(self._spec)
        self._settime = settime
        self.arm = self._arm_ctypes

    def _arm_os(self, t: float) -> None:
        self._set_ns(self.fd, flags=TFD_TIMER_ABSTIME, initial=max(1, int(t * 1e9)))

    def _arm_ctypes(self, t: float) -> None:
        ns = max(1, int(t * 1e9))  # 0 would disarm: a deadline already past fires at once instead
        v = self._value
        v.tv_sec, v.tv_nsec = divmod(ns, 1_000_000_000)
        if self._settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        """Consume the expiration count, so the fd is not readable until it fires again."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        """Close the fd."""
        os.close(self.fd)


PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30


@contextlib.contextmanager
def precise_timers(slack_ns: int = 1) -> Iterator[None]:
    """While inside, this thread's timers expire on time: Linux lets a timer of a normal thread
    expire up to its timer slack late (50 us by default, to batch wake-ups), which the pacer's
    lead would have to cover by waiting in a tight loop. Restores the old slack; does nothing
    where prctl is missing."""
    try:
        libc = _libc()
        prctl = libc.prctl
        old = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    except (AttributeError, OSError, TypeError):
        yield
        return
    if old < 0 or prctl(PR_SET_TIMERSLACK, slack_ns, 0, 0, 0) != 0:
        yield
        return
    try:
        yield
    finally:
        prctl(PR_SET_TIMERSLACK, old, 0, 0, 0)


def timerfd_available() -> bool:
    """Whether this system has timerfd (Linux)."""
    try:
        _Timerfd().close()
    except (AttributeError, OSError, TypeError):
        return False
    return True


class Lead:
    """How early to arm the timer: a running median of how late wake-ups come, in [0, most].

    Armed this early, half the wake-ups come before their deadline (the rest is waited out in a
    tight loop) and half a little after it, by less than the latency's spread above its median:
    each request goes out within that spread of its time, as with a longer lead, for a fraction
    of the waiting. The median moves by `step` per wake-up (a frugal streaming median: no history
    kept), so a machine that gets busier or quieter is followed within a few hundred wake-ups.
    """

    __slots__ = ("most", "step", "s")

    def __init__(self, most: float, step: float = 0.000001) -> None:
        self.most = max(0.0, most)
        self.step = step
        self.s = self.most  # from the longest: the first wake-ups are never late for want of lead

    def woke(self, late: float) -> float:
        """Note that a wake-up came `late` seconds after the time it was armed for; the new lead."""
        s = self.s
        if late > s:
            s = min(self.most, s + self.step)
        elif s > 0.0:
            s = max(0.0, s - self.step)
        self.s = s
        return s


class TimerfdPacer:
    """Wake on a timerfd armed a lead before each deadline; wait out the rest in a tight loop.

    The lead is the wake-up latency's running median, at most `lead_s` (see :class:`Lead`).
    """

    name = "timerfd"

    def __init__(self, lead_s: float = 0.00005) -> None:
        self.lead = Lead(lead_s)
        self.tfd = _Timerfd()
        self.wakeups = 0

    async def run(self, tick: Tick) -> None:
        """Call tick at each deadline it returns until it returns None."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        tfd = self.tfd
        arm, clear = tfd.arm, tfd.clear
        woke = self.lead.woke
        lead = self.lead.s
        near = self.lead.most  # a deadline nearer than this is waited for here, not armed for

        def finish(e: BaseException | None) -> None:
            clear()  # not armed again: readable until read
            if fut.done():
                return
            if e is None:
                fut.set_result(None)
            else:
                fut.set_exception(e)

        # the deadline the timer was armed for, and the time it was armed to fire
        armed = [0.0, 0.0]

        def wake() -> None:
            # every path arms the timer again, finishes, or leaves it fired: arming resets the
            # expiration count, so the fd needs no read() per wake-up
            nonlocal lead
            self.wakeups += 1
            d, at = armed
            if at:  # a timer's wake-up (not one behind schedule): how late it came
                lead = woke(now() - at)
                armed[1] = 0.0
            while True:
                while now() < d:  # within the wake-up's precision: wait it out here
                    pass
                try:
                    d = tick()
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting run()
                    return finish(e)
                if d is None:
                    return finish(None)
                left = d - now()
                if left > near:  # farther than a timer costs: sleep until a lead before it
                    armed[0] = d
                    armed[1] = at = d - lead
                    return arm(at)
                if left <= 0:
                    # due already (behind schedule): the fd, fired and unread, stays readable, so
                    # the loop calls us again once it has read the answers that are in; arming a
                    # timer in the past would cost a timer interrupt (tens of us in a VM) for that
                    armed[0] = d
                    return None

        loop.add_reader(tfd.fd, wake)
        try:
            with precise_timers():
                arm(0.0)
                await fut
        finally:
            loop.remove_reader(tfd.fd)
            tfd.close()


class LoopPacer:
    """The fallback without timerfd: the loop's timers until `spin_s` before a deadline, then a spin
    that yields to the loop (answers are processed) until it has come."""

    name = "loop"

    def __init__(self, spin_s: float = 0.002) -> None:
        self.spin = spin_s
        self.wakeups = 0

    async def run(self, tick: Tick) -> None:
        """Call tick at each deadline it returns until it returns None."""
        spin = self.spin
        while (d := tick()) is not None:
            self.wakeups += 1
            left = d - now()
            if left > spin:
                await asyncio.sleep(left - spin)
            while now() < d:
                await asyncio.sleep(0)
            if left <= 0:
                await asyncio.sleep(0)  # behind schedule: let answers in between batches


def make_pacer(
    kind: str = "auto", spin_s: float = 0.002, lead_s: float = 0.00005
) -> TimerfdPacer | LoopPacer:
    """The pacer for a replay: "timerfd", "loop", or "auto" (timerfd where the system has it)."""
    if kind == "loop":
        return LoopPacer(spin_s)
    if kind == "timerfd":
        return TimerfdPacer(lead_s)
    if kind != "auto":
        raise ValueError(f"pacer: expected auto, timerfd or loop, got {kind!r}")
    try:
        return TimerfdPacer(lead_s)
    except (AttributeError, OSError, TypeError):
        return LoopPacer(spin_s)
