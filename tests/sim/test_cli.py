"""`gaterush scenarios` and `gaterush simulate`: output and exit codes (0, 104, 2)."""

import click
import pytest
from click.testing import CliRunner

from sim.cli import register
from traces.io import open_reader


@pytest.fixture
def cli():
    @click.group()
    def main():
        pass

    register(main)
    return main


def run(cli, *args):
    return CliRunner().invoke(cli, list(args))


def test_scenarios_lists_one_line_each(cli):
    r = run(cli, "scenarios")
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == [
        "dashboard-load",
        "event-day",
        "purchase-load",
        "scanner-burst",
        "webhook-burst",
    ]


def test_scenarios_show_prints_the_toml(cli):
    r = run(cli, "scenarios", "show", "scanner-burst")
    assert r.exit_code == 0 and "[gate]" in r.output and "(two waves)" in r.output
    r = run(cli, "scenarios", "show", "nope")
    assert r.exit_code == 104 and "unknown scenario 'nope'" in r.output


def test_simulate_writes_a_trace(cli, tmp_path):
    out = tmp_path / "burst.grt"
    r = run(
        cli, "simulate", "scanner-burst", "-o", str(out), "--seed", "3", "--set", "gate.lanes=5"
    )
    assert r.exit_code == 0, r.output
    with open_reader(out) as t:
        assert t.header.seed == 3 and t.header.scenario["gate"]["lanes"] == 5


def test_simulate_a_scenario_file(cli, tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text(
        run(cli, "scenarios", "show", "webhook-burst").output.replace("events = 50", "events = 7")
    )
    out = tmp_path / "mine.parquet"
    assert run(cli, "simulate", str(toml), "-o", str(out)).exit_code == 0
    with open_reader(out) as t:
        assert sum(1 for _ in t) == 7


@pytest.mark.parametrize(
    "args, message",
    [
        (["event-day", "--set", "gate.lanes=0"], "gate.lanes: expected an integer >= 1, got 0"),
        (["event-day", "--set", "gate.lanez=3"], "gate.lanez: unknown key"),
        (["no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["event-day", "--seed", "-1"], "--seed"),
    ],
)
def test_bad_config_exits_104_and_writes_nothing(cli, tmp_path, args, message):
    out = tmp_path / "x.parquet"
    r = run(cli, "simulate", *args, "-o", str(out))
    assert r.exit_code == 104
    assert message in r.output and "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_bad_output_exits_104(cli, tmp_path):
    r = run(cli, "simulate", "scanner-burst", "-o", str(tmp_path / "x.csv"))
    assert r.exit_code == 104 and ".parquet or .grt" in r.output
    r = run(cli, "simulate", "scanner-burst", "-o", str(tmp_path / "missing" / "x.grt"))
    assert r.exit_code == 104 and "does not exist" in r.output


def test_usage_errors_exit_2(cli):
    assert run(cli, "simulate", "event-day").exit_code == 2  # no -o
    assert run(cli, "simulate", "event-day", "-o", "x.grt", "--seed", "many").exit_code == 2


def test_progress_bar_on_request(cli, tmp_path):
    r = CliRunner().invoke(
        cli, ["simulate", "scanner-burst", "-o", str(tmp_path / "b.grt"), "--progress"]
    )
    assert r.exit_code == 0 and "simulating scanner-burst" in r.output
