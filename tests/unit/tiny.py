"""A tiny synthetic dataset spec and frames, for unit tests of ml/ on real Spark."""

import random
from datetime import date, datetime, timedelta

from ml.dataset import DatasetSpec, table_source


def tiny_spec(task="classification", segment_column=None, min_segment_rows=200):
    return DatasetSpec(
        name="tiny",
        load_source=table_source("delta", "/nonexistent"),
        source_description="tiny",
        event_time="ts",
        key_columns=("id", "event_date"),
        label_expr="label_raw",
        task=task,
        numeric_features=("x1", "x2"),
        categorical_features=("color",),
        start_date="2024-01-01",
        model_name="tiny_model",
        segment_column=segment_column,
        min_segment_rows=min_segment_rows,
    )


def tiny_features(spark, n=240, days=12, seed=7, task="classification", colors=("red", "green", "blue")):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        day = date(2024, 1, 1) + timedelta(days=i % days)
        x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
        color = colors[i % len(colors)]
        signal = 1.5 * x1 - x2 + (0.8 if color == "red" else 0.0)
        label = float(signal + rng.gauss(0, 0.5) > 0) if task == "classification" else signal + rng.gauss(0, 0.1)
        rows.append((i, datetime(day.year, day.month, day.day, 12), day, x1, None if i % 17 == 0 else x2, color, label))
    return spark.createDataFrame(
        rows, "id INT, ts TIMESTAMP, event_date DATE, x1 DOUBLE, x2 DOUBLE, color STRING, label DOUBLE"
    )


def tiny_lineage(run_id, dagster_run_id="dagster-run-1", test_set_version=3):
    """The lineage tags a registered tiny version carries (registration refuses a version without them)."""
    from ml.registry import lineage_tags

    return lineage_tags(
        tiny_spec(),
        {"test_set": ("/lakehouse/main/tiny/test_set", test_set_version)},
        {"mlflow.run_id": run_id, "dagster.run_id": dagster_run_id},
    )


def log_tiny_model(spark, experiment_id, task="classification", weak=False, spec=None, seed=7):
    """Fit a small logistic/linear regression pipeline on tiny data and log it to MLflow with a signature.

    `weak=True` trains on random labels: a real model that is worse on the test set. Returns
    (model URI, run id, the fitted PipelineModel, the test frame).
    """
    import mlflow
    from pyspark.sql import functions as F

    from ml.pipeline import build_pipeline
    from ml.training import model_signature, pip_requirements

    spec = spec or tiny_spec(task)
    frame = tiny_features(spark, task=task, seed=seed)
    if "colour" in spec.categorical_features:
        frame = frame.withColumnRenamed("color", "colour")
    train, test = frame.where("event_date < '2024-01-10'"), frame.where("event_date >= '2024-01-10'")
    if weak:
        train = train.withColumn("label", F.rand(seed=11) if task == "regression" else F.round(F.rand(seed=11)))
    algorithm = "logistic_regression" if task == "classification" else "linear_regression"
    model = build_pipeline(spec, algorithm, {"maxIter": 20}).fit(train.where("label IS NOT NULL"))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.spark.log_model(
            model, artifact_path="model", signature=model_signature(spec), pip_requirements=pip_requirements()
        )
    return info.model_uri, run.info.run_id, model, test
