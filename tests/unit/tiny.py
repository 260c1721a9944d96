"""A tiny synthetic dataset spec and frames, for unit tests of ml/ on real Spark."""

import random
from datetime import date, datetime, timedelta

from ml.dataset import DatasetSpec, table_source


def tiny_spec(task="classification"):
    return DatasetSpec(
        name="tiny", load_source=table_source("delta", "/nonexistent"), source_description="tiny",
        event_time="ts", key_columns=("id", "event_date"),
        label_expr="label_raw", task=task,
        numeric_features=("x1", "x2"), categorical_features=("color",), model_name="tiny_model",
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
    return spark.createDataFrame(rows, "id INT, ts TIMESTAMP, event_date DATE, x1 DOUBLE, x2 DOUBLE, color STRING, label DOUBLE")
