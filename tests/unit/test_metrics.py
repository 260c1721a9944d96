import pytest

from ml.metrics import evaluate, is_better


@pytest.mark.parametrize(
    "candidate, reference, metric, margin, expected",
    [
        (0.71, 0.70, "auc", 0.0, True),
        (0.70, 0.70, "auc", 0.0, False),  # equal is not better
        (0.705, 0.70, "auc", 0.01, False),  # not by more than the margin
        (0.69, 0.70, "auc", 0.0, False),
        (9.0, 10.0, "rmse", 0.0, True),
        (10.0, 10.0, "rmse", 0.0, False),
        (11.0, 10.0, "rmse", 0.0, False),
        (0.5, 0.4, "r2", 0.0, True),
    ],
)
def test_is_better(candidate, reference, metric, margin, expected):
    assert is_better(candidate, reference, metric, margin) is expected


def test_regression_metrics_on_a_tiny_frame(spark):
    df = spark.createDataFrame([(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)], "label DOUBLE, prediction DOUBLE")
    m = evaluate(df, "regression")
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx((2 / 3) ** 0.5)


def test_a_metric_of_the_other_task_is_refused(spark):
    df = spark.createDataFrame([(1.0, 2.0)], "label DOUBLE, prediction DOUBLE")
    with pytest.raises(ValueError, match="metric 'auc' does not fit a regression task"):
        evaluate(df, "regression", ("auc",))
