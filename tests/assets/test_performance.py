"""assets/performance.model_performance: each day's metrics for the version that scored it, on the flights whose
arrival delay is known. The AUC is recomputed here in Python, from the predictions and the CSV's arrival delays."""

import pytest

from assets.performance import model_performance
from tests.world import DAYS, metadata_of


def python_auc(world, predictions_version: int) -> dict[str, float]:
    """Per day: the share of (delayed, on-time) pairs of flights that the probability orders right (ties: half)."""
    arr = world.col("arr_delay")
    labels = {
        (r[world.col("carrier")], r[world.col("flight")], r[world.col("origin")], world.day_of(r)): float(r[arr]) > 15
        for r in world.rows
        if r[arr] != "NA"
    }
    scores: dict[str, tuple[list[float], list[float]]] = {d: ([], []) for d in DAYS}
    for r in world.table("batch_predictions", predictions_version).collect():
        key = (r.carrier, str(r.flight), r.origin, r.event_date.isoformat())
        if key in labels:
            scores[key[3]][0 if labels[key] else 1].append(r.probability)
    out = {}
    for day, (delayed, on_time) in scores.items():
        right = sum((p > q) + 0.5 * (p == q) for p in delayed for q in on_time)
        out[day] = right / (len(delayed) * len(on_time))
    return out


def test_a_range_run_writes_one_row_per_day_and_version_with_its_metrics(world):
    result = world.results["model_performance"]
    meta = metadata_of(result, "model_performance", DAYS[0])
    predictions_version = meta["batch_predictions_delta_version"]
    assert (
        predictions_version
        == metadata_of(world.results["batch_predictions"], "batch_predictions", DAYS[0])["delta_version"]
    )
    auc = python_auc(world, predictions_version)
    rows = {r.event_date.isoformat(): r for r in world.table("model_performance", meta["delta_version"]).collect()}
    assert sorted(rows) == DAYS
    for day, r in rows.items():
        assert (r.model_version, r.metric_name) == ("1", "auc")
        assert (r.scored_rows, r.labelled_rows) == (world.features_per_day[day], world.labelled_per_day[day])
        assert r.auc == pytest.approx(auc[day], abs=1e-9) and r.primary_metric == r.auc
        assert 0.0 <= r.pr_auc <= 1.0 and 0.0 <= r.f1 <= 1.0 and r.log_loss > 0.0

    assert meta["metric_name"] == "auc" and meta["partition"] == "2013-02-01...2013-02-03"
    assert meta["primary_metric_by_day"] == {d: {"1": pytest.approx(auc[d], abs=1e-9)} for d in DAYS}
    assert meta["rows_with_labels"] == sum(world.labelled_per_day.values())
    assert meta["rows_without_labels"] == sum(world.features_per_day.values()) - sum(world.labelled_per_day.values())
    assert (meta["days_with_labels"], meta["days_without_labels"]) == (DAYS, [])
    assert meta["rows_written"] == meta["rows_written_in_run"] == 3 and "dagster/row_count" not in meta
    assert "primary_metric" not in meta and "model_version" not in meta  # one-day keys: a range has one per day
    assert meta["delta_version"] == world.commit_of("model_performance", result.run_id)[0]["version"] == 0
    assert {
        d: (m["1"]["labelled_rows"], m["1"]["scored_rows"], m["1"]["auc"]) for d, m in meta["metrics_by_day"].items()
    } == {d: (world.labelled_per_day[d], world.features_per_day[d], pytest.approx(auc[d], abs=1e-9)) for d in DAYS}


def test_a_one_day_run_records_that_day_s_metric_and_version(world):
    day = DAYS[1]
    version = world.version("model_performance")
    result = world.materialize(model_performance, partition_key=day)
    meta = metadata_of(result, "model_performance")
    auc = python_auc(world, meta["batch_predictions_delta_version"])[day]
    assert meta["primary_metric"] == pytest.approx(auc, abs=1e-9)
    assert meta["model_version"] == "1" and meta["primary_metric_by_version"] == {"1": pytest.approx(auc, abs=1e-9)}
    assert (meta["partition"], meta["dagster/row_count"], meta["rows_written"]) == (day, 1, 1)
    assert meta["delta_version"] == version + 1 == world.version("model_performance")
    assert world.history("model_performance")[0]["operationParameters"]["predicate"] == "event_date IN ('2013-02-02')"
    assert world.counts_by_day("model_performance") == dict.fromkeys(DAYS, 1)  # replaced, not appended
