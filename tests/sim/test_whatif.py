"""What-if search: it finds the known failure boundary, shrunk; its database; the CLI and its errors."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from judge.metrics import percentile
from sim import scenario
from sim import whatif as wi
from sim.predict import with_values
from sim.scenario import ScenarioError
from tests.sim.study_hooks import cli

# Each second a wave of N scans reaches a backend serving 4 at a time, 20 ms each (like the stand-in
# with `workers = 4, latency = "20ms"`): the k-th scan of a wave answers after (k // 4 + 1) * 20 ms.
# So p(95) < 200 ms breaks above a burst size N* known in advance.
BOUNDARY = """
[scenario]
name = "boundary"
[event]
presold = 20000
capacity = 20000
[arrivals]
profile = "burst"
attendees = 10
waves = 10
wave_gap_s = 1.0
start_s = 1.0
[gate]
lanes = 400
queue = "shared"
service = 0.5
departures = false
[gate.tickets]
valid = 1.0
screenshot = 0.0
invalid = 0.0
wrong_event = 0.0
[capacity.default]
workers = 4
service = 0.02
[thresholds]
"http_req_duration{target:rpc:scan_ticket_atomic}" = ["p(95)<200"]
"""


def boundary_n(
    workers: int = 4, service_ms: float = 20.0, limit_ms: float = 200.0, waves: int = 10
) -> int:
    """The smallest burst size whose p(95) (k6's percentile) is not under the limit."""
    for n in range(1, 1000):
        lat = np.sort(np.tile((np.arange(n) // workers + 1) * service_ms, waves))
        if percentile(lat, 0.95, is_sorted=True) >= limit_ms:
            return n
    raise AssertionError("no boundary")


@pytest.fixture
def boundary_file(tmp_path):
    p = tmp_path / "boundary.toml"
    p.write_text(BOUNDARY)
    return p


def test_search_returns_the_known_boundary_shrunk(boundary_file, tmp_path):
    data = scenario.load(str(boundary_file)).to_dict()
    varies = wi.parse_varies(data, ["arrivals.attendees=1..400"])
    res = wi.search(data, varies, max_examples=50, cache=tmp_path / "cache")
    n_star = boundary_n()
    assert res.failing is not None and res.failing.values == {"arrivals.attendees": n_star}
    assert not res.failing.judgement.ok and res.scenario.arrivals.attendees == n_star
    # shrunk to the boundary: the case just below it was tried (or is implied) and held
    held = {c.values["arrivals.attendees"] for c in res.cases if c.judgement.ok}
    assert n_star - 1 in held
    assert res.tried == len(res.cases) and 0 < res.shrinking < res.tried


def test_search_on_two_parameters_shrinks_both(boundary_file):
    """Vary the workers too: the smallest failing case is at the fewest workers, then the smallest burst."""
    data = scenario.load(str(boundary_file)).to_dict()
    varies = wi.parse_varies(data, ["capacity.default.workers=2..6", "arrivals.attendees=1..400"])
    res = wi.search(data, varies, max_examples=60, cache=None)
    assert res.failing.values == {
        "capacity.default.workers": 2,
        "arrivals.attendees": boundary_n(workers=2),
    }


def test_database_brings_a_found_failure_back_first(boundary_file, tmp_path):
    data = scenario.load(str(boundary_file)).to_dict()
    varies = wi.parse_varies(data, ["arrivals.attendees=1..400"])
    first = wi.search(data, varies, max_examples=50, cache=tmp_path)
    again = wi.search(data, varies, max_examples=50, cache=tmp_path)
    assert again.cases[0].values == first.failing.values == again.failing.values
    other = wi.search(data, varies, seed=1, max_examples=50, cache=tmp_path)
    assert other.cases[0].values != first.failing.values  # another study (seed) has its own key


def test_no_failure_within_the_budget(boundary_file):
    data = scenario.load(str(boundary_file)).to_dict()
    varies = wi.parse_varies(data, [f"arrivals.attendees=1..{boundary_n() - 1}"])
    res = wi.search(data, varies, max_examples=20, cache=None)
    assert res.failing is None and res.scenario is None and 0 < res.tried <= 20 + 5


def test_vary_types_and_ranges():
    data = scenario.load("event-day").to_dict()
    (v,) = wi.parse_varies(data, ["gate.lanes=40..120"])
    assert v.integer and (v.low, v.high) == (40, 120)
    (v,) = wi.parse_varies(data, ["arrivals.late_share=0.5..0.9"])
    assert not v.integer
    (v,) = wi.parse_varies(data, ["arrivals.peak_min=5..25"])  # a float key given integers: floats
    assert not v.integer
    (v,) = wi.parse_varies(data, ['capacity.targets."rpc:scan_ticket_atomic".workers=1..8'])
    assert v.integer


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("gate.lanse=4..8", "gate.lanse"),  # unknown key
        ("gate.lanes=8..4", "empty range"),  # LOW > HIGH
        ("gate.lanes=1.5..4", "gate.lanes"),  # an integer key
        ("gate.queue=1..2", "gate.queue"),  # a string key
        ("gate.lanes=4-8", "KEY=LOW..HIGH"),  # malformed
        ("gate.lanes=a..b", "KEY=LOW..HIGH"),
        ("arrivals.late_share=0.5..1.5", "arrivals.late_share"),  # out of bounds
    ],
)
def test_bad_vary_is_invalid_input_naming_it(spec, names, boundary_file):
    with pytest.raises(ScenarioError, match=names.replace(".", r"\.")):
        wi.parse_varies(scenario.load("event-day").to_dict(), [spec])
    r = CliRunner().invoke(cli(), ["whatif", str(boundary_file), "--vary", spec])
    assert r.exit_code == 104, r.output
    assert spec.split("=")[0].split("..")[0] in r.output or names in r.output
    assert "Traceback" not in r.output


def test_cli_failing_case_is_a_scenario_to_simulate(boundary_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "case.toml"
    r = CliRunner().invoke(
        cli(), ["whatif", str(boundary_file), "--vary", "arrivals.attendees=1..400", "-o", str(out)]
    )
    assert r.exit_code == 99, r.output
    n = boundary_n()
    assert f"arrivals.attendees={n}" in r.output and "cases tried" in r.output
    assert (tmp_path / ".gaterush" / "whatif").is_dir()
    sc = scenario.load(str(out))  # a full scenario the simulator reads back
    assert sc.arrivals.attendees == n
    assert sc.thresholds == {"http_req_duration{target:rpc:scan_ticket_atomic}": ("p(95)<200",)}
    assert "gaterush simulate" in out.read_text()


def test_cli_threshold_option_and_no_failure_exit_0(boundary_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "whatif",
        str(boundary_file),
        "--vary",
        "arrivals.attendees=1..30",
        "--max-examples",
        "10",
    ]
    r = CliRunner().invoke(cli(), args)
    assert r.exit_code == 0, r.output
    assert "no failing case" in r.output and "cases tried" in r.output
    # a stricter threshold from the command line replaces the scenario's and fails
    r = CliRunner().invoke(
        cli(), [*args, "--threshold", "http_req_duration{target:rpc:scan_ticket_atomic}=p(95)<100"]
    )
    assert r.exit_code == 99, r.output
    assert "[thresholds]" in r.output and "p(95)<100" in r.output  # printed TOML without -o
    r = CliRunner().invoke(cli(), [*args, "--threshold", "http_req_duraton=p(95)<100"])
    assert r.exit_code == 104 and "http_req_duraton" in r.output


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(scenario.builtin_names()), lanes=st.integers(1, 500), share=st.floats(0, 1)
)
def test_scenario_toml_round_trips(name, lanes, share):
    """The TOML a failing case is written as reads back to the very same scenario."""
    data = scenario.load(name).to_dict()
    values = (
        {"gate.lanes": lanes, "gate.rescan_prob": share}
        if data.get("gate")
        else {"event.capacity": lanes}
    )
    sc = with_values(data, values)
    assert scenario.parse(tomllib.loads(wi.scenario_toml(sc, ["a comment"]))) == sc


def test_cli_cases_on_a_dask_cluster(boundary_file, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)
    with distributed.LocalCluster(
        n_workers=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as c:
        address = "dask://" + c.scheduler_address.removeprefix("tcp://")
        args = [
            "whatif",
            str(boundary_file),
            "--vary",
            "arrivals.attendees=1..400",
            "--scheduler",
            address,
        ]
        r = CliRunner().invoke(cli(), args)
    assert r.exit_code == 99, r.output
    assert f"arrivals.attendees={boundary_n()}" in r.output
    r = CliRunner().invoke(cli(), [*args[:-1], "127.0.0.1:1"])
    assert r.exit_code == 104 and "dask://HOST:PORT" in r.output


def test_a_float_parameter_is_polished_to_its_boundary(boundary_file):
    """Hypothesis shrinks floats to simple values, not to boundaries: the search bisects them after.

    Waves of 10 at 4 workers: 2 of every 10 scans wait for two services, so p(95) is 3 services,
    and p(95) < 200 ms breaks at a service time of 200 / 3 ms.
    """
    data = scenario.load(str(boundary_file)).to_dict()
    varies = wi.parse_varies(data, ["capacity.default.service.mean=0.001..0.5"])
    res = wi.search(data, varies, max_examples=30, cache=None)
    found = res.failing.values["capacity.default.service.mean"]
    assert 0.2 / 3 <= found <= 0.2 / 3 + (0.5 - 0.001) / 2**wi.POLISH_STEPS
    assert not res.failing.judgement.ok
