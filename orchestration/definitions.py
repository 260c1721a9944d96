"""The Dagster code location: assets, checks, jobs, schedules and the deployment's resources."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from dagster import (
    AnchorBasedFilePathMapping,
    AssetCheckSeverity,
    AssetSelection,
    Definitions,
    SupersessionWarning,
    build_schedule_from_partitioned_job,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
    define_asset_job,
    in_process_executor,
    link_code_references_to_git,
    with_source_code_references,
)

from assets.common import SPEC
from assets.drift import feature_drift
from assets.features import validated_features
from assets.incremental import incremental_predictions
from assets.ingest import raw_data
from assets.performance import model_performance
from assets.predictions import batch_predictions
from assets.segments import segment_models, segment_performance, segment_predictions
from assets.splits import splits
from assets.training import registered_model, tuned_pipeline
from ml.registry import code_version
from orchestration.deployments import REPO_ROOT, resources_for
from orchestration.reproduce import reproduce_job
from orchestration.rollback import promotion_tags, rollback_job
from orchestration.sensors import RetrainPolicy, build_incremental_sensor, build_retrain_sensor

DAILY_KEYS = ("raw_data", "validated_features", "batch_predictions", "model_performance", "feature_drift")
# A missing day is a failed check: each daily table's latest day must be materialized by 06:00 UTC the next day (the
# schedule runs at 03:00). Evaluated by freshness_checks_sensor (off by default, like the retrain sensor), not by the
# daily job's runs. Dagster 1.13 calls these checks superseded by FreshnessPolicy, but its policy judges the asset's
# latest materialization, not its partitions: a backfill of an old day would make it fresh (registered_model, which
# has no partitions, has a FreshnessPolicy instead). So the checks stay, without the warning.
warnings.filterwarnings("ignore", category=SupersessionWarning, message=".*freshness_checks")
freshness_checks = build_time_partition_freshness_checks(
    assets=list(DAILY_KEYS), deadline_cron="0 6 * * *", timezone="UTC", severity=AssetCheckSeverity.ERROR
)
freshness_sensor = build_sensor_for_freshness_checks(freshness_checks=freshness_checks, minimum_interval_seconds=3600)
daily_assets = AssetSelection.assets(
    raw_data, validated_features, batch_predictions, model_performance, feature_drift
) - AssetSelection.checks(
    *freshness_checks
)  # + raw_quarantine, quarantine: the other tables of the raw_data and validated_features steps
# What `make run` (and a range backfill) runs as its two daily phases, as asset keys for `asset_selection`
INGEST_KEYS = sorted({*raw_data.keys, *validated_features.keys})
SCORING_KEYS = sorted({*batch_predictions.keys, *model_performance.keys, *feature_drift.keys})
training_assets = AssetSelection.assets(splits, tuned_pipeline, registered_model)
# Many models (assets/segments.py): only when the dataset spec names a segment column; jobs of their own, so the
# daily and training jobs stay as they are.
SEGMENT_ASSETS = [segment_models, segment_predictions, segment_performance] if SPEC.segment_column else []
segment_jobs = (
    [
        define_asset_job(
            "segments_job",
            selection=AssetSelection.assets(segment_models),
            tags=promotion_tags(SPEC),
            description="segment_models: one model per segment, the *_by_segment bundle and its gate.",
        ),
        define_asset_job(
            "segment_scoring_job",
            selection=AssetSelection.assets(segment_predictions, segment_performance),
            description="segment_predictions -> segment_performance for one day (or a range, in one run).",
        ),
    ]
    if SEGMENT_ASSETS
    else []
)

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
incremental_job = define_asset_job(
    "incremental_job",
    selection=AssetSelection.assets(incremental_predictions),
    description="incremental_predictions: validated_features' changes since the last run, scored by @champion.",
)
daily_schedule = build_schedule_from_partitioned_job(daily_job, hour_of_day=3)
retrain_sensor = build_retrain_sensor(training_job.name, RetrainPolicy())
incremental_sensor = build_incremental_sensor(incremental_job.name)


def with_code_references(assets: Sequence, git_url: str | None = None, git_ref: str | None = None) -> list:
    """Each asset with a reference to the file and line of its definition: a link to `git_url` at `git_ref` (the
    checkout's commit by default) when a repository URL is given (FLIGHTLINE_GIT_URL; GitHub or GitLab), else the
    local file ("Open in editor" in the UI)."""
    referenced = with_source_code_references(list(assets))
    git_url = git_url if git_url is not None else os.environ.get("FLIGHTLINE_GIT_URL")
    ref = git_ref or os.environ.get("FLIGHTLINE_GIT_REF") or code_version()
    if not git_url or ref == "unknown":
        return list(referenced)
    return list(
        link_code_references_to_git(
            referenced,
            git_url=git_url.rstrip("/"),
            git_branch=ref,
            file_path_mapping=AnchorBasedFilePathMapping(
                local_file_anchor=REPO_ROOT, file_anchor_path_in_repository=""
            ),
        )
    )


defs = Definitions(
    assets=with_code_references(
        [
            raw_data,
            validated_features,
            splits,
            tuned_pipeline,
            registered_model,
            batch_predictions,
            model_performance,
            feature_drift,
            *SEGMENT_ASSETS,
            incremental_predictions,
        ]
    ),
    asset_checks=freshness_checks,
    jobs=[daily_job, training_job, rollback_job, reproduce_job, *segment_jobs, incremental_job],
    schedules=[daily_schedule],
    sensors=[retrain_sensor, freshness_sensor, incremental_sensor],
    resources=resources_for(SPEC),
    # Spark parallelizes inside each step; steps share one process and so one SparkSession (one JVM start
    # per run, not one per asset).
    executor=in_process_executor,
)
