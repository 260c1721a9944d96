"""tuned_pipeline and registered_model: an Optuna-tuned Spark ML pipeline, tracked in MLflow, registered and gated."""

import hashlib
import json
from datetime import timedelta

from dagster import AssetExecutionContext, AssetIn, Config, FreshnessPolicy, MetadataValue, Output, asset
from pydantic import Field

import ml.metrics
import ml.onnx_export
import ml.pipeline
import ml.registry
import ml.scoring
import ml.search_space
import ml.training
import ml.validation
from assets import contracts as c
from assets.common import SPEC, code_version, ownership
from assets.contracts import SPLIT_TABLES, SPLITS
from ml import registry
from ml.onnx_export import export_version
from ml.registry import CHALLENGER, CHAMPION, GateConfig, gate, register_version
from ml.scoring import evaluate_version
from ml.search_space import ParamRange
from ml.training import SplitSource, TuningConfig, tune_and_log
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource, OptunaResource

TUNING = TuningConfig()  # the defaults of the run config below
GATE = GateConfig()
# A champion older than this fails registered_model's freshness policy (warns after MODEL_WARN_AGE): retrain it.
MODEL_MAX_AGE = timedelta(days=30)
MODEL_WARN_AGE = timedelta(days=14)


class ParamRangeConfig(Config):
    kind: str = Field(description="float | int | categorical | fixed")
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[float] = Field(default_factory=list, description="for categorical")
    value: float | None = Field(default=None, description="for fixed")


class TuningRunConfig(Config):
    """ml.training.TuningConfig as Dagster run config: the defaults are TuningConfig's."""

    n_trials: int = Field(
        default=TUNING.n_trials,
        ge=1,
        description="Optuna trials in the study (a resumed study counts its earlier ones)",
    )
    seed: int = Field(
        default=TUNING.seed, description="TPE seed: same data, seed and space give the same trials (parallelism 1)"
    )
    algorithms: list[str] = Field(
        default_factory=lambda: list(TUNING.algorithms), description="empty: every algorithm of the task"
    )
    search_space: dict[str, dict[str, ParamRangeConfig]] = Field(
        default_factory=dict, description="overrides of the default ranges: {algorithm: {param: range}}"
    )
    metric: str | None = Field(default=TUNING.metric, description="primary metric; empty: the dataset spec's")
    validation: str = Field(default=TUNING.validation, description="holdout | kfold | time_series")
    folds: int = Field(default=TUNING.folds, ge=2, description="folds for kfold and time_series")
    prune: bool = Field(default=TUNING.prune, description="median pruner on the per-fold running mean")
    parallelism: int = Field(
        default=TUNING.parallelism,
        ge=1,
        description="trials at once; keep well below n_trials (TPE learns from finished trials)",
    )
    startup_trials: int = Field(
        default=TUNING.startup_trials, ge=1, description="random trials before TPE models the space"
    )
    timeout_seconds: float | None = Field(
        default=TUNING.timeout_seconds, description="stop starting trials after this long"
    )
    refit_on_train_and_validation: bool = TUNING.refit_on_train_and_validation
    study_name: str | None = Field(
        default=None,
        description=(
            "empty: derived from what the splits were made from and this config, so a rerun on the same data resumes "
            "the study"
        ),
    )

    def tuning(self, study_name: str, storage: str | None) -> TuningConfig:
        space = {
            a: {
                p: ParamRange(
                    kind=r.kind, low=r.low, high=r.high, log=r.log, step=r.step, choices=tuple(r.choices), value=r.value
                )
                for p, r in ps.items()
            }
            for a, ps in self.search_space.items()
        }
        return TuningConfig(
            n_trials=self.n_trials,
            seed=self.seed,
            algorithms=tuple(self.algorithms),
            search_space=space,
            metric=self.metric,
            validation=self.validation,
            folds=self.folds,
            prune=self.prune,
            parallelism=self.parallelism,
            refit_on_train_and_validation=self.refit_on_train_and_validation,
            startup_trials=self.startup_trials,
            timeout_seconds=self.timeout_seconds,
            storage=storage,
            study_name=study_name,
        )

    def default_study_name(self, sources: dict[str, dict]) -> str:
        """Same data and same search config -> same study, so a rerun resumes (n_trials and parallelism may change).

        `sources` says what each split was made from (`split_sources`), not which Delta version holds it: a rerun of
        the training job (after a crash, say) writes the same rows to new split versions, and must resume its study.
        """
        key = json.dumps(
            {
                "inputs": sources,
                "config": self.model_dump(exclude={"n_trials", "parallelism", "timeout_seconds", "study_name"}),
                "spec": SPEC.fingerprint(),
            },
            sort_keys=True,
            default=str,
        )
        return f"{SPEC.model_name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def pinned_splits(lakehouse: LakehouseResource, train_set: int, validation_set: int, test_set: int):
    """The split tables at the versions the splits step wrote: (versions, frames, (path, version) per table)."""
    versions = {"train_set": train_set, "validation_set": validation_set, "test_set": test_set}
    frames = {t: lakehouse.read_at(t, v).frame for t, v in versions.items()}
    inputs = {t: (lakehouse.table_path(t), v) for t, v in versions.items()}
    return versions, frames, inputs


def split_sources(lakehouse: LakehouseResource, versions: dict[str, int]) -> dict[str, dict]:
    """What each split version was made from, as its commit recorded it (the splits step's window and the
    validated_features version it read), with the table's path; the version itself only if nothing was recorded."""
    sources = {}
    for table, version in versions.items():
        lineage = lakehouse.commit_lineage(table, version)
        sources[table] = {"path": lakehouse.table_path(table), **(lineage or {"delta_version": version})}
    return sources


def split_strategy(sources: dict[str, dict]) -> str:
    """How the splits were cut (ml.splits), as the train split's commit recorded it: `time` for splits written
    before the strategy was recorded."""
    window = sources["train_set"].get(c.COMMIT_WINDOW) or {}
    return str(window.get("strategy", "time"))


def lineage_tags(context: AssetExecutionContext, inputs: dict[str, tuple[str, int]]) -> dict[str, str]:
    return registry.lineage_tags(
        SPEC,
        inputs,
        {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": context.partition_key if context.has_partition_key else "",
        },
    )


def trials_table(trials: list[dict], metric: str, url_of) -> str:
    """The study's trials as a Markdown table, each linked to its MLflow run."""
    lines = [f"| trial | state | algorithm | {metric} | MLflow run |", "|---|---|---|---|---|"]
    for t in trials:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        run_id, url = t["mlflow_run_id"], url_of(t["mlflow_run_id"]) if t["mlflow_run_id"] else None
        link = f"[{run_id[:8]}]({url})" if url else (run_id or "an earlier run")
        lines.append(f"| {t['number']} | {t['state']} | {t['algorithm']} | {value} | {link} |")
    return "\n".join(lines)


@asset(
    ins={table: AssetIn() for table in SPLIT_TABLES},  # each the Delta version that the splits step wrote
    group_name="training",
    kinds={"spark", "mlflow", "optuna"},
    code_version=code_version(ml.training, ml.pipeline, ml.search_space, ml.validation, ml.metrics),
    **ownership("training"),
    description="Spark ML pipeline tuned by an Optuna TPE study; every trial is a nested MLflow run.",
)
def tuned_pipeline(
    context: AssetExecutionContext,
    config: TuningRunConfig,
    mlflow: MLflowResource,
    lakehouse: LakehouseResource,
    optuna: OptunaResource,
    train_set: int,
    validation_set: int,
    test_set: int,
) -> Output[dict]:
    """Trains on the split versions that the splits step wrote (passed as inputs), not on whatever the split
    tables hold when this step starts: another run may have rewritten them since."""
    versions, frames, inputs = pinned_splits(lakehouse, train_set, validation_set, test_set)
    experiment_id = mlflow.experiment_id()
    sources = split_sources(lakehouse, versions)
    strategy = split_strategy(sources)
    outcome = tune_and_log(
        SPEC,
        frames["train_set"],
        frames["validation_set"],
        frames["test_set"],
        config.tuning(config.study_name or config.default_study_name(sources), optuna.url()),
        experiment_id=experiment_id,
        tags={**lineage_tags(context, inputs), "split.strategy": strategy},
        progress=context.log.info,
        sources={
            split: SplitSource(lakehouse.table_name(t), *inputs[t])
            for split, t in zip(SPLITS, SPLIT_TABLES, strict=True)
        },
    )
    handoff = {
        "run_id": outcome.run_id,
        "model_uri": outcome.model_uri,
        "metric": outcome.metric,
        "inputs": {t: {"path": p, "delta_version": v} for t, (p, v) in inputs.items()},
    }
    run_url = mlflow.run_url(experiment_id, outcome.run_id)
    return Output(
        handoff,
        metadata={
            "mlflow_run_id": outcome.run_id,
            "mlflow_run_url": MetadataValue.url(run_url) if run_url else "",
            "mlflow_experiment_id": experiment_id,
            "model_uri": outcome.model_uri,
            "study_name": outcome.study_name,
            "n_trials": outcome.n_trials,
            "n_complete_trials": outcome.n_complete,
            "n_pruned_trials": outcome.n_pruned,
            "n_new_trials": outcome.n_new_trials,
            "validation_strategy": config.validation,
            c.SPLIT_STRATEGY: strategy,
            "trials": MetadataValue.md(
                trials_table(outcome.trials, outcome.metric, lambda run_id: mlflow.run_url(experiment_id, run_id))
            ),
            "best_algorithm": outcome.best_algorithm,
            "best_params": MetadataValue.json(outcome.best_params),
            f"best_trial_validation_{outcome.metric}": outcome.best_validation_value,
            **{f"validation_{k}": v for k, v in outcome.validation_metrics.items()},
            **{f"test_{k}": v for k, v in outcome.test_metrics.items()},
            **{f"{t}_delta_version": v for t, v in versions.items()},
        },
    )


class GateRunConfig(Config):
    """ml.registry.GateConfig as Dagster run config: the defaults are GateConfig's."""

    margin: float = Field(
        default=GATE.margin,
        ge=0.0,
        description=(
            "the challenger must beat the champion by more than this: retraining on the same data moves the metric "
            "by ~1e-5 (row order changes tree sampling), which must not flip the champion"
        ),
    )
    floors: dict[str, float] = Field(
        default_factory=lambda: dict(GATE.floors),
        description=(
            "metric -> floor, for higher-is-better metrics (auc, r2): a version below its metric's floor is never promoted"
        ),
    )
    ceilings: dict[str, float] = Field(
        default_factory=lambda: dict(GATE.ceilings),
        description=(
            "metric -> ceiling, for lower-is-better metrics (rmse, mae, log_loss): a version above it is never promoted"
        ),
    )

    def gate_config(self) -> GateConfig:
        return GateConfig(margin=self.margin, floors=dict(self.floors), ceilings=dict(self.ceilings))


@asset(
    ins={"tuned_pipeline": AssetIn()},
    group_name="training",
    kinds={"mlflow"},
    code_version=code_version(ml.registry, ml.scoring, ml.onnx_export),
    # The model's age: evaluated by Dagster's freshness daemon (on by default since 1.12), shown on the asset's page.
    freshness_policy=FreshnessPolicy.time_window(fail_window=MODEL_MAX_AGE, warn_window=MODEL_WARN_AGE),
    **ownership("training"),
    description="The tuned pipeline as a version of catalog.schema.model; @champion only if it beats the champion.",
)
def registered_model(
    context: AssetExecutionContext,
    config: GateRunConfig,
    tuned_pipeline: dict,
    mlflow: MLflowResource,
    lakehouse: LakehouseResource,
) -> Output[dict]:
    client = mlflow.client
    name = lakehouse.model_name
    run_id = tuned_pipeline["run_id"]
    inputs = {t: (i["path"], i["delta_version"]) for t, i in tuned_pipeline["inputs"].items()}
    tags = registry.lineage_tags(SPEC, inputs, {"mlflow.run_id": run_id, "dagster.run_id": context.run.run_id})
    trained_on = ", ".join(f"{t} v{v}" for t, (_, v) in inputs.items())
    version = register_version(
        client,
        name,
        tuned_pipeline["model_uri"],
        run_id,
        tags=tags,
        description=(
            f"Trained by MLflow run {run_id} in Dagster run {context.run.run_id} on {trained_on} "
            f"(dataset {SPEC.name}, spec {tags['dataset.spec_fingerprint']}, code {tags['code.version'][:12]})."
        ),
    )
    context.log.info(f"registered {name} v{version.version}")

    # Both versions are judged on the same data: the test_set version this model was tuned with.
    test = lakehouse.read_at("test_set", tuned_pipeline["inputs"]["test_set"]["delta_version"])
    # Real-time serving: the ONNX export, checked against Spark on the test set (before the gate moves @champion).
    export = export_version(client, name, version.version, test.frame, SPEC)
    context.log.info(f"ONNX export of v{version.version}: {'ok' if export.servable else 'refused'}: {export.reason}")
    metric = tuned_pipeline["metric"]
    gate_config = config.gate_config()
    decision = gate(
        client,
        name,
        version.version,
        metric,
        lambda v: evaluate_version(name, v, test.frame, SPEC.task, metric),
        gate_config,
    )
    aliases = client.get_registered_model(name).aliases
    context.log.info(f"gate: {'promoted' if decision.promoted else 'rejected'} v{version.version}: {decision.reason}")
    model_url = mlflow.model_url(name, version.version)
    return Output(
        {"name": name, "version": version.version, "promoted": decision.promoted},
        metadata={
            c.MODEL_NAME: name,
            c.MODEL_VERSION: int(version.version),
            "model_url": MetadataValue.url(model_url) if model_url else "",
            "mlflow_run_id": run_id,
            "aliases": MetadataValue.json({k: str(v) for k, v in aliases.items()}),
            "champion_version": str(aliases.get(CHAMPION, "")),
            "challenger_version": str(aliases.get(CHALLENGER, "")),
            c.GATE_DECISION: "promoted" if decision.promoted else "rejected",
            c.GATE_REASON: decision.reason,
            "gate_metric": metric,
            "gate_margin": config.margin,
            "gate_threshold": gate_config.threshold(metric),
            c.CHALLENGER_METRIC: decision.challenger_value,
            "champion_metric": decision.champion_value if decision.champion_value is not None else "",
            "previous_champion_version": str(decision.champion_version or ""),
            "test_set_delta_version": test.version,
            "code_version": tags["code.version"],
            "dataset_spec_fingerprint": tags["dataset.spec_fingerprint"],
            **export.metadata(),
        },
    )
