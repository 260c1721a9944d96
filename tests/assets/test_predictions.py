"""assets/predictions.batch_predictions: every flight of each day scored by the @champion version, pinned."""

import json

from pyspark.sql import functions as F

from assets.predictions import batch_predictions
from tests.world import DAYS, MODEL_NAME, metadata_of


def champion(world):
    return world.client.get_model_version_by_alias(MODEL_NAME, "champion")


def test_a_range_run_scores_every_flight_of_every_day_with_the_champion(world):
    result = world.results["batch_predictions"]
    meta = metadata_of(result, "batch_predictions", DAYS[2])
    total = sum(world.features_per_day.values())  # every flight that passed the gate, labelled or not
    v = champion(world)
    assert str(v.version) == "1"
    assert (meta["model_name"], meta["model_version"], meta["model_run_id"]) == (MODEL_NAME, 1, v.run_id)
    assert meta["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert (meta["scorer"], meta["probability_available"]) == ("native", True)
    assert meta["rows_scored"] == meta["rows_written_in_run"] == total and "dagster/row_count" not in meta
    assert meta["partition"] == "2013-02-01...2013-02-03" and meta["delta_version"] == 0
    assert (
        meta["validated_features_delta_version"]
        == metadata_of(world.results["validated_features"], "validated_features", DAYS[0])["delta_version"]
    )

    predictions = world.table("batch_predictions", version=0)
    assert world.counts_by_day("batch_predictions", version=0) == world.features_per_day
    assert [
        tuple(r) for r in predictions.select("model_name", "model_version", "model_run_id").distinct().collect()
    ] == [(MODEL_NAME, "1", v.run_id)]
    assert predictions.select("carrier", "flight", "origin", "event_date").distinct().count() == total
    stats = predictions.agg(
        F.min("probability").alias("low"),
        F.max("probability").alias("high"),
        F.count("probability").alias("n"),
        F.sum(F.when((F.col("probability") > 0.5) != (F.col("prediction") == 1.0), 1).otherwise(0)).alias("disagree"),
    ).first()
    assert stats.n == total and 0.0 <= stats.low <= stats.high <= 1.0 and stats.disagree == 0
    [commit] = world.commit_of("batch_predictions", result.run_id)
    lineage = json.loads(commit["userMetadata"])
    assert (lineage["model_uri"], lineage["scorer"]) == (f"models:/{MODEL_NAME}/1", "native")


def test_a_one_day_rerun_replaces_that_day_with_the_same_scores(world):
    day = DAYS[2]
    before = {
        r.flight_key: r.probability
        for r in world.table("batch_predictions")
        .where(f"event_date = '{day}'")
        .select(F.concat_ws("|", "carrier", "flight", "origin").alias("flight_key"), "probability")
        .collect()
    }
    counts, version = world.counts_by_day("batch_predictions"), world.version("batch_predictions")
    result = world.materialize(batch_predictions, partition_key=day)
    meta = metadata_of(result, "batch_predictions")
    assert (meta["partition"], meta["dagster/row_count"], meta["rows_scored"]) == (
        day,
        world.features_per_day[day],
        world.features_per_day[day],
    )
    assert meta["delta_version"] == version + 1 == world.version("batch_predictions")
    assert world.history("batch_predictions")[0]["operationParameters"]["predicate"] == (
        "event_date >= '2013-02-03' AND event_date < '2013-02-04'"
    )
    assert world.counts_by_day("batch_predictions") == counts
    after = {
        r.flight_key: r.probability
        for r in world.table("batch_predictions")
        .where(f"event_date = '{day}'")
        .select(F.concat_ws("|", "carrier", "flight", "origin").alias("flight_key"), "probability")
        .collect()
    }
    assert after == before  # the same pinned version scores the same day the same way


def test_without_a_champion_nothing_is_scored_or_written(world):
    version = world.version("batch_predictions")
    result = world.materialize(
        batch_predictions, partition_key=DAYS[0], raise_on_error=False, lake=world.lake.replaced(model="never_trained")
    )
    assert not result.success
    assert (
        "model main.flights.never_trained has no version with the alias @champion: run the training job first"
        in str(result.failure_data_for_node("batch_predictions").error)
    )
    assert world.version("batch_predictions") == version
