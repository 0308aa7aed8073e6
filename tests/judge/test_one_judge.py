"""One judge: a result table judged as a replay's (judge.report) and as a prediction (sim.predict)
gives the same metrics and the same verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings

from judge import metrics as m
from judge import report as rep
from judge import thresholds as th
from judge.resultlog import ResultHeader, ResultRow, ResultWriter
from sim import predict as pr
from tests.judge.strategies import result_tables, threshold_sets


def replay_path(table: pa.Table, mapping: dict) -> tuple[m.Metrics, list[th.Verdict]]:
    """What `replay` and `report` do with a run's rows (after reading them): judge_run."""
    header = ResultHeader(run_id="r", target_url="http://127.0.0.1:1", trace_path="t.grt")
    merged, start = m.merge_tables([(table, header.scenario, header.start_unix_us)])
    results = rep.Results(("r.parquet",), (header,), merged, start)
    judged = rep.judge_run(results, th.parse_mapping(mapping))
    return judged.metrics, judged.verdicts


def assert_same_metrics(a: m.Metrics, b: m.Metrics) -> None:
    assert a.duration_s == b.duration_s
    assert a.checks == b.checks and a.failed_groups == b.failed_groups
    assert a.failed_group_count == b.failed_group_count
    for name in m.METRICS:
        x, y = a.get(name), b.get(name)
        assert np.array_equal(x.values, y.values) and np.array_equal(x.t_us, y.t_us), name
        for tag in m.TAGS:
            tx, ty = x.tags.get(tag), y.tags.get(tag)
            assert (tx is None) == (ty is None), (name, tag)
            if tx is not None:
                lx = [tx.labels[i] for i in tx.codes]
                assert lx == [ty.labels[i] for i in ty.codes], (name, tag)


def same_verdict(a: th.Verdict, b: th.Verdict) -> bool:
    same_value = a.observed == b.observed or (np.isnan(a.observed) and np.isnan(b.observed))
    return (a.threshold, a.ok, a.samples, a.empty, a.window) == (
        b.threshold, b.ok, b.samples, b.empty, b.window,
    ) and same_value  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(table=result_tables(), mapping=threshold_sets(exclude=pr.UNPREDICTED))
def test_replay_and_prediction_paths_judge_a_table_alike(table, mapping):
    """The same rows and thresholds: identical metrics, identical verdicts (the replay adds its
    default thresholds for what the set leaves uncovered; those are its own, judged apart)."""
    metrics_r, verdicts_r = replay_path(table, mapping)
    metrics_p, judged_p = pr.judge_prediction(table, mapping)
    assert_same_metrics(metrics_r, metrics_p)
    given_ = th.parse_mapping(mapping)
    assert [v.threshold for v in verdicts_r[: len(given_)]] == list(given_)
    assert all(same_verdict(a, b) for a, b in zip(verdicts_r, judged_p.verdicts, strict=False))
    assert len(judged_p.verdicts) == len(given_)
    extra = verdicts_r[len(given_) :]
    assert {v.threshold.selector.metric for v in extra} <= set(th.DEFAULT_THRESHOLDS)


@settings(max_examples=40, deadline=None)
@given(table=result_tables(), mapping=threshold_sets())
def test_unpredicted_metrics_are_the_only_difference(table, mapping):
    """A metric the capacity model does not predict holds on no samples in a prediction; a replay
    without samples of it fails (no samples is no evidence). Every other verdict is the same."""
    _, verdicts_r = replay_path(table, mapping)
    _, judged_p = pr.judge_prediction(table, mapping)
    for a, b in zip(verdicts_r, judged_p.verdicts, strict=False):
        if a.threshold.selector.metric not in pr.UNPREDICTED:
            assert same_verdict(a, b)
        elif a.empty:
            assert b.ok and b.empty
        else:  # judged on its samples alike; only the flag that says "no samples hold" differs
            assert b.threshold == dataclasses.replace(a.threshold, allow_empty=True)
            assert same_verdict(dataclasses.replace(a, threshold=b.threshold), b)


def test_a_result_file_read_back_is_judged_as_the_prediction_judges_its_rows(tmp_path: Path):
    """Through the file: the replay writes rows, `report` reads and judges them."""
    rows = [
        ResultRow(i, "rpc:scan_ticket_atomic", "scan", f"a:{i}", i * 1000, i * 1000 + 10,
                  i * 1000 + 5000 + (i % 7) * 3000, 500 if i % 13 == 0 else 200, None, 100, 50,
                  "valid", "valid")
        for i in range(300)
    ]  # fmt: skip
    path = tmp_path / "r.parquet"
    mapping = {"http_req_duration": ["p(95)<20", "max<10"], "http_req_failed": ["rate<0.05"],
               "schedule_lag": ["p(99)<1"], "checks": ["rate>0.9 over 1s"]}  # fmt: skip
    with ResultWriter(path, ResultHeader(run_id="r", target_url="http://127.0.0.1:1",
                                         trace_path="t.grt", thresholds=mapping)) as w:  # fmt: skip
        for r in rows:
            w.add(r)
        w.close()
    loaded = rep.load([path])
    judged = rep.judge_run(loaded)
    metrics_p, judged_p = pr.judge_prediction(loaded.table, mapping)
    assert_same_metrics(judged.metrics, metrics_p)
    assert len(judged.verdicts) == len(judged_p.verdicts) == 5
    assert all(same_verdict(a, b) for a, b in zip(judged.verdicts, judged_p.verdicts, strict=True))
    assert [v.ok for v in judged_p.verdicts] == [False, False, False, True, True]
