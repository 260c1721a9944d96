"""The dataset spec: everything dataset-specific, in one typed object.

Point the pipeline at your own table by writing a `DatasetSpec` (see `ml/datasets/flights.py`, or use
`table_source` for a Delta, Parquet or CSV table) and setting `FLIGHTLINE_DATASET=package.module:SPEC`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Callable, Literal

from pyspark.sql import DataFrame, SparkSession

EVENT_DATE = "event_date"  # the partition column of every daily table
LABEL = "label"  # the label column of the feature and split tables

Task = Literal["classification", "regression"]
# A source loader gets the SparkSession and a scratch folder it may use for staging files.
SourceLoader = Callable[[SparkSession, str], DataFrame]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load_source: SourceLoader = field(repr=False, compare=False)
    source_description: str
    event_time: str  # timestamp column the daily partitions come from
    key_columns: tuple[str, ...]  # unique per event
    label_expr: str  # Spark SQL expression over the raw columns; NULL while the label is unknown
    task: Task
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    leaky_columns: tuple[str, ...] = ()  # known only after the event: never used as features
    derived_columns: dict[str, str] = field(default_factory=dict)  # name -> Spark SQL expression over raw
    event_timezone: str = "UTC"  # the event date is the local date in this zone
    start_date: str = "2013-01-01"  # first daily partition
    end_date: str | None = None  # exclusive; None for an open-ended stream
    model_name: str = "model"
    primary_metric: str | None = None
    raw_columns: tuple[str, ...] = ()  # the source's contract: columns it must provide
    value_ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # feature -> bounds
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # categorical -> known values

    def __post_init__(self) -> None:
        if self.task not in ("classification", "regression"):
            raise ValueError(f"dataset {self.name}: task must be classification or regression, not {self.task!r}")
        features = self.features
        leaky = sorted(set(features) & set(self.leaky_columns))
        if leaky:
            raise ValueError(f"dataset {self.name}: features {leaky} are declared leaky")
        if len(set(features)) != len(features):
            raise ValueError(f"dataset {self.name}: a feature is listed twice: {features}")
        reserved = sorted({EVENT_DATE, LABEL} & set(features))
        if reserved:
            raise ValueError(f"dataset {self.name}: {reserved} are reserved column names")
        if not self.key_columns:
            raise ValueError(f"dataset {self.name}: key_columns must not be empty")

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.numeric_features) + tuple(self.categorical_features)

    @property
    def metric(self) -> str:
        return self.primary_metric or ("auc" if self.task == "classification" else "rmse")

    def fingerprint(self) -> str:
        """A short hash of everything that shapes the data and the model: recorded with every model version."""
        payload = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("load_source",)
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def table_source(fmt: str, path: str, options: dict[str, str] | None = None) -> SourceLoader:
    """A loader for a table that Spark reads directly (delta, parquet, csv, json, or a catalog table with fmt='table')."""

    def load(spark: SparkSession, _staging_dir: str) -> DataFrame:
        if fmt == "table":
            return spark.read.table(path)
        return spark.read.format(fmt).options(**(options or {})).load(path)

    return load


def load_spec(ref: str) -> DatasetSpec:
    """`flights` (a built-in name) or `package.module:ATTRIBUTE` for a spec of your own."""
    target = ref if ":" in ref else f"ml.datasets.{ref}:SPEC"
    module_name, attr = target.split(":", 1)
    try:
        spec = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"dataset spec {ref!r} not found: {exc}") from exc
    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"dataset spec {ref!r} is a {type(spec).__name__}, not a DatasetSpec")
    return spec
