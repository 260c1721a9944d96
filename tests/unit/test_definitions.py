"""The code location loads the way `dagster dev` loads it: through workspace.yaml, in a fresh process."""

import hashlib
import os
import subprocess
import sys
from datetime import UTC, timedelta
from pathlib import Path

import dagster as dg
import pytest

from orchestration.deployments import REPO_ROOT
from tests.conftest import child_env

DAILY = ("raw_data", "validated_features", "batch_predictions", "model_performance", "feature_drift")


def test_workspace_loads_and_validates():
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    proc = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(PYTHONPATH=str(REPO_ROOT)),
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
        "segment_models",  # the flights spec names a segment column (carrier)
        "segment_predictions",
        "segment_performance",
        "incremental_predictions",
    }
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"daily_job", "training_job", "rollback_job"}
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"segments_job", "segment_scoring_job"}
    segment_scoring = defs.resolve_job_def("segment_scoring_job").asset_layer.executable_asset_keys
    assert {k.to_user_string() for k in segment_scoring} == {"segment_predictions", "segment_performance"}
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
    checks = {c.to_user_string() for c in defs.resolve_asset_graph().asset_check_keys}
    freshness = {f"{a}:freshness_check" for a in DAILY}
    assert checks == {
        "raw_data:raw_suite",
        "validated_features:quarantine_budget",
        "validated_features:feature_suite",
    } | (freshness)
    # the daily job runs the gate's checks, not the freshness checks (freshness_checks_sensor evaluates those)
    in_daily = {c.to_user_string() for c in defs.resolve_job_def("daily_job").asset_layer.asset_graph.asset_check_keys}
    assert in_daily == checks - freshness
    assert {j.name for j in defs.resolve_all_job_defs()} >= {"reproduce_job"}
    assert defs.resolve_sensor_def("freshness_checks_sensor").default_status.value == "STOPPED"


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


def nodes():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys()}


def test_every_asset_has_owners_and_tags():
    from assets.common import SPEC

    found = nodes()
    assert len(found) == 16
    stages = {name: node.tags.get("stage") for name, node in found.items()}
    for name, node in found.items():
        assert node.owners == ["team:ml-platform"], name
        assert node.tags["dataset"] == SPEC.name, name
    assert stages == {
        "raw_data": "ingest",
        "raw_quarantine": "ingest",
        "validated_features": "features",
        "quarantine": "features",
        "train_set": "training",
        "validation_set": "training",
        "test_set": "training",
        "tuned_pipeline": "training",
        "registered_model": "training",
        "batch_predictions": "serving",
        "model_performance": "monitoring",
        "feature_drift": "monitoring",
        "segment_models": "training",
        "segment_predictions": "serving",
        "segment_performance": "monitoring",
        "incremental_predictions": "serving",
    }


def test_the_training_assets_carry_a_code_version_of_the_spec_and_their_code():
    import ml.splits
    import ml.training
    from assets.common import SPEC, code_version

    found = nodes()
    versioned = {name for name, node in found.items() if node.code_version}
    assert versioned == {
        "train_set",
        "validation_set",
        "test_set",
        "tuned_pipeline",
        "registered_model",
        "segment_models",
    }
    expected = hashlib.sha256(SPEC.fingerprint().encode())  # computed here from the files, independently
    expected.update(b"ml.splits\0" + Path(ml.splits.__file__).read_bytes())
    assert found["train_set"].code_version == expected.hexdigest()[:16] == code_version(ml.splits)
    assert found["tuned_pipeline"].code_version != found["train_set"].code_version
    assert code_version(ml.training) != code_version(ml.splits)


def test_the_column_schema_is_known_at_definition_from_the_spec():
    from assets.common import SPEC
    from ml.features import feature_columns

    found = nodes()
    features = {c.name: c.type for c in found["validated_features"].metadata["dagster/column_schema"].columns}
    assert list(features) == feature_columns(SPEC)
    assert (features["flight"], features["carrier"], features["distance"], features["event_date"]) == (
        "int",
        "string",
        "double",
        "date",
    )
    for split in ("train_set", "validation_set", "test_set"):
        assert (
            found[split].metadata["dagster/column_schema"]
            == found["validated_features"].metadata["dagster/column_schema"]
        )
    predictions = [c.name for c in found["batch_predictions"].metadata["dagster/column_schema"].columns]
    assert predictions == [
        "carrier",
        "flight",
        "origin",
        "event_date",
        "prediction",
        "probability",
        "model_name",
        "model_version",
        "model_run_id",
        "scored_at",
    ]
    incremental = [c.name for c in found["incremental_predictions"].metadata["dagster/column_schema"].columns]
    assert incremental == [*predictions, "features_delta_version"]


def reference_of(node):
    [ref] = node.metadata["dagster/code_references"].code_references
    return ref


def test_every_asset_points_at_its_definition():
    for name, node in nodes().items():
        ref = reference_of(node)
        path = Path(ref.file_path)
        assert path.is_relative_to(REPO_ROOT / "assets"), name
        line = path.read_text().splitlines()[ref.line_number - 1]
        assert line.startswith(("@asset", "@multi_asset")), (name, line)


def test_code_references_link_to_the_git_commit_when_a_repository_is_given():
    from assets.predictions import batch_predictions
    from orchestration.definitions import with_code_references

    [local] = with_code_references([batch_predictions], git_url="")
    line = reference_of(local.specs_by_key[dg.AssetKey("batch_predictions")]).line_number
    [linked] = with_code_references(
        [batch_predictions], git_url="https://github.com/acme/flightline/", git_ref="0abc12"
    )
    ref = reference_of(linked.specs_by_key[dg.AssetKey("batch_predictions")])
    assert ref.url == f"https://github.com/acme/flightline/tree/0abc12/assets/predictions.py#L{line}"


def test_the_model_has_a_freshness_policy_on_its_age():
    policy = nodes()["registered_model"].freshness_policy
    assert (policy.fail_window.to_timedelta(), policy.warn_window.to_timedelta()) == (
        timedelta(days=30),
        timedelta(days=14),
    )


@pytest.mark.parametrize("materialized, passed", [(["2013-12-30"], False), (["2013-12-30", "2013-12-31"], True)])
def test_a_missing_day_fails_the_freshness_check(materialized, passed):
    """The check of validated_features, run alone (no Spark) against an instance that holds those days."""
    from orchestration.definitions import defs

    key = dg.AssetCheckKey(dg.AssetKey("validated_features"), "freshness_check")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection={key})
    with dg.DagsterInstance.ephemeral() as instance:
        for day in materialized:
            instance.report_runless_asset_event(dg.AssetMaterialization("validated_features", partition=day))
        result = job.execute_in_process(instance=instance)
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert evaluation.passed is passed
    if not passed:
        assert evaluation.description == (
            "Asset is overdue. We expected partition 2013-12-31 to have arrived, and it has not."
        )
