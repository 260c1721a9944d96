import dataclasses
import json
from datetime import datetime

import pytest

from ml import quarantine as q
from ml.contract import SchemaContractError, enforce_contract
from ml.datasets.flights import SPEC
from ml.features import feature_columns, with_derived, with_event_date
from tests.unit.test_features import _flight, _raw

T = datetime(2013, 1, 1, 15)
DEST = 13  # in tests.unit.test_features._flight's tuple


def _annotated(spark, rows, malformed=None):
    raw = _raw(spark, rows)
    if malformed is not None:
        from pyspark.sql import functions as F

        raw = raw.withColumn("_malformed_record", F.when(F.col("flight") == malformed, F.lit("2013,1,1,bad")))
    return q.annotate(with_derived(with_event_date(raw, SPEC), SPEC), SPEC)


def test_each_broken_rule_is_named_and_good_rows_pass(spark):
    flights = [
        _flight(T, flight=1),
        _flight(T, flight=2, carrier=None),
        _flight(T, flight=3, origin="XYZ"),
        _flight(T, flight=4),
        _flight(T, flight=4),  # the same key twice
        _flight(T, flight=5, carrier="U\ufffdA"),
        _flight(datetime(2013, 1, 3, 15), flight=6),
    ]
    rows = [list(r) for r in flights] + [list(_flight(T, flight=7))]
    rows[6][0:3] = [2013, 1, 1]  # y/m/d say Jan 1, the event time says Jan 3
    rows[-1][15] = -5.0  # a negative distance
    annotated = _annotated(spark, [tuple(r) for r in rows], malformed=None)
    failed = {(r["flight"], tuple(r[q.FAILED_RULES])) for r in annotated.collect()}
    assert failed == {
        (1, ()),
        (2, ("carrier_not_null",)),
        (3, ("origin_allowed",)),
        (4, ()),
        (4, ("duplicate_key",)),
        (5, ("invalid_utf8",)),
        (6, ("event_time_in_partition",)),
        (7, ("distance_in_range",)),
    }
    counts = q.total(list(q.count_by_day(annotated, SPEC).values()))
    assert (counts.rows, counts.quarantined, counts.kept) == (8, 6, 2)
    assert counts.by_rule == {
        "carrier_not_null": 1,
        "origin_allowed": 1,
        "duplicate_key": 1,
        "invalid_utf8": 1,
        "event_time_in_partition": 1,
        "distance_in_range": 1,
    }
    good = q.good_rows(annotated, SPEC)
    assert good.columns == feature_columns(SPEC) and good.count() == 2
    bad = q.quarantined_rows(annotated, SPEC, "2013-01-01").collect()
    assert len(bad) == 6 and {r.source_partition for r in bad} == {"2013-01-01"}
    record = json.loads(next(r.record for r in bad if r.flight == "7"))
    assert record["distance"] == -5.0 and record["carrier"] == "UA"


def test_malformed_records_are_quarantined_with_their_text(spark):
    annotated = _annotated(spark, [_flight(T, flight=1), _flight(T, flight=2)], malformed=2)
    bad = q.quarantined_rows(annotated, SPEC, "2013-01-01").collect()
    assert [(r.flight, list(r.failed_rules)) for r in bad] == [("2", ["malformed_record"])]
    assert json.loads(bad[0].record)["_malformed_record"] == "2013,1,1,bad"


def test_unknown_labels_are_kept_not_quarantined(spark):
    counts = q.total(
        list(
            q.count_by_day(
                _annotated(spark, [_flight(T, flight=1, arr_delay=None), _flight(T, flight=2)]), SPEC
            ).values()
        )
    )
    assert (counts.quarantined, counts.unlabelled) == (0, 1)


def test_the_contract_names_missing_and_mistyped_columns(spark):
    df = (
        _raw(spark, [_flight(T)])
        .drop("distance")
        .withColumn("flight", __import__("pyspark.sql.functions").sql.functions.lit("x"))
    )
    with pytest.raises(SchemaContractError) as err:
        enforce_contract(df, SPEC)
    assert str(err.value) == (
        "dataset flights: the source breaks its schema contract: column 'flight' is STRING, "
        "expected INT; column 'distance' is missing (expected DOUBLE)"
    )


def test_extra_columns_are_ignored_or_refused_as_the_spec_says(spark):
    from pyspark.sql import functions as F

    df = _raw(spark, [_flight(T)]).withColumn("gate", F.lit("B12"))
    kept, report = enforce_contract(df, SPEC)
    assert report.ignored_columns == ("gate",) and "gate" not in kept.columns
    strict = dataclasses.replace(SPEC, extra_columns="error")
    with pytest.raises(SchemaContractError, match=r"unexpected columns \['gate'\] \(the spec refuses extra columns\)"):
        enforce_contract(df, strict)


def test_a_null_categorical_is_quarantined_only_where_the_spec_requires_the_column(spark):
    no_dest = list(_flight(T, flight=2))
    no_dest[DEST] = None
    rows = [_flight(T, flight=1), tuple(no_dest)]
    failed = {(r["flight"], tuple(r[q.FAILED_RULES])) for r in _annotated(spark, rows).collect()}
    assert failed == {(1, ()), (2, ("dest_not_null",))}  # flights lists dest in required_columns
    optional = dataclasses.replace(SPEC, required_columns=tuple(c for c in SPEC.required_columns if c != "dest"))
    annotated = q.annotate(with_derived(with_event_date(_raw(spark, rows), optional), optional), optional)
    assert {(r["flight"], tuple(r[q.FAILED_RULES])) for r in annotated.collect()} == {(1, ()), (2, ())}
    good = q.good_rows(annotated, optional).orderBy("flight").collect()
    assert [r.dest for r in good] == ["IAH", None]  # the NULL goes on to the features, where the model buckets it


@pytest.mark.parametrize(
    "rows, quarantined, passes",
    [
        (19, 1, True),  # 5.3%, over the 5% budget, within the allowance of 3 rows
        (19, 3, True),
        (19, 4, False),  # over both
        (900, 45, True),  # exactly 5%
        (900, 46, False),
        (0, 0, False),  # nothing to validate
    ],
)
def test_the_budget_is_a_share_of_the_day_or_a_small_allowance_of_rows(rows, quarantined, passes):
    counts = q.QuarantineCounts(rows=rows, quarantined=quarantined, unlabelled=0, by_rule={})
    assert SPEC.quarantine_allowance == 3 and SPEC.max_quarantine_fraction == 0.05
    assert counts.within_budget(SPEC) is passes
    assert q.QuarantineCounts(19, 1, 0, {}).within_budget(dataclasses.replace(SPEC, quarantine_allowance=0)) is False
