"""Delta refusals beyond the schema contract (ml/delta_io.py): each is a DeltaTableError that names the table,
what was expected and found, and what to do, and leaves the table exactly as it was."""

import os
import shutil
from datetime import date

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from ml import delta_io

DAY1, DAY2, DAY3 = date(2013, 2, 1), date(2013, 2, 2), date(2013, 2, 3)


def day_rows(spark, day: date, n: int = 2, distance_type: str = "double"):
    return spark.createDataFrame([(i, float(i) * 100) for i in range(n)], "flight int, distance double").select(
        "flight", F.col("distance").cast(distance_type).alias("distance"), F.lit(day).alias("event_date")
    )


@pytest.fixture
def table_path(spark, tmp_path):
    """A Delta table with two daily partitions, written by two commits."""
    path = str(tmp_path / "main" / "flights" / "raw_data")
    delta_io.write_partitions(day_rows(spark, DAY1), path, DAY1, DAY2)
    delta_io.write_partitions(day_rows(spark, DAY2, 3), path, DAY2, DAY3)
    return path


def state(spark, path):
    """The table's history and its rows per day: what must not change when a write is refused."""
    history = [(r.version, r.operation) for r in DeltaTable.forPath(spark, path).history().collect()]
    rows = spark.read.format("delta").load(path).groupBy("event_date").count().collect()
    return history, sorted((r.event_date, r["count"]) for r in rows)


def test_a_column_whose_type_changed_is_named_with_both_types(spark, table_path):
    before = state(spark, table_path)
    with pytest.raises(delta_io.DeltaSchemaMismatchError) as err:  # e.g. a spec that now declares distance a STRING
        delta_io.write_partitions(day_rows(spark, DAY2, distance_type="string"), table_path, DAY2, DAY3)
    assert str(err.value).startswith(
        f"Delta table {table_path} refused the write: its schema differs from the rows written: "
        "column 'distance' is STRING in the rows written, the table has DOUBLE. Nothing was written."
    )
    assert "restore the spec, or migrate the table" in str(err.value)
    assert err.value.__cause__.getCondition() == "DELTA_FAILED_TO_MERGE_FIELDS"
    assert state(spark, table_path) == before


def test_a_column_the_table_lacks_is_named(spark, table_path):
    before = state(spark, table_path)
    with pytest.raises(delta_io.DeltaSchemaMismatchError, match=r"column 'gate' \(STRING\) is not in the table"):
        delta_io.write_partitions(day_rows(spark, DAY2).withColumn("gate", F.lit("B12")), table_path, DAY2, DAY3)
    assert state(spark, table_path) == before


def test_rows_outside_the_replaced_partitions_are_named(spark, table_path):
    before = state(spark, table_path)
    rows = day_rows(spark, DAY2).unionByName(day_rows(spark, DAY3, 1))
    with pytest.raises(delta_io.ReplaceWhereMismatchError) as err:
        delta_io.write_partitions(rows, table_path, DAY2, DAY3)
    assert str(err.value).startswith(
        f"Delta table {table_path} refused the write: rows have event_date outside the partitions being replaced "
        "(event_date >= '2013-02-02' AND event_date < '2013-02-03'), e.g. event_date = ['2013-02-03']. Nothing was written."
    )
    assert err.value.__cause__.getCondition() == "DELTA_REPLACE_WHERE_MISMATCH"
    assert state(spark, table_path) == before


def test_a_folder_that_is_not_a_delta_table_is_neither_read_nor_written_over(spark, tmp_path):
    path = str(tmp_path / "raw_data")
    day_rows(spark, DAY1).write.parquet(path)  # e.g. written by another tool, or its _delta_log deleted
    files = sorted(os.listdir(path))
    with pytest.raises(delta_io.NotADeltaTableError) as err:
        delta_io.write_partitions(day_rows(spark, DAY2), path, DAY2, DAY3)
    assert str(err.value).startswith(
        f"{path} holds files but is not a Delta table (it has no _delta_log): "
        f"nothing was read or written. Found {[f for f in files if not f.startswith('.')][:5]}. "
        "Move the folder aside"
    )
    with pytest.raises(delta_io.NotADeltaTableError):
        delta_io.read_pinned(spark, path)
    with pytest.raises(delta_io.NotADeltaTableError):  # the splits' whole-table overwrite
        delta_io.overwrite_table(day_rows(spark, DAY2), path)
    assert sorted(os.listdir(path)) == files  # no _delta_log started over the files


def test_a_table_whose_whole_log_was_deleted_is_not_started_over(spark, table_path):
    """Without the refusal, replacing Feb 2 would start a new table holding Feb 2 alone: Feb 1 would vanish from
    it, its files orphaned (and deleted by the next VACUUM)."""
    shutil.rmtree(os.path.join(table_path, "_delta_log"))
    files = sorted(os.path.relpath(os.path.join(d, f), table_path) for d, _, fs in os.walk(table_path) for f in fs)
    with pytest.raises(delta_io.NotADeltaTableError) as err:
        delta_io.write_partitions(day_rows(spark, DAY2), table_path, DAY2, DAY3)
    assert str(err.value).startswith(
        f"{table_path} holds files but is not a Delta table (it has no _delta_log): "
        "nothing was read or written. Found ['event_date=2013-02-01', 'event_date=2013-02-02']"
    )
    assert "if it is a table of this pipeline whose log was lost, restore _delta_log from a backup" in str(err.value)
    with pytest.raises(delta_io.NotADeltaTableError):
        delta_io.read_pinned(spark, table_path)
    assert (
        sorted(os.path.relpath(os.path.join(d, f), table_path) for d, _, fs in os.walk(table_path) for f in fs) == files
    )


def test_a_missing_table_is_still_a_file_not_found(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Delta table at .*: materialize its asset first"):
        delta_io.read_pinned(spark, str(tmp_path / "never_written"))


@pytest.mark.parametrize("damage", ["first commit deleted", "last commit truncated"])
def test_a_damaged_transaction_log_is_named_on_read_and_write(spark, table_path, damage):
    log = os.path.join(table_path, "_delta_log")
    if damage == "first commit deleted":
        os.remove(os.path.join(log, "00000000000000000000.json"))
    else:
        with open(os.path.join(log, "00000000000000000001.json"), "w") as fh:
            fh.write('{"commitInfo":')
        for crc in [
            f for f in os.listdir(log) if f.endswith(".crc")
        ]:  # Hadoop's checksums and Delta's version checksums
            os.remove(os.path.join(log, crc))
    files = {
        f: open(os.path.join(log, f), "rb").read() for f in os.listdir(log) if os.path.isfile(os.path.join(log, f))
    }
    for attempt in (
        lambda: delta_io.read_pinned(spark, table_path),
        lambda: delta_io.write_partitions(day_rows(spark, DAY2), table_path, DAY2, DAY3),
        lambda: delta_io.overwrite_table(day_rows(spark, DAY2), table_path),
    ):
        with pytest.raises(delta_io.CorruptDeltaLogError) as err:
            attempt()
        message = str(err.value)
        assert message.startswith(f"Delta table {table_path}: its transaction log (_delta_log) cannot be read: ")
        assert "Restore _delta_log from a backup" in message and "\tat " not in message  # no Java stack trace
    after = {
        f: open(os.path.join(log, f), "rb").read() for f in os.listdir(log) if os.path.isfile(os.path.join(log, f))
    }
    assert after == files  # nothing was committed on top of the damage
    shutil.rmtree(table_path)
