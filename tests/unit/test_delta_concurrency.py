"""Two writers of one Delta table at once, interleaved deterministically: writer B starts its transaction, then
waits inside its Spark job (a UDF polls for a file) until writer A has committed, then commits. This is what two
Dagster runs of different daily partitions do to raw_data, validated_features or batch_predictions."""

import os
import threading
import time
from datetime import date

import pytest
from delta.exceptions import ConcurrentAppendException, ProtocolChangedException
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from ml import delta_io

DAY1, DAY2, DAY3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)
NEXT = {DAY1: DAY2, DAY2: DAY3}


def day_rows(spark, day, n, value):
    """n rows of one day, in one partition (one task slot of local[2] stays free for the other writer)."""
    return spark.range(0, n, 1, 1).select(F.col("id"), F.lit(day).alias("event_date"), F.lit(value).alias("v"))


def held_until(df, tmp_path):
    """`df`, whose computation announces itself (`started`) and then waits until the file `go` exists."""
    started, go = str(tmp_path / "started"), str(tmp_path / "go")

    @F.udf("long")
    def wait_for_go(x):
        open(started, "a").close()
        deadline = time.time() + 120
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.05)
        return x

    return df.withColumn("id", wait_for_go("id")), started, go


def race(spark, path, tmp_path, first_day, second_day, attempts=delta_io.WRITE_ATTEMPTS):
    """B (second_day) starts its transaction and is held; A (first_day) writes and commits; then B goes on."""
    held, started, go = held_until(day_rows(spark, second_day, 5, "B"), tmp_path)
    outcome = {}

    def writer_b():
        try:
            outcome["b"] = delta_io.write_partitions(held, path, second_day, NEXT[second_day], attempts=attempts)
        except Exception as exc:  # handed to the test thread
            outcome["b_error"] = exc

    thread = threading.Thread(target=writer_b)
    thread.start()
    deadline = time.time() + 120
    while not os.path.exists(started) and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(started), "writer B's job never started"
    outcome["a"] = delta_io.write_partitions(day_rows(spark, first_day, 3, "A"), path, first_day, NEXT[first_day])
    open(go, "w").close()
    thread.join(180)
    assert not thread.is_alive()
    return outcome


def rows_by_day(spark, path):
    return {
        (r["event_date"], r["v"]): r["count"]
        for r in spark.read.format("delta").load(path).groupBy("event_date", "v").count().collect()
    }


def test_writers_of_different_days_do_not_conflict(spark, tmp_path):
    path = str(tmp_path / "t")
    delta_io.write_partitions(day_rows(spark, DAY1, 2, "old"), path, DAY1, DAY2)
    delta_io.write_partitions(day_rows(spark, DAY2, 2, "old"), path, DAY2, DAY3)

    outcome = race(spark, path, tmp_path, DAY1, DAY2)

    assert "b_error" not in outcome
    a, b = outcome["a"], outcome["b"]
    assert (a.conflict_retries, b.conflict_retries) == (0, 0)  # disjoint replaceWhere windows: no conflict at all
    assert (a.version, b.version) == (2, 3)  # each run records its own commit, not the latest one
    assert (a.rows_written, b.rows_written) == (3, 5)
    assert rows_by_day(spark, path) == {(DAY1, "A"): 3, (DAY2, "B"): 5}


def test_a_lost_race_to_create_the_table_is_retried(spark, tmp_path):
    path = str(tmp_path / "t")  # no table yet: both writers try to create it

    outcome = race(spark, path, tmp_path, DAY1, DAY2)

    assert "b_error" not in outcome
    a, b = outcome["a"], outcome["b"]
    assert (a.version, a.conflict_retries) == (0, 0)
    assert (b.version, b.conflict_retries) == (1, 1)  # B lost the creation race once, then committed
    assert rows_by_day(spark, path) == {(DAY1, "A"): 3, (DAY2, "B"): 5}
    history = DeltaTable.forPath(spark, path).history().select("version", "userMetadata").collect()
    assert len(history) == 2  # the failed attempt committed nothing


def test_without_retries_the_conflict_is_raised_and_the_winner_is_intact(spark, tmp_path):
    path = str(tmp_path / "t")

    outcome = race(spark, path, tmp_path, DAY1, DAY2, attempts=1)

    assert isinstance(outcome.get("b_error"), ProtocolChangedException), outcome
    assert "concurrent" in str(outcome["b_error"]).lower()
    assert rows_by_day(spark, path) == {(DAY1, "A"): 3}
    assert DeltaTable.forPath(spark, path).history().count() == 1


def test_the_same_day_written_twice_at_once_conflicts_and_the_retry_wins_last(spark, tmp_path):
    path = str(tmp_path / "t")
    delta_io.write_partitions(day_rows(spark, DAY2, 2, "old"), path, DAY2, DAY3)

    outcome = race(spark, path, tmp_path, DAY2, DAY2)

    assert "b_error" not in outcome
    assert outcome["b"].conflict_retries == 1  # A replaced the day B had read: ConcurrentAppend, then a retry
    assert rows_by_day(spark, path) == {(DAY2, "B"): 5}  # a rerun of a day: the later writer's rows, never both


def test_only_conflicts_are_retried_and_only_so_often():
    calls = []

    def failing(exc):
        def write():
            calls.append(1)
            raise exc

        return write

    with pytest.raises(ValueError):
        delta_io.retry_on_conflict(failing(ValueError("not a conflict")), "t", attempts=4, base_delay=0)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(ConcurrentAppendException):
        delta_io.retry_on_conflict(failing(ConcurrentAppendException(message="lost")), "t", attempts=3, base_delay=0)
    assert len(calls) == 3


def test_an_empty_write_over_an_empty_day_commits_nothing_and_records_the_current_version(spark, tmp_path):
    """A day without quarantined rows: Delta makes no commit, so the write has no commit of its own to report."""
    path = str(tmp_path / "t")
    delta_io.write_partitions(day_rows(spark, DAY1, 2, "old"), path, DAY1, DAY2)

    commit = delta_io.write_partitions(day_rows(spark, DAY2, 0, "none"), path, DAY2, DAY3)

    assert (commit.version, commit.rows_written, commit.operation) == (0, 0, "none: nothing to write or replace")
    assert DeltaTable.forPath(spark, path).history().count() == 1
