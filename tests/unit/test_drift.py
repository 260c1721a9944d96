"""Reference profiles and drift statistics on tiny frames, with a real SparkSession."""

import math
from datetime import date, timedelta
from functools import reduce

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml import drift
from ml.drift import (
    NULL,
    OTHER,
    DriftPolicy,
    FeatureProfile,
    ReferenceProfile,
    build_profile,
    daily_counts,
    day_summaries,
    js,
    ks,
    psi,
    window_drift,
)
from tests.unit.tiny import tiny_features, tiny_spec


@pytest.fixture(scope="module")
def reference(spark):
    return build_profile(tiny_features(spark, n=600, seed=1), tiny_spec())


def test_profile_buckets_cover_the_training_rows(reference):
    assert reference.rows == 600
    x1 = reference.features["x1"]
    assert x1.kind == "numeric" and len(x1.edges) == 9 and x1.edges == sorted(x1.edges)
    assert sum(x1.shares.values()) == pytest.approx(1.0)
    assert all(share == pytest.approx(0.1, abs=0.02) for b, share in x1.shares.items() if b != NULL)  # deciles
    assert reference.features["x2"].shares[NULL] == pytest.approx(36 / 600)  # every 17th x2 is NULL
    color = reference.features["color"]
    assert color.buckets == ["blue", "green", "red"] and color.shares[OTHER] == 0
    assert ReferenceProfile.from_json(reference.to_json()) == reference


def test_statistics():
    same = {"a": 0.5, "b": 0.5}
    assert psi(same, same) == 0 and js(same, same) == 0 and ks(same, same, ["a", "b"]) == 0
    moved = {"a": 0.9, "b": 0.1}
    assert psi(moved, same) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5))  # sum (a-e) ln(a/e)
    assert ks(moved, same, ["a", "b"]) == pytest.approx(0.4)
    assert 0 < js(moved, same) < 1 and js({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)


def test_same_data_does_not_drift_and_a_shift_does(spark, reference):
    same = tiny_features(spark, n=600, seed=2)  # fresh sample of the same distribution
    shifted = (
        tiny_features(spark, n=600, seed=3)
        .withColumn("x1", F.col("x1") + 2)
        .withColumn("color", F.when(F.col("id") % 2 == 0, F.lit("purple")).otherwise(F.col("color")))
    )
    policy = DriftPolicy(window_days=12)
    for frame, expect in ((same, False), (shifted, True)):
        counts = daily_counts(frame, reference)
        rows = window_drift(counts, [date(2024, 1, 12)], reference, policy)
        by = {r["feature"]: r for r in rows}
        assert by["x1"]["drifted"] is expect and by["color"]["drifted"] is expect
        assert by["x2"]["drifted"] is False and by["x1"]["rows"] == 600 and by["x1"]["window_days"] == 12
        summary = day_summaries(rows, policy)[date(2024, 1, 12)]
        assert summary["drifted"] is expect and summary["share_drifted"] == (2 / 3 if expect else 0)
    assert by["color"]["unseen_share"] == pytest.approx(0.5) and by["color"]["js"] > 0.1
    assert summary["worst"][0][0] in ("x1", "color")


def test_each_day_is_judged_on_its_trailing_window(spark, reference):
    counts = daily_counts(tiny_features(spark, n=600, seed=2), reference)
    assert len(counts) == 12 and sum(c["__rows"] for c in counts.values()) == 600
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(12)]
    rows = window_drift(counts, days, reference, DriftPolicy(window_days=3))
    windows = {r["event_date"]: (r["window_days"], r["rows"]) for r in rows if r["feature"] == "x1"}
    assert windows[date(2024, 1, 1)] == (1, 50) and windows[date(2024, 1, 2)] == (2, 100)
    assert windows[date(2024, 1, 12)] == (3, 150)


def test_windows_skip_days_without_rows(spark, reference):
    """Running window totals: days with no rows neither enter nor break a window, and a day past the last
    rows is still judged on the rows left in its window."""
    frame = tiny_features(spark, n=600, seed=2).where(F.col("event_date") != date(2024, 1, 5))
    counts = daily_counts(frame, reference)
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(14)]  # 1-14 Jan; rows on 1-12 Jan but the 5th
    rows = window_drift(counts, days, reference, DriftPolicy(window_days=3))
    windows = {r["event_date"]: (r["window_days"], r["rows"]) for r in rows if r["feature"] == "x1"}
    assert windows[date(2024, 1, 5)] == (2, 100) and windows[date(2024, 1, 6)] == (2, 100)  # 3-4, 4+6
    assert windows[date(2024, 1, 7)] == (2, 100) and windows[date(2024, 1, 8)] == (3, 150)
    assert windows[date(2024, 1, 14)] == (1, 50) and date(2024, 1, 15) not in windows  # only the 12th is left
    assert len({r["event_date"] for r in rows}) == 14 and len(rows) == 14 * len(reference.features)


def test_a_categorical_without_training_values_counts_every_value_as_unseen(spark):
    training = tiny_features(spark, n=120, seed=1).withColumn("color", F.lit(None).cast("string"))
    blank = build_profile(training, tiny_spec())
    assert blank.features["color"].buckets == [] and blank.features["color"].shares == {NULL: 1.0, OTHER: 0.0}
    counts = daily_counts(tiny_features(spark, n=120, seed=2), blank)
    row = window_drift(counts, [date(2024, 1, 12)], blank, DriftPolicy(window_days=12))
    color = next(r for r in row if r["feature"] == "color")
    assert color["unseen_share"] == 1.0 and color["null_share"] == 0.0 and color["rows"] == 120 and color["drifted"]


def _wide_reference(numeric: int) -> ReferenceProfile:
    """A hand-made profile, so test rows can sit exactly on bin edges: x<i> has 9 edges (even i) or one (odd
    i); `color` knows blue and red; `shade` had no training values at all."""
    deciles = [-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]
    features = {}
    for i in range(numeric):
        edges = deciles if i % 2 == 0 else [0.0]
        features[f"x{i}"] = FeatureProfile(f"x{i}", "numeric", [str(b) for b in range(len(edges) + 1)], {}, edges)
    features["color"] = FeatureProfile("color", "categorical", ["blue", "red"], {})
    features["shade"] = FeatureProfile("shade", "categorical", [], {})
    return ReferenceProfile(0, features)


def _wide_rows(spark, reference: ReferenceProfile):
    """Rows over 3 days with NULLs, values on and between the edges, NaN, infinities, and unseen categories."""
    values = [None, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 7.0, float("nan"), float("inf"), float("-inf")]
    numeric = [n for n, p in reference.features.items() if p.kind == "numeric"]
    rows = [
        (
            date(2024, 1, 1 + r % 3),
            *[values[(r * 7 + i * 3) % len(values)] for i in range(len(numeric))],
            [None, "blue", "red", "green"][r % 4],
            [None, "dark"][r % 2],
        )
        for r in range(60)
    ]
    schema = ", ".join(["event_date DATE", *[f"{n} DOUBLE" for n in numeric], "color STRING", "shade STRING"])
    return spark.createDataFrame(rows, schema)


def _reference_counts(frame, reference: ReferenceProfile) -> dict:
    """The same counts the simple way: one groupBy per feature (unioned, one job), buckets named in SQL from
    the profile alone (a numeric value's bin is the number of edges at or below it)."""
    grouped = []
    for name, p in reference.features.items():
        c = F.col(name)
        if p.kind == "numeric":
            bucket = sum(F.when(c >= edge, 1).otherwise(0) for edge in p.edges).cast("string")
        else:
            bucket = F.when(c.isin(p.buckets), c).otherwise(F.lit(OTHER)) if p.buckets else F.lit(OTHER)
        grouped.append(
            frame.groupBy("event_date", F.when(c.isNull(), F.lit(NULL)).otherwise(bucket).alias("b"))
            .count()
            .withColumn("f", F.lit(name))
        )
    expected: dict = {}
    for row in reduce(DataFrame.unionAll, grouped).collect():
        expected.setdefault(row["event_date"], {})[f"{row['f']}\u241f{row['b']}"] = row["count"]
    for day in expected.values():
        day["__rows"] = sum(v for k, v in day.items() if k.startswith("x0\u241f"))
    return expected


@pytest.fixture(scope="module")
def wide(spark):
    """21 numeric features + 2 categoricals: more code than one pass takes, with the rows and their counts."""
    reference = _wide_reference(21)
    frame = _wide_rows(spark, reference).cache()
    return reference, frame, _reference_counts(frame, reference)


@pytest.mark.parametrize("budget, passes", [(1_000, 12), (drift.CODE_BUDGET, 2), (10**6, 1)])
def test_counts_in_passes_equal_one_group_by_per_feature(wide, monkeypatch, budget, passes):
    """A spec wider than one pass: every (day, feature, bucket) count is the same as a plain per-feature
    groupBy, whatever the split, down to a last pass of a single feature."""
    reference, frame, expected = wide
    monkeypatch.setattr(drift, "CODE_BUDGET", budget)
    assert len(drift._passes(list(reference.features.values()))) == passes
    counts = daily_counts(frame, reference)
    assert counts == expected
    assert sum(day["__rows"] for day in counts.values()) == 60
    assert counts[date(2024, 1, 1)]["x0\u241f" + NULL] == 2 and counts[date(2024, 1, 1)]["shade\u241f" + OTHER] == 10


def test_profile_in_chunks_equals_the_one_pass_profile(spark, monkeypatch, reference):
    monkeypatch.setattr(drift, "CODE_BUDGET", 1)  # every feature over the budget: each gets a pass of its own
    assert drift._passes(list(reference.features.values())) == [[0], [1], [2]]
    assert build_profile(tiny_features(spark, n=600, seed=1), tiny_spec()) == reference


def test_the_run_log_names_every_day_of_a_week_and_counts_those_of_a_longer_run():
    from datetime import date, timedelta

    from assets.drift import drift_line

    days = {date(2013, 7, 1) + timedelta(days=i): {"share_drifted": i / 10, "drifted": i >= 3} for i in range(8)}
    week = dict(list(days.items())[:2])
    assert drift_line(week) == "2013-07-01: 0% of features, 2013-07-02: 10% of features"
    assert drift_line(days) == (
        "5 of 8 days drifted; last day 2013-07-08: 70% of features DRIFTED (every day: "
        "drift_by_day in the metadata, and the drift_metrics table)"
    )
