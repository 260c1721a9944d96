"""The dataset spec: everything dataset-specific, in one typed object.

Point the pipeline at your own table by writing a `DatasetSpec` (see `ml/datasets/flights.py`, or use
`table_source` for a Delta, Parquet or CSV table) and setting `FLIGHTLINE_DATASET=package.module:SPEC`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from pyspark.sql import DataFrame, SparkSession

EVENT_DATE = "event_date"  # the partition column of every daily table
LABEL = "label"  # the label column of the feature and split tables

MALFORMED = "_malformed_record"  # raw text of a source record that did not parse; NULL for good records

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class SourceContext:
    staging_dir: str  # scratch space a loader may use, e.g. to unpack an archive
    location: str | None = None  # overrides the spec's default source location (a folder, a path or a table)


SourceLoader = Callable[[SparkSession, SourceContext], DataFrame]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load_source: SourceLoader = field(repr=False, compare=False)
    source_description: str
    # The timestamp column the daily partitions come from. None: a snapshot table (no event time), whose rows all
    # belong to the one partition `start_date` (its load date); split by `hash`, not by time.
    event_time: str | None
    key_columns: tuple[str, ...]  # unique per event
    label_expr: str  # Spark SQL expression over the raw columns; NULL while the label is unknown
    task: Task
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    start_date: str  # first daily partition (YYYY-MM-DD)
    leaky_columns: tuple[str, ...] = ()  # known only after the event: never used as features
    derived_columns: dict[str, str] = field(default_factory=dict)  # name -> Spark SQL expression over raw
    event_timezone: str = "UTC"  # the event date is the local date in this zone
    end_date: str | None = None  # exclusive; None for an open-ended stream
    model_name: str = "model"
    primary_metric: str | None = None
    # SQL for the partition date; default: local date of event_time. NULL where the date cannot be computed
    # (use try_ functions: ANSI mode raises otherwise): such rows are quarantined as no_partition_date.
    event_date_expr: str | None = None
    # The source's schema contract: column -> Spark type (int, double, string, timestamp, ...). Missing
    # columns and other types are errors; extra columns are ignored with a warning, or refused.
    raw_schema: dict[str, str] = field(default_factory=dict)
    extra_columns: Literal["ignore", "error"] = "ignore"
    # Besides keys and event time: never NULL (a NULL row is quarantined). A categorical that is not listed here may
    # be NULL: the model gives NULL its own bucket (StringIndexer's "keep" index, ml/pipeline.py), and the GX suite
    # holds it to `min_non_null` (default 0.5), as it does a numeric feature.
    required_columns: tuple[str, ...] = ()
    value_ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # feature -> bounds
    allowed_values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # categorical -> the only values
    min_non_null: dict[str, float] = field(default_factory=dict)  # feature -> least non-null share (default 0.5)
    rows_per_day: tuple[int, int] = (1, 10_000_000)  # bounds on the rows of one daily partition
    split_strategy: Literal["time", "hash"] | None = None  # the splits' default; None: time, or hash for a snapshot
    max_quarantine_fraction: float = 0.05  # above this share of quarantined rows, the partition fails ...
    # ... unless it quarantined at most this many rows: a share means little on a tiny day
    quarantine_allowance: int = 3
    # Many models (ml/segments.py): one single-node model per value of this column (a key or a categorical
    # feature), trained where a segment has at least `min_segment_rows` training rows. None: no segment models.
    segment_column: str | None = None
    min_segment_rows: int = 200

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
        if self.event_time is None:
            if self.split_strategy == "time":
                raise ValueError(f"dataset {self.name}: a snapshot (no event_time) cannot be split by time: use hash")
            if self.end_date is not None and self.end_date != _next_day(self.start_date):
                raise ValueError(
                    f"dataset {self.name}: a snapshot (no event_time) is the one partition start_date "
                    f"({self.start_date}): end_date must be empty or {_next_day(self.start_date)}, not {self.end_date}"
                )
            if self.event_date_expr:
                raise ValueError(f"dataset {self.name}: a snapshot (no event_time) takes no event_date_expr")
        if self.quarantine_allowance < 0:
            raise ValueError(
                f"dataset {self.name}: quarantine_allowance must be 0 or more, not {self.quarantine_allowance}"
            )
        if self.segment_column is not None:
            allowed = (*self.key_columns, *self.categorical_features)
            if self.segment_column not in allowed or self.segment_column == EVENT_DATE:
                raise ValueError(
                    f"dataset {self.name}: segment_column {self.segment_column!r} must be a key column or a "
                    f"categorical feature (one of {sorted(set(allowed) - {EVENT_DATE})})"
                )
        if not (isinstance(self.min_segment_rows, int) and self.min_segment_rows >= 1):
            raise ValueError(f"dataset {self.name}: min_segment_rows is {self.min_segment_rows!r}, not an integer >= 1")

    @property
    def is_snapshot(self) -> bool:
        return self.event_time is None

    @property
    def last_partition_end(self) -> str | None:
        """The daily partitions' exclusive end: end_date, or for a snapshot the day after its one partition."""
        return _next_day(self.start_date) if self.is_snapshot else self.end_date

    @property
    def default_split_strategy(self) -> str:
        return self.split_strategy or ("hash" if self.is_snapshot else "time")

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.numeric_features) + tuple(self.categorical_features)

    @property
    def metric(self) -> str:
        return self.primary_metric or ("auc" if self.task == "classification" else "rmse")

    def fingerprint(self) -> str:
        """A short hash of everything that shapes the data and the model: recorded with every model version."""
        payload = {k: v for k, v in self.__dict__.items() if k not in ("load_source",)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def table_source(fmt: str, path: str, options: dict[str, str] | None = None) -> SourceLoader:
    """A loader for a table that Spark reads directly (delta, parquet, csv, json, or a catalog table with fmt='table')."""

    def load(spark: SparkSession, ctx: SourceContext) -> DataFrame:
        where = ctx.location or path
        if fmt == "table":
            return spark.read.table(where)
        return spark.read.format(fmt).options(**(options or {})).load(where)

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
