"""What-if search: hypothesis drives a scenario's parameters to the smallest case that breaks its thresholds.

Each case is a prediction (sim.predict: the scenario simulated in memory, its requests through the
backend capacity model) judged by the scenario's thresholds. Hypothesis generates the cases, and when
one fails it shrinks the parameters to a minimal failing configuration; its example database (a
directory) stores that case, so the next search over the same study tries it first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.errors import Unsatisfiable

from judge.thresholds import Verdicts
from sim.predict import evaluate, lookup, with_values
from sim.scenario import Scenario, ScenarioError

DEFAULT_CACHE = Path(".gaterush")  # hypothesis's example database lives in DEFAULT_CACHE / "whatif"

_RANGE = re.compile(
    r"^\s*(?P<lo>[-+]?[0-9][0-9_.eE+-]*)\s*\.\.\s*(?P<hi>[-+]?[0-9][0-9_.eE+-]*)\s*$"
)
_INT = re.compile(r"^[-+]?[0-9_]+$")


@dataclass(frozen=True, slots=True)
class Vary:
    """One parameter the search varies: a dotted scenario key over [low, high], integers or floats."""

    key: str
    low: float
    high: float
    integer: bool

    def strategy(self) -> st.SearchStrategy:
        """The hypothesis strategy drawing this parameter (shrinks toward `low`)."""
        if self.integer:
            return st.integers(int(self.low), int(self.high))
        return st.floats(self.low, self.high, allow_nan=False, allow_infinity=False)

    def __str__(self) -> str:
        kind = "integers" if self.integer else "numbers"
        lo, hi = (int(self.low), int(self.high)) if self.integer else (self.low, self.high)
        return f"{self.key} in {lo}..{hi} ({kind})"


def _number(text: str, what: str) -> int | float:
    t = text.replace("_", "")
    try:
        return int(t) if _INT.match(t) else float(t)
    except ValueError:
        raise ScenarioError("", f"{what}: {text!r} is not a number") from None


def parse_range(option: str, spec: str) -> tuple[str, int | float, int | float]:
    """(key, low, high) from `KEY=LOW..HIGH`; ScenarioError naming the option when malformed or empty."""
    key, sep, rng = spec.partition("=")
    key = key.strip()
    m = _RANGE.match(rng)
    if not sep or not key or not m:
        raise ScenarioError("", f"{option} {spec!r}: expected KEY=LOW..HIGH, e.g. gate.lanes=4..24")
    lo = _number(m["lo"], f"{option} {spec!r}")
    hi = _number(m["hi"], f"{option} {spec!r}")
    if lo > hi:
        raise ScenarioError(key, f"{option} {spec!r}: empty range (LOW {lo} > HIGH {hi})")
    return key, lo, hi


def plain_type(data: Mapping[str, Any], key: str, value: int | float, option: str) -> type:
    """int or float: the type a scenario key holds, checked by setting `value` (ScenarioError names the key)."""
    sc = with_values(data, {key: value})
    v = lookup(sc.to_dict(), key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ScenarioError(
            key, f"{option}: only numbers can vary, and this key holds {type(v).__name__}"
        )
    return type(v)


def parse_varies(
    data: Mapping[str, Any], specs: Sequence[str], option: str = "--vary"
) -> tuple[Vary, ...]:
    """Validated parameters from `KEY=LOW..HIGH` texts (unknown key, wrong type, empty range: ScenarioError)."""
    out: list[Vary] = []
    for spec in specs:
        key, lo, hi = parse_range(option, spec)
        if any(v.key == key for v in out):
            raise ScenarioError(key, f"{option} given twice for this key")
        kinds = {plain_type(data, key, lo, option), plain_type(data, key, hi, option)}
        integer = kinds == {int}
        if integer and not (isinstance(lo, int) and isinstance(hi, int)):
            raise ScenarioError(
                key, f"{option} {spec!r}: expected integers, this key holds an integer"
            )
        out.append(Vary(key, lo, hi, integer))
    if not out:
        raise ScenarioError("", f"give at least one {option} KEY=LOW..HIGH")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Case:
    """One evaluated case: the values set, its headline figures and its thresholds' verdicts."""

    values: dict[str, Any]
    figures: dict[str, float]
    judgement: Verdicts


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What a search found: the smallest failing case (None: none within the budget) and its effort."""

    failing: Case | None
    scenario: Scenario | None  # the failing case as a full scenario
    tried: int  # cases evaluated, shrinking included
    shrinking: int  # of which while shrinking a failure
    seconds: float
    cases: tuple[Case, ...] = field(default=(), repr=False)


Evaluator = Callable[[Mapping[str, Any], Mapping[str, Any], int], tuple[dict[str, float], Verdicts]]


def evaluate_case(
    data: Mapping[str, Any], values: Mapping[str, Any], seed: int
) -> tuple[dict[str, float], Verdicts]:
    """Predict and judge the scenario `data` with `values` set (a top-level function: it pickles)."""
    figures, j = evaluate(with_values(data, values), seed)
    assert j is not None
    return figures, j


def evaluate_on(
    client: Any, data: Mapping[str, Any], values: Mapping[str, Any], seed: int
) -> tuple[dict[str, float], Verdicts]:
    """evaluate_case run on a Dask cluster through a distributed.Client (its errors come back here)."""
    return client.submit(evaluate_case, data, values, seed, pure=False).result()


def evaluator(client: Any = None) -> Evaluator:
    """How cases are evaluated: here, or on a Dask cluster through `client` (a distributed.Client)."""
    return evaluate_case if client is None else functools.partial(evaluate_on, client)


def study_key(data: Mapping[str, Any], varies: Sequence[Vary], seed: int) -> bytes:
    """The example database key of a study: the scenario, the parameters and the seed."""
    text = json.dumps([data, [str(v) for v in varies], seed], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).digest()


def search(
    data: Mapping[str, Any],
    varies: Sequence[Vary],
    *,
    seed: int = 0,
    max_examples: int = 50,
    cache: Path | None = DEFAULT_CACHE,
    evaluator: Evaluator = evaluate_case,
    progress: Callable[[Case, bool], None] | None = None,
) -> SearchResult:
    """Search for the smallest case breaking the thresholds of `data` (plain scenario data).

    `seed` seeds the simulations (every case uses it: common random numbers). `cache` holds
    hypothesis's example database, whose failures are tried first; None: no database, and a
    derandomized search (the same cases every time for a study and seed). `progress(case,
    shrinking)` is called after each case.
    """
    cases: list[Case] = []
    first_fail: list[int] = []
    last_fail: list[Case] = []

    def one_case(values: dict[str, Any]) -> None:
        try:
            figures, j = evaluator(data, values, seed)
        except ScenarioError:
            reject()  # values that make no valid scenario (a cross-field check): not a case
        case = Case(dict(values), figures, j)
        cases.append(case)
        if not j.ok:
            last_fail[:] = [case]
            if not first_fail:
                first_fail.append(len(cases))
        if progress is not None:
            progress(case, bool(first_fail))
        assert j.ok, "thresholds failed"

    one_case._hypothesis_internal_add_digest = study_key(data, varies, seed)  # type: ignore[attr-defined]
    db = DirectoryBasedExampleDatabase(str(cache / "whatif")) if cache is not None else None
    test = settings(
        max_examples=max_examples,
        deadline=None,
        database=db,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        print_blob=False,
        derandomize=db is None,
    )(given(st.fixed_dictionaries({v.key: v.strategy() for v in varies}))(one_case))
    t0 = time.perf_counter()
    failed = False
    try:
        test()
    except AssertionError:
        failed = True
    except Unsatisfiable as e:
        raise ScenarioError("", f"no valid scenario among the cases tried: {e}") from None
    if not failed or not last_fail:
        return SearchResult(None, None, len(cases), 0, time.perf_counter() - t0, tuple(cases))
    case = last_fail[0]  # hypothesis replays the minimal failing example last
    case = _polish(case, varies, lambda values: evaluator(data, values, seed), cases, progress)
    sc = with_values(data, case.values)
    seconds = time.perf_counter() - t0
    return SearchResult(case, sc, len(cases), len(cases) - first_fail[0], seconds, tuple(cases))


POLISH_STEPS = 12  # bisection steps per float parameter: the boundary to 1/4096 of its range


def _polish(
    case: Case,
    varies: Sequence[Vary],
    run: Callable[[dict[str, Any]], tuple[dict[str, float], Verdicts]],
    cases: list[Case],
    progress: Callable[[Case, bool], None] | None,
) -> Case:
    """Move each float parameter of a failing case down to its boundary by bisection.

    Hypothesis shrinks integers to a minimal failing value but floats only to "simple" ones (0.5
    rather than 0.0667), so the case is refined here: toward `low`, keeping a failing value.
    """

    def attempt(values: dict[str, Any]) -> Case | None:
        try:
            figures, j = run(values)
        except ScenarioError:
            return None
        c = Case(values, figures, j)
        cases.append(c)
        if progress is not None:
            progress(c, True)
        return c

    for v in varies:
        if v.integer:
            continue
        lo, hi = v.low, case.values[v.key]
        if lo < hi:
            at_low = attempt({**case.values, v.key: lo})
            if at_low is not None and not at_low.judgement.ok:
                case = at_low
                continue
        for _ in range(POLISH_STEPS):
            if hi - lo <= 1e-12 * max(1.0, abs(hi)):
                break
            mid = lo + (hi - lo) / 2
            c = attempt({**case.values, v.key: mid})
            if c is not None and not c.judgement.ok:
                case, hi = c, mid
            else:
                lo = mid
    return case


def scenario_toml(sc: Scenario, comments: Sequence[str] = ()) -> str:
    """A full scenario as TOML (what `gaterush simulate` and `whatif` read back), with leading comments."""
    head = "".join(f"# {c}\n" for c in comments)
    return head + tomli_w.dumps(sc.to_dict())
