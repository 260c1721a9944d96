"""assets/drift.feature_drift: each day's trailing window of features against the champion's training profile,
one row per (day, feature) in the Delta table drift_metrics."""

import pytest

from assets.common import SPEC
from assets.contracts import DRIFT_BY_DAY, DRIFT_METRICS
from assets.drift import feature_drift
from tests.world import DAYS, MODEL_NAME, metadata_of

FEATURES = set(SPEC.numeric_features) | set(SPEC.categorical_features)


def summary_of(rows) -> dict:
    """A day's summary, computed here from its drift_metrics rows with the policy's default thresholds."""
    drifted = [r for r in rows if r.psi > 0.2]
    share = len(drifted) / len(rows)
    return {
        "drifted": share >= 0.4,
        "share_drifted": pytest.approx(share),
        "max_psi": pytest.approx(max(r.psi for r in rows)),
    }


def test_a_range_run_judges_each_day_on_its_trailing_window(world):
    result = world.results["feature_drift"]
    meta = metadata_of(result, "feature_drift", DAYS[0])
    champion = world.client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert (meta["model_name"], meta["model_version"], meta["reference_run_id"]) == (MODEL_NAME, 1, champion.run_id)
    assert meta["partition"] == "2013-02-01...2013-02-03" and meta["days_without_features"] == []
    assert meta["rows_written_in_run"] == len(FEATURES) * 3 and "dagster/row_count" not in meta
    assert (meta["psi_threshold"], meta["share_threshold"], meta["window_days"]) == (0.2, 0.4, 14)
    assert meta["dagster/table_name"] == "main.flights.drift_metrics"
    assert meta["delta_version"] == world.commit_of(DRIFT_METRICS, result.run_id)[0]["version"] == 0

    rows = world.table(DRIFT_METRICS, meta["delta_version"]).collect()
    by_day: dict[str, list] = {}
    for r in rows:
        by_day.setdefault(r.event_date.isoformat(), []).append(r)
    assert sorted(by_day) == DAYS
    cumulative = 0
    for i, day in enumerate(DAYS):
        cumulative += world.features_per_day[day]
        assert {r.feature for r in by_day[day]} == FEATURES and len(by_day[day]) == len(FEATURES)
        # the trailing window: every world day up to this one (counted from the CSV), as many days as it holds
        assert {(r.rows, r.window_days) for r in by_day[day]} == {(cumulative, i + 1)}
        assert {(r.model_version, r.reference_run_id) for r in by_day[day]} == {("1", champion.run_id)}
        assert all((r.ks is None) == (r.kind == "categorical") and r.drifted == (r.psi > 0.2) for r in by_day[day])
    assert meta[DRIFT_BY_DAY] == {d: summary_of(by_day[d]) for d in DAYS}
    last = summary_of(by_day[DAYS[-1]])
    assert (meta["drifted"], meta["share_drifted"], meta["max_psi"]) == (
        last["drifted"],
        last["share_drifted"],
        last["max_psi"],
    )
    # Feb 1 is the day the champion was trained on: its window is its own training data, and it does not drift
    assert meta[DRIFT_BY_DAY][DAYS[0]]["drifted"] is False and meta[DRIFT_BY_DAY][DAYS[0]]["max_psi"] < 0.01


def test_a_one_day_run_judges_the_day_as_the_range_run_did(world):
    day = DAYS[2]
    range_rows = {r.feature: r for r in world.table(DRIFT_METRICS).where(f"event_date = '{day}'").collect()}
    version = world.version(DRIFT_METRICS)
    result = world.materialize(feature_drift, partition_key=day)
    meta = metadata_of(result, "feature_drift")
    assert (meta["partition"], meta["dagster/row_count"]) == (day, len(FEATURES))
    assert meta["delta_version"] == version + 1 == world.version(DRIFT_METRICS)
    rows = {r.feature: r for r in world.table(DRIFT_METRICS).where(f"event_date = '{day}'").collect()}
    assert {f: (r.rows, r.window_days, r.drifted) for f, r in rows.items()} == {
        f: (r.rows, r.window_days, r.drifted) for f, r in range_rows.items()
    }
    assert {f: r.psi for f, r in rows.items()} == pytest.approx({f: r.psi for f, r in range_rows.items()})
    assert world.counts_by_day(DRIFT_METRICS) == dict.fromkeys(DAYS, len(FEATURES))


def test_a_day_without_features_is_refused_and_nothing_is_written(world):
    version = world.version(DRIFT_METRICS)
    result = world.materialize(feature_drift, partition_key="2013-03-01", raise_on_error=False)
    assert not result.success
    features = world.version("validated_features")
    assert (
        f"validated_features v{features} has no rows for 2013-03-01: materialize validated_features for those "
        "days first"
    ) in str(result.failure_data_for_node("feature_drift").error)
    assert world.version(DRIFT_METRICS) == version
