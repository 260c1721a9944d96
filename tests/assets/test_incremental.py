"""assets/incremental.incremental_predictions on the shared world: every feature row of validated_features scored by
the @champion once, from the table's change data feed, with the lineage metadata; a second run with nothing new
scores nothing."""

from assets.incremental import incremental_predictions
from tests.world import MODEL_NAME, metadata_of

KEYS = ["carrier", "flight", "origin", "event_date"]


def test_incremental_predictions_has_exactly_one_prediction_per_feature_row(world):
    features_version = world.version("validated_features")
    result = world.materialize(incremental_predictions)
    meta = metadata_of(result, "incremental_predictions")
    total = sum(world.features_per_day.values())
    champion = world.client.get_model_version_by_alias(MODEL_NAME, "champion")

    predictions = world.table("incremental_predictions")
    features = world.table("validated_features")
    assert predictions.count() == total == features.count()
    assert predictions.select(*KEYS).distinct().count() == total  # no duplicates
    assert features.join(predictions, KEYS, "left_anti").count() == 0  # nothing missing
    assert [
        tuple(r) for r in predictions.select("model_name", "model_version", "model_run_id").distinct().collect()
    ] == [(MODEL_NAME, str(champion.version), champion.run_id)]
    assert {r[0] for r in predictions.select("features_delta_version").distinct().collect()} == {features_version}
    assert predictions.where("probability IS NULL OR probability < 0 OR probability > 1").count() == 0

    assert meta["rows_scored"] == total and meta["dagster/row_count"] == total
    assert meta["validated_features_first_version_consumed"] == features_version
    assert meta["validated_features_last_version_consumed"] == features_version
    assert (meta["model_name"], meta["model_version"], meta["mlflow_run"]) == (
        MODEL_NAME,
        int(champion.version),
        champion.run_id,
    )
    assert meta["dagster/table_name"] == "main.flights.incremental_predictions"
    assert meta["delta_operation"] == "MERGE" and meta["delta_version"] == world.version("incremental_predictions")
    assert meta["validated_features_delta_version"] == features_version
    checkpoint = world.lake.checkpoint_path("incremental_predictions")
    assert checkpoint.endswith("main/flights/_checkpoints/incremental_predictions")
    assert meta["checkpoint"] == checkpoint
    assert [c.name for c in meta["dagster/column_schema"].columns][-1] == "features_delta_version"

    again = metadata_of(world.materialize(incremental_predictions), "incremental_predictions")
    assert (again["rows_scored"], again["micro_batches"], again["delta_version"]) == (0, 0, meta["delta_version"])
    assert again["validated_features_first_version_consumed"] == -1
    assert world.table("incremental_predictions").count() == total
