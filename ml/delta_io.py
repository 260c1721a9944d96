"""Delta reads and writes with the facts lineage needs: table version, rows written, schema."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Callable

from delta.exceptions import (  # importing delta.exceptions also turns the JVM's conflicts into these classes
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from ml.dataset import EVENT_DATE

log = logging.getLogger(__name__)

# Optimistic-concurrency conflicts that a fresh attempt resolves: the commit lost a race, nothing was written.
# ConcurrentTransactionException (the same idempotent txn id twice) is left out: retrying it would be a bug.
RETRYABLE_CONFLICTS = (
    ConcurrentAppendException, ConcurrentDeleteReadException, ConcurrentDeleteDeleteException,
    ConcurrentWriteException, MetadataChangedException, ProtocolChangedException,
)
WRITE_ATTEMPTS = 4
HISTORY_SEARCHED = 100  # commits searched for a write's own: far more than writers that can race it


@dataclass(frozen=True)
class DeltaCommit:
    path: str
    version: int
    operation: str
    rows_written: int | None
    files_written: int | None
    conflict_retries: int = 0


def window_predicate(start: date, end: date, column: str = EVENT_DATE) -> str:
    return f"{column} >= '{start.isoformat()}' AND {column} < '{end.isoformat()}'"


def write_partitions(df: DataFrame, path: str, start: date, end: date, column: str = EVENT_DATE,
                     user_metadata: str | None = None, attempts: int = WRITE_ATTEMPTS) -> DeltaCommit:
    """Replace the daily partitions [start, end) of a Delta table with `df`, atomically.

    `replaceWhere` makes a rerun replace the partitions instead of adding rows, and Delta refuses rows
    outside the window, so a partition's write can never touch its neighbours.
    """
    return replace_where(df, path, window_predicate(start, end, column), column, user_metadata, attempts,
                         what=f"{path} [{start}, {end})")


def days_predicate(days: list[date], column: str = EVENT_DATE) -> str:
    return f"{column} IN ({', '.join(repr(d.isoformat()) for d in sorted(days))})"


def replace_where(df: DataFrame, path: str, predicate: str, column: str = EVENT_DATE,
                  user_metadata: str | None = None, attempts: int = WRITE_ATTEMPTS, what: str | None = None) -> DeltaCommit:
    """Replace the rows matching `predicate` (a condition on the partition column) with `df`, in one commit.

    `user_metadata` is stored in the commit (e.g. the Dagster run that wrote it), so Delta's history leads
    back to the run; a write id is added to it, to find this write's own commit among concurrent ones.
    Retryable commit conflicts are retried (`retry_on_conflict`).
    """
    tag = with_write_id(user_metadata)
    writer = (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", tag)
        .partitionBy(column)
    )
    retries = retry_on_conflict(lambda: writer.save(path), what=what or f"{path} where {predicate}", attempts=attempts)
    commit = last_commit(df.sparkSession, path, user_metadata=tag)
    if commit is None:  # Delta commits nothing when a write neither adds nor removes a file (no rows, none before)
        unchanged = last_commit(df.sparkSession, path)
        commit = DeltaCommit(path, unchanged.version, "none: nothing to write or replace", 0, 0)
    return DeltaCommit(**{**commit.__dict__, "conflict_retries": retries})


def with_write_id(user_metadata: str | None) -> str:
    """The commit's userMetadata: the caller's JSON object (or text, as `note`) plus a unique `write_id`."""
    try:
        fields = json.loads(user_metadata) if user_metadata else {}
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        fields = {"note": user_metadata}
    return json.dumps({**fields, "write_id": str(uuid.uuid4())})


def retry_on_conflict(write: Callable[[], None], what: str, attempts: int = WRITE_ATTEMPTS,
                      base_delay: float = 0.5) -> int:
    """Run `write` until it commits, at most `attempts` times; return how many conflicts it retried.

    Only Delta's retryable commit conflicts are retried (a failed attempt commits nothing, so trying again
    is safe); anything else, and the last conflict, is raised as is. The jittered backoff keeps two
    writers from colliding again in lockstep.
    """
    attempt = 1
    while True:
        try:
            write()
            return attempt - 1
        except RETRYABLE_CONFLICTS as exc:
            if attempt >= attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1) * (1 + random.random())
            log.warning("Delta commit conflict writing %s (attempt %d of %d, retrying in %.1f s): %s",
                        what, attempt, attempts, delay, type(exc).__name__)
            time.sleep(delay)
            attempt += 1


def overwrite_table(df: DataFrame, path: str, user_metadata: str | None = None) -> DeltaCommit:
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if user_metadata:
        writer = writer.option("userMetadata", user_metadata)
    writer.save(path)
    return last_commit(df.sparkSession, path)


def last_commit(spark: SparkSession, path: str, user_metadata: str | None = None) -> DeltaCommit | None:
    """The table's latest commit, or, with `user_metadata`, the latest commit that carries it (None if there is
    none): with other writers at work, the latest commit may be someone else's."""
    history = DeltaTable.forPath(spark, path).history(HISTORY_SEARCHED if user_metadata else 1)
    if user_metadata:
        history = history.where(history.userMetadata == user_metadata).orderBy(history.version.desc()).limit(1)
    row = history.select("version", "operation", "operationMetrics").first()
    if row is None:
        return None
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
