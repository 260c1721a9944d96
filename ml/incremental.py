"""Incremental scoring: what changed in the feature table since the last run, scored and MERGEd, exactly once.

A Structured Streaming query reads the feature table's change data feed (`readChangeFeed`) with
`trigger(availableNow=True)`: it processes everything committed since its checkpoint, in micro-batches of at most
`max_files_per_trigger` files, and stops. Each micro-batch (`foreachBatch`, `BatchMerge`):

1. keeps the latest change per key (`latest_changes`): the highest `_commit_version`; within one version (a day
   rewritten by `replaceWhere` is a `delete` of every old row and an `insert` of every new one) the insert wins. A key
   whose latest change is a delete is deleted from the target;
2. scores the inserted rows with the pinned PipelineModel through `ml.scoring.score` (the rows of batch_predictions,
   with the same lineage columns, plus `features_delta_version`: the feature commit each row was scored from);
3. makes ONE Delta MERGE into the target by the spec's key columns, with Delta's idempotent-write options
   (`txnAppId` = the query's id, `txnVersion` = the batch id): a batch replayed after a crash (its MERGE committed,
   the checkpoint had not recorded it yet) is skipped by Delta, so nothing is applied twice.

Delta may split one commit's added and removed files across micro-batches (its rate limit admits files, and a
commit without change files is read from its add and remove actions). So the MERGE compares feature versions too: a
delete removes a row scored from an older version only, and an older change never overwrites a newer one; a
rewritten day's inserts and deletes then give the same rows in any batching.

The model is resolved once per run (the caller pins the version): rows scored before a champion change keep their
version; `rescore=True` rescores the whole current feature table with the pinned version, in one MERGE that also
deletes predictions of keys the features no longer have.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from delta.tables import DeltaTable
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from ml import delta_io
from ml.columns import FEATURES_VERSION
from ml.dataset import EVENT_DATE, DatasetSpec
from ml.scoring import ResolvedModel, score

log = logging.getLogger(__name__)

CHANGE_TYPE, COMMIT_VERSION = "_change_type", "_commit_version"  # Delta's change data feed columns
DELETED = "_deleted"  # the MERGE source's flag: this key's latest change is a delete
# Delta's idempotent writes for DML (MERGE): session settings, read by the MERGE's transaction
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
START_TIMEOUT = 600.0  # seconds a micro-batch waits for the query's id (set as soon as start() returns)


@dataclass(frozen=True)
class IncrementalSettings:
    starting_version: int | None = None  # None: the table's current snapshot first, then every change after it
    max_files_per_trigger: int = 64  # files of the feature table per micro-batch
    rescore: bool = False  # after the changes, rescore every current feature row with the pinned model


@dataclass(frozen=True)
class BatchReport:
    """One micro-batch: the feature versions it held, the rows it scored and deleted, what the MERGE did."""

    query_id: str
    batch_id: int
    first_version: int | None
    last_version: int | None
    rows_scored: int
    rows_deleted: int
    outcome: str  # merged | replayed (Delta skipped it: this batch id was committed before) | empty
    target_version: int


@dataclass
class IncrementalResult:
    query_id: str
    target: str
    batches: list[BatchReport] = field(default_factory=list)
    rows_rescored: int = 0
    rescored_from_version: int | None = None  # the feature version a rescore read
    target_version: int | None = None

    @property
    def merged(self) -> list[BatchReport]:
        return [b for b in self.batches if b.outcome == "merged"]

    @property
    def first_version(self) -> int | None:
        versions = [b.first_version for b in self.merged if b.first_version is not None]
        return min(versions) if versions else None

    @property
    def last_version(self) -> int | None:
        versions = [b.last_version for b in self.merged if b.last_version is not None]
        return max(versions) if versions else None

    @property
    def rows_scored(self) -> int:
        return sum(b.rows_scored for b in self.merged) + self.rows_rescored

    @property
    def rows_deleted(self) -> int:
        return sum(b.rows_deleted for b in self.merged)

    @property
    def replayed(self) -> int:
        return sum(1 for b in self.batches if b.outcome == "replayed")


def latest_changes(changes: DataFrame, keys: list[str]) -> DataFrame:
    """One row per key: its latest change (highest `_commit_version`; in one version an insert or update's
    postimage wins over a delete: a rewrite). Update preimages are dropped."""
    live = changes.where(F.col(CHANGE_TYPE) != "update_preimage")
    order = Window.partitionBy(*keys).orderBy(
        F.col(COMMIT_VERSION).desc(), F.when(F.col(CHANGE_TYPE) == "delete", 1).otherwise(0)
    )
    return live.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1).drop("_rank")


def scored_rows(
    features: DataFrame, pipeline: PipelineModel, model: ResolvedModel, spec: DatasetSpec, version: object
) -> DataFrame:
    """batch_predictions' rows of `features`, plus `features_delta_version` (`version`: a column or a number)."""
    column = version if not isinstance(version, int) else F.lit(version)
    return score(
        features.withColumn(FEATURES_VERSION, column.cast("long")), pipeline, model, spec, carry=(FEATURES_VERSION,)
    )


def merge_source(latest: DataFrame, pipeline: PipelineModel, model: ResolvedModel, spec: DatasetSpec) -> DataFrame:
    """The MERGE's source: each inserted key scored, each deleted key with its version and NULLs, and `_deleted`."""
    keys = list(spec.key_columns)
    deleted = F.col(CHANGE_TYPE) == "delete"
    scored = scored_rows(latest.where(~deleted), pipeline, model, spec, F.col(COMMIT_VERSION))
    types = {f.name: f.dataType for f in scored.schema.fields}
    gone = latest.where(deleted).select(
        *[
            F.col(COMMIT_VERSION).cast("long").alias(c)
            if c == FEATURES_VERSION
            else (F.col(c) if c in keys else F.lit(None).cast(types[c]).alias(c))
            for c in scored.columns
        ]
    )
    return scored.withColumn(DELETED, F.lit(False)).unionByName(gone.withColumn(DELETED, F.lit(True)))


def target_schema(spark: SparkSession, source: str, pipeline: PipelineModel, model: ResolvedModel, spec) -> StructType:
    """The target's columns: what scoring gives for the feature table's columns (no row is scored)."""
    empty = delta_io.read_table(spark, source).limit(0)
    scored = scored_rows(empty, pipeline, model, spec, 0).schema
    # nullable, as batch_predictions' columns are: a literal or current_timestamp() would make NOT NULL constraints
    return StructType([StructField(f.name, f.dataType, True) for f in scored.fields])


def create_target(spark: SparkSession, target: str, schema: StructType) -> None:
    """The target table, empty, partitioned by the event date as batch_predictions is (nothing if it exists)."""
    if delta_io.table_exists(spark, target):
        return
    delta_io.refuse_non_delta(spark, target, EVENT_DATE)
    DeltaTable.createIfNotExists(spark).location(target).addColumns(schema).partitionedBy(EVENT_DATE).execute()


def _assignments(columns: list[str]) -> dict[str, str]:
    return {c: f"s.`{c}`" for c in columns}


def _key_condition(keys: list[str]) -> str:
    return " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)


class BatchMerge:
    """The `foreachBatch` function: latest change per key, scored, one idempotent MERGE (see the module docstring).

    `query_id` is the streaming query's id (stable across restarts from one checkpoint): set by `started` as soon
    as the query starts, or given (a test replaying a batch by hand). `lock` is the target's writer lock (the
    lakehouse boundary's); `on_batch` is told each batch's report after its MERGE, before the checkpoint records it.
    """

    def __init__(
        self,
        target: str,
        pipeline: PipelineModel,
        model: ResolvedModel,
        spec: DatasetSpec,
        columns: list[str],
        user_metadata: str | None = None,
        lock: Callable[[], AbstractContextManager] = nullcontext,
        on_batch: Callable[[BatchReport], None] | None = None,
        query_id: str | None = None,
    ):
        self.target, self.pipeline, self.model, self.spec = target, pipeline, model, spec
        self.columns, self.user_metadata, self.lock, self.on_batch = columns, user_metadata, lock, on_batch
        self.query_id = query_id
        self._started = threading.Event()
        if query_id is not None:
            self._started.set()
        self.reports: list[BatchReport] = []

    def started(self, query_id: str) -> None:
        self.query_id = query_id
        self._started.set()

    def __call__(self, changes: DataFrame, batch_id: int) -> None:
        if not self._started.wait(START_TIMEOUT):
            raise RuntimeError(f"incremental scoring into {self.target}: the streaming query's id never arrived")
        spark = changes.sparkSession
        keys = list(self.spec.key_columns)
        latest = latest_changes(changes, keys).persist()
        try:
            facts = latest.agg(
                F.count(F.lit(1)).alias("rows"),
                F.sum(F.when(F.col(CHANGE_TYPE) == "delete", 1).otherwise(0)).alias("deleted"),
                F.min(COMMIT_VERSION).alias("first"),
                F.max(COMMIT_VERSION).alias("last"),
            ).first()
            rows, deleted = int(facts["rows"]), int(facts["deleted"] or 0)
            with self.lock():
                before = delta_io.current_version(spark, self.target)
                if rows:
                    self._merge(spark, merge_source(latest, self.pipeline, self.model, self.spec), batch_id)
                after = delta_io.current_version(spark, self.target)
        finally:
            latest.unpersist()
        outcome = "empty" if not rows else ("merged" if after != before else "replayed")
        report = BatchReport(
            self.query_id, batch_id, facts["first"], facts["last"], rows - deleted, deleted, outcome, after
        )
        log.info("incremental scoring into %s: %s", self.target, report)
        self.reports.append(report)
        if self.on_batch is not None:
            self.on_batch(report)

    def _merge(self, spark: SparkSession, source: DataFrame, batch_id: int) -> None:
        """ONE MERGE of the batch, as transaction (query id, batch id): Delta skips it if that batch committed."""
        version = f"t.`{FEATURES_VERSION}`", f"s.`{FEATURES_VERSION}`"
        merge = (
            DeltaTable.forPath(spark, self.target)
            .alias("t")
            .merge(source.alias("s"), _key_condition(list(self.spec.key_columns)))
            .whenMatchedDelete(condition=f"s.`{DELETED}` AND {version[0]} < {version[1]}")
            .whenMatchedUpdate(condition=f"NOT s.`{DELETED}` AND {version[0]} <= {version[1]}", set=self._set)
            .whenNotMatchedInsert(condition=f"NOT s.`{DELETED}`", values=self._set)
        )
        with session_settings(
            spark, {TXN_APP_ID: self.query_id, TXN_VERSION: str(batch_id), USER_METADATA: self.user_metadata}
        ):
            merge.execute()

    @property
    def _set(self) -> dict[str, str]:
        return _assignments(self.columns)


class session_settings:  # noqa: N801 (a context manager, used as `with session_settings(...)`)
    """Set Spark session settings for the block (None: left unset), and unset them after it, whatever happens."""

    def __init__(self, spark: SparkSession, settings: dict[str, str | None]):
        self.spark, self.settings = spark, {k: v for k, v in settings.items() if v is not None}

    def __enter__(self):
        for key, value in self.settings.items():
            self.spark.conf.set(key, value)

    def __exit__(self, *exc):
        for key in self.settings:
            self.spark.conf.unset(key)


def score_changes(
    spark: SparkSession,
    source: str,
    target: str,
    checkpoint: str,
    pipeline: PipelineModel,
    model: ResolvedModel,
    spec: DatasetSpec,
    settings: IncrementalSettings = IncrementalSettings(),
    user_metadata: str | None = None,
    lock: Callable[[], AbstractContextManager] = nullcontext,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> IncrementalResult:
    """Score what changed in `source` (a Delta table with its change data feed on) since the query's checkpoint,
    MERGE it into `target`, and stop (availableNow); then, with `settings.rescore`, rescore every current row."""
    if not delta_io.change_feed_enabled(spark, source):
        raise delta_io.DeltaTableError(
            f"Delta table {source} has no change data feed ({delta_io.CHANGE_FEED} is not true): incremental scoring "
            "cannot read its changes. Turn it on (ALTER TABLE ... SET TBLPROPERTIES "
            f"({delta_io.CHANGE_FEED} = true)) and start from the next version."
        )
    schema = target_schema(spark, source, pipeline, model, spec)
    with lock():
        create_target(spark, target, schema)
    sink = BatchMerge(target, pipeline, model, spec, schema.fieldNames(), user_metadata, lock, on_batch)
    reader = (
        spark.readStream.format("delta")
        .option("readChangeFeed", "true")
        .option("maxFilesPerTrigger", str(settings.max_files_per_trigger))
    )
    if settings.starting_version is not None:
        reader = reader.option("startingVersion", str(settings.starting_version))
    query = (
        reader.load(source)
        .writeStream.foreachBatch(sink)
        .option("checkpointLocation", checkpoint)
        .trigger(availableNow=True)
        .queryName(f"incremental-{target.rstrip('/').rsplit('/', 1)[-1]}")
        .start()
    )
    sink.started(str(query.id))
    query.awaitTermination()
    result = IncrementalResult(query_id=str(query.id), target=target, batches=list(sink.reports))
    if settings.rescore:
        with lock():
            result.rows_rescored, result.rescored_from_version = rescore(
                spark, source, target, pipeline, model, spec, schema.fieldNames(), user_metadata
            )
    result.target_version = delta_io.current_version(spark, target)
    return result


def rescore(
    spark: SparkSession,
    source: str,
    target: str,
    pipeline: PipelineModel,
    model: ResolvedModel,
    spec: DatasetSpec,
    columns: list[str],
    user_metadata: str | None = None,
) -> tuple[int, int]:
    """Every current feature row scored with `model`, in one MERGE that also deletes the target's rows of keys the
    features no longer have; (rows rescored, the feature version read)."""
    features, version = delta_io.read_pinned(spark, source)
    scored = scored_rows(features, pipeline, model, spec, version)
    merge = (
        DeltaTable.forPath(spark, target)
        .alias("t")
        .merge(scored.alias("s"), _key_condition(list(spec.key_columns)))
        .whenMatchedUpdate(set=_assignments(columns))
        .whenNotMatchedInsert(values=_assignments(columns))
        .whenNotMatchedBySourceDelete()
    )
    with session_settings(spark, {USER_METADATA: user_metadata}):
        merge.execute()
    metrics = DeltaTable.forPath(spark, target).history(1).first()["operationMetrics"] or {}
    return int(metrics.get("numSourceRows", 0)), version
