from ml.quality import feature_suite, run_suite, with_key_column
from tests.unit.tiny import tiny_features, tiny_spec


def test_the_suite_passes_on_good_features(spark):
    spec = tiny_spec()
    outcome = run_suite(with_key_column(tiny_features(spark, n=30), spec), feature_suite(spec))
    assert outcome.success, [f.describe() for f in outcome.failures]
    assert outcome.evaluated >= 6


def test_the_suite_names_duplicate_keys_nulls_and_bad_labels(spark):
    spec = tiny_spec()
    df = tiny_features(spark, n=30)
    bad = df.unionByName(df.limit(2)).unionByName(
        df.limit(1).selectExpr("id + 1000 AS id", "ts", "event_date", "x1", "x2", "CAST(NULL AS STRING) AS color", "2.0 AS label"))
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
    assert [(r.expectation, r.column, r.success) for r in outcome.results] == [("expect_column_values_to_be_unique", "k", True)]
    duplicated = spark.createDataFrame([("a",), ("a",), ("b",), (None,)], "k STRING")
    [failure] = run_suite(duplicated, suite()).failures
    assert (failure.expectation, failure.column, failure.unexpected_count, failure.sample_unexpected) == (
        "expect_column_values_to_be_unique", "k", 2, ["a", "a"])
    assert failure.unexpected_percent == 2 / 3 * 100
