"""assets/training: tuned_pipeline (one Optuna trial of logistic regression, tracked in MLflow) and registered_model
(catalog.schema.model, the champion/challenger gate). Trained once, by the world; registration runs once more here."""

import pytest

from assets.splits import SPLIT_TABLES
from assets.training import registered_model
from ml.drift import PROFILE_ARTIFACT
from tests.world import DAYS, MODEL_NAME, metadata_of


def tuned(world) -> dict:
    return metadata_of(world.results["tuned_pipeline"], "tuned_pipeline")


def test_tuned_pipeline_tracks_its_study_trials_and_inputs_in_mlflow(world):
    result = world.results["tuned_pipeline"]
    meta = tuned(world)
    assert (meta["n_trials"], meta["n_complete_trials"], meta["n_pruned_trials"], meta["n_new_trials"]) == (1, 1, 0, 1)
    assert meta["best_algorithm"] == "logistic_regression" and meta["validation_strategy"] == "holdout"
    assert {meta[f"{t}_delta_version"] for t in SPLIT_TABLES} == {0}  # the versions the splits step wrote

    run = world.client.get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == meta["mlflow_experiment_id"]
    tags = run.data.tags
    assert (tags["dagster.run_id"], tags["dagster.asset_key"]) == (result.run_id, "tuned_pipeline")
    assert tags["optuna.study"] == meta["study_name"]
    for t in SPLIT_TABLES:
        assert (tags[f"input.{t}.path"], tags[f"input.{t}.delta_version"]) == (world.lake.table_path(t), "0")
    params = run.data.params
    assert (params["train_rows"], params["validation_rows"]) == (  # labelled rows of Feb 1 and Feb 2, from the CSV
        str(world.labelled_per_day[DAYS[0]]),
        str(world.labelled_per_day[DAYS[1]]),
    )
    assert (params["n_trials"], params["algorithms"], params["best_algorithm"]) == (
        "1",
        "logistic_regression",
        "logistic_regression",
    )
    assert run.data.metrics["test_auc"] == pytest.approx(meta["test_auc"])
    assert run.data.metrics["best_trial_validation_auc"] == pytest.approx(meta["best_trial_validation_auc"])
    assert 0.5 < meta["test_auc"] <= 1.0

    [trial] = world.client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert trial.info.status == "FINISHED" and trial.data.tags["optuna.state"] == "COMPLETE"
    assert trial.data.params["algorithm"] == "logistic_regression"
    assert trial.data.metrics["validation_auc"] == pytest.approx(meta["best_trial_validation_auc"])
    artifacts = {a.path for a in world.client.list_artifacts(run.info.run_id)}
    assert {"model", "reports", PROFILE_ARTIFACT, "trials.json"} <= artifacts

    handoff = result.output_for_node("tuned_pipeline")
    assert (handoff["run_id"], handoff["metric"], handoff["model_uri"]) == (run.info.run_id, "auc", meta["model_uri"])
    assert handoff["inputs"] == {t: {"path": world.lake.table_path(t), "delta_version": 0} for t in SPLIT_TABLES}


def test_the_first_registered_version_is_promoted_to_champion(world):
    result = world.results["registered_model"]
    meta = metadata_of(result, "registered_model")
    run_id = tuned(world)["mlflow_run_id"]
    assert (meta["model_name"], meta["model_version"], meta["mlflow_run_id"]) == (MODEL_NAME, 1, run_id)
    assert (meta["gate_decision"], meta["champion_version"], meta["challenger_version"]) == ("promoted", "1", "")
    assert meta["gate_reason"] == f"first version to pass the thresholds (auc {meta['challenger_metric']:.6f})"
    assert (meta["previous_champion_version"], meta["champion_metric"], meta["gate_threshold"]) == (
        "",
        "",
        "auc >= 0.55",
    )
    # the registered model, loaded from the registry, scores the test set as the tuned one did
    assert meta["challenger_metric"] == pytest.approx(tuned(world)["test_auc"], abs=1e-9)
    assert meta["aliases"] == {"champion": "1"} and meta["test_set_delta_version"] == 0

    version = world.client.get_model_version(MODEL_NAME, "1")
    assert version.run_id == run_id and version.source
    tags = version.tags
    assert (tags["dagster.run_id"], tags["mlflow.run_id"], tags["gate.decision"]) == (result.run_id, run_id, "promoted")
    assert {tags[f"input.{t}.delta_version"] for t in SPLIT_TABLES} == {"0"}
    assert str(world.client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    # the ONNX export for real-time serving (ml/onnx_export.py), checked against Spark on the test set
    assert (meta["serving_onnx"], tags["serving.onnx"]) == ("ok", "ok"), meta["serving_reason"]
    assert meta["serving_parity_rows"] > 0 and meta["serving_parity_share_within"] >= 0.999
    assert meta["serving_parity_class_mismatches"] == 0 and meta["serving_onnx_uri"] == tags["serving.onnx_uri"]


def test_the_same_model_registered_again_does_not_beat_the_champion_and_becomes_challenger(world):
    """registered_model alone, on the tuned_pipeline the world stored: a new version of the same model ties with
    the champion, which it must beat by more than the margin."""
    latest = max(int(v.version) for v in world.client.search_model_versions(f"name='{MODEL_NAME}'"))
    result = world.materialize(registered_model)
    meta = metadata_of(result, "registered_model")
    new = latest + 1
    assert (meta["model_version"], meta["gate_decision"]) == (new, "rejected")
    assert (meta["champion_version"], meta["challenger_version"], meta["previous_champion_version"]) == (
        "1",
        str(new),
        "1",
    )
    assert meta["champion_metric"] == pytest.approx(meta["challenger_metric"], abs=1e-9)
    assert meta["gate_reason"] == (
        f"auc {meta['challenger_metric']:.6f} does not beat champion v1 "
        f"({meta['champion_metric']:.6f}) by more than 0.001"
    )
    assert meta["mlflow_run_id"] == tuned(world)["mlflow_run_id"]  # no second training
    aliases = {k: str(v) for k, v in world.client.get_registered_model(MODEL_NAME).aliases.items()}
    assert aliases == {"champion": "1", "challenger": str(new)}
    assert world.client.get_model_version(MODEL_NAME, str(new)).tags["gate.decision"] == "rejected"
