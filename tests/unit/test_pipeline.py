import pytest

from ml.metrics import evaluate
from ml.pipeline import ESTIMATORS, build_pipeline
from tests.unit.tiny import tiny_features, tiny_spec

PARAMS = {
    "logistic_regression": {"regParam": 0.01},
    "linear_regression": {"regParam": 0.01},
    "random_forest": {"numTrees": 5, "maxDepth": 3},
    "gbt": {"maxIter": 3, "maxDepth": 2},
}


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("algorithm", ["linear", "random_forest", "gbt"])
def test_every_algorithm_fits_and_learns(spark, task, algorithm):
    algorithm = (
        {"classification": "logistic_regression", "regression": "linear_regression"}[task]
        if algorithm == "linear"
        else algorithm
    )
    spec = tiny_spec(task)
    df = tiny_features(spark, task=task)
    model = build_pipeline(spec, algorithm, PARAMS[algorithm]).fit(df)
    metrics = evaluate(model.transform(df), task)
    if task == "classification":
        assert metrics["auc"] > 0.8  # the signal is strong: a model that learned nothing scores 0.5
    else:
        assert metrics["r2"] > 0.5


def test_unseen_categories_and_missing_numbers_are_scored(spark):
    spec = tiny_spec()
    model = build_pipeline(spec, "logistic_regression", PARAMS["logistic_regression"]).fit(tiny_features(spark))
    unseen = tiny_features(spark, n=6, colors=("purple",))
    scored = model.transform(unseen).select("prediction", "probability").collect()
    assert len(scored) == 6 and all(r["prediction"] in (0.0, 1.0) for r in scored)


def test_unknown_algorithm_names_the_choices():
    with pytest.raises(ValueError, match=r"algorithm 'svm' is not available for classification; choose one of"):
        build_pipeline(tiny_spec(), "svm", {})
    assert set(ESTIMATORS["regression"]) == {"linear_regression", "random_forest", "gbt"}


def test_a_null_category_is_a_bucket_of_its_own_that_the_model_learns(spark):
    """Rows with no color, all positive: the indexer's "keep" index gives them a one-hot slot of their own, and
    the model learns that slot's weight (an all-zero one-hot could not tell them from the dropped last label)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    spec = tiny_spec()
    frame = (
        tiny_features(spark)
        .withColumn("color", F.when(F.col("id") % 4 == 0, F.lit(None)).otherwise(F.col("color")))
        .withColumn("label", F.when(F.col("color").isNull(), F.lit(1.0)).otherwise(F.col("label")))
    )
    model = build_pipeline(spec, "logistic_regression", PARAMS["logistic_regression"]).fit(frame)
    indexer = model.stages[3]
    assert indexer.labelsArray[0] and None not in indexer.labelsArray[0]  # NULL is not one of the labels ...
    scored = model.transform(frame.where("color IS NULL"))
    assert {r["color__index"] for r in scored.select("color__index").collect()} == {float(len(indexer.labelsArray[0]))}
    as_green = model.transform(frame.where("color IS NULL").withColumn("color", F.lit("green")))

    def mean_positive(df):
        return df.select(F.mean(vector_to_array("probability")[1])).first()[0]

    assert mean_positive(scored) > mean_positive(as_green) + 0.2  # ... the extra index, learned to mean "late"
