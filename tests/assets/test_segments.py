"""assets/segments.py on the shared world: one model per carrier, the *_by_segment bundle and its gate, and the daily
segment_predictions (a rerun of a day leaves the same rows). Expected counts come from the world's CSV rows."""

from collections import Counter

from assets.segments import segment_models, segment_predictions
from tests.world import DAYS, MODEL_NAME, RANGE, metadata_of

BUNDLE = f"{MODEL_NAME}_by_segment"
MIN_ROWS = 60  # the world trains on one day: only the largest carriers have that many flights
CONFIG = {"n_trials": 1, "min_rows": MIN_ROWS, "algorithms": ["logistic_regression"], "gate_floors": {}}
COLUMNS = ("carrier", "flight", "origin", "event_date", "segment", "prediction", "probability", "scored_by")


def labelled_train_rows(world) -> Counter:
    arr = world.col("arr_delay")
    return Counter(r[world.col("carrier")] for r in world.clean_rows if world.day_of(r) == DAYS[0] and r[arr] != "NA")


def test_segment_models_train_register_gate_and_score(world):
    result = world.materialize(segment_models, run_config={"ops": {"segment_models": {"config": CONFIG}}})
    meta = metadata_of(result, "segment_models")
    train = labelled_train_rows(world)
    carriers = {world.key_of(r)[0] for r in world.clean_rows if r[world.col("arr_delay")] != "NA"}
    assert meta["segments"] == len(carriers)
    assert meta["segments_too_small"] == sum(1 for c in carriers if train[c] < MIN_ROWS)
    assert meta["segments_trained"] + meta["segments_failed"] == sum(1 for c in carriers if train[c] >= MIN_ROWS) > 0
    assert (meta["model_name"], meta["model_version"]) == (BUNDLE, 1)
    assert meta["gate_decision"] == "promoted" and meta["global_model_version"] == 1
    table = meta["segment_table"]
    version = world.client.get_model_version_by_alias(BUNDLE, "champion")
    global_tags = world.client.get_model_version(MODEL_NAME, "1").tags
    for key in ("dataset.spec_fingerprint", "input.test_set.delta_version", "input.train_set.delta_version"):
        assert version.tags[key] == global_tags[key], key
    children = world.client.search_runs(
        [world.client.get_run(version.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{version.run_id}'"
    )
    assert {c.data.tags["segment"] for c in children} == carriers

    scored = world.materialize(segment_predictions, tags=RANGE)
    smeta = metadata_of(scored, "segment_predictions", DAYS[2])
    assert smeta["rows_written_in_run"] == sum(world.features_per_day.values())
    assert smeta["rows_by_segment_model"] + smeta["rows_by_global_model"] == smeta["rows_written_in_run"]
    assert world.counts_by_day("segment_predictions") == world.features_per_day
    rows = world.table("segment_predictions")
    own = {r.segment for r in rows.where("scored_by = 'segment'").select("segment").distinct().collect()}
    choices = {cells[1].strip(): cells[6].strip() for cells in (line.split("|") for line in table.splitlines()[2:])}
    assert set(choices) == carriers
    assert own == {s for s, choice in choices.items() if choice == "segment"}
    assert {tuple(r) for r in rows.select("model_name", "model_version").distinct().collect()} == {(BUNDLE, "1")}

    def day_rows():
        return sorted(
            tuple(r)
            for r in world.table("segment_predictions").where(f"event_date = '{DAYS[1]}'").select(*COLUMNS).collect()
        )

    before = day_rows()
    world.materialize(segment_predictions, partition_key=DAYS[1])
    assert day_rows() == before and len(before) == world.features_per_day[DAYS[1]]
