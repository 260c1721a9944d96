"""From source rows to raw partitions, and from raw partitions to typed features."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL, DatasetSpec


def local_date(spec: DatasetSpec):
    """The local calendar date of the event time, in the spec's time zone."""
    return F.to_date(F.from_utc_timestamp(F.col(spec.event_time), spec.event_timezone))


def with_event_date(df: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Add the partition column: `spec.event_date_expr`, or else the local date of the event time; for a snapshot,
    its one partition, `start_date`."""
    if spec.is_snapshot:
        return df.withColumn(EVENT_DATE, F.lit(spec.start_date).cast("date"))
    if spec.event_time not in df.columns:
        raise ValueError(f"dataset {spec.name}: the source has no event-time column {spec.event_time!r}")
    return df.withColumn(EVENT_DATE, F.expr(spec.event_date_expr) if spec.event_date_expr else local_date(spec))


def raw_window(source: DataFrame, spec: DatasetSpec, start: date, end: date, undated: bool = False) -> DataFrame:
    """Source rows whose event date is in [start, end): the rows of those daily partitions.

    `undated=True` keeps the rows without an event date too (NULL event_date), which belong to no partition:
    raw_data quarantines them (ml/undated.py) from the same pass instead of dropping them unseen.
    """
    df = with_event_date(source, spec)
    in_window = (F.col(EVENT_DATE) >= F.lit(start)) & (F.col(EVENT_DATE) < F.lit(end))
    return df.where(in_window | F.col(EVENT_DATE).isNull() if undated else in_window)


def feature_columns(spec: DatasetSpec) -> list[str]:
    """Columns of the feature table, in order, each once."""
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    event_time = [] if spec.is_snapshot else [spec.event_time]
    return list(dict.fromkeys([*keys, *event_time, EVENT_DATE, *spec.features, LABEL]))


def with_derived(raw: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Raw columns plus the spec's derived columns, the typed features and the label."""
    derived = {name: F.expr(expr) for name, expr in spec.derived_columns.items()}
    df = raw.withColumns(derived) if derived else raw  # Spark Connect refuses withColumns({})
    typed = {c: F.col(c).cast("double") for c in spec.numeric_features}
    typed.update({c: F.col(c).cast("string") for c in spec.categorical_features})
    return df.withColumns({**typed, LABEL: F.expr(spec.label_expr).cast("double")})


def select_features(derived: DataFrame, spec: DatasetSpec) -> DataFrame:
    return derived.select(*feature_columns(spec))


def build_features(raw: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Typed features: keys, event time and date, numeric features as DOUBLE, categoricals as STRING, the label.

    Leaky columns never pass: only the spec's declared features are selected. The label is NULL while it
    is unknown (for example a cancelled flight, or an event whose outcome has not arrived yet); such rows are
    still scored, and left out of training.
    """
    return select_features(with_derived(raw, spec), spec)
