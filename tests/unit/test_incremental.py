"""ml/incremental.py on tiny Delta tables (tests/unit/tiny.py), with real Structured Streaming queries over the
change data feed: a new day, a rewritten (corrected) day, a champion change with and without rescore, and a
micro-batch replayed after a crash."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from ml import delta_io
from ml.columns import FEATURES_VERSION
from ml.incremental import BatchMerge, IncrementalSettings, latest_changes, score_changes, target_schema
from ml.pipeline import build_pipeline
from ml.scoring import ResolvedModel, score
from tests.unit.tiny import tiny_features, tiny_spec

SPEC = tiny_spec()
V1 = ResolvedModel("main.tiny.incremental", "1", "run-1", "models:/main.tiny.incremental/1")
V2 = ResolvedModel("main.tiny.incremental", "2", "run-2", "models:/main.tiny.incremental/2")
FIRST = date(2024, 1, 1)


@pytest.fixture(scope="module")
def features(spark):
    return tiny_features(spark).persist()  # 240 rows, 20 a day over 12 days


@pytest.fixture(scope="module")
def pipeline(features):
    return build_pipeline(SPEC, "logistic_regression", {"maxIter": 10}).fit(features)


class Lake:
    """A feature table with its change data feed, a target and a checkpoint, in one temporary folder."""

    def __init__(self, spark, root, pipeline):
        self.spark, self.pipeline = spark, pipeline
        self.source, self.target, self.checkpoint = (str(root / n) for n in ("features", "predictions", "checkpoint"))

    def write_days(self, frame, first: int, last: int) -> int:
        """Replace days [first, last] (1-based) of the feature table with `frame`'s rows of them; the version."""
        start, end = FIRST + timedelta(days=first - 1), FIRST + timedelta(days=last)
        rows = frame.where((F.col("event_date") >= start) & (F.col("event_date") < end))
        return delta_io.write_partitions(
            rows, self.source, start, end, properties=delta_io.CHANGE_FEED_PROPERTIES
        ).version

    def run(self, model=V1, **settings):
        return score_changes(
            self.spark,
            self.source,
            self.target,
            self.checkpoint,
            self.pipeline,
            model,
            SPEC,
            IncrementalSettings(**settings),
        )

    def predictions(self):
        return self.spark.read.format("delta").load(self.target)

    def current_features(self):
        return self.spark.read.format("delta").load(self.source)

    def version(self) -> int:
        return delta_io.current_version(self.spark, self.target)


@pytest.fixture()
def lake(spark, tmp_path, pipeline):
    return Lake(spark, tmp_path, pipeline)


def exactly_one_per_feature_row(lake) -> dict[int, tuple]:
    """Every current feature row has exactly one prediction, and no prediction has no feature row; id -> row."""
    keys = list(SPEC.key_columns)
    predictions = lake.predictions()
    assert predictions.groupBy(*keys).count().where("count > 1").count() == 0  # no duplicates
    assert predictions.join(lake.current_features(), keys, "left_anti").count() == 0  # nothing stale
    assert lake.current_features().join(predictions, keys, "left_anti").count() == 0  # nothing missing
    return {r["id"]: r for r in predictions.collect()}


def test_the_writer_creates_the_feature_table_with_its_change_data_feed(spark, lake, features):
    lake.write_days(features, 1, 3)
    assert delta_io.change_feed_enabled(spark, lake.source)
    plain = lake.source + "-plain"
    delta_io.write_partitions(features, plain, FIRST, FIRST + timedelta(days=12))
    assert not delta_io.change_feed_enabled(spark, plain)
    assert delta_io.enable_change_feed(spark, plain) is True  # one ALTER TABLE
    assert delta_io.enable_change_feed(spark, plain) is False  # already on: nothing to do
    assert delta_io.change_feed_enabled(spark, plain)


def test_a_table_without_change_data_feed_is_refused_by_name(spark, lake, features):
    delta_io.write_partitions(features, lake.source, FIRST, FIRST + timedelta(days=12))
    with pytest.raises(delta_io.DeltaTableError, match=r"has no change data feed \(delta.enableChangeDataFeed"):
        lake.run()
    assert not delta_io.table_exists(spark, lake.target)  # nothing was written


def test_latest_change_per_key_a_rewrite_s_insert_wins_and_a_delete_deletes(spark):
    changes = spark.createDataFrame(
        [
            (1, date(2024, 1, 1), "insert", 1, 0.1),
            (1, date(2024, 1, 1), "delete", 2, 0.1),  # day rewritten at v2: the old row's delete ...
            (1, date(2024, 1, 1), "insert", 2, 0.2),  # ... and the new row's insert, same version: insert wins
            (2, date(2024, 1, 1), "insert", 1, 0.3),
            (2, date(2024, 1, 1), "delete", 3, 0.3),  # deleted at v3, not reinserted
            (3, date(2024, 1, 1), "update_preimage", 4, 0.4),
            (3, date(2024, 1, 1), "update_postimage", 4, 0.5),
        ],
        "id INT, event_date DATE, _change_type STRING, _commit_version BIGINT, x1 DOUBLE",
    )
    latest = {
        r["id"]: (r["_change_type"], r["_commit_version"], r["x1"])
        for r in latest_changes(changes, ["id", "event_date"]).collect()
    }
    assert latest == {1: ("insert", 2, 0.2), 2: ("delete", 3, 0.3), 3: ("update_postimage", 4, 0.5)}


def test_a_new_day_scores_only_that_day(lake, features):
    first_version = lake.write_days(features, 1, 3)
    first = lake.run()
    assert (first.rows_scored, first.rows_deleted) == (60, 0)
    assert (first.first_version, first.last_version) == (first_version, first_version)
    before = exactly_one_per_feature_row(lake)
    assert {r["model_version"] for r in before.values()} == {"1"}

    day4 = lake.write_days(features, 4, 4)
    second = lake.run()
    assert (second.rows_scored, second.first_version, second.last_version) == (20, day4, day4)
    after = exactly_one_per_feature_row(lake)
    assert len(after) == 80
    assert {i for i, r in after.items() if r[FEATURES_VERSION] == day4} == {
        r["id"] for r in features.where(F.col("event_date") == FIRST + timedelta(days=3)).collect()
    }
    assert all(after[i]["scored_at"] == r["scored_at"] for i, r in before.items())  # the old rows are untouched

    nothing = lake.run()  # nothing new: no batch, no commit
    assert (nothing.rows_scored, len(nothing.merged), nothing.target_version) == (0, 0, second.target_version)


def test_a_rewritten_day_is_rescored_without_duplicates_whatever_the_batching(lake, features, pipeline):
    lake.write_days(features, 1, 3)
    lake.run()
    day2 = F.col("event_date") == FIRST + timedelta(days=1)
    dropped = [r["id"] for r in features.where(day2).orderBy("id").limit(3).collect()]
    corrected = (
        features.where(~F.col("id").isin(dropped))  # three flights of day 2 are gone in the correction
        .withColumn("x1", F.when(day2, F.col("x1") + 5.0).otherwise(F.col("x1")))  # the others changed
        .unionByName(features.where(day2).limit(1).withColumn("id", F.lit(10_000)))  # and one is new
    )
    rewrite = lake.write_days(corrected, 2, 2)
    result = lake.run(max_files_per_trigger=1)  # the rewrite's removed and added files may come in separate batches
    assert (result.first_version, result.last_version) == (rewrite, rewrite)
    # One file a micro-batch: the rewrite's removed files (the old rows' deletes) and added files (17 corrected rows
    # and the new one) come in separate batches; the MERGE's version guard makes their order irrelevant.
    assert len(result.merged) >= 2 and result.rows_scored == 18 and 3 <= result.rows_deleted <= 20
    rows = exactly_one_per_feature_row(lake)
    assert len(rows) == 60 - 3 + 1 and not set(dropped) & set(rows)
    rewritten = {i for i, r in rows.items() if r[FEATURES_VERSION] == rewrite}
    assert rewritten == {r["id"] for r in lake.current_features().where(day2).collect()}
    expected = {r["id"]: r["probability"] for r in score(lake.current_features(), pipeline, V1, SPEC).collect()}
    assert all(abs(rows[i]["probability"] - p) < 1e-12 for i, p in expected.items())  # the corrected features' scores


def test_a_champion_change_scores_new_rows_with_the_new_version_and_rescore_rescores_all(lake, features):
    lake.write_days(features, 1, 3)
    lake.run(model=V1)
    lake.write_days(features, 4, 5)
    lake.run(model=V2)
    rows = exactly_one_per_feature_row(lake)
    versions = {r["event_date"]: r["model_version"] for r in rows.values()}
    assert {d.day for d, v in versions.items() if v == "1"} == {1, 2, 3}  # scored before: they keep v1
    assert {d.day for d, v in versions.items() if v == "2"} == {4, 5}  # new rows: the new champion
    assert {r["model_run_id"] for r in rows.values() if r["model_version"] == "2"} == {"run-2"}

    rescored = lake.run(model=V2, rescore=True)
    assert (rescored.rows_scored, rescored.rows_rescored) == (100, 100)
    rows = exactly_one_per_feature_row(lake)
    assert {r["model_version"] for r in rows.values()} == {"2"} and len(rows) == 100


def test_a_replayed_micro_batch_is_skipped_by_delta(spark, lake, features, pipeline):
    """What a restart after a crash does when the MERGE of batch N committed but the checkpoint did not record it:
    the same query id and batch id again. Delta's idempotent write (txnAppId, txnVersion) skips it."""
    version = lake.write_days(features, 1, 2)
    schema = target_schema(spark, lake.source, pipeline, V1, SPEC)
    DeltaTable.createIfNotExists(spark).location(lake.target).addColumns(schema).partitionedBy("event_date").execute()
    sink = BatchMerge(lake.target, pipeline, V1, SPEC, schema.fieldNames(), query_id="query-a")
    changes = (
        spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", version).load(lake.source)
    )

    sink(changes, 0)
    merged = lake.version()
    sink(changes, 0)  # the replay
    assert [r.outcome for r in sink.reports] == ["merged", "replayed"]
    assert lake.version() == merged and lake.predictions().count() == 40  # no commit, no duplicate
    sink(changes, 1)  # the next batch id commits (the same rows: still one per key)
    assert sink.reports[-1].outcome == "merged" and lake.version() == merged + 1
    other = BatchMerge(lake.target, pipeline, V1, SPEC, schema.fieldNames(), query_id="query-b")
    other(changes, 0)  # another query (a new checkpoint) has batch ids of its own
    assert other.reports[-1].outcome == "merged"
    exactly_one_per_feature_row(lake)
