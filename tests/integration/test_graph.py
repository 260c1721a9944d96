"""The whole graph, materialized in-process on ten days of real flights, with real Spark, Delta, MLflow and a
persistent Dagster instance. Asserts contents: counts reconcile, aliases resolve, reruns are idempotent."""

import csv
import io
import json
import zipfile
from datetime import date

import pytest
import yaml
from dagster import AssetKey, DagsterInstance
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from ml.datasets.flights import SPEC, package_data_dir
from ml.metrics import evaluate
from ml.registry import register_version
from orchestration.definitions import INGEST_KEYS
from tests.conftest import build_world, latest_metadata, table
from tests.integration.backfill import run_backfill

START, END = "2013-01-01", "2013-01-10"
RANGE = {"dagster/asset_partition_range_start": START, "dagster/asset_partition_range_end": END}
SPLIT = {"end_date": END, "train_days": 5, "validation_days": 2, "test_days": 3}


def source_rows_per_day(first: date, last: date) -> dict[str, int]:
    """Count flights per local date straight from the package's CSV, independently of Spark."""
    counts: dict[str, int] = {}
    with zipfile.ZipFile(package_data_dir() / "flights.csv.zip") as zf, zf.open("flights.csv") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
            d = date(int(row["year"]), int(row["month"]), int(row["day"]))
            if first <= d <= last:
                counts[d.isoformat()] = counts.get(d.isoformat(), 0) + 1
    return counts


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def materialized(world):
    defs, instance, resources, _ = world
    daily, training = defs.resolve_job_def("daily_job"), defs.resolve_job_def("training_job")
    ingest = daily.execute_in_process(
        instance=instance,
        tags=RANGE,
        asset_selection=INGEST_KEYS,
    )
    train = training.execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "splits": {"config": SPLIT},
                "tuned_pipeline": {"config": {"n_trials": 2, "algorithms": ["logistic_regression"]}},
            }
        },
    )
    scoring = daily.execute_in_process(
        instance=instance, tags=RANGE, asset_selection=[AssetKey("batch_predictions"), AssetKey("model_performance")]
    )
    assert ingest.success and train.success and scoring.success
    return ingest, train, scoring


def test_row_counts_reconcile_from_source_to_predictions(spark, world, materialized):
    _, instance, resources, _ = world
    expected = source_rows_per_day(date(2013, 1, 1), date(2013, 1, 10))
    raw = table(spark, resources, "raw_data")
    per_day = {r["event_date"].isoformat(): r["count"] for r in raw.groupBy("event_date").count().collect()}
    assert per_day == expected  # every flight lands in its local-date partition, none lost or duplicated

    features = table(spark, resources, "validated_features")
    assert features.count() == raw.count() == sum(expected.values())
    labelled = features.where("label IS NOT NULL").count()
    splits = {s: table(spark, resources, f"{s}_set").count() for s in ("train", "validation", "test")}
    assert sum(splits.values()) == labelled
    assert all(n > 0 for n in splits.values())
    assert table(spark, resources, "batch_predictions").count() == features.count()

    meta = latest_metadata(instance, "validated_features")
    assert meta["rows_written_in_run"].value == features.count()  # a 10-day range in one run
    assert "dagster/row_count" not in meta  # it would claim the range's rows for every single day
    assert meta["partition"].value == "2013-01-01...2013-01-10"
    assert meta["dagster/uri"].value.startswith("file://")
    assert [c.name for c in meta["dagster/column_schema"].value.columns][:3] == ["carrier", "flight", "origin"]


def test_every_prediction_resolves_to_the_champion_and_its_lineage(spark, world, materialized):
    _, instance, resources, _ = world
    _, train, _ = materialized
    client = resources["mlflow"].client
    name = resources["lakehouse"].model_name
    assert name == "main.flights.arrival_delay"
    champion = client.get_model_version_by_alias(name, "champion")
    used = (
        table(spark, resources, "batch_predictions")
        .select("model_name", "model_version", "model_run_id")
        .distinct()
        .collect()
    )
    assert [tuple(r) for r in used] == [(name, str(champion.version), champion.run_id)]

    run = client.get_run(champion.run_id)
    assert run.data.tags["dagster.run_id"] == train.run_id
    assert run.data.tags["input.train_set.delta_version"] == "0"
    version_tags = client.get_model_version(name, champion.version).tags
    assert version_tags["gate.decision"] == "promoted" and version_tags["dagster.run_id"] == train.run_id

    gate_meta = latest_metadata(instance, "registered_model")
    assert gate_meta["gate_decision"].value == "promoted"
    assert gate_meta["champion_version"].value == str(champion.version)
    pred_meta = latest_metadata(instance, "batch_predictions")
    assert pred_meta["model_version"].value == int(champion.version)
    assert pred_meta["model_run_id"].value == champion.run_id


def content(spark, resources, name):
    """A table's rows without the columns that record when they were computed."""
    return table(spark, resources, name).drop("scored_at", "computed_at", "quarantined_at")


def test_rematerializing_a_partition_leaves_the_same_rows(spark, world, materialized):
    defs, instance, resources, _ = world
    tables = ("raw_data", "validated_features", "quarantine", "batch_predictions", "model_performance")
    before = {t: content(spark, resources, t).cache() for t in tables}
    counts = {t: df.count() for t, df in before.items()}
    raw_version = latest_metadata(instance, "raw_data")["delta_version"].value
    result = defs.resolve_job_def("daily_job").execute_in_process(instance=instance, partition_key="2013-01-03")
    assert result.success
    for t, old in before.items():
        new = content(spark, resources, t)
        assert new.count() == counts[t]
        assert new.exceptAll(old).count() == 0 and old.exceptAll(new).count() == 0
        old.unpersist()
    assert latest_metadata(instance, "raw_data")["delta_version"].value == raw_version + 1  # the day, replaced
    assert (
        latest_metadata(instance, "raw_data")["dagster/row_count"].value
        == source_rows_per_day(date(2013, 1, 3), date(2013, 1, 3))["2013-01-03"]
    )
    # Delta's log shows a replace of that day by this run, not an append
    last = delta_history(spark, resources, "batch_predictions")[0]
    assert last["operation"] == "WRITE" and last["operationParameters"]["mode"] == "Overwrite"
    assert last["operationParameters"]["predicate"] == "event_date >= '2013-01-03' AND event_date < '2013-01-04'"
    assert json.loads(last["userMetadata"])["dagster_run_id"] == result.run_id
    day_rows = table(spark, resources, "batch_predictions").where("event_date = '2013-01-03'").count()
    assert int(last["operationMetrics"]["numOutputRows"]) == day_rows
    assert int(last["operationMetrics"]["numRemovedFiles"]) >= 1  # the day's previous files, logically removed

    # The run above wrote drift_metrics for the day (daily_job ends with feature_drift): a rerun of it, the same.
    drift = content(spark, resources, "drift_metrics").cache()
    assert drift.where("event_date = '2013-01-03'").count() == len(SPEC.features)
    again = defs.resolve_job_def("daily_job").execute_in_process(
        instance=instance, partition_key="2013-01-03", asset_selection=[AssetKey("feature_drift")]
    )
    assert again.success
    new = content(spark, resources, "drift_metrics")
    assert new.exceptAll(drift).count() == 0 and drift.exceptAll(new).count() == 0
    drift.unpersist()


def delta_history(spark, resources, name) -> list:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, resources["lakehouse"].table_path(name)).history().collect()


def test_model_performance_has_the_metrics_of_every_day_with_labels(spark, world, materialized):
    _, _, resources, _ = world
    _, _, scoring = materialized
    perf = {r.event_date.isoformat(): r for r in table(spark, resources, "model_performance").collect()}
    features = table(spark, resources, "validated_features")
    per_day = {
        r.event_date.isoformat(): (r.n, r.labelled)
        for r in features.groupBy("event_date")
        .agg(F.count("*").alias("n"), F.count("label").alias("labelled"))
        .collect()
    }
    assert sorted(perf) == sorted(per_day) == [f"2013-01-{d:02d}" for d in range(1, 11)]
    champion = resources["mlflow"].client.get_model_version_by_alias(resources["lakehouse"].model_name, "champion")
    for day, row in perf.items():
        assert (row.scored_rows, row.labelled_rows) == per_day[day]
        assert row.model_version == str(champion.version) and row.metric_name == "auc"
        assert row.primary_metric == row.auc and 0.5 < row.auc < 1.0
    # one day, computed independently by Spark's own evaluators on the joined rows
    day = "2013-01-05"
    preds = table(spark, resources, "batch_predictions").where(f"event_date = '{day}'")
    joined = preds.join(
        features.select("carrier", "flight", "origin", "event_date", "label"),
        ["carrier", "flight", "origin", "event_date"],
    ).where("label IS NOT NULL")
    joined = joined.withColumn(
        "probability", array_to_vector(F.array(1.0 - F.col("probability"), F.col("probability")))
    )
    expected = evaluate(joined, "classification")
    for metric, value in expected.items():
        assert perf[day][metric] == pytest.approx(value, rel=1e-9), metric

    meta = scoring.asset_materializations_for_node("model_performance")[0].metadata
    assert meta["metric_name"].value == "auc"
    assert meta["partition"].value == "2013-01-01...2013-01-10"
    assert meta["rows_written_in_run"].value == 10  # one row per day and version; a range run
    assert meta["rows_with_labels"].value == sum(n for _, n in per_day.values())
    assert meta["rows_without_labels"].value == sum(n - labelled for n, labelled in per_day.values())  # cancelled
    assert meta["days_without_labels"].value == []
    assert meta["primary_metric_by_day"].value[day] == {str(champion.version): pytest.approx(expected["auc"])}
    assert meta["metrics_by_day"].value[day][str(champion.version)]["labelled_rows"] == per_day[day][1]
    assert meta["dagster/uri"].value.endswith("/main/flights/model_performance")
    assert "primary_metric" not in meta  # a range: the per-day values are the answer


def test_drift_closes_the_loop_through_the_sensor_and_the_gate(spark, world, materialized):
    """feature_drift -> sensor -> training run -> challenger -> gate decision. The thresholds are lowered so
    that these January days count as drifted (real seasonal drift is asserted in test_drift_real.py). It runs
    before the tests that register copies of the champion, so the champion is still the one `materialized` made."""
    from dagster import build_sensor_context

    from orchestration.sensors import RetrainPolicy, build_retrain_sensor

    defs, instance, resources, _ = world
    client, name = resources["mlflow"].client, resources["lakehouse"].model_name
    champion = client.get_model_version_by_alias(name, "champion")
    drift = defs.resolve_job_def("daily_job").execute_in_process(
        instance=instance,
        asset_selection=[AssetKey("feature_drift")],
        tags={"dagster/asset_partition_range_start": "2013-01-08", "dagster/asset_partition_range_end": END},
        run_config={
            "ops": {"feature_drift": {"config": {"psi_threshold": 0.0, "share_threshold": 0.0, "window_days": 3}}}
        },
    )
    assert drift.success
    meta = latest_metadata(instance, "feature_drift")
    assert meta["model_version"].value == int(champion.version) and meta["reference_run_id"].value == champion.run_id
    assert sorted(meta["drift_by_day"].value) == ["2013-01-08", "2013-01-09", "2013-01-10"]
    assert all(d["drifted"] for d in meta["drift_by_day"].value.values())
    drift_table = table(spark, resources, "drift_metrics").where("event_date >= '2013-01-08'")
    assert drift_table.count() == 3 * len(SPEC.features) and drift_table.where("psi IS NULL").count() == 0

    policy = RetrainPolicy(
        consecutive_days=3,
        run_config={
            "ops": {
                "splits": {"config": {k: v for k, v in SPLIT.items() if k != "end_date"}},
                "tuned_pipeline": {"config": {"n_trials": 2, "algorithms": ["logistic_regression"]}},
            }
        },
    )
    sensor = build_retrain_sensor("training_job", policy)
    (request,) = sensor.evaluate_tick(build_sensor_context(instance=instance)).run_requests
    assert request.run_key == f"retrain-{END}" and request.tags["flightline/trigger"] == "feature drift"

    retrain = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags
    )
    assert retrain.success
    gate_meta = retrain.asset_materializations_for_node("registered_model")[0].metadata
    new_version = str(gate_meta["model_version"].value)
    # The sensor's run trains on the champion's own window (its end_date is the last drifted day, END), seeded:
    # the same model again, which must not flip the champion. It stays the challenger.
    assert gate_meta["gate_decision"].value == "rejected"
    assert "does not beat champion" in gate_meta["gate_reason"].value
    tags = client.get_model_version(name, new_version).tags
    assert tags["gate.decision"] == "rejected" and tags["dagster.run_id"] == retrain.run_id
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    assert str(client.get_model_version_by_alias(name, "challenger").version) == new_version


def test_after_a_promotion_scoring_uses_the_new_version(spark, world, materialized):
    defs, instance, resources, _ = world
    client, name = resources["mlflow"].client, resources["lakehouse"].model_name
    daily = defs.resolve_job_def("daily_job")
    day = "2013-01-07"
    old = client.get_model_version_by_alias(name, "champion")
    lineage = {k: v for k, v in old.tags.items() if not k.startswith("gate.")}
    new = register_version(client, name, old.source, old.run_id, "promotion test", lineage)
    before = content(spark, resources, "batch_predictions").cache()
    count = before.count()

    def score_day():
        result = daily.execute_in_process(
            instance=instance, partition_key=day, asset_selection=[AssetKey("batch_predictions")]
        )
        assert result.success
        return result.asset_materializations_for_node("batch_predictions")[0].metadata

    client.set_registered_model_alias(name, "champion", str(new.version))
    try:
        meta = score_day()
    finally:
        client.set_registered_model_alias(name, "champion", str(old.version))
    after = content(spark, resources, "batch_predictions")
    used = {
        tuple(r)
        for r in after.where(f"event_date = '{day}'").select("model_version", "model_run_id").distinct().collect()
    }
    assert used == {(str(new.version), new.run_id)}
    assert meta["model_version"].value == int(new.version)
    assert after.where(f"event_date != '{day}'").exceptAll(before.where(f"event_date != '{day}'")).count() == 0
    assert after.count() == count

    assert score_day()["model_version"].value == int(old.version)  # promoted back: the old version again
    after = content(spark, resources, "batch_predictions")
    assert after.exceptAll(before).count() == 0 and before.exceptAll(after).count() == 0
    before.unpersist()


def test_the_spark_udf_scorer_predicts_the_same_and_writes_no_probability(spark, world, materialized):
    defs, instance, resources, _ = world
    daily = defs.resolve_job_def("daily_job")
    day, keys = "2013-01-08", ["carrier", "flight", "origin", "event_date", "prediction", "model_version"]
    native = table(spark, resources, "batch_predictions").where(f"event_date = '{day}'").select(*keys).cache()
    assert native.count() > 0
    result = daily.execute_in_process(
        instance=instance,
        partition_key=day,
        asset_selection=[AssetKey("batch_predictions")],
        run_config={"ops": {"batch_predictions": {"config": {"scorer": "spark_udf"}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("batch_predictions")[0].metadata
    assert meta["scorer"].value == "spark_udf" and meta["probability_available"].value is False
    udf = table(spark, resources, "batch_predictions").where(f"event_date = '{day}'")
    assert udf.where("probability IS NOT NULL").count() == 0
    assert udf.select(*keys).exceptAll(native).count() == 0 and native.exceptAll(udf.select(*keys)).count() == 0

    result = daily.execute_in_process(
        instance=instance, partition_key=day, asset_selection=[AssetKey("batch_predictions")]
    )
    meta = result.asset_materializations_for_node("batch_predictions")[0].metadata
    assert meta["scorer"].value == "native" and meta["probability_available"].value is True
    assert (
        table(spark, resources, "batch_predictions").where(f"event_date = '{day}' AND probability IS NULL").count() == 0
    )
    native.unpersist()


def test_a_backfill_of_a_range_is_one_run_and_one_commit(spark, world, materialized):
    """Launched as the daemon launches a backfill: BackfillPolicy.single_run() makes the range one run."""
    _, _, resources, state = world
    days = ["2013-01-04", "2013-01-05", "2013-01-06"]
    counts_before = {t: table(spark, resources, t).count() for t in ("batch_predictions", "model_performance")}
    backfill, runs = run_backfill(state, ["batch_predictions", "model_performance"], days)
    assert backfill.status.value == "COMPLETED_SUCCESS"
    assert len(runs) == 1
    run = runs[0]
    assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
        days[0],
        days[-1],
    )
    for t in ("batch_predictions", "model_performance"):
        commits = [
            h
            for h in delta_history(spark, resources, t)
            if h["userMetadata"] and json.loads(h["userMetadata"])["dagster_run_id"] == run.run_id
        ]
        assert len(commits) == 1, t  # the three days in one Delta commit
        assert table(spark, resources, t).count() == counts_before[t]
    written = {
        r.event_date.isoformat(): r["count"]
        for r in table(spark, resources, "batch_predictions")
        .where("event_date BETWEEN '2013-01-04' AND '2013-01-06'")
        .groupBy("event_date")
        .count()
        .collect()
    }
    features = {
        r.event_date.isoformat(): r["count"]
        for r in table(spark, resources, "validated_features")
        .where("event_date BETWEEN '2013-01-04' AND '2013-01-06'")
        .groupBy("event_date")
        .count()
        .collect()
    }
    assert written == features and sorted(written) == days
    commit = next(
        h
        for h in delta_history(spark, resources, "batch_predictions")
        if h["userMetadata"] and json.loads(h["userMetadata"])["dagster_run_id"] == run.run_id
    )
    assert int(commit["operationMetrics"]["numOutputRows"]) == sum(features.values())


def test_tables_are_real_delta_for_an_independent_reader(world, materialized):
    from deltalake import DeltaTable

    _, _, resources, _ = world
    for name in ("raw_data", "validated_features", "train_set", "batch_predictions"):
        dt = DeltaTable(resources["lakehouse"].table_path(name))
        assert dt.version() >= 0
        assert dt.to_pyarrow_dataset().count_rows() > 0
    assert DeltaTable(resources["lakehouse"].table_path("raw_data")).metadata().partition_columns == ["event_date"]


def test_the_rollback_job_moves_the_champion_and_scoring_follows(spark, world, materialized, tmp_path):
    from ml.registry import register_version

    defs, instance, resources, _ = world
    client, name = resources["mlflow"].client, resources["lakehouse"].model_name
    champion = client.get_model_version_by_alias(name, "champion")
    lineage = {k: v for k, v in champion.tags.items() if not k.startswith("gate.")}
    other = str(
        register_version(client, name, champion.source, champion.run_id, "a copy, to roll to and back", lineage).version
    )
    config = tmp_path / "rollback.yaml"
    config.write_text(
        f"ops:\n  set_champion_version:\n    config:\n      version: {other}\n"
        f"      requested_by: ops@example.com\n      reason: 'INC-7: roll to v{other}'\n"
    )

    # The README's config file, as `dagster job execute -j rollback_job -c` reads it (that command runs in
    # make test-reliability, racing a gate); in-process here, to spare a JVM start.
    rolled = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance, run_config=yaml.safe_load(config.read_text())
    )
    assert rolled.success

    assert str(client.get_model_version_by_alias(name, "champion").version) == other
    observed = DagsterInstance.from_ref(instance.get_ref()).fetch_observations(AssetKey("registered_model"), limit=1)
    meta = observed.records[0].asset_observation.metadata
    assert {k: meta[k].value for k in ("champion_version", "previous_champion_version", "requested_by", "reason")} == {
        "champion_version": other,
        "previous_champion_version": str(champion.version),
        "requested_by": "ops@example.com",
        "reason": f"INC-7: roll to v{other}",
    }
    scored = defs.resolve_job_def("daily_job").execute_in_process(
        instance=instance, partition_key="2013-01-03", asset_selection=[AssetKey("batch_predictions")]
    )
    assert scored.success
    day = table(spark, resources, "batch_predictions").where("event_date = '2013-01-03'")
    assert [r.model_version for r in day.select("model_version").distinct().collect()] == [other]

    back = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "set_champion_version": {
                    "config": {
                        "version": int(champion.version),
                        "requested_by": "ops@example.com",
                        "reason": "INC-7 resolved",
                    }
                }
            }
        },
    )
    assert back.success
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    assert client.get_model_version(name, str(champion.version)).tags["champion.previous_version"] == other
