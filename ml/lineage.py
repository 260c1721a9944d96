"""Which data and which model made this prediction? The chain of one prediction, read hop by hop from Delta and MLflow.

From a prediction row (its table, its key columns and its day):
- the row, and the Delta commit that wrote it: the commit that added the data file holding the row (found in the
  table's `_delta_log`), with its userMetadata (`dagster_run_id`, `model_uri`, the validated_features version read);
- the model version the row names, its tags (`mlflow.run_id`, `dagster.run_id`, `input.*`, `gate.*`, `champion.*`),
  its current aliases and the alias history those tags tell;
- the MLflow run that trained it, its tags, the dataset inputs it logged, its test metrics;
- the Delta versions of train / validation / test it was trained on, and each split commit's window and the
  validated_features version it was cut from;
- the feature row the prediction was scored from (validated_features at the version scoring read), the commit that
  wrote it and the raw_data version that commit read; the raw row, its commit and the source location;
- the day: its quarantined rows (by rule) and whether this very key was quarantined.

And the two reverse questions: the predictions of one model version (counts per day, aggregated in Spark), and the
versions whose split windows include a day.

Plain Python over Spark, Delta and MLflow: no Dagster. orchestration/lineage.py adds the Dagster hops (the runs
that wrote each step, their UI links, the gate's check evaluations of the day) and prints the chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from delta.tables import DeltaTable
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from assets import contracts as c  # names only: assets/contracts.py imports nothing of Dagster
from ml import delta_io
from ml.dataset import EVENT_DATE
from ml.quarantine import FAILED_RULES
from ml.registry import CHALLENGER, CHAMPION, ModelVersionNotFoundError, model_version

PREDICTIONS = "batch_predictions"
FEATURES = "validated_features"
RAW = "raw_data"
QUARANTINE = "quarantine"
FILE_NAME = "_metadata.file_name"  # Spark's hidden file-metadata column, which Delta scans expose


class LineageError(LookupError):
    """A hop of the chain is missing: no such row, a table that does not exist, an unknown model version, ..."""


@dataclass(frozen=True)
class Stores:
    """Where the chain is read: the SparkSession (Delta), the tables' locations, the MLflow client, and the UI
    links (None: no UI configured)."""

    spark: SparkSession
    client: MlflowClient
    table_path: Callable[[str], str]
    run_url: Callable[[str, str], str | None] = lambda experiment_id, run_id: None
    model_url: Callable[[str, str], str | None] = lambda name, version: None


# ---- Delta hops -----------------------------------------------------------------------------------------------


def _path(stores: Stores, table: str) -> str:
    path = stores.table_path(table)
    if not delta_io.table_exists(stores.spark, path):
        raise LineageError(f"table {table} does not exist (no Delta table at {path}): materialize its asset first")
    return path


def _read(stores: Stores, table: str, version: int | None = None) -> tuple[DataFrame, int]:
    path = _path(stores, table)
    current = delta_io.current_version(stores.spark, path)
    if version is None:
        version = current
    elif not 0 <= version <= current:
        raise LineageError(f"table {table} has no version {version} (its versions: 0..{current})")
    try:
        return delta_io.read_table(stores.spark, path, version), version
    except Exception as exc:  # a version whose files were vacuumed, or whose log was cleaned up
        raise LineageError(f"table {table} cannot be read at version {version}: {type(exc).__name__}: {exc}") from exc


def commit_at(stores: Stores, table: str, version: int) -> dict:
    """One commit of a table's Delta history: version, timestamp, operation, predicate and userMetadata."""
    path = _path(stores, table)
    rows = (
        DeltaTable.forPath(stores.spark, path)
        .history()
        .where(F.col("version") == version)
        .select("version", "timestamp", "operation", "operationParameters", "userMetadata")
        .collect()
    )
    if not rows:
        raise LineageError(f"table {table} has no commit {version} in its Delta history (cleaned up, or never made)")
    row = rows[0]
    return {
        "table": table,
        "version": int(row["version"]),
        "timestamp": _plain(row["timestamp"]),
        "operation": row["operation"],
        "predicate": (row["operationParameters"] or {}).get("predicate"),
        "user_metadata": json.loads(row["userMetadata"]) if row["userMetadata"] else {},
    }


def _key_filter(keys: Mapping[str, str], day: date | None) -> Any:
    condition = F.lit(True)
    for column, value in keys.items():
        condition = condition & (F.col(column).cast("string") == F.lit(str(value)))
    if day is not None:
        condition = condition & (F.col(EVENT_DATE) == F.lit(day))
    return condition


def _describe(keys: Mapping[str, str], day: date | None) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in keys.items())
    return f"{shown}{', ' if shown and day else ''}{f'{EVENT_DATE}={day.isoformat()}' if day else ''}"


def row_at(stores: Stores, table: str, keys: Mapping[str, str], day: date, version: int | None = None) -> dict:
    """The one row of `table` (at `version`, default the current one) with these keys on that day, the table
    version read, and the commit that wrote the row: the commit whose `add` action added the row's data file."""
    frame, version = _read(stores, table, version)
    missing = [k for k in [*keys, EVENT_DATE] if k not in frame.columns]
    if missing:
        raise LineageError(f"table {table} has no column {missing}: its columns are {frame.columns}")
    rows = frame.where(_key_filter(keys, day)).select("*", F.col(FILE_NAME).alias("_file_name")).limit(2).collect()
    if not rows:
        on_day = frame.where(F.col(EVENT_DATE) == F.lit(day)).count()
        raise LineageError(
            f"no row of {table} (Delta v{version}) has {_describe(keys, day)}: that day has {on_day} rows"
            + ("" if on_day else ", it was never written (or was held by the gate)")
        )
    if len(rows) > 1:
        raise LineageError(
            f"more than one row of {table} (Delta v{version}) has {_describe(keys, day)}: give every key column"
        )
    values = rows[0].asDict()
    file_name = values.pop("_file_name")
    return {
        "table": table,
        "path": stores.table_path(table),
        "delta_version": version,
        "row": {k: _plain(v) for k, v in values.items()},
        "commit": commit_at(stores, table, _commit_adding(stores, table, file_name, version)),
    }


def _commit_adding(stores: Stores, table: str, file_name: str, at_most: int) -> int:
    """The version of the last commit up to `at_most` whose `add` action added `file_name` (a data file's name is
    unique: Delta writes a new UUID-named file for every write). Only the lines naming it come back."""
    log = f"{stores.table_path(table)}/_delta_log/*.json"
    hits = (
        stores.spark.read.text(log)
        .where(F.col("value").startswith('{"add"') & F.col("value").contains(file_name))
        .select(F.input_file_name().alias("commit_file"))
        .collect()
    )
    versions = sorted(v for h in hits if (v := int(h["commit_file"].rsplit("/", 1)[-1].split(".")[0])) <= at_most)
    if not versions:
        raise LineageError(
            f"no commit of {table} up to v{at_most} adds the file {file_name}: its log was cleaned up "
            "(delta.logRetentionDuration), the commit that wrote this row is no longer known"
        )
    return versions[-1]


def _plain(value: Any) -> Any:
    """A value as JSON has it: dates and times in ISO format, decimals as floats."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---- MLflow hops ----------------------------------------------------------------------------------------------


def _model_version(stores: Stores, name: str, version: str):
    try:
        return model_version(stores.client, name, version)
    except ModelVersionNotFoundError as exc:
        raise LineageError(str(exc)) from exc
    except MlflowException as exc:
        raise LineageError(f"model {name} v{version} cannot be read from the registry: {exc.message}") from exc


def _versions(stores: Stores, name: str) -> list:
    versions = stores.client.search_model_versions(f"name='{name}'")
    if not versions:
        raise LineageError(f"model {name} has no registered version (or does not exist): run the training job")
    return sorted(versions, key=lambda v: int(v.version))


def alias_history(stores: Stores, name: str) -> list[dict]:
    """The moves of @champion / @challenger that the versions' tags record, oldest first: each gate decision
    (`gate.*`, at the version's registration) and each manual set (`champion.*`: rollback or override).
    A version set by hand twice keeps its last `champion.*` tags only: the Dagster observations of
    registered_model keep every one."""
    events = []
    for mv in _versions(stores, name):
        tags = mv.tags or {}
        decision = tags.get("gate.decision")
        if decision:
            alias = {"promoted": CHAMPION, "rejected": CHALLENGER}.get(decision)
            events.append(
                {
                    "at": _iso_millis(mv.creation_timestamp),
                    "version": str(mv.version),
                    "event": f"gate {decision}",
                    "alias": alias,
                    "previous_champion": tags.get("gate.champion_version") or None,
                    "reason": tags.get("gate.reason", ""),
                }
            )
        if tags.get("champion.set_at"):
            events.append(
                {
                    "at": tags["champion.set_at"],
                    "version": str(mv.version),
                    "event": "set by hand",
                    "alias": CHAMPION,
                    "previous_champion": tags.get("champion.previous_version") or None,
                    "reason": tags.get("champion.reason", ""),
                    "by": tags.get("champion.set_by", ""),
                    "dagster_run_id": tags.get("champion.dagster_run_id", ""),
                }
            )
    return sorted(events, key=lambda e: e["at"])


def _iso_millis(millis: int | None) -> str | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="seconds")


def model_hop(stores: Stores, name: str, version: str) -> dict:
    mv = _model_version(stores, name, version)
    aliases = {k: str(v) for k, v in stores.client.get_registered_model(name).aliases.items()}
    return {
        "name": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "registered_at": _iso_millis(mv.creation_timestamp),
        "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
        "all_aliases": aliases,
        "url": stores.model_url(name, str(mv.version)),
        "tags": dict(mv.tags or {}),
        "alias_history": alias_history(stores, name),
    }


def logged_models(stores: Stores, experiment_id: str, run_id: str) -> list:
    """The models a run logged (MLflow 3's LoggedModel: its metrics carry their dataset)."""
    try:
        return list(stores.client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'"))
    except MlflowException:  # a store without logged models (MLflow 2 servers)
        return []


def run_hop(stores: Stores, run_id: str) -> dict:
    try:
        run = stores.client.get_run(run_id)
    except MlflowException as exc:
        raise LineageError(f"MLflow run {run_id} cannot be found: {exc.message}") from exc
    datasets = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        source = json.loads(item.dataset.source) if item.dataset.source else {}
        datasets.append(
            {
                "name": item.dataset.name,
                "digest": item.dataset.digest,
                "context": next((t.value for t in item.tags if t.key == "mlflow.data.context"), None),
                "source_type": item.dataset.source_type,
                "path": source.get("path"),
                "delta_version": source.get("delta_table_version"),
                "profile": json.loads(item.dataset.profile) if item.dataset.profile else None,
            }
        )
    by_dataset = {}  # metric -> the dataset it was logged against (kept with the run's logged model)
    for logged in logged_models(stores, run.info.experiment_id, run.info.run_id):
        by_dataset.update({m.key: m.dataset_name for m in logged.metrics or [] if m.dataset_name})
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment_id": run.info.experiment_id,
        "status": run.info.status,
        "started_at": _iso_millis(run.info.start_time),
        "url": stores.run_url(run.info.experiment_id, run.info.run_id),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "test_metrics": {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("test_")},
        "test_metrics_dataset": sorted({d for k, d in by_dataset.items() if k.startswith("test_")}),
        "datasets": datasets,
    }


# ---- the chain ------------------------------------------------------------------------------------------------


def split_hops(stores: Stores, versions: Mapping[str, int], day: date | None = None) -> dict:
    """Each split table at the version a model was trained on: the commit that wrote it, its window of days, the
    validated_features version it was cut from; and, given a day, whether the window holds it."""
    splits = {}
    for split, table in zip(c.SPLITS, c.SPLIT_TABLES, strict=True):
        if table not in versions:
            continue
        commit = commit_at(stores, table, versions[table])
        meta = commit["user_metadata"]
        window = meta.get(c.COMMIT_WINDOW) or {}
        start, end = window.get(f"{split}_start"), window.get(f"{split}_end")
        splits[split] = {
            "table": table,
            "delta_version": versions[table],
            "window_start": start,
            "window_end_exclusive": end,
            c.delta_version_key(FEATURES): meta.get(c.delta_version_key(FEATURES)),
            "commit": commit,
            **({"includes_day": bool(start and end and start <= day.isoformat() < end)} if day else {}),
        }
    return splits


def input_versions(tags: Mapping[str, str]) -> dict[str, int]:
    """The split versions a model version or run was trained on, from its `input.<table>.delta_version` tags."""
    return {t: int(tags[f"input.{t}.delta_version"]) for t in c.SPLIT_TABLES if tags.get(f"input.{t}.delta_version")}


def day_status(stores: Stores, keys: Mapping[str, str], day: date) -> dict:
    """The day's rows in quarantine (by rule broken), and whether this key itself is among them."""
    try:
        frame, version = _read(stores, QUARANTINE)
    except LineageError:
        return {"date": day.isoformat(), "quarantine_table": None, "quarantined_rows": 0, "by_rule": {}}
    on_day = frame.where(F.col(EVENT_DATE) == F.lit(day))
    by_rule = {
        r["rule"]: r["count"]
        for r in on_day.select(F.explode(FAILED_RULES).alias("rule")).groupBy("rule").count().collect()
    }
    return {
        "date": day.isoformat(),
        "quarantine_table": {"table": QUARANTINE, "delta_version": version},
        "quarantined_rows": on_day.count(),
        "by_rule": dict(sorted(by_rule.items())),
        "this_key_quarantined": not on_day.where(_key_filter(keys, None)).isEmpty(),
    }


def prediction_lineage(
    stores: Stores,
    keys: Mapping[str, str],
    day: date,
    table: str = PREDICTIONS,
    version: int | None = None,
    scored_from: Callable[[dict], int | None] | None = None,
) -> dict:
    """The whole chain of one prediction (see the module docstring), as plain values (JSON-ready).

    `version`: the predictions table's version to read (default: the current one). `scored_from(commit)`: the
    validated_features version scoring read, asked only when the prediction's commit does not record it (commits
    written before it did). Raises LineageError naming the hop that is missing."""
    prediction = row_at(stores, table, keys, day, version)
    row, commit_meta = prediction["row"], prediction["commit"]["user_metadata"]
    for column in ("model_name", "model_version", "model_run_id"):
        if row.get(column) is None:
            raise LineageError(f"the row of {table} has no {column}: it does not say which model made it")
    model = model_hop(stores, row["model_name"], row["model_version"])
    if model["run_id"] != row["model_run_id"]:
        raise LineageError(
            f"the row names MLflow run {row['model_run_id']}, but {model['name']} v{model['version']} was "
            f"trained by run {model['run_id']}: the registry and the predictions disagree"
        )
    run = run_hop(stores, model["run_id"])
    trained_on = input_versions(model["tags"]) or input_versions(run["tags"])
    splits = split_hops(stores, trained_on, day)

    features_version = commit_meta.get(c.delta_version_key(FEATURES))
    if features_version is None and scored_from is not None:
        features_version = scored_from(prediction["commit"])
    if features_version is None:
        raise LineageError(
            f"the commit v{prediction['commit']['version']} of {table} does not record the {FEATURES} version it "
            "read: give it (the batch_predictions materialization records it)"
        )
    features = row_at(stores, FEATURES, keys, day, int(features_version))
    raw_version = features["commit"]["user_metadata"].get(c.delta_version_key(RAW))
    raw = row_at(stores, RAW, keys, day, None if raw_version is None else int(raw_version))
    if raw_version is None:
        raw["note"] = f"the {FEATURES} commit does not record the {RAW} version it read: the current one is shown"

    return {
        "question": {"table": table, "keys": dict(keys), "date": day.isoformat()},
        "prediction": prediction,
        "model": model,
        "mlflow_run": run,
        "splits": splits,
        "features": features,
        "raw": raw,
        "source": raw["commit"]["user_metadata"].get(c.COMMIT_SOURCE),
        "day": day_status(stores, keys, day),
        "dagster_run_ids": _dagster_run_ids(prediction, features, raw, model, run, splits),
    }


def _dagster_run_ids(prediction, features, raw, model, run, splits) -> dict[str, dict]:
    """step -> the Dagster run that wrote it, as each store recorded it (a commit's userMetadata, a tag)."""
    steps = {
        RAW: {"run_id": raw["commit"]["user_metadata"].get(c.COMMIT_RUN_ID), "recorded_in": "Delta commit"},
        FEATURES: {"run_id": features["commit"]["user_metadata"].get(c.COMMIT_RUN_ID), "recorded_in": "Delta commit"},
    }
    for split in splits.values():
        steps[split["table"]] = {
            "run_id": split["commit"]["user_metadata"].get(c.COMMIT_RUN_ID),
            "recorded_in": "Delta commit",
        }
    steps["tuned_pipeline"] = {"run_id": run["tags"].get("dagster.run_id"), "recorded_in": "MLflow run tag"}
    steps["registered_model"] = {
        "run_id": model["tags"].get("dagster.run_id"),
        "recorded_in": "model version tag",
    }
    steps[prediction["table"]] = {
        "run_id": prediction["commit"]["user_metadata"].get(c.COMMIT_RUN_ID),
        "recorded_in": "Delta commit",
    }
    return steps


# ---- the reverse questions ------------------------------------------------------------------------------------


def predictions_of_version(stores: Stores, name: str, version: str | int, table: str = PREDICTIONS) -> dict:
    """Which predictions did model version N make? Counts per day (and when they were scored), aggregated in
    Spark: one row per day comes back, never the predictions themselves."""
    mv = _model_version(stores, name, str(version))
    frame, table_version = _read(stores, table)
    by_day = (
        frame.where((F.col("model_name") == name) & (F.col("model_version") == str(mv.version)))
        .groupBy(EVENT_DATE)
        .agg(
            F.count(F.lit(1)).alias("predictions"),
            F.min("scored_at").alias("first_scored_at"),
            F.max("scored_at").alias("last_scored_at"),
        )
        .orderBy(EVENT_DATE)
        .collect()
    )
    days = [{k: _plain(v) for k, v in r.asDict().items()} for r in by_day]
    return {
        "model": name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "table": table,
        "delta_version": table_version,
        "days": [{"date": d.pop(EVENT_DATE), **d} for d in days],
        "total": sum(d["predictions"] for d in days),
    }


def models_trained_on(stores: Stores, name: str, day: date) -> dict:
    """Which model versions were trained on data from day D? Those whose split windows (the split commits'
    windows, at the versions each model version was trained on) include D, with the split(s) and the rows of D
    each split version holds (counted in Spark)."""
    count_rows = cache(_rows_of_day)
    versions = _versions(stores, name)
    aliases = {k: str(v) for k, v in stores.client.get_registered_model(name).aliases.items()}
    found = []
    for mv in versions:
        splits = split_hops(stores, input_versions(mv.tags or {}), day)
        holding = {s: h for s, h in splits.items() if h["includes_day"]}
        if not holding:
            continue
        found.append(
            {
                "version": str(mv.version),
                "run_id": mv.run_id,
                "aliases": sorted(a for a, v in aliases.items() if v == str(mv.version)),
                "splits": {
                    s: {
                        "table": h["table"],
                        "delta_version": h["delta_version"],
                        "window_start": h["window_start"],
                        "window_end_exclusive": h["window_end_exclusive"],
                        "rows_of_day": count_rows(stores, h["table"], h["delta_version"], day),
                    }
                    for s, h in holding.items()
                },
            }
        )
    return {"model": name, "date": day.isoformat(), "versions": found}


def _rows_of_day(stores: Stores, table: str, version: int, day: date) -> int:
    frame, _ = _read(stores, table, version)
    return frame.where(F.col(EVENT_DATE) == F.lit(day)).count()
