"""Tune the Spark ML pipeline with a seeded Optuna TPE study, track every trial in MLflow, log the best model.

- The space is conditional (`ml/search_space.py`): the algorithm first, then its own hyperparameters.
- A trial is scored on the holdout, on k folds or on expanding time-series folds (`ml/validation.py`). With
  folds, the running mean is reported after each fold and a median pruner stops hopeless trials early.
- Trials may run in parallel threads that share the one SparkSession, each in its own FAIR scheduler pool.
  TPE learns from finished trials only, so parallelism trades search quality for wall time: keep it well
  below the number of trials (2-4 for a few dozen trials). With parallelism 1 a seeded rerun is reproducible.
- The study lives in an Optuna storage (sqlite by default, an RDB URL in prod): an interrupted study resumes.
- One MLflow parent run per call; one child run per trial (params, per-fold metrics, state COMPLETE/PRUNED).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pyspark
from mlflow.data.delta_dataset_source import DeltaDatasetSource
from mlflow.data.spark_dataset import SparkDataset
from mlflow.entities import Metric, Param, RunTag
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from ml import spark_models
from ml.dataset import LABEL, DatasetSpec
from ml.drift import PROFILE_ARTIFACT, build_profile
from ml.metrics import HIGHER_IS_BETTER, TASK_METRICS, evaluate
from ml.pipeline import build_pipeline
from ml.reports import model_report, study_report
from ml.search_space import ParamRange, describe, params_of, resolve_space, suggest
from ml.spark import is_connect
from ml.validation import make_folds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningConfig:
    n_trials: int = 6
    seed: int = 42
    algorithms: tuple[str, ...] = ()  # empty: every algorithm of the task
    search_space: Mapping[str, Mapping[str, Any]] | None = None  # {algorithm: {param: range}} overrides
    metric: str | None = None  # empty: the spec's primary metric
    validation: str = "holdout"  # holdout | kfold | time_series
    folds: int = 3
    prune: bool = True  # median pruner over the per-fold running mean (no effect on holdout: one step)
    pruner_startup_trials: int = 3
    parallelism: int = 1  # trials at once, in threads sharing the SparkSession
    refit_on_train_and_validation: bool = False  # True: more data, but validation metrics become in-sample
    storage: str | None = None  # Optuna RDB URL; None keeps the study in memory
    study_name: str = "study"
    reports: bool = True  # plots and importances as MLflow artifacts
    profile: bool = True  # the training data's reference profile (ml/drift.py), for drift monitoring
    timeout_seconds: float | None = None  # stop starting new trials after this long
    target_value: float | None = None  # stop once a trial reaches this value of the metric
    startup_trials: int = 5  # random trials before TPE models the space (Optuna's default is 10)


# The run's record of its whole tuning configuration (a JSON artifact): what a replay (ml/replay.py) runs again.
TUNING_CONFIG_ARTIFACT = "tuning_config.json"
# What a replay does not take from the record: where the study lives, what it is named, and the artifacts it adds.
NOT_REPLAYED = ("storage", "study_name", "reports", "profile")


def tuning_record(config: TuningConfig, metric: str, space) -> dict[str, Any]:
    """Everything that shapes the study and the model, as JSON-able data: the config's fields (the search space
    resolved in full, every range with all its fields) and the metric it resolved to."""
    record = {k: v for k, v in asdict(config).items() if k not in (*NOT_REPLAYED, "search_space", "algorithms")}
    return {
        **record,
        "metric": metric,
        "algorithms": list(space),
        "search_space": {a: {p: asdict(r) for p, r in ps.items()} for a, ps in space.items()},
    }


def config_from_record(record: Mapping[str, Any], **changes: Any) -> TuningConfig:
    """The TuningConfig a run recorded (`tuning_record`), with `changes` (the study's storage and name)."""
    space = {
        a: {p: ParamRange(**{**r, "choices": tuple(r.get("choices") or ())}) for p, r in ps.items()}
        for a, ps in record["search_space"].items()
    }
    known = set(TuningConfig.__dataclass_fields__)
    fields = {k: v for k, v in record.items() if k in known and k not in ("search_space", "algorithms")}
    return replace(TuningConfig(**fields), algorithms=tuple(record["algorithms"]), search_space=space, **changes)


# The MLflow input context of each split (`mlflow.log_input(..., context=...)`): the run page's Datasets list.
DATASET_CONTEXTS = {"train": "training", "validation": "validation", "test": "test"}


@dataclass(frozen=True)
class SplitSource:
    """Where a split was read: the Delta table (its name and path) at one version. The run logs it as an MLflow
    dataset, so the run page says which table versions trained and tested it."""

    table_name: str  # catalog.schema.table
    path: str
    delta_version: int

    @property
    def dataset_name(self) -> str:
        return f"{self.table_name}@v{self.delta_version}"  # mlflow.data.load_delta's own naming


class VersionedDeltaSource(DeltaDatasetSource):
    """DeltaDatasetSource that records its version 0 too: mlflow 3.17's `to_dict` drops a falsy version
    (`if self._delta_table_version:`), so a split's first version would show no version at all."""

    def to_dict(self) -> dict:
        return {**super().to_dict(), "delta_table_version": self._delta_table_version}


class CountedDeltaDataset(SparkDataset):
    """mlflow.data.load_delta's dataset (a Spark frame over a Delta source at a version), with the row count it
    was given as its profile.

    SparkDataset's own profile runs `df.rdd.mapPartitions(...).sumApprox(5 s)`: a pass that ships every row
    through Python workers (not to the driver, but a full scan, answered approximately after 5 s). The rows are
    counted by Spark anyway (the tuning counts train and validation), so the profile is that exact count.
    Schema (from the frame's schema, no data read) and digest (the plan's semantic hash) are SparkDataset's.
    The source is built directly, as load_delta does: `mlflow.data.from_spark(path=..., version=...)` only
    accepts a version for a path on the local file system."""

    def __init__(self, frame: DataFrame, source: SplitSource, num_rows: int, targets: str | None = None):
        self._num_rows = num_rows
        super().__init__(
            df=frame,
            source=VersionedDeltaSource(path=source.path, delta_table_version=source.delta_version),
            targets=targets,
            name=source.dataset_name,
        )

    @property
    def profile(self) -> dict:
        return {"num_rows": self._num_rows}


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
    n_trials: int  # in the study, including those of an earlier, interrupted run
    n_complete: int
    n_pruned: int
    n_new_trials: int  # run by this call
    trials: list[dict[str, Any]] = field(default_factory=list)  # number, state, value, algorithm, MLflow run id
    model: PipelineModel | None = field(default=None, repr=False)


def model_signature(spec: DatasetSpec) -> ModelSignature:
    inputs = [ColSpec("double", c) for c in spec.numeric_features] + [
        ColSpec("string", c) for c in spec.categorical_features
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "prediction")]))


def pip_requirements() -> list[str]:
    return [f"pyspark=={pyspark.__version__}", f"mlflow=={mlflow.__version__}"]


def log_split_inputs(
    sources: Mapping[str, SplitSource], frames: Mapping[str, DataFrame], counts: Mapping[str, int]
) -> dict[str, CountedDeltaDataset]:
    """Log each split with a source as a dataset input of the active run; a split not counted yet is counted
    here (in Spark: one number comes back)."""
    datasets = {
        split: CountedDeltaDataset(
            frames[split], source, counts[split] if split in counts else frames[split].count(), targets=LABEL
        )
        for split, source in sources.items()
    }
    for split, dataset in datasets.items():
        mlflow.log_input(dataset, context=DATASET_CONTEXTS[split])
    return datasets


def _study(config: TuningConfig, direction: str) -> optuna.Study:
    storage = config.storage
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    if storage:
        storage = optuna.storages.RDBStorage(storage, heartbeat_interval=30, grace_period=90)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials, n_warmup_steps=0)
        if config.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        direction=direction,
        # Independent TPE: multivariate+group (Optuna's advice for conditional spaces)
        # did worse on the flights bench (bench/RESULTS.md, run 2).
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials),
        pruner=pruner,
        load_if_exists=True,
    )
    if config.storage:
        optuna.storages.fail_stale_trials(study)  # trials of a crashed process stop counting as running
    return study


class _Pools:
    """A FAIR scheduler pool per worker thread, so parallel trials share the executors instead of queueing.

    Over Spark Connect there is no SparkContext to set a pool on (the server schedules each client request): each
    worker thread tags its operations instead (`SparkSession.addTag`, per thread), so a trial's Spark jobs are
    found, and can be interrupted, by tag (`optuna-<n>`)."""

    def __init__(self, spark):
        self.spark, self.lock, self.names = spark, threading.Lock(), {}
        self.connect = is_connect(spark)
        if not self.connect and spark.conf.get("spark.scheduler.mode", "FIFO").upper() != "FAIR":
            log.info("spark.scheduler.mode is not FAIR: parallel trials will queue their Spark jobs")

    def enter(self) -> None:
        with self.lock:
            known = threading.get_ident() in self.names
            name = self.names.setdefault(threading.get_ident(), f"optuna-{len(self.names)}")
        if self.connect:
            if not known:
                self.spark.addTag(name)
        else:
            self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", name)

    def leave(self) -> None:
        """After the study: the calling thread's tag off (with parallelism 1 the trials ran in this thread)."""
        name = self.names.get(threading.get_ident())
        if self.connect and name:
            self.spark.removeTag(name)


def tune_and_log(
    spec: DatasetSpec,
    train: DataFrame,
    validation: DataFrame,
    test: DataFrame,
    config: TuningConfig,
    experiment_id: str,
    tags: dict[str, str],
    progress: Callable[[str], None] = log.info,
    sources: Mapping[str, SplitSource] | None = None,
) -> TrainingOutcome:
    """One MLflow parent run; a child run per trial; the best pipeline refit, tested and logged with a signature.

    `sources` ({"train" | "validation" | "test": SplitSource}): where the splits were read; the parent run logs
    each as an MLflow dataset input (context training / validation / test) with its Delta version, and logs the
    validation and test metrics against their dataset."""
    metric = config.metric or spec.metric
    if metric not in TASK_METRICS[spec.task]:
        raise ValueError(f"metric {metric!r} does not fit a {spec.task} task; choose one of {TASK_METRICS[spec.task]}")
    if config.parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {config.parallelism}")
    space = resolve_space(spec.task, config.algorithms, config.search_space)
    train = train.persist(StorageLevel.MEMORY_AND_DISK)  # read once per study, not once per trial
    validation = validation.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return _tune(spec, train, validation, test, config, metric, space, experiment_id, tags, progress, sources or {})
    finally:
        train.unpersist()
        validation.unpersist()


def _tune(
    spec, train, validation, test, config, metric, space, experiment_id, tags, progress, sources
) -> TrainingOutcome:
    higher = HIGHER_IS_BETTER[metric]
    n_train, n_validation = train.count(), validation.count()
    if n_train == 0 or n_validation == 0:
        raise ValueError(
            f"cannot tune: the train set has {n_train} labelled rows and the validation set {n_validation}"
        )
    folds = make_folds(train, validation, config.validation, config.folds, spec.key_columns)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(config, "maximize" if higher else "minimize")
    done_before = [t for t in study.trials if t.state.is_finished()]
    remaining = max(0, config.n_trials - len([t for t in done_before if t.state != optuna.trial.TrialState.FAIL]))
    client = MlflowClient()
    pools = _Pools(train.sparkSession)
    run_ids: dict[int, str] = {}

    with mlflow.start_run(
        experiment_id=experiment_id, run_name=config.study_name, tags={**tags, "optuna.study": config.study_name}
    ) as parent:
        mlflow.log_params(
            {
                "n_trials": config.n_trials,
                "seed": config.seed,
                "metric": metric,
                "algorithms": ",".join(space),
                "validation": config.validation,
                "folds": len(folds),
                "parallelism": config.parallelism,
                "prune": config.prune,
                "train_rows": n_train,
                "validation_rows": n_validation,
                "study_name": config.study_name,
                "resumed_trials": len(done_before),
                "startup_trials": config.startup_trials,
                "pruner_startup_trials": config.pruner_startup_trials,
                "timeout_seconds": config.timeout_seconds,
                "target_value": config.target_value,
                "refit_on_train_and_validation": config.refit_on_train_and_validation,
            }
        )
        mlflow.log_dict(tuning_record(config, metric, space), TUNING_CONFIG_ARTIFACT)
        mlflow.log_dict({"space": describe(space), "folds": [f.description for f in folds]}, "search_space.json")
        datasets = log_split_inputs(
            sources,
            {"train": train, "validation": validation, "test": test},
            {"train": n_train, "validation": n_validation},
        )

        def objective(trial: optuna.Trial) -> float:
            pools.enter()
            algorithm, params = suggest(trial, space)
            started = time.monotonic()
            run = client.create_run(
                experiment_id,
                run_name=f"trial-{trial.number}",
                tags={
                    **tags,
                    MLFLOW_PARENT_RUN_ID: parent.info.run_id,
                    MLFLOW_RUN_NAME: f"trial-{trial.number}",
                    "optuna.study": config.study_name,
                    "optuna.trial": str(trial.number),
                },
            )
            run_ids[trial.number] = run.info.run_id
            client.log_batch(
                run.info.run_id, params=[Param(k, str(v)) for k, v in {"algorithm": algorithm, **params}.items()]
            )
            values: list[float] = []
            state, status = "FAIL", "FAILED"
            try:
                for step, fold in enumerate(folds):
                    model = build_pipeline(spec, algorithm, params).fit(fold.train)
                    values.append(evaluate(model.transform(fold.validation), spec.task, (metric,))[metric])
                    running = statistics.fmean(values)
                    client.log_batch(
                        run.info.run_id,
                        metrics=[
                            Metric(f"fold_{metric}", values[-1], int(time.time() * 1000), step),
                            Metric(f"running_{metric}", running, int(time.time() * 1000), step),
                        ],
                    )
                    if len(folds) > 1:
                        trial.report(running, step)
                        if trial.should_prune():
                            state, status = "PRUNED", "KILLED"
                            raise optuna.TrialPruned(f"{metric}={running:.4f} after {step + 1} of {len(folds)} folds")
                value = statistics.fmean(values)
                client.log_metric(run.info.run_id, f"validation_{metric}", value)
                state, status = "COMPLETE", "FINISHED"
                return value
            finally:
                client.log_batch(run.info.run_id, tags=[RunTag("optuna.state", state)])
                client.set_terminated(run.info.run_id, status)
                shown = f"{metric}={statistics.fmean(values):.4f}" if values else "no value"
                progress(
                    f"trial {trial.number + 1}/{config.n_trials} {state}: {algorithm} {params} -> {shown} "
                    f"over {len(values)}/{len(folds)} fold(s) ({time.monotonic() - started:.1f}s)"
                )

        def stop_at_target(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if (
                config.target_value is not None
                and trial.value is not None
                and (trial.value >= config.target_value if higher else trial.value <= config.target_value)
            ):
                progress(f"trial {trial.number + 1} reached the target {metric}={config.target_value}: stopping")
                study.stop()

        try:
            study.optimize(
                objective,
                n_trials=remaining,
                n_jobs=config.parallelism,
                timeout=config.timeout_seconds,
                callbacks=[stop_at_target],
            )
        finally:
            pools.leave()
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise RuntimeError(f"study {config.study_name} has no complete trial to pick a model from")
        best = study.best_trial
        best_algorithm, best_params = params_of(best.params, space)

        fit_data = train.unionByName(validation) if config.refit_on_train_and_validation else train
        model = build_pipeline(spec, best_algorithm, best_params).fit(fit_data)
        scored_validation = model.transform(validation)
        validation_metrics = evaluate(scored_validation, spec.task)
        test_metrics = evaluate(model.transform(test), spec.task)
        trials = [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "algorithm": t.params.get("algorithm"),
                "mlflow_run_id": run_ids.get(t.number, ""),
                "started_at": t.datetime_start.timestamp() if t.datetime_start else None,
                "finished_at": t.datetime_complete.timestamp() if t.datetime_complete else None,
            }
            for t in study.trials
        ]
        n_pruned = len([t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED])
        mlflow.log_params({f"best_{k}": v for k, v in {"algorithm": best_algorithm, **best_params}.items()})
        mlflow.log_metrics(
            {f"best_trial_validation_{metric}": best.value, "trials_complete": len(complete), "trials_pruned": n_pruned}
        )
        mlflow.log_dict({"trials": trials}, "trials.json")
        if config.reports:
            with tempfile.TemporaryDirectory() as tmp:
                model_report(
                    model,
                    scored_validation,
                    spec.task,
                    Path(tmp) / "model",
                    sample_fraction=5000 / max(n_validation, 1),
                )
                study_report(study, Path(tmp) / "study")
                mlflow.log_artifacts(tmp, "reports")
        if config.profile:
            mlflow.log_text(build_profile(fit_data, spec).to_json(), PROFILE_ARTIFACT)
        inputs = list(model_signature(spec).inputs.input_names())
        info = spark_models.log_model(
            model,
            artifact_path="model",
            signature=model_signature(spec),
            pip_requirements=pip_requirements(),
            input_example=validation.select(*inputs).limit(3).toPandas(),
        )
        # The validation and test metrics, on the run and against their datasets. MLflow 3 keeps a metric's dataset
        # only with a LoggedModel (`model_id`; the run's `metrics` table has no dataset), and mlflow.spark.log_model
        # creates none (it logs through the legacy run-artifact path, `Model._log_v2`): an external LoggedModel,
        # pointing at the model's URI, holds them, and the experiment's Models tab lists each metric with its dataset.
        # run_id given: MLflow then reads the run's inputs afresh and finds the datasets logged above (the active
        # run object still has none, and it would log each again, without its context).
        model_id = info.model_id
        if model_id is None and datasets:
            model_id = mlflow.create_external_model(
                # Not "model": MLflow 3 resolves `runs:/<run>/model` (a version's source) to a logged model of that
                # name before the run's artifact, and this one holds metrics, not the Spark flavor.
                name="split_metrics",
                source_run_id=parent.info.run_id,
                tags={"flightline.model_uri": info.model_uri},
                experiment_id=experiment_id,
            ).model_id
        for prefix, values in (("validation", validation_metrics), ("test", test_metrics)):
            mlflow.log_metrics(
                {f"{prefix}_{k}": v for k, v in values.items()},
                run_id=parent.info.run_id,
                model_id=model_id,
                dataset=datasets.get(prefix),
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
            n_complete=len(complete),
            n_pruned=n_pruned,
            n_new_trials=remaining,
            trials=trials,
            model=model,
        )
    return outcome
