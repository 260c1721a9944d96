"""The names that one file writes and another reads, defined once: a writer and its readers import them from here.

A metadata key that nothing outside its asset reads stays a plain string in that asset.
"""

from __future__ import annotations

# ---- the split tables (assets.splits writes them, tuned_pipeline reads them, ml.lineage follows them) ----------
SPLITS = ("train", "validation", "test")
SPLIT_TABLES = tuple(f"{name}_set" for name in SPLITS)

# ---- a Delta commit's userMetadata (orchestration.lakehouse writes it) -> ml.lineage ------------------------------
COMMIT_RUN_ID = "dagster_run_id"  # the Dagster run that made the commit
COMMIT_SOURCE = "source"  # raw_data: the source location its rows came from
COMMIT_WINDOW = "window"  # the split tables: the split plan, {train_start, train_end, ..., strategy} (ml.splits)
SPLIT_STRATEGY = "split_strategy"  # the splits' metadata, and (as `split.strategy`) tuned_pipeline's MLflow tags


def delta_version_key(table: str) -> str:
    """`<table>_delta_version`: the version of an input a reader read (materialization metadata, commit
    userMetadata)."""
    return f"{table}_delta_version"


# ---- tables whose name is not their asset's key ---------------------------------------------------------------
DRIFT_METRICS = "drift_metrics"  # written by feature_drift

# ---- tables with Delta's change data feed on (orchestration.lakehouse sets it; ml.incremental reads it) ---------
CHANGE_FEED_TABLES = frozenset({"validated_features"})
# incremental_predictions -> orchestration.run_pipeline
ROWS_SCORED = "rows_scored"
FIRST_VERSION_CONSUMED = "validated_features_first_version_consumed"
LAST_VERSION_CONSUMED = "validated_features_last_version_consumed"

# ---- materialization metadata read by other components ---------------------------------------------------------
# feature_drift -> orchestration.sensors (retraining signals)
DRIFT_BY_DAY = "drift_by_day"  # {day: {"drifted": bool, "share_drifted": float, "max_psi": float}}
# model_performance -> orchestration.sensors
METRIC_NAME = "metric_name"  # the spec's primary metric
PRIMARY_METRIC_BY_DAY = "primary_metric_by_day"  # {day: {model_version: value}}
# registered_model -> orchestration.sensors, orchestration.run_pipeline
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
CHALLENGER_METRIC = "challenger_metric"  # the new version's primary metric on the test set, at the gate
GATE_DECISION = "gate_decision"  # promoted | rejected
GATE_REASON = "gate_reason"
# every Delta output (orchestration.lakehouse) -> orchestration.run_pipeline
URI = "dagster/uri"

# ---- a gated daily asset's Failure (assets.gate) -> orchestration.run_pipeline ---------------------------------
FAILED_DAYS = "failed_days"  # the days the gate held back: they keep their previous rows
WRITTEN_DAYS = "written_days"  # the days of the same run that passed and were written
