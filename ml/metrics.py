"""Model metrics for both task types, computed by Spark evaluators (no collect of the rows)."""

from __future__ import annotations

from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    MulticlassClassificationEvaluator,
    RegressionEvaluator,
)
from pyspark.sql import DataFrame

from ml.dataset import LABEL

HIGHER_IS_BETTER = {"auc": True, "pr_auc": True, "f1": True, "log_loss": False, "rmse": False, "mae": False, "r2": True}
TASK_METRICS = {"classification": ("auc", "pr_auc", "f1", "log_loss"), "regression": ("rmse", "mae", "r2")}


def evaluator(task: str, metric: str):
    if metric not in TASK_METRICS.get(task, ()):
        raise ValueError(f"metric {metric!r} does not fit a {task} task; choose one of {TASK_METRICS.get(task)}")
    if metric in ("auc", "pr_auc"):
        name = "areaUnderROC" if metric == "auc" else "areaUnderPR"
        # numBins=0: the exact curve, one point per distinct score. The default (1000) groups the sorted scores into
        # bins per partition of a range-partitioned sort whose sample is seeded by the RDD's id, so the same
        # predictions gave an AUC that moved by ~1e-5 from one evaluation to the next (bench/replay.py).
        return BinaryClassificationEvaluator(labelCol=LABEL, rawPredictionCol="probability", metricName=name, numBins=0)
    if metric in ("f1", "log_loss"):
        name = "f1" if metric == "f1" else "logLoss"
        return MulticlassClassificationEvaluator(labelCol=LABEL, predictionCol="prediction", metricName=name)
    return RegressionEvaluator(labelCol=LABEL, predictionCol="prediction", metricName=metric)


def evaluate(predictions: DataFrame, task: str, metrics: tuple[str, ...] | None = None) -> dict[str, float]:
    return {m: float(evaluator(task, m).evaluate(predictions)) for m in (metrics or TASK_METRICS[task])}


def is_better(candidate: float, reference: float, metric: str, margin: float = 0.0) -> bool:
    """Strictly better by more than `margin`: an equal candidate is not better."""
    if HIGHER_IS_BETTER[metric]:
        return candidate > reference + margin
    return candidate < reference - margin
