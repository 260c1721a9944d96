"""assets/segments.py on the shared world: one model per carrier, the *_by_segment bundle and its gate, the daily
segment_predictions (a rerun of a day leaves the same rows), segment_performance, and rollback_job moving the bundle's
@champion. Expected counts come from the world's CSV rows."""

from collections import Counter
from datetime import date, timedelta

import pytest
from pyspark.sql import functions as F

from assets.common import SPEC
from assets.segments import segment_models, segment_performance, segment_predictions
from ml.days import DayWindow
from ml.registry import register_version, set_champion
from ml.segment_bundle import bundle_signature, load_bundle
from orchestration.rollback import PROMOTION_TAG
from tests.world import DAYS, MODEL_NAME, RANGE, materializations, metadata_of

BUNDLE = f"{MODEL_NAME}_by_segment"
MIN_ROWS = 60  # the world trains on one day: only the largest carriers have that many flights
CONFIG = {"n_trials": 1, "min_rows": MIN_ROWS, "algorithms": ["logistic_regression"], "gate_floors": {}}
COLUMNS = ("carrier", "flight", "origin", "event_date", "segment", "prediction", "probability", "scored_by")


def labelled_train_rows(world) -> Counter:
    arr = world.col("arr_delay")
    return Counter(r[world.col("carrier")] for r in world.clean_rows if world.day_of(r) == DAYS[0] and r[arr] != "NA")


@pytest.fixture(scope="module")
def trained(world):
    """segment_models, then segment_predictions over the world's days: once, for every test of this module."""
    models = world.materialize(segment_models, run_config={"ops": {"segment_models": {"config": CONFIG}}})
    return models, world.materialize(segment_predictions, tags=RANGE)


def test_segment_models_train_register_gate_and_score(world, trained):
    result, scored = trained
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


# ---- segment_performance ------------------------------------------------------------------------------------------


def python_performance(world, predictions) -> dict[tuple[str, str], dict]:
    """Per (day, segment) of segment_predictions' rows, counted here in Python against the CSV's arrival delays:
    rows scored, rows labelled, the model that scored them, and the AUC (the share of (delayed, on-time) pairs the
    probability orders right, ties half; None with one class only)."""
    arr = world.col("arr_delay")
    labels = {(*world.key_of(r), world.day_of(r)): float(r[arr]) > 15 for r in world.clean_rows if r[arr] != "NA"}
    out: dict[tuple[str, str], dict] = {}
    for r in predictions:
        day = r.event_date.isoformat()
        group = out.setdefault(
            (day, r.segment), {"scored": 0, "by": (r.scored_by, r.scored_by_model, r.scored_by_version), "p": ([], [])}
        )
        assert group["by"] == (r.scored_by, r.scored_by_model, r.scored_by_version)  # one scorer per day and segment
        group["scored"] += 1
        key = (r.carrier, str(r.flight), r.origin, day)
        if key in labels:
            group["p"][0 if labels[key] else 1].append(r.probability)
    for group in out.values():
        delayed, on_time = group.pop("p")
        group["labelled"] = len(delayed) + len(on_time)
        right = sum((p > q) + 0.5 * (p == q) for p in delayed for q in on_time)
        group["auc"] = right / (len(delayed) * len(on_time)) if delayed and on_time else None
    return out


def performance_rows(world, version=None, day=None) -> dict[tuple[str, str], dict]:
    frame = world.table("segment_performance", version)
    if day is not None:
        frame = frame.where(F.col("event_date") == day)
    return {(r.event_date.isoformat(), r.segment): r.asDict() for r in frame.collect()}


def test_segment_performance_has_one_row_per_day_segment_and_scoring_model(world, trained):
    predictions_version = world.version("segment_predictions")
    result = world.materialize(segment_performance, tags=RANGE)
    meta = metadata_of(result, "segment_performance", DAYS[0])
    assert meta["segment_predictions_delta_version"] == predictions_version
    expected = python_performance(world, world.table("segment_predictions", predictions_version).collect())
    rows = performance_rows(world, meta["delta_version"])
    assert set(rows) == set(expected)
    for group, r in rows.items():
        e = expected[group]
        assert (r["scored_rows"], r["labelled_rows"]) == (e["scored"], e["labelled"]), group
        assert (r["scored_by"], r["scored_by_model"], r["scored_by_version"]) == e["by"], group
        assert (r["model_name"], r["model_version"], r["metric_name"]) == (BUNDLE, "1", "auc"), group
        assert r["auc"] == (None if e["auc"] is None else pytest.approx(e["auc"], abs=1e-9)), group
        assert r["primary_metric"] == r["auc"] and r["computed_at"] is not None
    for day in DAYS:  # a day's groups add up to its predictions and its labelled features
        assert sum(r["scored_rows"] for (d, _), r in rows.items() if d == day) == world.features_per_day[day]
        assert sum(r["labelled_rows"] for (d, _), r in rows.items() if d == day) == world.labelled_per_day[day]
    assert {r["scored_by"] for r in rows.values()} == {"segment", "global"}

    assert meta["metric_name"] == "auc" and meta["partition"] == "2013-02-01...2013-02-03"
    assert meta["rows_written"] == meta["rows_written_in_run"] == len(rows)
    assert meta["segments"] == len({s for _, s in rows})
    assert meta["rows_with_labels"] == sum(world.labelled_per_day.values())
    assert meta["rows_without_labels"] == sum(world.features_per_day.values()) - sum(world.labelled_per_day.values())
    assert meta["labelled_rows_by_scorer"] == {
        s: sum(e["labelled"] for e in expected.values() if e["by"][0] == s) for s in ("segment", "global")
    }
    assert (meta["days_with_labels"], meta["days_without_labels"]) == (DAYS, [])
    table = meta["segment_table"].splitlines()[2:]
    assert sorted(line.split("|")[1].strip() for line in table) == sorted({s for _, s in rows})
    assert "primary_metric_by_segment" not in meta  # a one-day key: a range has it per day, in the table
    assert meta["dagster/uri"].endswith("/main/flights/segment_performance")
    assert meta["delta_version"] == world.commit_of("segment_performance", result.run_id)[0]["version"]


def test_a_rerun_of_a_day_leaves_the_same_rows_and_records_each_segment(world, trained):
    day = DAYS[1]
    version = world.version("segment_performance")
    before = performance_rows(world, day=day)
    rows_per_day = Counter(d for d, _ in performance_rows(world))
    result = world.materialize(segment_performance, partition_key=day)
    meta = metadata_of(result, "segment_performance")
    after = performance_rows(world, day=day)
    assert meta["delta_version"] == version + 1 == world.version("segment_performance")
    assert world.history("segment_performance")[0]["operationParameters"]["predicate"] == f"event_date IN ('{day}')"
    assert {g: {k: v for k, v in r.items() if k != "computed_at"} for g, r in after.items()} == {
        g: {k: v for k, v in r.items() if k != "computed_at"} for g, r in before.items()
    }
    assert all(after[g]["computed_at"] > before[g]["computed_at"] for g in after)  # rewritten, not kept
    assert (meta["partition"], meta["dagster/row_count"], meta["rows_written"]) == (day, len(after), len(after))
    assert meta["primary_metric_by_segment"] == {
        s: {
            "primary_metric": r["primary_metric"],
            "scored_by": r["scored_by"],
            "scored_by_version": r["scored_by_version"],
            "labelled_rows": r["labelled_rows"],
            "scored_rows": r["scored_rows"],
        }
        for (_, s), r in after.items()
    }
    assert Counter(d for d, _ in performance_rows(world)) == rows_per_day  # the day replaced, the others kept


def test_a_day_without_labels_yet_is_recorded_and_nothing_is_written(world, trained):
    """Feb 3's predictions as if made for Feb 4, a day the world has no features for yet: no flight has landed."""
    day, next_day = date.fromisoformat(DAYS[-1]) + timedelta(days=1), date.fromisoformat(DAYS[-1]) + timedelta(days=2)
    feb3 = (
        world.table("segment_predictions").where(F.col("event_date") == DAYS[-1]).withColumn("event_date", F.lit(day))
    )
    early = world.lake.session.createDataFrame(feb3.collect(), feb3.schema)  # a day's rows: small
    n = early.count()
    world.lake.write_window(early, "segment_predictions", DayWindow(day, next_day))
    try:
        version, rows = world.version("segment_performance"), performance_rows(world)
        result = world.materialize(segment_performance, partition_key=day.isoformat())
        meta = metadata_of(result, "segment_performance")
        assert result.success and meta["segment_predictions_delta_version"] == world.version("segment_predictions")
        assert (meta["days_with_labels"], meta["days_without_labels"]) == ([], [day.isoformat()])
        assert (meta["rows_with_labels"], meta["rows_without_labels"], meta["rows_written"]) == (0, n, 0)
        assert meta["delta_version"] == version == world.version("segment_performance")  # nothing committed
        assert "primary_metric_by_segment" not in meta and meta["segments"] == 0
        assert performance_rows(world) == rows
    finally:  # the world's segment_predictions as they were: Feb 1-3 only
        world.lake.replace_rows(early.limit(0), "segment_predictions", f"event_date IN ('{day.isoformat()}')")
    assert world.counts_by_day("segment_predictions") == world.features_per_day


# ---- rollback_job, model: by_segment ------------------------------------------------------------------------------


def rollback(version, model="by_segment"):
    config = {"version": version, "requested_by": "ops@example.com", "reason": "INC-16: bundle drill", "model": model}
    return {"ops": {"set_champion_version": {"config": config}}}


def champions(world) -> tuple[str, str]:
    return tuple(str(world.client.get_model_version_by_alias(n, "champion").version) for n in (BUNDLE, MODEL_NAME))


def test_rollback_job_moves_the_bundle_s_champion_after_scoring_a_sample(world, trained):
    client, job = world.client, world.defs.resolve_job_def("rollback_job")
    bundle, global_champion = before = champions(world)
    assert bundle == "1"
    refused = job.execute_in_process(instance=world.instance, run_config=rollback(99), raise_on_error=False)
    assert not refused.success
    assert f"model {BUNDLE} has no version 99 (its versions: [1])" in str(
        refused.failure_data_for_node("set_champion_version").error
    )
    assert champions(world) == before and refused.asset_observations_for_node("set_champion_version") == []

    first = client.get_model_version(BUNDLE, "1")
    lineage = {k: v for k, v in first.tags.items() if not k.startswith(("gate.", "champion."))}
    again = register_version(client, BUNDLE, first.source, first.run_id, "v1's bundle again: a rollback drill", lineage)
    assert str(again.version) == "2"
    try:
        rolled = job.execute_in_process(instance=world.instance, run_config=rollback(2))
        assert champions(world) == ("2", global_champion)  # the bundle's moved, the global model's did not
        own = sorted(load_bundle(f"models:/{BUNDLE}/2").own_segments)
        (checked,) = [e.user_message for e in world.instance.all_logs(rolled.run_id) if "sample rows" in e.user_message]
        assert checked.startswith(f"models:/{BUNDLE}/2 scored ")  # a sample of each of its own segments:
        assert f"by its segment models ({', '.join(own) or 'none'})" in checked
        assert rolled.dagster_run.tags[PROMOTION_TAG] == SPEC.model_name  # one queue for the model and its bundle
        tags = client.get_model_version(BUNDLE, "2").tags
        assert (tags["champion.set_by"], tags["champion.reason"]) == ("ops@example.com", "INC-16: bundle drill")
        assert (tags["champion.previous_version"], tags["champion.dagster_run_id"]) == ("1", rolled.run_id)
        (observation,) = rolled.asset_observations_for_node("set_champion_version")
        assert observation.asset_key.to_user_string() == "segment_models"
        meta = {k: v.value for k, v in observation.metadata.items()}
        assert (meta["model_name"], meta["champion_version"], meta["previous_champion_version"]) == (BUNDLE, "2", "1")
        assert (meta["requested_by"], meta["reason"]) == ("ops@example.com", "INC-16: bundle drill")
        assert not materializations(rolled, "segment_models")
    finally:  # the world's bundle champion as it was
        set_champion(client, BUNDLE, "1", bundle_signature(SPEC), "tests", "restore the world's champion")
    assert champions(world) == before
