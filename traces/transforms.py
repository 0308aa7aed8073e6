"""Transforms of traces: slice, speed, amplify, merge, filter, anonymize.

Each is a pure function of a header and an event stream, returning a new header and a lazy
event stream, sorted by (t_us, seq), in bounded memory (no transform holds a whole trace). The
new header's counts, targets and expected end state are left empty: the trace writer fills them
from traces.projection over the events it writes, so they are always the transformed trace's.

Choices, so a user can predict the result:
- slice keeps [from, to) of the trace's time and re-bases it (the first instant of the slice is
  t=0 and the header's origin moves by `from`), unless rebase=False; seq, `after` and `expect`
  are kept, so pieces merge back into the trace (merge(..., pieces=True)).
- speed divides times by the factor, rounding half up to the microsecond: speed f then speed 1/f
  gives each time back within (f + 1) / 2 microseconds (within 1 us when f <= 1).
- amplify N makes N copies of the crowd: copy 0 is the trace itself; copy k >= 1 renames every
  actor (`attendee:81` -> `attendee:81~k`; the service actor `stripe` stays), gives it fresh
  ticket codes, Stripe ids, order refs and buyers, and shifts each (copy, actor) by a seeded
  offset in [-jitter, +jitter] so copies do not arrive in lockstep. The inventory is scaled by N.
- merge overlays traces on one time axis; seq is renumbered in output order with `after`
  remapped, and an actor present in two inputs gets a suffix in the later one (`#2`).
- anonymize replaces ticket codes, emails, names, phone numbers, addresses, card details, client
  IPs, free-text fields (description, ...), actor ids and Stripe object ids with keyed
  HMAC-SHA256 tokens: the same input always gives
  the same token, and without the key a token cannot be traced back.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import hmac
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

from traces import durations
from traces.event import Event, TraceError, pack_payload, unpack_payload
from traces.header import Inventory, TraceHeader, VenueEvent

Transformed = tuple[TraceHeader, Iterator[Event]]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SERVICE_ACTORS = frozenset({"stripe"})  # shared services, not people: never cloned or renamed


def parse_duration(text: str) -> int:
    """A duration like '90s', '5m', '1h30m', '250ms' or '12.5' (seconds) in microseconds."""
    return durations.parse_us(text, bare="s")


def _derived(header: TraceHeader, name: str, **changes: Any) -> TraceHeader:
    """The header of a transformed trace: stats emptied for the writer to fill from its events."""
    return replace(
        header, counts={}, targets={}, expected={}, source=f"transform:{name}", **changes
    )


def united_thresholds(headers: Sequence[TraceHeader]) -> dict[str, list[Any]]:
    """Every input's thresholds (k6 mappings), each expression once: the merged trace holds only
    when every input's thresholds hold. (The judge keeps the stricter of two alike expressions.)"""
    out: dict[str, list[Any]] = {}
    for h in headers:
        mapping = (h.scenario or {}).get("thresholds") or {}
        if not isinstance(mapping, Mapping):
            continue
        for selector, exprs in mapping.items():
            items = out.setdefault(str(selector), [])
            for e in [exprs] if isinstance(exprs, str | Mapping) else list(exprs or ()):
                if e not in items:
                    items.append(e)
    return out


def _check_sorted(events: Iterable[Event], where: str = "input") -> Iterator[Event]:
    last = None
    for e in events:
        key = (e.t_us, e.seq)
        if last is not None and key < last:
            raise TraceError(
                f"{where}: events not sorted by (t_us, seq) at seq {e.seq} (t_us {e.t_us})"
            )
        last = key
        yield e


# --- slice --------------------------------------------------------------------------------------


def slice_trace(
    header: TraceHeader,
    events: Iterable[Event],
    start_us: int | None,
    end_us: int | None,
    *,
    rebase: bool = True,
) -> Transformed:
    """The events with start <= t_us < end (None: open); re-based to start at t=0 unless rebase=False."""
    if start_us is not None and end_us is not None and end_us < start_us:
        raise ValueError(f"slice: --to ({end_us} us) is before --from ({start_us} us)")
    shift = start_us if (rebase and start_us) else 0

    def gen() -> Iterator[Event]:
        for e in _check_sorted(events):
            if start_us is not None and e.t_us < start_us:
                continue
            if end_us is not None and e.t_us >= end_us:
                return  # sorted: nothing later can be inside
            yield e._replace(t_us=e.t_us - shift) if shift else e

    return _derived(header, "slice", origin_unix_us=header.origin_unix_us + shift), gen()


# --- speed --------------------------------------------------------------------------------------


def parse_factor(text: str) -> Fraction:
    """A speed factor like '2', '0.5', '3x' or '1/3' as an exact fraction > 0."""
    s = text.strip().lower().removesuffix("x")
    try:
        f = Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"bad speed factor {text!r}: expected a number > 0 like 2, 0.5 or 3x"
        ) from None
    if f <= 0:
        raise ValueError(f"bad speed factor {text!r}: must be > 0")
    return f


def speed(
    header: TraceHeader, events: Iterable[Event], factor: float | Fraction | str
) -> Transformed:
    """Times divided by factor (2 = twice as fast), rounded half up to the microsecond."""
    f = parse_factor(factor) if isinstance(factor, str) else Fraction(factor)
    if f <= 0:
        raise ValueError(f"bad speed factor {factor!r}: must be > 0")
    num, den = f.numerator, f.denominator

    def gen() -> Iterator[Event]:
        # floor(t * den / num + 1/2) in integers: exact and monotone, so only events that round
        # to the same microsecond can need re-ordering (by seq): they are buffered together.
        same: list[Event] = []
        for e in _check_sorted(events):
            t = (2 * e.t_us * den + num) // (2 * num)
            if not INT64_MIN <= t <= INT64_MAX:
                raise ValueError(f"speed: time {e.t_us} us divided by {f} overflows int64")
            if same and same[0].t_us != t:
                yield from sorted(same, key=lambda x: x.seq)
                same.clear()
            same.append(e._replace(t_us=t))
        yield from sorted(same, key=lambda x: x.seq)

    return _derived(header, "speed"), gen()


# --- filter -------------------------------------------------------------------------------------


def filter_trace(
    header: TraceHeader,
    events: Iterable[Event],
    *,
    kinds: Sequence[str] = (),
    targets: Sequence[str] = (),
    actors: Sequence[str] = (),
    invert: bool = False,
) -> Transformed:
    """The events matching every given criterion (any of its values; glob patterns for targets
    and actors, `-` for no target). `after` links to dropped events are kept as they are."""
    kind_set = set(kinds)
    tpats = [re.compile(fnmatch.translate(p)) for p in targets if p != "-"]
    want_none = "-" in targets
    apats = [re.compile(fnmatch.translate(p)) for p in actors]

    def keep(e: Event) -> bool:
        if kind_set and e.kind not in kind_set:
            return False
        if targets and not (
            (e.target is None and want_none)
            or (e.target is not None and any(p.match(e.target) for p in tpats))
        ):
            return False
        return not (apats and not any(p.match(e.actor) for p in apats))

    def gen() -> Iterator[Event]:
        for e in _check_sorted(events):
            if keep(e) != invert:
                yield e

    return _derived(header, "filter"), gen()


# --- id remapping shared by amplify (clones) and merge --------------------------------------

_TICKET = re.compile(r"^T(\d+)-(\d+)$")
_ORDER_TICKET = re.compile(r"^O(.+)-(\d+)$")
_STRIPE_ID = re.compile(r"(?<![A-Za-z0-9])(?:evt|pi|ch|re|py|cs|in|txn)_[A-Za-z0-9_]+")
CODE_KEYS = frozenset({"ticket_code", "p_ticket_code", "code", "ticket"})
PERSON_KEYS = frozenset({"buyer", "order_ref", "p_buyer"})


class _Clone:
    """Fresh ids for copy k of n of a crowd, consistent across every event of that copy."""

    def __init__(self, k: int, n: int, presold: dict[int, int]) -> None:
        self.k, self.n, self.presold = k, n, presold
        self.tag = f"~{k}" if k else ""

    def actor(self, actor: str) -> str:
        return actor if (not self.k or actor in SERVICE_ACTORS) else actor + self.tag

    def code(self, code: str) -> str:
        m = _TICKET.match(code)
        if m and int(m[1]) in self.presold:
            eid, i, p = int(m[1]), int(m[2]), self.presold[int(m[1])]
            # Valid codes shift into the copy's block of the scaled inventory; codes past the
            # inventory (invalid tickets) move past the scaled one, so they stay invalid.
            j = i + self.k * p if i < p else self.n * p + (i - p) * self.n + self.k
            return f"T{eid}-{j:07d}"
        m = _ORDER_TICKET.match(code)
        if m:
            return f"O{self.stripe_ids(m[1])}-{m[2]}"
        return code + self.tag

    def stripe_ids(self, text: str) -> str:
        if not self.k or "_" not in text:
            return text
        return _STRIPE_ID.sub(lambda m: f"{m[0]}c{self.k}", text)

    def person(self, value: str) -> str:
        if not self.k:
            return value
        local, at, domain = value.partition("@")
        return f"{local}+c{self.k}@{domain}" if at else value + self.tag

    def value(self, key: Any, v: Any) -> Any:
        t = type(v)
        if (
            t is int or t is float or t is bool or v is None
        ):  # common leaves first; dashboard loads stay distinct per copy
            return v * self.n + self.k if (key == "load" and t is int) else v
        if t is dict:
            return {kk: self.value(kk, vv) for kk, vv in v.items()}
        if t is list:
            return [self.value(key, x) for x in v]
        if t is str:
            if key in CODE_KEYS:
                return self.code(v)
            if key in PERSON_KEYS:
                return self.person(v)
            if key == "load":
                return v + self.tag
            return self.stripe_ids(v)
        return v

    def payload(self, raw: bytes) -> bytes:
        # Copy 0 changes nothing when n == 1 (and otherwise only codes past the inventory).
        if not raw or self.n == 1:
            return raw
        return pack_payload(self.value(None, unpack_payload(raw)))


def _scaled_inventory(inv: Inventory, n: int) -> Inventory:
    return replace(
        inv,
        events=tuple(
            replace(v, presold=v.presold * n, capacity=v.capacity * n) for v in inv.events
        ),
    )


# --- amplify ------------------------------------------------------------------------------------


def _offset_us(seed: int, k: int, actor: str, jitter_us: int) -> int:
    """The seeded time shift of one (copy, actor), uniform in [-jitter, +jitter]."""
    if k == 0 or jitter_us <= 0:
        return 0
    h = hashlib.blake2b(f"{seed}\x00{k}\x00{actor}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % (2 * jitter_us + 1) - jitter_us


def amplify(
    header: TraceHeader,
    events: Iterable[Event],
    n: int,
    *,
    jitter_us: int = 30_000_000,
    seed: int = 0,
) -> Transformed:
    """N times the crowd: each actor cloned with fresh ids and codes, clones jittered in time.

    seq of copy k of event s is s * n + k, and `after` maps the same way, so no table of seqs
    is kept. Times move by at most `jitter_us`; an event is never moved before the event its
    `after` names nor before its actor's previous event. The output is re-sorted through a
    window of 2 * jitter of input time, which bounds memory.
    """
    if n < 1:
        raise ValueError(f"amplify: N must be >= 1, got {n}")
    if jitter_us < 0:
        raise ValueError("amplify: jitter must be >= 0")
    presold = {v.id: v.presold for v in header.inventory.events}
    clones = [_Clone(k, n, presold) for k in range(n)]
    new_header = _derived(header, "amplify", inventory=_scaled_inventory(header.inventory, n))

    def gen() -> Iterator[Event]:
        heap: list[tuple[int, int, Event]] = []
        # An output time is within [t - jitter, t + jitter] (plus a microsecond per tie moved in a
        # chain): events further back than the window can no longer hold anything back.
        window = 2 * jitter_us + 1_000_000
        new_t: dict[int, int] = {}  # output seq -> output time, for events within the window
        last_t: dict[
            tuple[int, str], tuple[int, int, int]
        ] = {}  # (k, actor) -> (input t, output t, seq)
        recent: deque[tuple[int, int]] = deque()  # (input t, output seq) in input order
        for e in _check_sorted(events):
            while recent and recent[0][0] < e.t_us - window:
                new_t.pop(recent.popleft()[1], None)
            while heap and heap[0][0] < e.t_us - jitter_us:
                yield heapq.heappop(heap)[2]
            for c in clones:
                t = e.t_us + _offset_us(seed, c.k, e.actor, jitter_us)
                if t < 0 <= e.t_us:
                    t = 0  # a copy does not start before the trace
                seq = e.seq * n + c.k
                if not (INT64_MIN <= seq <= INT64_MAX and t <= INT64_MAX):
                    raise ValueError(
                        f"amplify: seq {e.seq} or time {e.t_us} us of an event overflows int64 at N={n}"
                    )
                after = None if e.after is None else e.after * n + c.k
                # Never before what it waits for, nor before its actor's previous event; on a tie of
                # time the seq decides the order, so a smaller seq moves one microsecond later.
                if after is not None and after in new_t:
                    t = max(t, new_t[after] + (seq < after))
                prev = last_t.get((c.k, e.actor))
                if prev is not None and prev[0] >= e.t_us - window:
                    t = max(t, prev[1] + (seq < prev[2]))
                last_t[(c.k, e.actor)] = (e.t_us, t, seq)
                new_t[seq] = t
                recent.append((e.t_us, seq))
                out = Event(
                    t,
                    seq,
                    e.kind,
                    c.actor(e.actor),
                    e.target,
                    c.payload(e.payload),
                    after,
                    e.expect,
                )
                heapq.heappush(heap, (t, seq, out))
            if len(last_t) > 4 * len(recent) + 1024:  # drop actors idle for longer than the window
                horizon = e.t_us - window
                for key in [k for k, v in last_t.items() if v[0] < horizon]:
                    del last_t[key]
        while heap:
            yield heapq.heappop(heap)[2]

    return new_header, gen()


# --- merge --------------------------------------------------------------------------------------

Source = Callable[[], Iterable[Event]]  # opens (or re-opens) one input's events


def merge(inputs: Sequence[tuple[TraceHeader, Source]], *, pieces: bool = False) -> Transformed:
    """A k-way streaming merge of traces by (t_us, seq).

    pieces=False (traces of different crowds or days): all inputs start at t=0; seq is
    renumbered 0, 1, ... in output order with `after` remapped; an actor (other than `stripe`)
    that appears in an earlier input gets the suffix `#<input number>`; inventories are united
    (the larger presold of an event id wins). Each input is read twice: a first pass collects its
    actors and the seqs that `after` names, so only those are remembered.

    pieces=True (pieces of one trace, e.g. from slice): inputs are aligned on their header
    origins, on the first input's time axis (list the earliest piece first), seq, actors and `after` are kept, and an event present in two pieces is kept once.
    """
    if not inputs:
        raise ValueError("merge: no inputs")
    headers = [h for h, _ in inputs]
    allow = {h.inventory.allow_reentry for h in headers}
    if len(allow) > 1:
        raise ValueError(
            "merge: inputs disagree on allow_reentry: their scans' outcomes would not hold together"
        )
    if pieces:
        return _merge_pieces(inputs)
    inventory = _united_inventory(headers)
    scenario = {**(headers[0].scenario or {}), "thresholds": united_thresholds(headers)}
    new_header = _derived(headers[0], "merge", inventory=inventory, scenario=scenario)

    def gen() -> Iterator[Event]:
        used: set[str] = set()
        renames: list[dict[str, str]] = []
        referenced: list[set[int]] = []
        for i, (_, src) in enumerate(inputs):
            actors: set[str] = set()
            refs: set[int] = set()
            for e in src():
                actors.add(e.actor)
                if e.after is not None:
                    refs.add(e.after)
            ren = {}
            for a in sorted(actors):
                if a in used and a not in SERVICE_ACTORS:
                    j, name = i + 1, f"{a}#{i + 1}"
                    while name in used or name in actors:
                        j += 1
                        name = f"{a}#{j}"
                    ren[a] = name
            used |= actors | set(ren.values())
            renames.append(ren)
            referenced.append(refs)
        streams = [
            _keyed(_check_sorted(src(), f"input {i + 1}"), i) for i, (_, src) in enumerate(inputs)
        ]
        seq_map: list[dict[int, int]] = [{} for _ in inputs]
        for new_seq, (_, _, i, e) in enumerate(
            heapq.merge(*streams, key=lambda x: (x[0], x[1], x[2]))
        ):
            after = None if e.after is None else seq_map[i].get(e.after)
            if e.seq in referenced[i]:
                seq_map[i][e.seq] = new_seq
            yield Event(
                e.t_us,
                new_seq,
                e.kind,
                renames[i].get(e.actor, e.actor),
                e.target,
                e.payload,
                after,
                e.expect,
            )

    return new_header, gen()


def _keyed(events: Iterable[Event], i: int) -> Iterator[tuple[int, int, int, Event]]:
    for e in events:
        yield e.t_us, e.seq, i, e


def _shifted(events: Iterable[Event], shift: int) -> Iterator[Event]:
    for e in events:
        yield e._replace(t_us=e.t_us + shift) if shift else e


def _merge_pieces(inputs: Sequence[tuple[TraceHeader, Source]]) -> Transformed:
    first = inputs[0][0]
    origin = first.origin_unix_us
    new_header = _derived(
        first, "merge", origin_unix_us=origin, inventory=_united_inventory([h for h, _ in inputs])
    )

    def gen() -> Iterator[Event]:
        streams = [
            _shifted(_check_sorted(src(), f"input {i + 1}"), h.origin_unix_us - origin)
            for i, (h, src) in enumerate(inputs)
        ]
        prev: Event | None = None
        for e in heapq.merge(*streams, key=lambda e: (e.t_us, e.seq)):
            if prev is not None and (e.t_us, e.seq) == (prev.t_us, prev.seq):
                if e != prev:
                    raise TraceError(
                        f"merge --pieces: two different events at t_us {e.t_us} with seq {e.seq}"
                    )
                continue
            prev = e
            yield e

    return new_header, gen()


def _united_inventory(headers: Sequence[TraceHeader]) -> Inventory:
    by_id: dict[int, VenueEvent] = {}
    for h in headers:
        for v in h.inventory.events:
            have = by_id.get(v.id)
            if have is None:
                by_id[v.id] = v
            else:
                by_id[v.id] = replace(
                    have,
                    presold=max(have.presold, v.presold),
                    capacity=max(have.capacity, v.capacity),
                )
    return Inventory(
        events=tuple(by_id[i] for i in sorted(by_id)),
        allow_reentry=headers[0].inventory.allow_reentry,
    )


# --- anonymize ----------------------------------------------------------------------------------

# an email as text, or percent-encoded as a URL path or query keeps it (ann%40example.com)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9.-]+\.[A-Za-z]{2,}", re.IGNORECASE)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_ANON_STRIPE_ID = re.compile(
    r"(?<![A-Za-z0-9])(evt|pi|ch|re|py|cs|in|txn|cus|src|card|pm)_([A-Za-z0-9_]+)"
)
NAME_KEYS = frozenset(
    {
        "name",
        "full_name",
        "first_name",
        "last_name",
        "customer_name",
        "cardholder_name",
        "holder",
        "buyer",
        "username",
        "p_buyer",
    }
)
EMAIL_KEYS = frozenset({"email", "receipt_email", "customer_email"})
CARD_KEYS = frozenset(
    {
        "number",
        "cvc",
        "cvv",
        "last4",
        "dynamic_last4",
        "exp_month",
        "exp_year",
        "fingerprint",
        "iin",
    }
)
CONTACT_KEYS = frozenset(
    {
        "phone",
        "address",
        "line1",
        "line2",
        "postal_code",
        "city",
        "state",
        "shipping",
        "ip",
        "client_ip",
    }
)
# Free text can hold anything personal ("tickets for Ann Lee"): replaced whole.
FREE_TEXT_KEYS = frozenset(
    {
        "description",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "note",
        "notes",
        "comment",
        "memo",
        "message",
    }
)
ANON_KEY_ENV = "GATERUSH_ANON_KEY"


class Anonymizer:
    """Keyed, consistent replacement of personal data in events (HMAC-SHA256 with the key)."""

    def __init__(self, key: bytes | str, inventory: Inventory | None = None) -> None:
        key_b = key.encode() if isinstance(key, str) else key
        if not key_b:
            raise ValueError("anonymize: the key must not be empty")
        self._key = key_b
        self._presold = {v.id: v.presold for v in (inventory or Inventory()).events}

    def token(self, domain: str, value: str, size: int = 16) -> str:
        """The hex token of a value in a domain (same key, domain and value: same token)."""
        mac = hmac.digest(self._key, f"{domain}\x00{value}".encode(), "sha256")
        return mac.hex()[:size]

    def code(self, code: str) -> str:
        """A ticket code's replacement.

        A pre-sold code of the inventory (T<event>-<n>, n < presold) is mapped by a keyed
        permutation of the event's presold range, so the anonymized trace still scans tickets
        the stand-in seeds (and admits each once); any other code becomes `TK<token>`.
        """
        m = _TICKET.match(code)
        if m and int(m[1]) in self._presold and int(m[2]) < self._presold[int(m[1])]:
            eid = int(m[1])
            return f"T{eid}-{self._permute(eid, int(m[2]), self._presold[eid]):07d}"
        m = _ORDER_TICKET.match(code)
        if m:
            return f"O{self.strings(m[1])}-{m[2]}"
        return "TK" + self.token("code", code)

    def _permute(self, eid: int, i: int, size: int) -> int:
        """A keyed bijection of range(size): a balanced Feistel network with cycle walking."""
        bits = max(2, (size - 1).bit_length())
        half = (bits + 1) // 2
        mask = (1 << half) - 1
        x = i
        while True:
            left, right = x >> half, x & mask
            for rnd in range(4):
                f = int.from_bytes(
                    hmac.digest(self._key, f"perm\x00{eid}\x00{rnd}\x00{right}".encode(), "sha256")[
                        :8
                    ],
                    "big",
                )
                left, right = right, (left ^ f) & mask
            x = (left << half) | right
            if x < size:
                return x

    def strings(self, text: str) -> str:
        """Emails, card numbers and Stripe object ids inside any text replaced."""
        text = _EMAIL.sub(self._email, text)
        text = _CARD.sub(lambda m: self._card(m[0]), text)
        return _ANON_STRIPE_ID.sub(self._stripe_id, text)

    def _email(self, m: re.Match[str]) -> str:
        # the same person's token whether the address was written plainly or percent-encoded,
        # written back the way it was found
        found = m[0]
        at = "@" if "@" in found else "%40"
        return f"u{self.token('email', unquote(found).lower(), 12)}{at}anon.invalid"

    def _card(self, digits: str) -> str:
        d = re.sub(r"\D", "", digits)
        if not _luhn(d):
            return digits
        return "card_" + self.token("card", d, 12)

    def _stripe_id(self, m: re.Match[str]) -> str:
        prefix, rest = m[1], m[2]
        if prefix == "pm" and rest.startswith("card_"):
            return m[0]  # Stripe's test payment methods (pm_card_visa) are not anyone's data
        return f"{prefix}_{self.token('stripe', m[0], 24)}"

    def actor(self, actor: str) -> str:
        """An actor's id replaced, its kind kept (`attendee:81` -> `attendee:<token>`)."""
        if actor in SERVICE_ACTORS:
            return actor
        kind, sep, ident = actor.partition(":")
        if not sep:
            return "actor:" + self.token("actor", actor)
        return f"{kind}:{self.token('actor', actor)}"

    def value(self, key: Any, v: Any) -> Any:
        """A payload value anonymized according to its key and content."""
        k = key.lower() if isinstance(key, str) else key
        if isinstance(v, dict):
            if k in CONTACT_KEYS:
                return {kk: self._redact_leaf("contact", vv) for kk, vv in v.items()}
            return {kk: self.value(kk, vv) for kk, vv in v.items()}
        if isinstance(v, list):
            return [self.value(key, x) for x in v]
        if k in CARD_KEYS and v is not None:
            return "x" + self.token("card", f"{k}\x00{v}", 8)
        if not isinstance(v, str):
            return v
        if k in CODE_KEYS:
            return self.code(v)
        if k in EMAIL_KEYS:
            return f"u{self.token('email', v.lower(), 12)}@anon.invalid"
        if k in NAME_KEYS:
            return "n" + self.token("name", v)
        if k in CONTACT_KEYS:
            return "c" + self.token("contact", v)
        if k in FREE_TEXT_KEYS:
            return "d" + self.token("text", v)
        return self.strings(v)

    def _redact_leaf(self, domain: str, v: Any) -> Any:
        if isinstance(v, dict):
            return {kk: self._redact_leaf(domain, vv) for kk, vv in v.items()}
        if v is None or isinstance(v, bool):
            return v
        return "c" + self.token(domain, str(v))

    def event(self, e: Event) -> Event:
        """One event with its actor and payload anonymized."""
        payload = (
            pack_payload(self.value(None, unpack_payload(e.payload))) if e.payload else e.payload
        )
        return e._replace(actor=self.actor(e.actor), payload=payload)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return 13 <= len(digits) <= 19 and total % 10 == 0


def anonymize(header: TraceHeader, events: Iterable[Event], key: bytes | str) -> Transformed:
    """Personal data replaced by keyed tokens; the key is used, never stored in the header."""
    anon = Anonymizer(key, header.inventory)

    def gen() -> Iterator[Event]:
        for e in _check_sorted(events):
            yield anon.event(e)

    return _derived(header, "anonymize"), gen()
