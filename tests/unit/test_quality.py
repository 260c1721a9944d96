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
