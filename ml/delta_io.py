"""Delta reads and writes with the facts lineage needs: table version, rows written, schema.

Delta's own refusals (another schema, a path that is not a Delta table, a broken transaction log, rows
outside a replaceWhere) are raised as `DeltaTableError`s that name the table, what was expected and found,
and what to do, chained from Delta's error: an ops engineer never has to read a Java stack trace.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from urllib.parse import urlparse

from delta.exceptions import (  # importing delta.exceptions also turns the JVM's conflicts into these classes
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)
from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.errors.exceptions.connect import SparkConnectException  # GX imports it too
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from ml.dataset import EVENT_DATE
from ml.days import DayWindow
from ml.spark import is_connect

log = logging.getLogger(__name__)

# Optimistic-concurrency conflicts that a fresh attempt resolves: the commit lost a race, nothing was written.
# ConcurrentTransactionException (the same idempotent txn id twice) is left out: retrying it would be a bug.
RETRYABLE_CONFLICTS = (
    ConcurrentAppendException,
    ConcurrentDeleteReadException,
    ConcurrentDeleteDeleteException,
    ConcurrentWriteException,
    MetadataChangedException,
    ProtocolChangedException,
)
WRITE_ATTEMPTS = 4
HISTORY_SEARCHED = 100  # commits searched for a write's own: far more than writers that can race it
SCHEMA_REFUSALS = ("DELTA_FAILED_TO_MERGE_FIELDS", "DELTA_METADATA_MISMATCH")  # Delta's error conditions
REPLACE_WHERE_REFUSAL = "DELTA_REPLACE_WHERE_MISMATCH"
SAMPLES = 5  # values shown in an error
CHANGE_FEED = "delta.enableChangeDataFeed"  # the table property of Delta's change data feed
CHANGE_FEED_PROPERTIES = {CHANGE_FEED: "true"}  # a writer's options: set on the table when the write creates it
# What Spark raises for a failed query: Py4J's and the classic client's captured errors, and, over Spark Connect,
# the server's (pyspark.errors.exceptions.connect.*; no py4j there). Client-side errors (a wrong argument) are not.
SPARK_ERRORS = (Py4JJavaError, CapturedException, SparkConnectException)


class DeltaTableError(RuntimeError):
    """A Delta table refused a read or a write; the message names the table and what to do. Nothing was written."""


class DeltaSchemaMismatchError(DeltaTableError):
    """The rows written do not have the table's schema or partitioning (a changed spec, an older pipeline)."""


class NotADeltaTableError(DeltaTableError):
    """The table's path holds files, but no Delta transaction log."""


class CorruptDeltaLogError(DeltaTableError):
    """The table's transaction log (_delta_log) cannot be read: a commit file is missing or damaged."""


class ReplaceWhereMismatchError(DeltaTableError):
    """Rows written to replace a set of partitions fall outside them."""


class MissingDeltaTableError(DeltaTableError, FileNotFoundError):
    """Nothing at the table's path yet: its asset has not been materialized."""


@dataclass(frozen=True)
class DeltaCommit:
    path: str
    version: int
    operation: str
    rows_written: int | None
    files_written: int | None
    conflict_retries: int = 0


def window_predicate(start: date, end: date, column: str = EVENT_DATE) -> str:
    return DayWindow(start, end).predicate(column)


def write_partitions(
    df: DataFrame,
    path: str,
    start: date,
    end: date,
    column: str = EVENT_DATE,
    user_metadata: str | None = None,
    attempts: int = WRITE_ATTEMPTS,
    properties: dict[str, str] | None = None,
) -> DeltaCommit:
    """Replace the daily partitions [start, end) of a Delta table with `df`, atomically.

    `replaceWhere` makes a rerun replace the partitions instead of adding rows, and Delta refuses rows
    outside the window, so a partition's write can never touch its neighbours.
    """
    return replace_where(
        df,
        path,
        window_predicate(start, end, column),
        column,
        user_metadata,
        attempts,
        what=f"{path} [{start}, {end})",
        properties=properties,
    )


def days_predicate(days: list[date], column: str = EVENT_DATE) -> str:
    return f"{column} IN ({', '.join(repr(d.isoformat()) for d in sorted(days))})"


def write_days(
    df: DataFrame,
    path: str,
    start: date,
    end: date,
    days: list[date],
    column: str = EVENT_DATE,
    user_metadata: str | None = None,
    properties: dict[str, str] | None = None,
) -> DeltaCommit:
    """Write `df`'s rows of `days`, some or all of the window [start, end): the whole window when they are all of
    it, else those days only (a range run whose other days failed their checks: those keep their rows)."""
    if len(days) == (end - start).days:
        return write_partitions(df, path, start, end, column, user_metadata=user_metadata, properties=properties)
    return replace_where(
        df.where(F.col(column).isin(days)),
        path,
        days_predicate(days, column),
        column,
        user_metadata=user_metadata,
        what=f"{path} {len(days)} days of [{start}, {end})",
        properties=properties,
    )


def replace_where(
    df: DataFrame,
    path: str,
    predicate: str,
    column: str = EVENT_DATE,
    user_metadata: str | None = None,
    attempts: int = WRITE_ATTEMPTS,
    what: str | None = None,
    properties: dict[str, str] | None = None,
) -> DeltaCommit:
    """Replace the rows matching `predicate` (a condition on the partition column) with `df`, in one commit.

    `user_metadata` is stored in the commit (e.g. the Dagster run that wrote it), so Delta's history leads
    back to the run; a write id is added to it, to find this write's own commit among concurrent ones.
    Retryable commit conflicts are retried (`retry_on_conflict`). `properties` (`delta.*` table properties,
    e.g. CHANGE_FEED) are set on the table when this write creates it.
    """
    tag = with_write_id(user_metadata)
    spark = df.sparkSession
    refuse_non_delta(spark, path, column)
    writer = (
        df.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", tag)
        .options(**(properties or {}))
        .partitionBy(column)
    )
    try:
        retries = retry_on_conflict(
            lambda: writer.save(path), what=what or f"{path} where {predicate}", attempts=attempts
        )
    except SPARK_ERRORS as exc:
        error = refusal(exc, df, path, predicate, column) if isinstance(exc, AnalysisException) else None
        if error is None:
            check_log(spark, path)  # a damaged log fails the write with a Java error of its own
            raise
        raise error from exc
    commit = last_commit(spark, path, user_metadata=tag)
    if commit is None:  # Delta commits nothing when a write neither adds nor removes a file (no rows, none before)
        unchanged = last_commit(spark, path)
        commit = DeltaCommit(path, unchanged.version, "none: nothing to write or replace", 0, 0)
    return DeltaCommit(**{**commit.__dict__, "conflict_retries": retries})


def refusal(exc: AnalysisException, df: DataFrame, path: str, predicate: str, column: str) -> DeltaTableError | None:
    """Delta's refusal of a write as a DeltaTableError that says what differs (None for other errors)."""
    condition = exc.getCondition() or ""
    if condition in SCHEMA_REFUSALS:
        partitioned_by = detail(df.sparkSession, path)["partitionColumns"]
        table_schema = df.sparkSession.read.format("delta").load(path).schema
        problems = schema_differences(table_schema, df.schema, list(partitioned_by), [column])
        return DeltaSchemaMismatchError(
            f"Delta table {path} refused the write: its schema differs from the rows written: "
            f"{'; '.join(problems) or condition}. Nothing was written. The table was written with another schema "
            "(an older version of the pipeline, or a dataset spec whose types changed): restore the spec, or migrate "
            "the table (rewrite it with the new schema, or move it aside and rematerialize every partition)."
        )
    if condition == REPLACE_WHERE_REFUSAL:
        outside = df.where(~F.coalesce(F.expr(predicate), F.lit(False)))
        values = [r[0] for r in outside.select(column).distinct().limit(SAMPLES).collect()]
        return ReplaceWhereMismatchError(
            f"Delta table {path} refused the write: rows have {column} outside the partitions being replaced "
            f"({predicate}), e.g. {column} = {[str(v) for v in values]}. Nothing was written. Each write may only "
            f"hold rows of the partitions it replaces: filter the rows to the window before writing."
        )
    return None


def schema_differences(
    table: StructType, written: StructType, table_partitions: list[str], written_partitions: list[str]
) -> list[str]:
    """Each difference between a table's schema and the rows written, naming the column, expected vs found."""
    expected = {f.name: f.dataType.simpleString() for f in table.fields}
    found = {f.name: f.dataType.simpleString() for f in written.fields}
    problems = [
        f"column '{c}' is {found[c].upper()} in the rows written, the table has {expected[c].upper()}"
        for c in found
        if c in expected and found[c] != expected[c]
    ]
    problems += [f"column '{c}' ({found[c].upper()}) is not in the table" for c in found if c not in expected]
    if table_partitions != written_partitions:
        problems.append(f"the table is partitioned by {table_partitions}, the rows written by {written_partitions}")
    return problems


def refuse_non_delta(spark: SparkSession, path: str, partition_column: str | None = None) -> None:
    """Refuse a path that holds files without a Delta log: a write would silently start a table over them,
    leaving them orphaned beside it (a table of this pipeline whose _delta_log was deleted would lose every
    partition the write does not replace, and a later VACUUM would delete their files); a read would say the
    table was never materialized.

    On a write, folders of the table's own partitions (`event_date=...`) do not count while a `_delta_log`
    folder exists without a commit: another run is creating the table at this moment (Delta creates
    `_delta_log` before it writes a data file, and commits after; tests/unit/test_delta_concurrency.py).
    """
    if table_exists(spark, path):
        return
    stray = stray_entries(spark, path, partition_column)
    if stray:
        raise NotADeltaTableError(
            f"{path} holds files but is not a Delta table (it has no _delta_log): nothing was read or written. "
            f"Found {stray[:SAMPLES]}. Move the folder aside (or, if it is a table of this pipeline whose log was lost, "
            "restore _delta_log from a backup), then rematerialize."
        )


def stray_entries(spark: SparkSession, path: str, partition_column: str | None = None) -> list[str]:
    """Names at the top of `path` (any Hadoop file system: local, s3a, abfss, ...) other than hidden ones and a
    _delta_log without a commit yet; with no _delta_log at all, the folders of `partition_column` count too."""
    if is_connect(spark):
        names = connect_top_names(spark, path)
    else:
        jvm = spark._jvm  # type: ignore[attr-defined]
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        fs = hadoop_path.getFileSystem(spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
        if not fs.exists(hadoop_path):
            return []
        names = sorted(str(status.getPath().getName()) for status in fs.listStatus(hadoop_path))
    own = f"{partition_column}=" if partition_column and "_delta_log" in names else None
    return [n for n in names if not n.startswith(".") and n != "_delta_log" and not (own and n.startswith(own))]


def connect_top_names(spark: SparkSession, path: str) -> list[str]:
    """Over Spark Connect (no JVM here to reach Hadoop's FileSystem): the names at the top of `path`, listed by the
    server through Spark's own file listing (`binaryFile`; no file's content is read when only `path` is
    selected), so any file system the server reaches works. At most SAMPLES + 1 names come back, plus
    `_delta_log` when that folder exists. Empty folders are not seen (Spark lists files)."""
    root = urlparse(path).path.rstrip("/") if "://" in path or path.startswith("file:") else path.rstrip("/")
    names = [] if _connect_listing(spark, f"{path.rstrip('/')}/_delta_log") is None else ["_delta_log"]
    listing = _connect_listing(spark, path)
    if listing is None:
        return names
    # A listed path is fully qualified (file:/..., s3a://bucket/...): its path part, then the segment under root.
    local = F.regexp_replace(F.col("path"), r"^[A-Za-z][A-Za-z0-9+.-]*:(//[^/]*)?", "")
    name = F.split(F.substring(local, len(root) + 2, 1 << 20), "/").getItem(0)
    rows = listing.select(name.alias("name")).where(F.col("name") != "").distinct().limit(SAMPLES + 1).collect()
    return sorted({*names, *(r["name"] for r in rows)})


def _connect_listing(spark: SparkSession, path: str) -> DataFrame | None:
    """The files under `path` as the server lists them (None when nothing is there); hidden names (`_*`, `.*`)
    below `path` are skipped, as Spark skips them. Resolving the frame's schema lists the path, on the server."""
    frame = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(path).select("path")
    try:
        frame.schema  # noqa: B018 - analysis: a missing path fails here
    except AnalysisException as exc:
        if (exc.getCondition() or "") == "PATH_NOT_FOUND":
            return None
        raise
    return frame


def check_log(spark: SparkSession, path: str) -> None:
    """Raise CorruptDeltaLogError if the table exists but its transaction log cannot be read."""
    if table_exists(spark, path):
        with log_errors(path):
            history(spark, path, 1).first()


def with_write_id(user_metadata: str | None) -> str:
    """The commit's userMetadata: the caller's JSON object (or text, as `note`) plus a unique `write_id`."""
    try:
        fields = json.loads(user_metadata) if user_metadata else {}
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        fields = {"note": user_metadata}
    return json.dumps({**fields, "write_id": str(uuid.uuid4())})


def retry_on_conflict(
    write: Callable[[], None], what: str, attempts: int = WRITE_ATTEMPTS, base_delay: float = 0.5
) -> int:
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
            log.warning(
                "Delta commit conflict writing %s (attempt %d of %d, retrying in %.1f s): %s",
                what,
                attempt,
                attempts,
                delay,
                type(exc).__name__,
            )
            time.sleep(delay)
            attempt += 1


def overwrite_table(
    df: DataFrame, path: str, user_metadata: str | None = None, attempts: int = WRITE_ATTEMPTS
) -> DeltaCommit:
    """Replace a whole (unpartitioned) table with `df`, schema included, in one commit. A path that holds
    files but no Delta log, or a table whose log is damaged, is refused as for replace_where.

    As for replace_where: retryable commit conflicts (another writer committed meanwhile) are retried
    (`retry_on_conflict`, counted in `conflict_retries`), and a write id in the commit's userMetadata finds
    this write's own commit, not a concurrent writer's later one.
    """
    tag = with_write_id(user_metadata)
    spark = df.sparkSession
    refuse_non_delta(spark, path)
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").option("userMetadata", tag)
    try:
        retries = retry_on_conflict(lambda: writer.save(path), what=f"{path} (whole table)", attempts=attempts)
    except SPARK_ERRORS:
        check_log(spark, path)
        raise
    commit = last_commit(spark, path, user_metadata=tag)
    if commit is None:  # not expected (an overwrite always commits), but never someone else's commit
        raise DeltaTableError(
            f"Delta table {path}: the overwrite returned, but its commit (write id in {tag}) is not among the last "
            f"{HISTORY_SEARCHED} commits"
        )
    return DeltaCommit(**{**commit.__dict__, "conflict_retries": retries})


def _rows_written(metrics: dict) -> int | None:
    """numOutputRows; a commit that wrote no file (an empty day replaced) has none, and wrote 0 rows."""
    if "numOutputRows" in metrics:
        return int(metrics["numOutputRows"])
    return 0 if metrics.get("numFiles") == "0" else None


def last_commit(spark: SparkSession, path: str, user_metadata: str | None = None) -> DeltaCommit | None:
    """The table's latest commit, or, with `user_metadata`, the latest commit that carries it (None if there is
    none): with other writers at work, the latest commit may be someone else's."""
    with log_errors(path):
        commits = history(spark, path, HISTORY_SEARCHED if user_metadata else 1)
        if user_metadata:
            commits = commits.where(commits.userMetadata == user_metadata).orderBy(commits.version.desc()).limit(1)
        row = commits.select("version", "operation", "operationMetrics").first()
    if row is None:
        return None
    metrics = row["operationMetrics"] or {}
    return DeltaCommit(
        path=path,
        version=int(row["version"]),
        operation=row["operation"],
        rows_written=_rows_written(metrics),
        files_written=int(metrics["numFiles"]) if "numFiles" in metrics else None,
    )


def commit_metadata(spark: SparkSession, path: str, version: int) -> str | None:
    """The userMetadata of the commit that made `version` of the table (None if it has none)."""
    with log_errors(path):
        commits = history(spark, path)
        row = commits.where(commits.version == version).select("userMetadata").first()
    if row is None:
        raise DeltaTableError(f"Delta table {path} has no version {version} in its history")
    return row["userMetadata"]


def table_properties(spark: SparkSession, path: str) -> dict[str, str]:
    """The table's properties (`delta.enableChangeDataFeed`, ...), from its current metadata."""
    with log_errors(path):
        return dict(DeltaTable.forPath(spark, path).detail().first()["properties"] or {})


def change_feed_enabled(spark: SparkSession, path: str) -> bool:
    return table_properties(spark, path).get(CHANGE_FEED, "false").lower() == "true"


def enable_change_feed(spark: SparkSession, path: str) -> bool:
    """Turn on Delta's change data feed of an existing table that has it off (one ALTER TABLE, a commit of its own:
    changes are recorded from the next version on). True if it was off. A table created by a writer given
    CHANGE_FEED_PROPERTIES has it from its first version."""
    if change_feed_enabled(spark, path):
        return False
    with log_errors(path):
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({CHANGE_FEED} = true)")
    log.info("Delta table %s: change data feed enabled (%s = true)", path, CHANGE_FEED)
    return True


def table_exists(spark: SparkSession, path: str) -> bool:
    if is_connect(spark):
        # Delta's DeltaTable API over Spark Connect needs Delta's Connect plugin on the server; this needs Spark's
        # file listing only: a Delta table is a _delta_log with a commit (a JSON commit or a checkpoint).
        log_files = _connect_listing(spark, f"{path.rstrip('/')}/_delta_log")
        return log_files is not None and bool(
            log_files.where(F.col("path").rlike(r"/[0-9]{20}\.(json|checkpoint.*\.parquet)$")).head(1)
        )
    return DeltaTable.isDeltaTable(spark, path)


def history(spark: SparkSession, path: str, limit: int | None = None) -> DataFrame:
    """Delta's history of the table, newest first (DeltaTable.history's frame; over Spark Connect, the same
    columns from `DESCRIBE HISTORY`, which needs only Delta's SQL extension on the server)."""
    if is_connect(spark):
        return spark.sql(f"DESCRIBE HISTORY {delta_identifier(path)}" + (f" LIMIT {int(limit)}" if limit else ""))
    table = DeltaTable.forPath(spark, path)
    return table.history(limit) if limit else table.history()


def detail(spark: SparkSession, path: str):
    """Delta's DESCRIBE DETAIL row of the table (format, partitionColumns, numFiles, ...)."""
    if is_connect(spark):
        return spark.sql(f"DESCRIBE DETAIL {delta_identifier(path)}").first()
    return DeltaTable.forPath(spark, path).detail().first()


def delta_identifier(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def current_version(spark: SparkSession, path: str) -> int:
    return last_commit(spark, path).version


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    if not table_exists(spark, path):
        refuse_non_delta(spark, path)
        raise MissingDeltaTableError(f"no Delta table at {path}: materialize its asset first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    with log_errors(path):
        return reader.load(path)


@contextmanager
def log_errors(path: str):
    """Turn a failure to read a table's transaction log into a CorruptDeltaLogError.

    Only called where the table is known to exist (`table_exists`), so a failure there is the log's: Delta
    raises a Py4J error (a missing commit file) or an analysis/Spark error (a damaged one), never one class.
    """
    try:
        yield
    except SPARK_ERRORS as exc:
        raise CorruptDeltaLogError(
            f"Delta table {path}: its transaction log (_delta_log) cannot be read: {java_message(exc)}. Nothing was "
            "read or written. Restore _delta_log from a backup; if the table can be rebuilt from its upstream, move the "
            "folder aside and rematerialize every partition."
        ) from exc


def java_message(exc: Exception) -> str:
    """The first line of the JVM's message, without the Java stack trace."""
    if isinstance(exc, Py4JJavaError):
        text = str(exc.java_exception.getMessage() or exc.java_exception.toString())
    else:
        text = str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def read_pinned(spark: SparkSession, path: str) -> tuple[DataFrame, int]:
    """The table at its current version, and that version: reads that are reproducible and recordable."""
    version = current_version(spark, path) if table_exists(spark, path) else None
    return read_table(spark, path, version), version  # type: ignore[return-value]
