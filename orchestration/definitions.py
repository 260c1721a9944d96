"""The Dagster code location: assets, checks, jobs, schedules and the deployment's resources."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)

from assets.common import SPEC
from assets.drift import feature_drift
from assets.features import validated_features
from assets.ingest import raw_data
from assets.performance import model_performance
from assets.predictions import batch_predictions
from assets.splits import splits
from assets.training import registered_model, tuned_pipeline
from orchestration.deployments import resources_for
from orchestration.reproduce import reproduce_job
from orchestration.rollback import promotion_tags, rollback_job
from orchestration.sensors import RetrainPolicy, build_retrain_sensor

daily_assets = AssetSelection.assets(
    raw_data, validated_features, batch_predictions, model_performance, feature_drift
)  # + raw_quarantine, quarantine: the other tables of the raw_data and validated_features steps
# What `make run` (and a range backfill) runs as its two daily phases, as asset keys for `asset_selection`
INGEST_KEYS = sorted({*raw_data.keys, *validated_features.keys})
SCORING_KEYS = sorted({*batch_predictions.keys, *model_performance.keys, *feature_drift.keys})
training_assets = AssetSelection.assets(splits, tuned_pipeline, registered_model)

daily_job = define_asset_job(
    "daily_job",
    selection=daily_assets,
    description="raw_data -> validated_features -> batch_predictions -> model_performance, feature_drift for one day "
    "(or a range, in one run).",
)
training_job = define_asset_job(
    "training_job",
    selection=training_assets,
    tags=promotion_tags(SPEC),
    description="splits -> tuned_pipeline -> registered_model (champion/challenger gate).",
)
daily_schedule = build_schedule_from_partitioned_job(daily_job, hour_of_day=3)
retrain_sensor = build_retrain_sensor(training_job.name, RetrainPolicy())

defs = Definitions(
    assets=[
        raw_data,
        validated_features,
        splits,
        tuned_pipeline,
        registered_model,
        batch_predictions,
        model_performance,
        feature_drift,
    ],
    jobs=[daily_job, training_job, rollback_job, reproduce_job],
    schedules=[daily_schedule],
    sensors=[retrain_sensor],
    resources=resources_for(SPEC),
    # Spark parallelizes inside each step; steps share one process and so one SparkSession (one JVM start
    # per run, not one per asset).
    executor=in_process_executor,
)
