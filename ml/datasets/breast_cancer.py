"""The Wisconsin diagnostic breast cancer table (scikit-learn's packaged `breast_cancer.csv`, from the UCI
repository, CC BY 4.0): 569 tumours, 30 numeric measurements of cell nuclei, and the diagnosis.

A snapshot classification table: no event time. All its rows belong to the one partition `start_date` (the date
the snapshot was loaded), and its splits are by a seeded hash of the key (`split_strategy` hash, the default for a
snapshot). The key is each sample's row number in the packaged file, which scikit-learn keeps stable. A source
location (a CSV with a header: `sample_id`, the 30 measurement columns, `target`) replaces the packaged table.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from ml.dataset import DatasetSpec, SourceContext


def package_file() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "breast_cancer.csv"


def feature_names() -> tuple[str, ...]:
    """The 30 measurements, snake_case ('mean radius' -> mean_radius), in the file's order."""
    kinds = ("mean", "error", "worst")
    measures = (
        "radius texture perimeter area smoothness compactness concavity concave_points symmetry fractal_dimension"
    ).split()
    return tuple(f"{kind}_{m}" for kind in kinds for m in measures)


FEATURES = feature_names()


def load_breast_cancer(spark: SparkSession, ctx: SourceContext) -> DataFrame:
    schema = "sample_id INT, " + ", ".join(f"{c} DOUBLE" for c in FEATURES) + ", target INT"
    if ctx.location:
        return spark.read.options(header="true").schema(schema).csv(ctx.location)
    # The packaged file's first line is a count line ("569,30,malignant,benign"), not a header: read its 569
    # rows (a few hundred kB) in Python and number them.
    with open(package_file(), newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        rows = [(i, *map(float, r[:-1]), int(r[-1])) for i, r in enumerate(reader)]
    return spark.createDataFrame(rows, schema)


SPEC = DatasetSpec(
    name="breast_cancer",
    load_source=load_breast_cancer,
    source_description="scikit-learn breast_cancer.csv (UCI Wisconsin diagnostic breast cancer, 569 samples)",
    event_time=None,  # a snapshot
    key_columns=("sample_id", "event_date"),
    label_expr="CAST(target = 0 AS DOUBLE)",  # 0 is malignant in the file: the positive class
    task="classification",
    numeric_features=FEATURES,
    categorical_features=(),
    start_date="2025-01-01",  # the snapshot's load date: its one partition
    model_name="malignant_tumour",
    primary_metric="auc",
    raw_schema={"sample_id": "int", **dict.fromkeys(FEATURES, "double"), "target": "int"},
    required_columns=("target",),
    value_ranges={c: (0.0, None) for c in FEATURES},
    rows_per_day=(100, 100_000),
)
