"""orchestration/lakehouse.LakehouseResource on tiny Delta tables of its own (real Spark and Delta, no Dagster run):
pinned reads, window / rows / overwrite writes, the lineage metadata every asset records, and the writer lock."""

from __future__ import annotations

import json
import threading
import time
from datetime import date

import pytest
from delta.tables import DeltaTable
from pyspark.sql.types import DateType, IntegerType, StringType, StructField, StructType

from ml.days import DayWindow
from ml.delta_io import MissingDeltaTableError
from orchestration.lakehouse import LakehouseResource, writer_lock
from orchestration.resources import SparkResource
from tests.conftest import TEST_SPARK_CONF

SCHEMA = StructType([StructField("event_date", DateType()), StructField("n", IntegerType())])
D1, D2, D3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
THREE_DAYS = DayWindow(D1, date(2024, 3, 4))


@pytest.fixture
def lake(spark, tmp_path) -> LakehouseResource:
    resource = LakehouseResource(
        spark=SparkResource(master="local[2]", spark_config=TEST_SPARK_CONF),
        root=str(tmp_path / "lakehouse"),
        catalog="cat",
        schema_name="sch",
        model="m",
        staging_dir=str(tmp_path / "staging"),
    )
    assert resource.session is spark  # the session's one SparkSession, not a second one
    return resource


def frame(lake, rows):
    return lake.session.createDataFrame(rows, SCHEMA)


def by_day(pinned_frame) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in pinned_frame.collect():
        out.setdefault(r.event_date.isoformat(), []).append(r.n)
    return {d: sorted(v) for d, v in sorted(out.items())}


def history(lake, table):
    return DeltaTable.forPath(lake.session, lake.table_path(table)).history().collect()  # newest first


def test_identity_names_the_table_and_its_path(lake, tmp_path):
    assert lake.table_path("t") == str((tmp_path / "lakehouse").resolve() / "cat" / "sch" / "t")
    assert lake.table_name("t") == "cat.sch.t" and lake.model_name == "cat.sch.m"
    assert set(lake.identity("t")) == {"dagster/uri", "dagster/table_name"}
    assert lake.identity("t")["dagster/table_name"] == "cat.sch.t"
    assert lake.identity("t")["dagster/uri"].value == f"file://{lake.table_path('t')}"
    remote = lake.replaced(root="s3a://bucket/lake/")
    assert remote.table_path("t") == "s3a://bucket/lake/cat/sch/t"
    assert remote.identity("t")["dagster/uri"].value == "s3a://bucket/lake/cat/sch/t"  # no file:// prefix
    assert lake.root == str(tmp_path / "lakehouse")  # replaced() made a copy


def test_read_pins_the_current_version_and_read_at_an_earlier_one(lake):
    assert lake.version("t") is None
    with pytest.raises(MissingDeltaTableError, match="no Delta table at .*/cat/sch/t: materialize its asset first"):
        lake.read("t")
    first = lake.write_window(frame(lake, [(D1, 1), (D1, 2)]), "t", DayWindow(D1, D2))
    second = lake.write_window(frame(lake, [(D2, 3)]), "t", DayWindow(D2, D3))
    assert (first.version, second.version) == (0, 1) and lake.version("t") == 1

    current = lake.read("t")
    assert current.version == 1 and current.table == "t" and current.lineage == {"t_delta_version": 1}
    lake.write_window(frame(lake, [(D3, 4)]), "t", DayWindow(D3, date(2024, 3, 4)))  # v2, after the read
    assert by_day(current.frame) == {"2024-03-01": [1, 2], "2024-03-02": [3]}  # the pinned read ignores v2
    old = lake.read_at("t", 0)
    assert old.version == 0 and old.lineage == {"t_delta_version": 0}
    assert by_day(old.frame) == {"2024-03-01": [1, 2]}
    assert lake.read("t").version == 2


def test_write_window_replaces_only_its_days_and_records_its_metadata(lake):
    rows = frame(lake, [(D1, 1), (D2, 2), (D2, 20), (D3, 3)])
    commit = lake.write_window(rows, "t", THREE_DAYS)
    ranged = lake.metadata(commit, "t", rows.schema, THREE_DAYS, extra="e")
    assert ranged["partition"] == "2024-03-01...2024-03-03"
    assert ranged["rows_written_in_run"] == 4 and "dagster/row_count" not in ranged  # not one partition's rows
    assert (ranged["delta_version"], ranged["delta_operation"], ranged["extra"]) == (0, "WRITE", "e")
    assert ranged["dagster/table_name"] == "cat.sch.t"
    assert ranged["dagster/uri"].value == f"file://{lake.table_path('t')}"
    assert [(c.name, c.type) for c in ranged["dagster/column_schema"].columns] == [("event_date", "date"), ("n", "int")]
    assert "delta_conflict_retries" not in ranged

    commit = lake.write_window(frame(lake, [(D2, 5)]), "t", DayWindow(D2, D3), run_id="run-2", source="x")
    assert (commit.version, commit.operation, commit.rows_written) == (1, "WRITE", 1)
    assert by_day(lake.read("t").frame) == {"2024-03-01": [1], "2024-03-02": [5], "2024-03-03": [3]}  # no append
    last = history(lake, "t")[0]
    assert last["operationParameters"]["predicate"] == "event_date >= '2024-03-02' AND event_date < '2024-03-03'"
    assert {k: v for k, v in json.loads(last["userMetadata"]).items() if k != "write_id"} == {
        "dagster_run_id": "run-2",
        "source": "x",
    }
    one = lake.metadata(commit, "t", rows.schema, DayWindow(D2, D3))
    assert (one["partition"], one["dagster/row_count"], one["delta_version"]) == ("2024-03-02", 1, 1)
    assert "rows_written_in_run" not in one

    # a range run whose middle day failed its checks: only the days given are written, the rest keeps its rows
    commit = lake.write_window(frame(lake, [(D1, 7), (D2, 8), (D3, 9)]), "t", THREE_DAYS, days=[D1, D3])
    assert (commit.version, commit.rows_written) == (2, 2)
    assert by_day(lake.read("t").frame) == {"2024-03-01": [7], "2024-03-02": [5], "2024-03-03": [9]}
    assert history(lake, "t")[0]["operationParameters"]["predicate"] == "event_date IN ('2024-03-01', '2024-03-03')"

    unwritten = lake.unwritten_metadata("t", DayWindow(D3, date(2024, 3, 4)), why="no labels")
    assert {k: v for k, v in unwritten.items() if not k.startswith("dagster/")} == {
        "partition": "2024-03-03",
        "rows_written": 0,
        "delta_version": 2,
        "why": "no labels",
    }
    assert lake.unwritten_metadata("never", THREE_DAYS)["delta_version"] == -1


def test_replace_rows_with_an_empty_frame_commits_nothing_unless_there_is_something_to_remove(lake):
    empty = frame(lake, [])
    predicate = "event_date = '2024-03-02'"
    assert lake.replace_rows(empty, "t", predicate, frame_is_empty=True) is None  # no table: nothing created
    assert lake.version("t") is None
    lake.write_window(frame(lake, [(D1, 1), (D3, 3)]), "t", THREE_DAYS)
    assert lake.replace_rows(empty, "t", predicate, frame_is_empty=True) is None  # no rows match: no empty commit
    assert lake.version("t") == 0

    commit = lake.replace_rows(frame(lake, [(D2, 2), (D2, 22)]), "t", predicate, run_id="r")
    assert (commit.version, commit.rows_written) == (1, 2)
    assert by_day(lake.read("t").frame) == {"2024-03-01": [1], "2024-03-02": [2, 22], "2024-03-03": [3]}
    commit = lake.replace_rows(empty, "t", predicate, frame_is_empty=True)  # now there are rows to remove
    assert commit is not None and commit.version == 2 == lake.version("t")
    assert by_day(lake.read("t").frame) == {"2024-03-01": [1], "2024-03-03": [3]}


def test_overwrite_replaces_the_whole_table_and_its_schema(lake):
    lake.overwrite(frame(lake, [(D1, 1), (D2, 2)]), "u")
    other = lake.session.createDataFrame([("a",)], StructType([StructField("name", StringType())]))
    commit = lake.overwrite(other, "u", run_id="r", window={"start": "2024-03-01"})
    assert (commit.version, commit.rows_written) == (1, 1)
    pinned = lake.read("u")
    assert pinned.frame.columns == ["name"] and [r.name for r in pinned.frame.collect()] == ["a"]
    lineage = json.loads(history(lake, "u")[0]["userMetadata"])
    assert {k: v for k, v in lineage.items() if k != "write_id"} == {
        "dagster_run_id": "r",
        "window": {"start": "2024-03-01"},
    }
    assert lake.read_at("u", 0).frame.count() == 2  # the old table stays in the history
    whole = lake.metadata(commit, "u", other.schema)
    assert whole["dagster/row_count"] == 1 and whole["delta_version"] == 1 and "partition" not in whole


def test_writer_lock_lets_one_holder_at_a_time(lake, tmp_path):
    path = lake.table_path("locked")
    taken = threading.Event()

    def second_holder():
        with writer_lock(path):
            taken.set()

    with writer_lock(path):
        assert (tmp_path / "lakehouse" / "cat" / "sch" / ".locked.lock").exists()
        thread = threading.Thread(target=second_holder, daemon=True)
        thread.start()
        assert not taken.wait(1.0), "a second holder took the lock while the first held it"
    assert taken.wait(10), "the second holder never got the lock after it was released"
    thread.join(10)


def test_a_write_waits_for_the_lock_of_its_table(lake):
    start = time.monotonic()
    lake.write_window(frame(lake, [(D1, 1)]), "t", DayWindow(D1, D2))
    unlocked_write = time.monotonic() - start  # a first write: slower than the next one
    done = threading.Event()

    def writer():
        lake.write_window(frame(lake, [(D1, 3)]), "t", DayWindow(D1, D2))
        done.set()

    with writer_lock(lake.table_path("t")):
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        held = max(2.0, 2 * unlocked_write)
        assert not done.wait(held), f"a write committed while its table's lock was held ({held:.1f} s)"
        assert lake.version("t") == 0
    assert done.wait(60)
    thread.join(10)
    assert lake.version("t") == 1 and by_day(lake.read("t").frame) == {"2024-03-01": [3]}
