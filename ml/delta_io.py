"""Delta reads and writes with the facts lineage needs: table version, rows written, schema."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from ml.dataset import EVENT_DATE


@dataclass(frozen=True)
class DeltaCommit:
    path: str
    version: int
    operation: str
    rows_written: int | None
    files_written: int | None


def window_predicate(start: date, end: date, column: str = EVENT_DATE) -> str:
    return f"{column} >= '{start.isoformat()}' AND {column} < '{end.isoformat()}'"


def write_partitions(df: DataFrame, path: str, start: date, end: date, column: str = EVENT_DATE,
                     user_metadata: str | None = None) -> DeltaCommit:
    """Replace the daily partitions [start, end) of a Delta table with `df`, atomically.

    `replaceWhere` makes a rerun replace the partitions instead of adding rows, and Delta refuses rows
    outside the window, so a partition's write can never touch its neighbours.
    """
    return replace_where(df, path, window_predicate(start, end, column), column, user_metadata)


def days_predicate(days: list[date], column: str = EVENT_DATE) -> str:
    return f"{column} IN ({', '.join(repr(d.isoformat()) for d in sorted(days))})"


def replace_where(df: DataFrame, path: str, predicate: str, column: str = EVENT_DATE,
                  user_metadata: str | None = None) -> DeltaCommit:
    """Replace the rows matching `predicate` (a condition on the partition column) with `df`, in one commit.

    `user_metadata` is stored in the commit (e.g. the Dagster run that wrote it), so Delta's history
    leads back to the run.
    """
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate).partitionBy(column)
    if user_metadata:
        writer = writer.option("userMetadata", user_metadata)
    writer.save(path)
    return last_commit(df.sparkSession, path)


def overwrite_table(df: DataFrame, path: str, user_metadata: str | None = None) -> DeltaCommit:
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if user_metadata:
        writer = writer.option("userMetadata", user_metadata)
    writer.save(path)
    return last_commit(df.sparkSession, path)


def last_commit(spark: SparkSession, path: str) -> DeltaCommit:
    row = DeltaTable.forPath(spark, path).history(1).select("version", "operation", "operationMetrics").first()
    metrics = row["operationMetrics"] or {}
    return DeltaCommit(
        path=path,
        version=int(row["version"]),
        operation=row["operation"],
        rows_written=int(metrics["numOutputRows"]) if "numOutputRows" in metrics else None,
        files_written=int(metrics["numFiles"]) if "numFiles" in metrics else None,
    )


def table_exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def current_version(spark: SparkSession, path: str) -> int:
    return last_commit(spark, path).version


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    if not table_exists(spark, path):
        raise FileNotFoundError(f"no Delta table at {path}: materialize its asset first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def read_pinned(spark: SparkSession, path: str) -> tuple[DataFrame, int]:
    """The table at its current version, and that version: reads that are reproducible and recordable."""
    version = current_version(spark, path) if table_exists(spark, path) else None
    return read_table(spark, path, version), version  # type: ignore[return-value]
