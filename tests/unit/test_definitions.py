"""The code location loads the way `dagster dev` loads it: through workspace.yaml, in a fresh process."""

import os
import subprocess
import sys
from datetime import UTC

from orchestration.deployments import REPO_ROOT


def test_workspace_loads_and_validates():
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    proc = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "flightline" in proc.stdout + proc.stderr


def test_the_graph_has_the_lineage_assets_jobs_and_schedule():
    from orchestration.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "raw_data",
        "raw_quarantine",
        "validated_features",
        "quarantine",
        "train_set",
        "validation_set",
        "test_set",
        "tuned_pipeline",
        "registered_model",
        "batch_predictions",
        "model_performance",
        "feature_drift",
    }
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"daily_job", "training_job", "rollback_job"}
    assert defs.resolve_schedule_def("daily_job_schedule").cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("drift_retrain_sensor").job_name == "training_job"
    assert defs.resolve_schedule_def("daily_job_schedule").job_name == "daily_job"
    daily = {k.to_user_string() for k in defs.resolve_job_def("daily_job").asset_layer.executable_asset_keys}
    assert daily == {
        "raw_data",
        "raw_quarantine",
        "validated_features",
        "quarantine",
        "batch_predictions",
        "model_performance",
        "feature_drift",
    }
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {"raw_suite", "quarantine_budget", "feature_suite"}


def test_the_daily_schedule_runs_the_daily_job_for_the_previous_day():
    from datetime import datetime

    from dagster import build_schedule_context

    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def("daily_job_schedule")
    at = datetime(2013, 2, 2, 3, 0, tzinfo=UTC)
    with build_schedule_context(scheduled_execution_time=at, repository_def=defs.get_repository_def()) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [(r.partition_key, r.asset_selection) for r in requests] == [("2013-02-01", None)]  # the whole daily_job


def test_unknown_deployment_is_named():
    import pytest

    from ml.datasets.flights import SPEC
    from orchestration.deployments import resources_for

    with pytest.raises(
        ValueError, match=r"FLIGHTLINE_DEPLOYMENT='staging' is not a deployment; choose one of \['local', 'prod'\]"
    ):
        resources_for(SPEC, "staging")
