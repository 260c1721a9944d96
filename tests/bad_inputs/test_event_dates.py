"""Source rows whose event date cannot be computed (ml/undated.py), on tiny frames: NULL, counted, stored once;
an event-date expression that raises is named instead of surfacing as Spark's error."""

import dataclasses
import json
from datetime import date, datetime

import pytest
from delta.tables import DeltaTable

from ml import delta_io, undated
from ml.datasets.flights import SPEC
from ml.features import raw_window
from orchestration.deployments import local_resources
from tests.conftest import TEST_SPARK_CONF

DDL = "year INT, month INT, day INT, flight INT, carrier STRING, origin STRING, time_hour TIMESTAMP"
T = datetime(2013, 2, 2, 12)


def quarantine_of(tmp_path):
    """The lakehouse over tmp_path, and a store of undated rows into raw_quarantine as raw_data does it."""
    lake = local_resources(SPEC, state=tmp_path, master="local[2]", spark_conf=TEST_SPARK_CONF)["lakehouse"]

    def store(quarantined, report, label):
        return lake.replace_rows(
            quarantined, "raw_quarantine", undated.stored_predicate(label), frame_is_empty=not report.rows
        )

    return lake.table_path("raw_quarantine"), store


def source(spark):
    return spark.createDataFrame(
        [
            (2013, 2, 2, 1, "UA", "EWR", T),  # in the window
            (2013, 2, 3, 2, "UA", "EWR", T),  # another day: neither kept nor counted
            (2013, 13, 2, 3, "UA", "EWR", T),  # an impossible month
            (2013, 2, 30, 4, "UA", "EWR", T),  # an impossible day
            (None, 2, 2, 5, "UA", "EWR", T),  # a missing year
        ],
        DDL,
    )


def test_impossible_dates_are_null_and_counted_with_the_window(spark):
    seen = raw_window(source(spark), SPEC, date(2013, 2, 2), date(2013, 2, 3), undated=True)
    report, quarantined = undated.measure(seen, SPEC, "source:a")
    assert (report.rows, report.window_rows, report.fraction) == (3, 1, 0.75) and not report.within_budget
    assert [r.flight for r in undated.dated(seen).collect()] == [1]
    assert sorted(json.loads(r)["flight"] for r in report.samples) == [3, 4, 5]
    rows = sorted(quarantined.collect(), key=lambda r: r.flight)
    assert [(r.flight, r.event_date, r.source_partition, r.failed_rules) for r in rows] == [
        (str(f), None, "source:a", ["no_partition_date"]) for f in (3, 4, 5)
    ]
    assert [r.flight for r in raw_window(source(spark), SPEC, date(2013, 2, 2), date(2013, 2, 3)).collect()] == [1]


def test_an_event_date_expression_that_raises_is_named(spark):
    raising = dataclasses.replace(SPEC, event_date_expr="make_date(year, month, day)")  # ANSI mode: month 13 raises
    seen = raw_window(source(spark), raising, date(2013, 2, 2), date(2013, 2, 3), undated=True)
    with pytest.raises(undated.EventDateError) as err:
        undated.measure(seen, raising, "source:a")
    message = str(err.value)
    assert message.startswith(
        "dataset flights: computing a source row's event date (event_date_expr "
        "'make_date(year, month, day)') raised instead of giving NULL: [DATETIME_FIELD_OUT_OF_BOUNDS"
    )
    assert message.endswith(
        "Nothing was written. Write the expression so that a date that cannot be computed is NULL "
        "(Spark's try_ functions, e.g. try_to_date): such rows are then quarantined as no_partition_date."
    )


def test_undated_rows_are_stored_once_per_source(spark, tmp_path):
    """Every run over a source sees all its undated rows: each run replaces what the last stored for that source."""
    path, store = quarantine_of(tmp_path)
    history = lambda: DeltaTable.forPath(spark, path).history().count()  # noqa: E731
    seen = raw_window(source(spark), SPEC, date(2013, 2, 2), date(2013, 2, 3), undated=True)
    none = seen.where("flight = 1")
    report, quarantined = undated.measure(none, SPEC, "source:a")
    assert report.rows == 0 and store(quarantined, report, "source:a") is None
    assert not delta_io.table_exists(spark, path)  # no empty table is created

    report, quarantined = undated.measure(seen, SPEC, "source:a")
    store(quarantined, report, "source:a")
    other, other_rows = undated.measure(seen.where("flight IN (1, 5)"), SPEC, "source:b")
    store(other_rows, other, "source:b")
    next_day = raw_window(source(spark), SPEC, date(2013, 2, 3), date(2013, 2, 4), undated=True)
    again, again_rows = undated.measure(next_day, SPEC, "source:a")  # the next day's run over source a
    assert again.rows == 3 and store(again_rows, again, "source:a").version == 2 and history() == 3
    counts = {
        r.source_partition: r["count"]
        for r in spark.read.format("delta").load(path).groupBy("source_partition").count().collect()
    }
    assert counts == {"source:a": 3, "source:b": 1}  # a's rows once, not once per day's run

    clean, clean_rows = undated.measure(none, SPEC, "source:c")  # a clean source adds no empty commit
    assert store(clean_rows, clean, "source:c") is None and history() == 3

    fixed, fixed_rows = undated.measure(none, SPEC, "source:a")  # source a was fixed: its rows are emptied
    assert store(fixed_rows, fixed, "source:a").version == 3
    assert spark.read.format("delta").load(path).where("source_partition = 'source:a'").count() == 0


def test_a_source_label_with_quotes_is_stored_and_replaced(spark, tmp_path):
    (path, store), label = quarantine_of(tmp_path), undated.source_label("/data/o'hare\\drops")
    seen = raw_window(source(spark), SPEC, date(2013, 2, 2), date(2013, 2, 3), undated=True)
    report, quarantined = undated.measure(seen, SPEC, label)
    store(quarantined, report, label)
    store(quarantined, report, label)
    assert [r.source_partition for r in spark.read.format("delta").load(path).collect()] == [label] * 3
