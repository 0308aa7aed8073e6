"""Sweeps: grids, the same table whatever runs it (1 process, a pool, Dask), the page, bad grids."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sim import scenario
from sim import sweep as sw
from sim.scenario import ScenarioError
from tests.sim.study_hooks import cli

SMALL = [
    "arrivals.attendees=600",
    "arrivals.duration_s=120",
    "gate.departures=false",
    "event.presold=2000",
]


def small_data() -> dict:
    return scenario.load("scanner-burst", ["arrivals.profile=constant", *SMALL]).to_dict()


def test_grid_values_and_points():
    data = small_data()
    axes = sw.parse_grid(
        data, ["gate.lanes=2,4,8", "gate.service.mean=1..2:0.5", "gate.queue=shortest,shared"]
    )
    assert [a.values for a in axes] == [(2, 4, 8), (1.0, 1.5, 2.0), ("shortest", "shared")]
    pts = sw.points(axes)
    assert len(pts) == 18 and pts[0] == {
        "gate.lanes": 2,
        "gate.service.mean": 1.0,
        "gate.queue": "shortest",
    }
    assert pts[1]["gate.queue"] == "shared"  # the last axis varies fastest


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("gate.lanse=1,2", "gate.lanse"),  # unknown key
        ("gate.lanes=8..4", "empty range"),
        ("gate.lanes=4..8:0", "STEP > 0"),
        ("gate.lanes=2,2.5", "gate.lanes"),  # wrong type
        ("gate.lanes=two,three", "gate.lanes"),
        ("gate.queue=shortest,fifo", "gate.queue"),  # not a choice
        ("gate.lanes", "KEY=v1,v2"),
        ("gate.lanes=", "KEY=v1,v2"),
        ("gate.lanes=2,,3", "empty value"),
        ("gate.lanes=2,2", "repeated"),
        (
            "gate.service=1,2",
            "table",
        ),  # a number is a fixed distribution, but the key holds a table
    ],
)
def test_bad_grid_is_invalid_input_naming_it(spec, names, tmp_path):
    with pytest.raises(ScenarioError, match=names.replace(".", r"\.")):
        sw.parse_grid(small_data(), [spec])
    r = CliRunner().invoke(
        cli(), ["sweep", "scanner-burst", "--grid", spec, "-o", str(tmp_path / "t.parquet")]
    )
    assert r.exit_code == 104, r.output
    assert "Traceback" not in r.output and not (tmp_path / "t.parquet").exists()


def test_pool_and_single_process_give_the_same_table():
    data = small_data()
    axes = sw.parse_grid(data, ["gate.lanes=1,2,4", "arrivals.attendees=300,600"])
    one, _ = sw.sweep(data, axes, processes=1)
    two, _ = sw.sweep(data, axes, processes=2)
    assert one.equals(two)
    rows = one.to_pylist()
    assert [(r["gate.lanes"], r["arrivals.attendees"]) for r in rows] == [
        (1, 300),
        (1, 600),
        (2, 300),
        (2, 600),
        (4, 300),
        (4, 600),
    ]
    # more lanes never lengthen the wait of the same crowd (common random numbers)
    for n in (300, 600):
        waits = [r["gate_wait_p95_s"] for r in rows if r["arrivals.attendees"] == n]
        assert waits == sorted(waits, reverse=True) and waits[0] > waits[-1]
    assert all(r["ok"] for r in rows) and "http_req_failed: rate==0" in one.column_names


def test_dask_local_cluster_gives_the_same_table():
    distributed = pytest.importorskip("distributed")
    data = small_data()
    axes = sw.parse_grid(data, ["gate.lanes=1,4", "arrivals.attendees=300,600"])
    local, _ = sw.sweep(data, axes)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as c:
        address = "dask://" + c.scheduler_address.removeprefix("tcp://")
        on_dask, _ = sw.sweep(data, axes, scheduler=address)
    assert on_dask.equals(local)


def test_cli_writes_the_table_and_the_page(tmp_path):
    out, page = tmp_path / "grid.parquet", tmp_path / "grid.html"
    args = ["sweep", "scanner-burst", *[a for s in SMALL + ["arrivals.profile=constant"] for a in ("--set", s)],
            "--grid", "gate.lanes=1,2,4", "--grid", "arrivals.attendees=300,600",
            "-o", str(out), "--html", str(page), "--processes", "2"]  # fmt: skip
    r = CliRunner().invoke(cli(), args)
    assert r.exit_code == 0, r.output
    assert "6 points" in r.output and "6 of 6 hold every threshold" in r.output
    t = pq.read_table(out)
    assert t.column_names[:2] == ["gate.lanes", "arrivals.attendees"] and t.num_rows == 6
    assert t.schema.metadata[b"gaterush.scenario"] == b"scanner-burst"
    html = page.read_text()
    # one chart per metric against lanes, a line per crowd size
    assert html.count("<svg") >= 3 and 'data-title="p95 gate wait (s) against gate.lanes"' in html
    assert (
        'data-label="arrivals.attendees=300"' in html
        and 'data-label="arrivals.attendees=600"' in html
    )


def test_page_without_plots_has_the_table():
    data = small_data()
    axes = sw.parse_grid(data, ["gate.lanes=1,2"])
    table, _ = sw.sweep(data, axes, judged=False)
    page = sw.render_html(table, axes, plots=False)
    assert "<svg" not in page and page.count("<tr>") == 3 and "ok" not in table.column_names
    assert "<svg" in sw.render_html(table, axes)


def test_bad_scheduler_and_x_are_invalid_input(tmp_path):
    base = ["sweep", "scanner-burst", "--grid", "gate.lanes=1,2", "-o", str(tmp_path / "t.parquet")]
    r = CliRunner().invoke(cli(), [*base, "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 104 and "dask://HOST:PORT" in r.output
    r = CliRunner().invoke(cli(), [*base, "--x", "gate.queue"])
    assert r.exit_code == 104 and "--x" in r.output
