"""orchestration/reproduce.py (reproduce_job) and ml/replay.py on the world's registered version: retrained from what
it recorded (splits at their Delta versions, spec fingerprint, tuning config and seed), its test metrics come back
within 1e-9; a changed spec, or a version that does not exist, is refused before anything is trained."""

import dataclasses
import math

import mlflow
import pytest

from assets.common import SPEC
from assets.contracts import SPLIT_TABLES
from ml.replay import DEFAULT_TOLERANCE, ReplayRefused, plan_replay
from ml.training import TUNING_CONFIG_ARTIFACT
from tests.world import MODEL_NAME, TUNING, metadata_of


def reproduce(world, version: int):
    return world.defs.resolve_job_def("reproduce_job").execute_in_process(
        run_config={"ops": {"reproduce_version": {"config": {"version": version}}}},
        instance=world.instance,
        raise_on_error=False,
    )


def runs_in(world) -> int:
    experiment = world.client.get_experiment_by_name(world.resources["mlflow"].experiment)
    return len(world.client.search_runs([experiment.experiment_id], max_results=1000))


def test_the_training_run_records_everything_a_replay_needs(world):
    meta = metadata_of(world.results["tuned_pipeline"], "tuned_pipeline")
    run = world.client.get_run(meta["mlflow_run_id"])
    params = run.data.params
    assert (params["startup_trials"], params["timeout_seconds"], params["refit_on_train_and_validation"]) == (
        "5",
        "None",
        "False",
    )
    record = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{TUNING_CONFIG_ARTIFACT}")
    assert (record["n_trials"], record["seed"], record["algorithms"], record["metric"]) == (
        TUNING["n_trials"],
        42,
        TUNING["algorithms"],
        "auc",
    )
    assert record["search_space"]["logistic_regression"]["elasticNetParam"] == {
        "kind": "float",
        "low": 0.0,  # a bound of 0 is kept (it is falsy)
        "high": 1.0,
        "log": False,
        "step": None,
        "choices": [],
        "value": None,
    }
    assert run.data.tags["dataset.spec_fingerprint"] == SPEC.fingerprint()


def test_reproduce_job_retrains_the_registered_version_and_matches_its_test_metric(world):
    recorded = metadata_of(world.results["tuned_pipeline"], "tuned_pipeline")
    result = reproduce(world, 1)
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    [observation] = [
        e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ]
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert (meta["replay_verdict"], meta["model_version"], meta["best_trial_matches"]) == ("match", 1, True)
    # the replayed metric against the one tuned_pipeline recorded in Dagster (not the MLflow value the job compared)
    assert abs(meta["replayed_test_auc"] - recorded["test_auc"]) <= DEFAULT_TOLERANCE
    assert meta["recorded_test_auc"] == recorded["test_auc"]
    assert meta["max_abs_delta"] <= DEFAULT_TOLERANCE and meta["max_trial_value_delta"] <= DEFAULT_TOLERANCE
    assert set(meta["test_metric_deltas"]) == {"auc", "f1", "log_loss", "pr_auc"}
    assert {meta[f"{t}_delta_version"] for t in SPLIT_TABLES} == {0}

    tags = world.client.get_model_version(MODEL_NAME, "1").tags
    assert (tags["replay.verdict"], tags["replay.dagster_run_id"]) == ("match", result.run_id)
    assert tags["replay.mlflow_run_id"] == meta["replay_mlflow_run_id"] != recorded["mlflow_run_id"]
    assert float(tags["replay.tolerance"]) == DEFAULT_TOLERANCE
    assert str(world.client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"  # no alias moved

    # the replay is a run of its own, trained on the same split versions (its MLflow datasets) as the original
    replayed, original = (world.client.get_run(r) for r in (meta["replay_mlflow_run_id"], recorded["mlflow_run_id"]))
    assert (replayed.data.tags["replay.of_version"], replayed.data.tags["replay.of_run_id"]) == (
        "1",
        original.info.run_id,
    )
    assert {d.dataset.name for d in replayed.inputs.dataset_inputs} == {
        d.dataset.name for d in original.inputs.dataset_inputs
    }
    assert replayed.data.params["best_regParam"] == original.data.params["best_regParam"]
    assert not math.isnan(replayed.data.metrics["test_auc"])


def test_a_changed_dataset_spec_is_refused_before_anything_is_trained(world):
    before = runs_in(world)
    changed = dataclasses.replace(SPEC, max_quarantine_fraction=0.06)
    tags = world.client.get_model_version(MODEL_NAME, "1").tags
    with pytest.raises(ReplayRefused) as refused:
        plan_replay(world.client, MODEL_NAME, 1, changed, SPLIT_TABLES, world.lake.table_path)
    assert str(refused.value) == (
        f"model {MODEL_NAME} v1 was trained with dataset spec flights fingerprint {SPEC.fingerprint()}, but the "
        f"current spec flights has fingerprint {changed.fingerprint()}: its features or rules changed, so a replay "
        "would train another model. Replay it with the spec it was trained with."
    )
    assert changed.fingerprint() != SPEC.fingerprint()
    assert runs_in(world) == before and world.client.get_model_version(MODEL_NAME, "1").tags == tags


def test_a_version_that_does_not_exist_is_refused_by_the_job(world):
    before = runs_in(world)
    result = reproduce(world, 99)
    assert not result.success
    failure = result.failure_data_for_node("reproduce_version").user_failure_data
    assert failure.description.startswith(f"reproduce {MODEL_NAME} v99 refused: model {MODEL_NAME} has no version 99")
    assert runs_in(world) == before
