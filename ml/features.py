"""From source rows to raw partitions, and from raw partitions to typed features."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL, DatasetSpec


def with_event_date(df: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Add the partition column: the local calendar date of the event time in the spec's time zone."""
    missing = [c for c in (spec.event_time,) if c not in df.columns]
    if missing:
        raise ValueError(f"dataset {spec.name}: the source has no event-time column {missing[0]!r}")
    local = F.from_utc_timestamp(F.col(spec.event_time), spec.event_timezone)
    return df.withColumn(EVENT_DATE, F.to_date(local))


def raw_window(source: DataFrame, spec: DatasetSpec, start: date, end: date) -> DataFrame:
    """Source rows whose event date is in [start, end): the rows of those daily partitions."""
    df = with_event_date(source, spec)
    return df.where((F.col(EVENT_DATE) >= F.lit(start)) & (F.col(EVENT_DATE) < F.lit(end)))


def feature_columns(spec: DatasetSpec) -> list[str]:
    """Columns of the feature table, in order, each once."""
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    return list(dict.fromkeys([*keys, spec.event_time, EVENT_DATE, *spec.features, LABEL]))


def build_features(raw: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Typed features: keys, event time and date, numeric features as DOUBLE, categoricals as STRING, the label.

    Leaky columns never pass: only the spec's declared features are selected. The label is NULL while it
    is unknown (for example a cancelled flight, or an event whose outcome has not arrived yet); such rows are
    still scored, and left out of training.
    """
    df = raw
    for name, expr in spec.derived_columns.items():
        df = df.withColumn(name, F.expr(expr))
    typed = {
        **{c: F.col(c).cast("double") for c in spec.numeric_features},
        **{c: F.col(c).cast("string") for c in spec.categorical_features},
    }
    names = list(dict.fromkeys(feature_columns(spec)[:-1]))  # a key may also be a feature: select it once
    return df.select(
        *[typed.get(c, F.col(c)).alias(c) for c in names],
        F.expr(spec.label_expr).cast("double").alias(LABEL),
    )
