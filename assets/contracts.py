"""The names that one file writes and another reads, defined once: a writer and its readers import them from here.

A metadata key that nothing outside its asset reads stays a plain string in that asset.
"""

from __future__ import annotations

# ---- tables whose name is not their asset's key ---------------------------------------------------------------
DRIFT_METRICS = "drift_metrics"  # written by feature_drift

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
