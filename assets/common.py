"""What every asset shares: the dataset spec, the daily partitions, and Delta lineage metadata."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
)
from dagster import BetaWarning, PreviewWarning
from pyspark.sql.types import StructType

from ml.dataset import load_spec
from ml.delta_io import DeltaCommit

warnings.filterwarnings("ignore", category=BetaWarning)  # BackfillPolicy is beta in 1.13
warnings.filterwarnings("ignore", category=PreviewWarning)  # so are partitioned asset checks

SPEC = load_spec(os.environ.get("FLIGHTLINE_DATASET", "flights"))

daily_partitions = DailyPartitionsDefinition(start_date=SPEC.start_date, end_date=SPEC.end_date)


def partition_window(context: AssetExecutionContext) -> tuple[date, date]:
    """[start, end) dates of the partition, or of the whole range in a single-run backfill."""
    window = context.partition_time_window
    return _as_date(window.start), _as_date(window.end)


def _as_date(value: datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def days_of(start: date, end: date) -> list[date]:
    return [date.fromordinal(d) for d in range(start.toordinal(), end.toordinal())]


def day_materializations(asset: str, days: list[date], written: list[date], range_metadata: Callable[[], dict],
                         day_metadata: Callable[[date], dict]) -> Iterator:
    """What a run that checks each day on its own records of the days it wrote. Every day of its range: one
    MaterializeResult, which Dagster records on each of them. Only some days, because others failed: an
    AssetMaterialization per day written, with that day's own metadata (the run then fails, so nothing
    downstream runs, and the failed days show as failed in the UI)."""
    if written and len(written) == len(days):
        yield MaterializeResult(asset_key=asset, metadata=range_metadata())
        return
    for d in written:
        yield AssetMaterialization(asset_key=asset, partition=d.isoformat(), metadata=day_metadata(d))


def is_single_day(start: date, end: date) -> bool:
    return (end - start).days == 1


def partition_label(start: date, end: date) -> str:
    last = date.fromordinal(end.toordinal() - 1)
    return start.isoformat() if start == last else f"{start.isoformat()}...{last.isoformat()}"


def days_label(days) -> str:
    """The label of consecutive days, as partition_label gives it."""
    return partition_label(days[0], days[-1] + timedelta(days=1))


def column_schema(schema: StructType) -> TableSchema:
    return TableSchema(
        columns=[TableColumn(name=f.name, type=f.dataType.simpleString(), description=None) for f in schema.fields]
    )


def table_uri(path: str) -> MetadataValue:
    return MetadataValue.path(path if "://" in path else f"file://{path}")


def delta_metadata(commit: DeltaCommit, table_name: str, schema: StructType, whole_output: bool = True, **extra) -> dict:
    """The lineage contract for Delta outputs, with Dagster's standard keys where they exist.

    A single-run backfill records the same metadata on every partition of its range, so there the rows
    written are recorded as `rows_written_in_run`, not as one partition's `dagster/row_count`.
    """
    metadata = {
        "dagster/uri": table_uri(commit.path),
        "dagster/table_name": table_name,
        "dagster/column_schema": column_schema(schema),
        "delta_version": commit.version,
        "delta_operation": commit.operation,
    }
    if commit.rows_written is not None:
        metadata["dagster/row_count" if whole_output else "rows_written_in_run"] = commit.rows_written
    if commit.conflict_retries:  # another run's commit won a race; this write was retried (ml/delta_io.py)
        metadata["delta_conflict_retries"] = commit.conflict_retries
    metadata.update(extra)
    return metadata
