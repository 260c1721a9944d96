"""The lakehouse boundary: everything about a table, in one resource.

An asset names a table (its asset key's name, e.g. `validated_features`) and hands over a DataFrame; this
resource owns the rest:
- identity: the path `<root>/<catalog>/<schema>/<table>` today, the name `catalog.schema.table` in metadata (a
  metastore or Unity Catalog can take the names over without touching an asset);
- pinned reads: the frame and the Delta version it was read at, recorded by the reader;
- writes: daily partitions (`replaceWhere`), rows matching a predicate, whole-table overwrites, all with the
  conflict retries of `ml.delta_io`, and the Dagster run id in each commit's userMetadata;
- the standard lineage metadata (`dagster/uri`, `dagster/table_name`, `dagster/row_count`,
  `dagster/column_schema`, `delta_version`, `partition`).

It is a resource, not an IO manager: the gated daily assets write some days of a range and then fail, write
two tables in one step, and record per-day materializations and check evaluations; an IO manager's one
`handle_output` per output value cannot say that. Assets call it explicitly, as kedro's DataCatalog is called.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    ConfigurableResource,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from assets import contracts as c
from ml import delta_io
from ml.dataset import EVENT_DATE
from ml.days import DayWindow
from ml.delta_io import DeltaCommit
from orchestration.resources import SparkResource


@dataclass(frozen=True)
class Pinned:
    """A table read at one Delta version (None: the table does not exist yet)."""

    table: str
    frame: DataFrame
    version: int

    @property
    def lineage(self) -> dict[str, int]:
        """`<table>_delta_version`: the metadata a reader records of what it read."""
        return {c.delta_version_key(self.table): self.version}


class LakehouseResource(ConfigurableResource):
    """Where the tables live, and every read and write of them. See the module docstring."""

    spark: SparkResource
    root: str
    catalog: str
    schema_name: str
    model: str  # the registered model's last name level: catalog.schema.<model>
    staging_dir: str  # scratch space for source files that need unpacking
    source_location: str | None = None  # replaces the dataset spec's default source (folder, path or table)

    def replaced(self, **changes: Any) -> LakehouseResource:
        """A copy with some fields changed (Dagster does not honour pydantic's `model_copy(update=...)`)."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})

    # ---- identity ------------------------------------------------------------------------------------------

    def table_path(self, table: str) -> str:
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/{self.catalog}/{self.schema_name}/{table}"
        return str(Path(self.root).resolve() / self.catalog / self.schema_name / table)

    def checkpoint_path(self, table: str) -> str:
        """Where a streaming query that writes `table` keeps its checkpoint: next to the table,
        `<root>/<catalog>/<schema>/_checkpoints/<table>` (outside the table's folder, so VACUUM never sees it)."""
        if "://" in self.root:
            return f"{self.root.rstrip('/')}/{self.catalog}/{self.schema_name}/_checkpoints/{table}"
        return str(Path(self.root).resolve() / self.catalog / self.schema_name / "_checkpoints" / table)

    def table_name(self, table: str) -> str:
        return f"{self.catalog}.{self.schema_name}.{table}"

    @property
    def model_name(self) -> str:
        return f"{self.catalog}.{self.schema_name}.{self.model}"

    @property
    def session(self) -> SparkSession:
        return self.spark.spark_session

    # ---- reads ---------------------------------------------------------------------------------------------

    def read(self, table: str) -> Pinned:
        """The table at its current version, and that version: a read that is reproducible and recordable."""
        frame, version = delta_io.read_pinned(self.session, self.table_path(table))
        return Pinned(table, frame, version)

    def read_at(self, table: str, version: int) -> Pinned:
        """The table as it was at `version` (what an earlier step of the run wrote)."""
        return Pinned(table, delta_io.read_table(self.session, self.table_path(table), version), version)

    def change_feed(self, table: str) -> str:
        """The path of a table whose change data feed a reader streams (a table of CHANGE_FEED_TABLES); a table
        written before the feed was part of the contract gets it turned on now, once (ALTER TABLE)."""
        if table not in c.CHANGE_FEED_TABLES:
            raise ValueError(f"{table} has no change data feed: only {sorted(c.CHANGE_FEED_TABLES)} record one")
        path = self.table_path(table)
        if not delta_io.table_exists(self.session, path):
            delta_io.read_table(self.session, path)  # raises: materialize it first (or: not a Delta table)
        with writer_lock(path):
            delta_io.enable_change_feed(self.session, path)
        return path

    def lock(self, table: str):
        """The table's writer lock (`writer_lock`), for a writer that commits itself (a streaming query's MERGE)."""
        return writer_lock(self.table_path(table))

    def commit_tag(self, run_id: str | None = None, **lineage: Any) -> str | None:
        """A commit's userMetadata for a writer that commits itself: the run and the lineage, as every write has."""
        return _commit_metadata(run_id, lineage)

    def version(self, table: str) -> int | None:
        """The table's current Delta version, or None if it was never written."""
        path = self.table_path(table)
        return delta_io.current_version(self.session, path) if delta_io.table_exists(self.session, path) else None

    def commit_lineage(self, table: str, version: int) -> dict[str, Any]:
        """What the commit that made `version` of `table` recorded of its inputs (its userMetadata, without the
        ids of the run and of the write that made it): where those rows came from. {} if it recorded nothing."""
        raw = delta_io.commit_metadata(self.session, self.table_path(table), version)
        try:
            fields = json.loads(raw) if raw else {}
        except ValueError:
            fields = {"note": raw}
        if not isinstance(fields, dict):
            fields = {"note": fields}
        return {k: v for k, v in fields.items() if k not in ("dagster_run_id", "write_id")}

    # ---- writes --------------------------------------------------------------------------------------------

    def write_window(
        self,
        frame: DataFrame,
        table: str,
        window: DayWindow,
        days: list | None = None,
        run_id: str | None = None,
        **lineage: Any,
    ) -> DeltaCommit:
        """Replace the daily partitions of `window` with `frame`, or only `days` of it (a range run whose other
        days failed their checks: those keep their rows). A rerun replaces, never appends."""
        path = self.table_path(table)
        with writer_lock(path):
            return delta_io.write_days(
                frame,
                path,
                window.start,
                window.end,
                window.days if days is None else days,
                user_metadata=_commit_metadata(run_id, lineage),
                properties=self._properties(table, path),
            )

    def replace_rows(
        self,
        frame: DataFrame,
        table: str,
        predicate: str,
        run_id: str | None = None,
        frame_is_empty: bool = False,
        **lineage: Any,
    ) -> DeltaCommit | None:
        """Replace the rows matching `predicate` (a condition on the partition column) with `frame`, in one commit.

        A caller that knows `frame` is empty says so: then, if the table holds no such rows either, nothing is
        committed and None is returned (a clean source adds no empty commit on every run)."""
        path = self.table_path(table)
        if frame_is_empty and (
            not delta_io.table_exists(self.session, path)
            or delta_io.read_table(self.session, path).where(predicate).isEmpty()
        ):
            return None
        with writer_lock(path):
            return delta_io.replace_where(
                frame,
                path,
                predicate,
                EVENT_DATE,
                user_metadata=_commit_metadata(run_id, lineage),
                properties=self._properties(table, path),
            )

    def overwrite(self, frame: DataFrame, table: str, run_id: str | None = None, **lineage: Any) -> DeltaCommit:
        """Replace a whole (unpartitioned) table, schema included, in one commit."""
        path = self.table_path(table)
        with writer_lock(path):
            return delta_io.overwrite_table(frame, path, user_metadata=_commit_metadata(run_id, lineage))

    def _properties(self, table: str, path: str) -> dict[str, str] | None:
        """The table properties a write of `table` creates it with; a table of CHANGE_FEED_TABLES that exists
        without its change data feed gets it first (one ALTER TABLE), so this write's changes are recorded.
        Called under the table's writer lock."""
        if table not in c.CHANGE_FEED_TABLES:
            return None
        if delta_io.table_exists(self.session, path):
            delta_io.enable_change_feed(self.session, path)
        return delta_io.CHANGE_FEED_PROPERTIES

    # ---- lineage metadata ----------------------------------------------------------------------------------

    def metadata(
        self, commit: DeltaCommit, table: str, schema: StructType, window: DayWindow | None = None, **extra: Any
    ) -> dict:
        """The lineage contract for a Delta output, with Dagster's standard keys, plus `extra` (domain metadata).

        A range run (a single-run backfill) records the same metadata on every partition of its range, so there
        the rows written are `rows_written_in_run`, not one partition's `dagster/row_count`."""
        metadata: dict[str, Any] = {
            **self.identity(table),
            "dagster/column_schema": column_schema(schema),
            "delta_version": commit.version,
            "delta_operation": commit.operation,
        }
        if window is not None:
            metadata["partition"] = window.label
        if commit.rows_written is not None:
            whole = window is None or window.single_day
            metadata["dagster/row_count" if whole else "rows_written_in_run"] = commit.rows_written
        if commit.conflict_retries:  # another run's commit won a race; this write was retried (ml/delta_io.py)
            metadata["delta_conflict_retries"] = commit.conflict_retries
        metadata.update(extra)
        return metadata

    def unwritten_metadata(self, table: str, window: DayWindow, **extra: Any) -> dict:
        """The lineage of an output that a run chose not to write (nothing to write): the table as it is."""
        version = self.version(table)
        return {
            **self.identity(table),
            "partition": window.label,
            "rows_written": 0,
            "delta_version": -1 if version is None else version,
            **extra,
        }

    def identity(self, table: str) -> dict:
        path = self.table_path(table)
        return {
            "dagster/uri": MetadataValue.path(path if "://" in path else f"file://{path}"),
            "dagster/table_name": self.table_name(table),
        }


@contextmanager
def writer_lock(path: str) -> Iterator[None]:
    """One writer at a time per table of a local lakehouse, across processes (and threads).

    On a local file system, Delta's commit (a rename of the next `_delta_log/NNN.json`) is not an atomic
    put-if-absent across JVMs (delta-io/delta#683): two Dagster runs, which are separate processes, writing
    different days of one table at once could both "win" one version and lose a commit. An exclusive `flock` on
    `<schema>/.<table>.lock` serializes them; the kernel releases it when a process dies, so a killed run never
    leaves a table locked. Other stores are left to their own commit protocol: S3 needs Delta's DynamoDB LogStore
    (`spark.delta.logStore.s3.impl=io.delta.storage.S3DynamoDBLogStore`) or a catalog that manages commits (Unity
    Catalog); ADLS and GCS commit atomically as they are. flock is not reliable over NFS: keep a shared lakehouse
    on object storage.
    """
    if "://" in path and not path.startswith("file:"):
        yield
        return
    table = Path(path.removeprefix("file://").removeprefix("file:"))
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table.parent / f".{table.name}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def column_schema(schema: StructType) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=f.name, type=f.dataType.simpleString()) for f in schema.fields])


def declared_schema(columns: list[tuple[str, str]]) -> dict:
    """An asset's definition metadata: its columns as the spec shapes them (ml/columns.py), before any write."""
    return {"dagster/column_schema": TableSchema(columns=[TableColumn(name=n, type=t) for n, t in columns])}


def column_lineage(deps: dict[str, list[tuple[str, str]]]) -> dict:
    """A materialization's `dagster/column_lineage`: column -> the (upstream asset, column) pairs it comes from."""
    return {
        "dagster/column_lineage": TableColumnLineage(
            deps_by_column={
                column: [TableColumnDep(asset_key=AssetKey(table), column_name=name) for table, name in inputs]
                for column, inputs in deps.items()
            }
        )
    }


def _commit_metadata(run_id: str | None, lineage: dict) -> str | None:
    """The commit's userMetadata: the Dagster run that wrote it, and the caller's lineage (JSON)."""
    fields = {**({c.COMMIT_RUN_ID: run_id} if run_id else {}), **lineage}
    return json.dumps(fields, sort_keys=True, default=str) if fields else None
