"""Model performance once the labels arrive: every metric of the task, per day and per model version.

Spark's evaluators (`ml.metrics`) compute one number for a whole DataFrame; here there is one number per
group (day, model version), so the same definitions are written as grouped aggregations: one pass over the
rows, nothing collected. They equal the evaluators on each group (tests/unit/test_performance.py):
- auc: area under the ROC curve through every distinct score, i.e. the share of (positive, negative)
  pairs ranked right, ties counting half. Spark's evaluator also down-samples curves of more than ~2,000
  distinct scores to 1,000 bins; a day of predictions stays below that, where both are exact.
- pr_auc: trapezoids through (recall, precision) at every distinct score, starting at (0, first precision).
- f1: F1 per true class, weighted by the class's share of the labels (Spark's "f1", weightedFMeasure).
- log_loss: mean of -log(probability of the true class), clipped to [1e-15, 1 - 1e-15].
- rmse, mae, r2 for regression.
A metric that needs both classes (auc, pr_auc) is NULL for a group with one class only; the curve metrics
and log_loss are NULL when the probability is (scorer `spark_udf`). A group's key may be NULL (a segment_predictions
row whose segment is NULL): the groups' parts are joined null-safely.

`segment_performance` groups segment_predictions (ml/segments.py) per day, segment and the model that scored it.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL, DatasetSpec
from ml.metrics import TASK_METRICS

GROUP = (EVENT_DATE, "model_name", "model_version")
# segment_predictions: per day, segment and the model that scored the segment's rows (its own, or the global one),
# and the bundle version that chose it
SEGMENT_GROUP = (EVENT_DATE, "segment", "scored_by", "scored_by_model", "scored_by_version", *GROUP[1:])
EPS = 1e-15


def with_labels(predictions: DataFrame, features: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Each prediction with its actual label: NULL while the outcome is unknown (or the row is gone)."""
    keys = list(spec.key_columns)
    return predictions.join(features.select(*keys, LABEL), keys, "left")


def performance(joined: DataFrame, spec: DatasetSpec, by: tuple[str, ...] = GROUP) -> DataFrame:
    """One row per group: rows scored, rows with a label, and every metric of the task on the labelled rows.

    `metric_name` and `primary_metric` repeat the spec's primary metric, for readers that want one number.
    """
    by = list(by)
    counts = joined.groupBy(*by).agg(F.count(F.lit(1)).alias("scored_rows"), F.count(LABEL).alias("labelled_rows"))
    labelled = joined.where(F.col(LABEL).isNotNull())
    metrics = _classification(labelled, by) if spec.task == "classification" else _regression(labelled, by)
    return _join_groups(counts, metrics, by).select(
        *by,
        F.lit(spec.metric).alias("metric_name"),
        F.col(spec.metric).alias("primary_metric"),
        *TASK_METRICS[spec.task],
        "scored_rows",
        "labelled_rows",
    )


def segment_performance(predictions: DataFrame, features: DataFrame, spec: DatasetSpec) -> DataFrame:
    """segment_predictions' rows with their labels, and `performance` per day, segment, scoring model and bundle
    version (SEGMENT_GROUP): one row per group, lazy; as many rows as days x segments, whatever the rows scored."""
    return performance(with_labels(predictions, features, spec), spec, SEGMENT_GROUP)


def _join_groups(left: DataFrame, right: DataFrame, by: list[str]) -> DataFrame:
    """`left` with `right`'s other columns, matched on every column of `by` null-safely (`<=>`: a NULL key meets a
    NULL key); a left join, keeping `left`'s key columns."""
    keys = {c: f"_right_{c}" for c in by}
    other = right.select(*[F.col(c).alias(k) for c, k in keys.items()], *[c for c in right.columns if c not in keys])
    on = [F.col(c).eqNullSafe(F.col(k)) for c, k in keys.items()]  # by name: `left` has no `_right_*` columns
    return left.join(other, on, "left").drop(*keys.values())


def _ratio(numerator: Column, denominator: Column, otherwise: float | None = None) -> Column:
    """numerator / denominator, or `otherwise` (NULL by default) when the denominator is 0 (ANSI mode)."""
    return F.when(denominator != 0, numerator / denominator).otherwise(F.lit(otherwise))


def _classification(labelled: DataFrame, by: list[str]) -> DataFrame:
    y, yhat, p = F.col(LABEL), F.col("prediction"), F.col("probability")
    p_true = F.when(y == 1.0, p).otherwise(1.0 - p)
    clipped = F.when(p.isNotNull(), F.least(F.greatest(p_true, F.lit(EPS)), F.lit(1.0 - EPS)))  # greatest skips NULLs
    counts = labelled.groupBy(*by).agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(y).alias("pos"),
        F.count_if((y == 1.0) & (yhat == 1.0)).alias("tp"),
        F.count_if((y == 0.0) & (yhat == 1.0)).alias("fp"),
        F.count_if((y == 0.0) & (yhat == 0.0)).alias("tn"),
        F.avg(-F.log(clipped)).alias("log_loss"),
    )
    neg, fn = F.col("n") - F.col("pos"), F.col("pos") - F.col("tp")
    tp, fp, tn = F.col("tp"), F.col("fp"), F.col("tn")
    f1_pos = _ratio(2 * tp, 2 * tp + fp + fn, 0.0)
    f1_neg = _ratio(2 * tn, 2 * tn + fn + fp, 0.0)
    f1 = (F.col("pos") * f1_pos + neg * f1_neg) / F.col("n")
    return _join_groups(counts.select(*by, f1.alias("f1"), "log_loss"), _curves(labelled, by), by)


def _curves(labelled: DataFrame, by: list[str]) -> DataFrame:
    """auc and pr_auc from one row per (group, distinct score): far fewer rows than predictions."""
    y = F.col(LABEL)
    scores = (
        labelled.where(F.col("probability").isNotNull())
        .groupBy(*by, "probability")
        .agg(F.sum(y).alias("pos_at"), F.sum(1.0 - y).alias("neg_at"))
    )
    group = Window.partitionBy(*by)
    below = group.orderBy("probability").rowsBetween(Window.unboundedPreceding, -1)
    above = group.orderBy(F.desc("probability")).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    points = scores.select(
        *by,
        "probability",
        "pos_at",
        "neg_at",
        F.coalesce(F.sum("neg_at").over(below), F.lit(0.0)).alias("neg_below"),
        F.sum("pos_at").over(group).alias("P"),
        F.sum("neg_at").over(group).alias("N"),
        F.sum("pos_at").over(above).alias("tp"),
        F.sum("neg_at").over(above).alias("fp"),
    )
    points = points.withColumns(
        {
            "recall": _ratio(F.col("tp"), F.col("P")),
            "precision": F.col("tp") / (F.col("tp") + F.col("fp")),  # every score has a row: never 0 / 0
        }
    )
    previous = group.orderBy(F.desc("probability"))
    points = points.withColumns(
        {
            "prev_recall": F.lag("recall", 1, 0.0).over(previous),
            "prev_precision": F.coalesce(F.lag("precision", 1).over(previous), F.col("precision")),
        }
    )
    P, N = F.first("P"), F.first("N")
    pairs_ranked_right = F.sum(F.col("pos_at") * (F.col("neg_below") + 0.5 * F.col("neg_at")))
    trapezoids = F.sum((F.col("recall") - F.col("prev_recall")) * (F.col("precision") + F.col("prev_precision")) / 2)
    both = (P > 0) & (N > 0)
    return points.groupBy(*by).agg(
        F.when(both, pairs_ranked_right / (P * N)).alias("auc"),
        F.when(both, trapezoids).alias("pr_auc"),
    )


def _regression(labelled: DataFrame, by: list[str]) -> DataFrame:
    err = F.col("prediction") - F.col(LABEL)
    sums = labelled.groupBy(*by).agg(
        F.sqrt(F.avg(err * err)).alias("rmse"),
        F.avg(F.abs(err)).alias("mae"),
        F.sum(err * err).alias("sse"),
        (F.var_pop(LABEL) * F.count(F.lit(1))).alias("sst"),
    )
    return sums.select(*by, "rmse", "mae", (1.0 - _ratio(F.col("sse"), F.col("sst"))).alias("r2"))
