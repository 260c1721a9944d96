"""Per-day, per-version (and per-segment) metrics equal Spark's own evaluators on each group, on tiny frames."""

import random
from datetime import date

import pytest
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

from ml.metrics import TASK_METRICS, evaluate
from ml.performance import performance, segment_performance, with_labels
from tests.unit.tiny import tiny_spec

DAYS = (date(2024, 1, 1), date(2024, 1, 2))
SCHEMA = (
    "id INT, event_date DATE, prediction DOUBLE, probability DOUBLE, model_name STRING, model_version STRING, "
    "label DOUBLE"
)


def predictions(spark, task="classification", n=60, seed=3):
    """Two days x two versions; scores rounded to one decimal, so many rows tie."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        day, version = DAYS[i % 2], str(1 + (i // 2) % 2)
        if task == "classification":
            label = float(rng.random() < 0.4)
            p = round(min(1.0, max(0.0, 0.3 * label + rng.random() * 0.7)), 1)
            rows.append((i, day, float(p > 0.5), p, "m", version, label))
        else:
            label = rng.gauss(0, 1)
            rows.append((i, day, label + rng.gauss(0, 0.5), None, "m", version, label))
    return spark.createDataFrame(rows, SCHEMA)


def expected_by_group(df, task, groups, metrics=None):
    """Spark's evaluators on each group's rows (the probability vector rebuilt as [1 - p, p])."""
    if task == "classification":
        df = df.withColumn("probability", array_to_vector(F.array(1.0 - F.col("probability"), F.col("probability"))))
    return {
        (day, version): evaluate(
            df.where((F.col("event_date") == F.lit(day)) & (F.col("model_version") == version)), task, metrics
        )
        for day, version in groups
    }


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_metrics_per_day_and_version_equal_sparks_evaluators(spark, task):
    df = predictions(spark, task)
    got = {(r.event_date, r.model_version): r.asDict() for r in performance(df, tiny_spec(task)).collect()}
    assert set(got) == {(d, v) for d in DAYS for v in ("1", "2")}
    expected = expected_by_group(df, task, [(DAYS[0], "1"), (DAYS[1], "2")])  # two groups: each evaluator call is a job
    for group, metrics in expected.items():
        assert set(metrics) == set(TASK_METRICS[task])
        for name, value in metrics.items():
            assert got[group][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (group, name)
        assert got[group]["labelled_rows"] == got[group]["scored_rows"] == 15
        assert got[group]["metric_name"] == ("auc" if task == "classification" else "rmse")
        assert got[group]["primary_metric"] == got[group][got[group]["metric_name"]]


def test_unlabelled_rows_are_counted_and_left_out_of_the_metrics(spark):
    df = predictions(spark)
    day1_v1 = (F.col("event_date") == F.lit(DAYS[0])) & (F.col("model_version") == "1")
    half = df.withColumn("label", F.when(day1_v1 & (F.col("id") % 8 == 0), None).otherwise(F.col("label")))
    got = {(r.event_date, r.model_version): r for r in performance(half, tiny_spec()).collect()}
    g = got[(DAYS[0], "1")]
    assert (g.scored_rows, g.labelled_rows) == (15, 15 - half.where(day1_v1 & F.col("label").isNull()).count())
    expected = expected_by_group(
        half.where(F.col("label").isNotNull()), "classification", [(DAYS[0], "1")], ("auc", "f1")
    )[(DAYS[0], "1")]
    assert g.auc == pytest.approx(expected["auc"]) and g.f1 == pytest.approx(expected["f1"])


def test_a_group_without_labels_has_counts_and_no_metrics(spark):
    df = predictions(spark).withColumn("label", F.lit(None).cast("double"))
    rows = performance(df, tiny_spec()).collect()
    assert len(rows) == 4
    assert all(r.labelled_rows == 0 and r.scored_rows == 15 for r in rows)
    assert all(r.auc is None and r.f1 is None and r.primary_metric is None for r in rows)


def test_one_class_only_has_no_curve_metrics_and_null_probabilities_no_probability_metrics(spark):
    df = predictions(spark)
    one_class = df.withColumn("label", F.lit(1.0))
    r = performance(one_class, tiny_spec()).collect()[0]
    assert r.auc is None and r.pr_auc is None and r.f1 is not None
    no_probability = df.withColumn("probability", F.lit(None).cast("double"))  # scored by spark_udf
    r = performance(no_probability, tiny_spec()).collect()[0]
    assert r.auc is None and r.pr_auc is None and r.log_loss is None
    group = (r.event_date, r.model_version)
    assert r.f1 == pytest.approx(expected_by_group(df, "classification", [group], ("f1",))[group]["f1"])


def test_predictions_meet_their_labels_by_key(spark):
    preds = predictions(spark).drop("label")
    features = predictions(spark).select("id", "event_date", "label").where("id < 50")  # the rest: not yet known
    joined = with_labels(preds, features, tiny_spec())
    assert joined.count() == 60
    assert joined.where("label IS NULL").count() == 10
    assert (
        joined.join(predictions(spark).select("id", F.col("label").alias("truth")), "id")
        .where("label IS NOT NULL AND label != truth")
        .count()
        == 0
    )


SEGMENT_SCHEMA = (
    "id INT, event_date DATE, segment STRING, prediction DOUBLE, probability DOUBLE, model_name STRING, "
    "model_version STRING, scored_by STRING, scored_by_model STRING, scored_by_version STRING"
)
SCORERS = {  # segment -> (scored_by, scored_by_model, scored_by_version), as ml.segments.score_segments names them
    "red": ("segment", "m_by_segment/red", "3"),
    "green": ("global", "m", "7"),
    None: ("global", "m", "7"),  # a row whose segment is NULL: the global model scores it
}


def segment_predictions(spark, n=72, seed=5):
    """segment_predictions-like rows over two days and three segments (one NULL), and the features' labels: every
    row's but those of id % 9 == 0 (their flights have not landed yet)."""
    rng = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        day, segment = DAYS[i % 2], list(SCORERS)[(i // 2) % 3]
        label = float(rng.random() < 0.4)
        p = round(min(1.0, max(0.0, 0.3 * label + rng.random() * 0.7)), 1)
        rows.append((i, day, segment, float(p > 0.5), p, "m_by_segment", "3", *SCORERS[segment]))
        labels.append((i, day, None if i % 9 == 0 else label))
    return spark.createDataFrame(rows, SEGMENT_SCHEMA), spark.createDataFrame(
        labels, "id INT, event_date DATE, label DOUBLE"
    )


def test_segment_performance_has_one_row_per_day_segment_and_scoring_model(spark):
    predictions, features = segment_predictions(spark)
    got = {(r.event_date, r.segment): r for r in segment_performance(predictions, features, tiny_spec()).collect()}
    assert set(got) == {(d, s) for d in DAYS for s in SCORERS}
    labelled = predictions.join(features, ["id", "event_date"]).where("label IS NOT NULL")
    for (day, segment), r in got.items():
        assert (r.scored_by, r.scored_by_model, r.scored_by_version) == SCORERS[segment]
        assert (r.model_name, r.model_version, r.metric_name) == ("m_by_segment", "3", "auc")
        ids = [i for i in range(72) if DAYS[i % 2] == day and list(SCORERS)[(i // 2) % 3] == segment]
        assert (r.scored_rows, r.labelled_rows) == (len(ids), sum(1 for i in ids if i % 9 != 0)), (day, segment)
    # the NULL segment's group keeps its metrics (its parts are joined null-safely), equal to Spark's evaluators
    for day, segment in ((DAYS[0], None), (DAYS[1], "red")):
        rows = labelled.where(F.col("event_date") == F.lit(day)).where(
            F.col("segment").isNull() if segment is None else F.col("segment") == segment
        )
        vectors = rows.withColumn(
            "probability", array_to_vector(F.array(1.0 - F.col("probability"), F.col("probability")))
        )
        expected = evaluate(vectors, "classification")
        for name, value in expected.items():
            assert got[(day, segment)][name] == pytest.approx(value, rel=1e-9, abs=1e-12), (day, segment, name)
        assert got[(day, segment)].primary_metric == got[(day, segment)].auc
