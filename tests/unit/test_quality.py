import copy
import dataclasses
from datetime import date

import great_expectations as gx
from pyspark.sql import functions as F

from ml.quality import feature_suite, run_suite, run_suite_by_day, with_key_column
from tests.unit.tiny import tiny_features, tiny_spec


def test_the_suite_passes_on_good_features(spark):
    spec = tiny_spec()
    outcome = run_suite(with_key_column(tiny_features(spark, n=30), spec), feature_suite(spec))
    assert outcome.success, [f.describe() for f in outcome.failures]
    assert outcome.evaluated >= 6


def test_the_suite_names_duplicate_keys_nulls_and_bad_labels(spark):
    spec = dataclasses.replace(tiny_spec(), required_columns=("color",))  # a required categorical: no NULL at all
    df = tiny_features(spark, n=30)
    bad = df.unionByName(df.limit(2)).unionByName(
        df.limit(1).selectExpr(
            "id + 1000 AS id", "ts", "event_date", "x1", "x2", "CAST(NULL AS STRING) AS color", "2.0 AS label"
        )
    )
    outcome = run_suite(with_key_column(bad, spec), feature_suite(spec))
    assert not outcome.success
    failed = {(f.expectation, f.column): f for f in outcome.failures}
    assert set(failed) == {
        ("expect_column_values_to_be_unique", "__key"),
        ("expect_column_values_to_not_be_null", "color"),
        ("expect_column_values_to_be_in_set", "label"),
    }
    assert failed[("expect_column_values_to_be_unique", "__key")].unexpected_count == 4
    assert failed[("expect_column_values_to_be_in_set", "label")].sample_unexpected == [2.0]
    assert "1 unexpected" in failed[("expect_column_values_to_not_be_null", "color")].describe()

    optional = run_suite(with_key_column(bad, tiny_spec()), feature_suite(tiny_spec()))  # color may be NULL
    assert {(f.expectation, f.column) for f in optional.failures} == set(failed) - {
        ("expect_column_values_to_not_be_null", "color")
    }  # 1 NULL of 33 rows is within the default `mostly` of 0.5


def test_the_suite_leaves_the_frame_uncached(spark):
    """GX's default persisted the batch and never unpersisted it: every run kept its rows in memory."""
    spec = tiny_spec()
    df = with_key_column(tiny_features(spark, n=30), spec)
    assert run_suite(df, feature_suite(spec)).success
    assert not df.is_cached


def test_uniqueness_is_decided_by_the_suites_own_expectation(spark):
    """The fast pass checks uniqueness by GX's unique proportion of a hash; where that stand-in fails (no non-NULL
    value at all: proportion 0), ExpectColumnValuesToBeUnique itself runs and decides, reported under its name."""
    import great_expectations as gx

    def suite():
        return gx.ExpectationSuite(name="keys", expectations=[gx.expectations.ExpectColumnValuesToBeUnique(column="k")])

    all_null = spark.createDataFrame([(None,), (None,)], "k STRING")
    outcome = run_suite(all_null, suite())
    assert outcome.success
    assert [(r.expectation, r.column, r.success) for r in outcome.results] == [
        ("expect_column_values_to_be_unique", "k", True)
    ]
    duplicated = spark.createDataFrame([("a",), ("a",), ("b",), (None,)], "k STRING")
    [failure] = run_suite(duplicated, suite()).failures
    assert (failure.expectation, failure.column, failure.unexpected_count, failure.sample_unexpected) == (
        "expect_column_values_to_be_unique",
        "k",
        2,
        ["a", "a"],
    )
    assert failure.unexpected_percent == 2 / 3 * 100


# ---- run_suite_by_day: a multi-day frame judged day by day ------------------------------------------------------

DAYS = [date(2013, 3, d) for d in (1, 2, 3, 4)]


def days_frame(spark, rows_per_day: int, x_of):
    """`rows_per_day` rows on each of DAYS: key k (unique within a day), x = x_of(day, i)."""
    rows = [(d, f"k{i}", x_of(d, i)) for d in DAYS for i in range(rows_per_day)]
    return spark.createDataFrame(rows, "event_date DATE, k STRING, x DOUBLE")


def suite(*expectations):
    return lambda n: gx.ExpectationSuite(name="days", expectations=[copy.copy(e) for e in expectations])


def test_a_day_below_a_mostly_passes_in_its_range_but_fails_alone(spark):
    df = days_frame(spark, 10, lambda d, i: None if d == DAYS[1] else float(i)).where(F.col("event_date") < DAYS[3])
    mostly = suite(gx.expectations.ExpectColumnValuesToNotBeNull(column="x", mostly=0.5))
    assert run_suite(df, mostly(3)).success  # 67% non-NULL over the 3 days: the dead day hides
    verdicts = run_suite_by_day(df, mostly, DAYS[:3])
    assert {d: (v.outcome.success, v.days) for d, v in verdicts.items()} == {
        DAYS[0]: (True, (DAYS[0], DAYS[2])),
        DAYS[1]: (False, (DAYS[1],)),
        DAYS[2]: (True, (DAYS[0], DAYS[2])),
    }
    assert [(f.column, f.unexpected_percent) for f in verdicts[DAYS[1]].outcome.failures] == [("x", 100.0)]


def test_a_failure_is_narrowed_to_its_day_by_halving(spark):
    df = days_frame(spark, 5, lambda d, i: -1.0 if (d, i) == (DAYS[2], 3) else float(i))
    between = suite(gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=100))
    verdicts = run_suite_by_day(df, between, DAYS)
    assert {d: (v.outcome.success, v.days) for d, v in verdicts.items()} == {
        DAYS[0]: (True, tuple(DAYS[:2])),
        DAYS[1]: (True, tuple(DAYS[:2])),  # the passing half
        DAYS[2]: (False, (DAYS[2],)),
        DAYS[3]: (True, (DAYS[3],)),
    }  # the failing half, split again
    assert [(f.unexpected_count, f.sample_unexpected) for f in verdicts[DAYS[2]].outcome.failures] == [(1, [-1.0])]


def test_a_failure_that_no_single_day_has_fails_the_days_together(spark):
    """A key duplicated across two days: each day alone is unique, the two together are not."""
    df = days_frame(spark, 3, lambda d, i: float(i)).where(F.col("event_date") <= DAYS[1])
    unique = suite(gx.expectations.ExpectColumnValuesToBeUnique(column="k"))
    verdicts = run_suite_by_day(df, unique, DAYS[:2])
    assert {d: (v.outcome.success, v.days) for d, v in verdicts.items()} == {
        DAYS[0]: (False, tuple(DAYS[:2])),
        DAYS[1]: (False, tuple(DAYS[:2])),
    }
    assert verdicts[DAYS[0]].outcome.failures[0].unexpected_count == 6


def test_the_search_stops_at_its_budget_of_runs(spark):
    df = days_frame(spark, 3, lambda d, i: -1.0)
    between = suite(gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=100))
    verdicts = run_suite_by_day(df, between, DAYS, max_runs=2)  # one run, no room to split: the days fail together
    assert {v.days for v in verdicts.values()} == {tuple(DAYS)} and not any(
        v.outcome.success for v in verdicts.values()
    )
    verdicts = run_suite_by_day(df, between, DAYS, max_runs=7)  # 1 + 2 + 4: every day alone
    assert {d: v.days for d, v in verdicts.items()} == {d: (d,) for d in DAYS}
