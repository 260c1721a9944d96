"""The Optuna study over Spark ML: space, folds, pruning, resume, parallel trials and the MLflow run structure."""

from datetime import date

import pytest
from pyspark.sql import functions as F

from ml.search_space import ParamRange, grid, params_of, resolve_space
from ml.splits import SplitWindow, time_splits
from ml.training import TuningConfig, tune_and_log
from ml.validation import make_folds
from tests.unit.tiny import tiny_features, tiny_spec

WINDOW = SplitWindow.ending(date(2024, 1, 12), 8, 2, 2)
# regParam is either sane or so large that every coefficient is 0 (AUC 0.5): hopeless trials to prune.
PRUNABLE = {
    "logistic_regression": {
        "regParam": ParamRange("categorical", choices=(1e-3, 1e3)),
        "elasticNetParam": ParamRange("fixed", value=1.0),
    }
}


@pytest.fixture(scope="module")
def data(spark):
    return {task: time_splits(tiny_features(spark, task=task), WINDOW) for task in ("classification", "regression")}


def tune(mlflow_store, data, task="classification", **kw):
    s = data[task]
    config = TuningConfig(
        **{
            "n_trials": 2,
            "algorithms": ("logistic_regression",) if task == "classification" else ("linear_regression",),
            "reports": False,
            **kw,
        }
    )
    return tune_and_log(
        tiny_spec(task),
        s["train"],
        s["validation"],
        s["test"],
        config,
        experiment_id=mlflow_store.experiment_id(),
        tags={"dagster.run_id": "run-1"},
    )


def trial_params(outcome, mlflow_store):
    children = mlflow_store.client.search_runs([outcome.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    return sorted(
        (
            int(c.data.tags["optuna.trial"]),
            c.data.params["algorithm"],
            c.data.params.get("regParam"),
            c.data.params.get("maxDepth"),
        )
        for c in children
    )


def test_space_overrides_and_grid():
    space = resolve_space("classification", ("gbt",), {"gbt": {"maxDepth": {"kind": "int", "low": 2, "high": 4}}})
    assert list(space) == ["gbt"] and space["gbt"]["maxDepth"] == ParamRange("int", 2, 4)
    assert len(grid(space, points=3)) == 3 * 3 * 3  # maxIter x maxDepth(2,3,4) x stepSize
    assert params_of({"algorithm": "gbt", "gbt.maxIter": 20, "gbt.maxDepth": 3, "gbt.stepSize": 0.1}, space) == (
        "gbt",
        {"maxIter": 20, "maxDepth": 3, "stepSize": 0.1},
    )
    with pytest.raises(ValueError, match=r"\['xgboost'\] are not available for classification"):
        resolve_space("classification", ("xgboost",))


def test_time_series_folds_never_validate_on_older_data(spark, data):
    s = data["classification"]
    folds = make_folds(s["train"], s["validation"], "time_series", 3, ("id", "event_date"))
    bounds = [f.train.agg(F.max("event_date")).first()[0] for f in folds]
    starts = [f.validation.agg(F.min("event_date"), F.max("event_date")).first() for f in folds]
    assert len(folds) == 3
    for train_max, (valid_min, _) in zip(bounds, starts, strict=True):
        assert train_max < valid_min  # every training day is older than every validation day
    assert bounds == sorted(bounds) and len(set(bounds)) == 3  # the training window expands
    assert starts[-1][1] == date(2024, 1, 10)  # the last fold validates up to the end of train+validation
    sizes = [f.train.count() for f in folds]
    assert sizes == sorted(sizes) and sizes[0] > 0


def test_kfold_folds_partition_the_rows_deterministically(spark, data):
    s = data["classification"]
    folds = make_folds(s["train"], s["validation"], "kfold", 3, ("id", "event_date"))
    ids = [sorted(r.id for r in f.validation.select("id").collect()) for f in folds]
    every = sorted(r.id for r in s["train"].unionByName(s["validation"]).select("id").collect())
    assert sorted(i for fold in ids for i in fold) == every  # each row validates exactly once
    again = make_folds(s["train"], s["validation"], "kfold", 3, ("id", "event_date"))
    assert [sorted(r.id for r in f.validation.select("id").collect()) for f in again] == ids
    with pytest.raises(ValueError, match="'random' is not one of"):
        make_folds(s["train"], s["validation"], "random", 3, ("id",))


def test_same_seed_same_trials_and_different_seed_differs(data, mlflow_store):
    kw = {"n_trials": 2, "algorithms": ("logistic_regression",)}  # random_forest's fits cost 3x; seeding is the same
    first = tune(mlflow_store, data, study_name="seed-a", **kw)
    again = tune(mlflow_store, data, study_name="seed-b", **kw)
    other = tune(mlflow_store, data, study_name="seed-c", seed=7, **kw)
    assert [t["algorithm"] for t in first.trials] == [t["algorithm"] for t in again.trials]
    assert trial_params(first, mlflow_store) == trial_params(again, mlflow_store)
    assert [t["value"] for t in first.trials] == pytest.approx([t["value"] for t in again.trials])
    assert trial_params(other, mlflow_store) != trial_params(first, mlflow_store)


def test_hopeless_trials_are_pruned_after_one_fold(data, mlflow_store):
    outcome = tune(
        mlflow_store,
        data,
        n_trials=4,
        validation="kfold",
        folds=3,
        search_space=PRUNABLE,
        pruner_startup_trials=1,
        study_name="prune",
    )
    states = {t["number"]: t["state"] for t in outcome.trials}
    assert outcome.n_pruned >= 1 and outcome.n_complete + outcome.n_pruned == 4
    client = mlflow_store.client
    for t in outcome.trials:
        run = client.get_run(t["mlflow_run_id"])
        assert run.data.tags["optuna.state"] == states[t["number"]]
        folds_scored = len(client.get_metric_history(run.info.run_id, "fold_auc"))
        if t["state"] == "PRUNED":
            assert run.info.status == "KILLED" and folds_scored < 3 and run.data.params["regParam"] == "1000.0"
        else:
            assert run.info.status == "FINISHED" and folds_scored == 3
    assert outcome.best_params["regParam"] == 0.001


def test_an_interrupted_study_resumes(data, mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    s = data["classification"]
    calls = []

    def stop_at_second_trial(message):
        calls.append(message)
        if len(calls) == 2:
            raise KeyboardInterrupt("operator pressed Ctrl-C")

    config = TuningConfig(
        n_trials=3, algorithms=("logistic_regression",), storage=storage, study_name="resume", reports=False
    )
    with pytest.raises(KeyboardInterrupt):
        tune_and_log(
            tiny_spec(),
            s["train"],
            s["validation"],
            s["test"],
            config,
            mlflow_store.experiment_id(),
            {},
            progress=stop_at_second_trial,
        )
    resumed = tune_and_log(
        tiny_spec(), s["train"], s["validation"], s["test"], config, mlflow_store.experiment_id(), {}
    )
    assert [t["state"] for t in resumed.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert resumed.n_new_trials == 2 and resumed.n_complete == 3
    assert resumed.trials[0]["mlflow_run_id"] == ""  # trial 0 was run, and logged, by the interrupted call


def test_parallel_trials_share_the_session(data, mlflow_store):
    outcome = tune(mlflow_store, data, n_trials=4, parallelism=2, study_name="parallel")
    assert outcome.n_complete == 4 and len({t["mlflow_run_id"] for t in outcome.trials}) == 4


def test_mlflow_run_structure_and_artifacts(data, mlflow_store):
    outcome = tune(
        mlflow_store,
        data,
        n_trials=3,
        validation="time_series",
        folds=2,
        reports=True,
        algorithms=("logistic_regression", "random_forest"),
        study_name="structure",
    )
    client = mlflow_store.client
    parent = client.get_run(outcome.run_id)
    assert parent.data.tags["dagster.run_id"] == "run-1" and parent.data.tags["optuna.study"] == "structure"
    assert parent.data.params["validation"] == "time_series" and parent.data.params["folds"] == "2"
    assert {"test_auc", "test_f1", "test_log_loss", "validation_auc", "best_trial_validation_auc"} <= set(
        parent.data.metrics
    )
    children = client.search_runs([outcome.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    assert len(children) == 3 and all(c.data.tags["dagster.run_id"] == "run-1" for c in children)
    artifacts = {a.path for d in ("reports/model", "reports/study") for a in client.list_artifacts(outcome.run_id, d)}
    assert {
        "reports/model/roc_curve.png",
        "reports/model/pr_curve.png",
        "reports/model/confusion_matrix.png",
        "reports/model/feature_importances.png",
        "reports/study/optimization_history.png",
        "reports/study/param_importances.png",
    } <= artifacts
    import mlflow

    info = mlflow.models.get_model_info(outcome.model_uri)
    assert info.signature.inputs.input_names() == ["x1", "x2", "color"]
    assert info.saved_input_example_info is not None


def test_regression_task_uses_regression_metrics(data, mlflow_store):
    outcome = tune(mlflow_store, data, task="regression", reports=True, study_name="regression")
    assert outcome.metric == "rmse" and set(outcome.test_metrics) == {"rmse", "mae", "r2"}
    assert outcome.test_metrics["r2"] > 0.8  # the tiny target is linear in the features
    paths = {a.path for a in mlflow_store.client.list_artifacts(outcome.run_id, "reports/model")}
    assert "reports/model/residuals.png" in paths and "reports/model/roc_curve.png" not in paths
