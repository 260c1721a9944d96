"""Tune the Spark ML pipeline with an Optuna TPE study, track every trial in MLflow, log the best model."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import mlflow
import optuna
import pyspark
from mlflow.models.signature import ModelSignature
from mlflow.types import ColSpec, Schema
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark import StorageLevel

from ml.dataset import DatasetSpec
from ml.metrics import HIGHER_IS_BETTER, TASK_METRICS, evaluate
from ml.pipeline import build_pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningConfig:
    n_trials: int = 6
    seed: int = 42
    algorithms: tuple[str, ...] = ()  # empty: every algorithm of the task
    metric: str | None = None  # empty: the spec's primary metric
    refit_on_train_and_validation: bool = False  # True: more data, but validation metrics become in-sample
    storage: str | None = None  # Optuna RDB URL; None keeps the study in memory
    study_name: str = "study"


@dataclass
class TrainingOutcome:
    run_id: str
    experiment_id: str
    model_uri: str
    study_name: str
    metric: str
    best_algorithm: str
    best_params: dict[str, Any]
    best_validation_value: float
    validation_metrics: dict[str, float]
    test_metrics: dict[str, float]
    n_trials: int
    n_complete: int
    trial_run_ids: list[str] = field(default_factory=list)
    model: PipelineModel | None = field(default=None, repr=False)


def suggest(trial: optuna.Trial, task: str, algorithms: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """The default conditional search space: the algorithm, then its own hyperparameters."""
    algorithm = trial.suggest_categorical("algorithm", list(algorithms))
    if algorithm in ("logistic_regression", "linear_regression"):
        params = {
            "regParam": trial.suggest_float("regParam", 1e-4, 1.0, log=True),
            "elasticNetParam": trial.suggest_float("elasticNetParam", 0.0, 1.0),
            "maxIter": 50,
        }
    elif algorithm == "random_forest":
        params = {
            "numTrees": trial.suggest_int("numTrees", 10, 60, step=10),
            "maxDepth": trial.suggest_int("maxDepth", 3, 10),
            "subsamplingRate": trial.suggest_float("subsamplingRate", 0.5, 1.0),
        }
    elif algorithm == "gbt":
        params = {
            "maxIter": trial.suggest_int("maxIter", 10, 40, step=10),
            "maxDepth": trial.suggest_int("maxDepth", 3, 6),
            "stepSize": trial.suggest_float("stepSize", 0.05, 0.3, log=True),
        }
    else:
        raise ValueError(f"no search space for algorithm {algorithm!r}")
    return algorithm, params


def model_signature(spec: DatasetSpec) -> ModelSignature:
    inputs = [ColSpec("double", c) for c in spec.numeric_features] + [ColSpec("string", c) for c in spec.categorical_features]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "prediction")]))


def pip_requirements() -> list[str]:
    return [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]


def tune_and_log(
    spec: DatasetSpec,
    train: DataFrame,
    validation: DataFrame,
    test: DataFrame,
    config: TuningConfig,
    experiment_id: str,
    tags: dict[str, str],
    progress: Callable[[str], None] = log.info,
) -> TrainingOutcome:
    """One MLflow parent run; a nested run per trial; the best pipeline refit, tested and logged with a signature."""
    from ml.pipeline import ESTIMATORS

    metric = config.metric or spec.metric
    if metric not in TASK_METRICS[spec.task]:
        raise ValueError(f"metric {metric!r} does not fit a {spec.task} task; choose one of {TASK_METRICS[spec.task]}")
    algorithms = config.algorithms or tuple(ESTIMATORS[spec.task])
    direction = "maximize" if HIGHER_IS_BETTER[metric] else "minimize"
    train = train.persist(StorageLevel.MEMORY_AND_DISK)  # read once per study, not once per trial
    validation = validation.persist(StorageLevel.MEMORY_AND_DISK)
    n_train, n_validation = train.count(), validation.count()
    if n_train == 0 or n_validation == 0:
        raise ValueError(f"cannot tune: the train set has {n_train} labelled rows and the validation set {n_validation}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=config.study_name,
        storage=config.storage,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        load_if_exists=True,
    )
    trial_run_ids: list[str] = []

    with mlflow.start_run(experiment_id=experiment_id, run_name=config.study_name, tags=tags) as parent:
        mlflow.log_params(
            {"n_trials": config.n_trials, "seed": config.seed, "metric": metric, "algorithms": ",".join(algorithms),
             "train_rows": n_train, "validation_rows": n_validation, "study_name": config.study_name}
        )

        def objective(trial: optuna.Trial) -> float:
            algorithm, params = suggest(trial, spec.task, algorithms)
            started = time.monotonic()
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{trial.number}", nested=True,
                                  tags={**tags, "optuna.trial": str(trial.number)}) as child:
                trial_run_ids.append(child.info.run_id)
                mlflow.log_params({"algorithm": algorithm, **params})
                model = build_pipeline(spec, algorithm, params).fit(train)
                value = evaluate(model.transform(validation), spec.task, (metric,))[metric]
                mlflow.log_metric(f"validation_{metric}", value)
                mlflow.set_tag("optuna.state", "COMPLETE")
            progress(f"trial {trial.number + 1}/{config.n_trials}: {algorithm} {params} -> validation {metric}={value:.4f} "
                     f"({time.monotonic() - started:.1f}s)")
            return value

        remaining = max(0, config.n_trials - len([t for t in study.trials if t.state.is_finished()]))
        study.optimize(objective, n_trials=remaining)
        best = study.best_trial
        best_algorithm = best.params["algorithm"]
        _, best_params = suggest(optuna.trial.FixedTrial(best.params), spec.task, algorithms)

        fit_data = train.unionByName(validation) if config.refit_on_train_and_validation else train
        model = build_pipeline(spec, best_algorithm, best_params).fit(fit_data)
        validation_metrics = evaluate(model.transform(validation), spec.task)
        test_metrics = evaluate(model.transform(test), spec.task)
        mlflow.log_params({f"best_{k}": v for k, v in {"algorithm": best_algorithm, **best_params}.items()})
        mlflow.log_metric(f"best_trial_validation_{metric}", best.value)
        mlflow.log_metrics({f"validation_{k}": v for k, v in validation_metrics.items()})
        mlflow.log_metrics({f"test_{k}": v for k, v in test_metrics.items()})
        info = mlflow.spark.log_model(
            model, artifact_path="model", signature=model_signature(spec), pip_requirements=pip_requirements()
        )
        outcome = TrainingOutcome(
            run_id=parent.info.run_id,
            experiment_id=experiment_id,
            model_uri=info.model_uri,
            study_name=config.study_name,
            metric=metric,
            best_algorithm=best_algorithm,
            best_params=best_params,
            best_validation_value=float(best.value),
            validation_metrics=validation_metrics,
            test_metrics=test_metrics,
            n_trials=len(study.trials),
            n_complete=len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]),
            trial_run_ids=trial_run_ids,
            model=model,
        )
    train.unpersist()
    validation.unpersist()
    return outcome
