"""tuned_pipeline and registered_model: an Optuna-tuned Spark ML pipeline, tracked in MLflow, registered and gated."""

from typing import Optional

from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset
from pydantic import Field

from assets.common import SPEC
from ml.delta_io import read_pinned
from ml import registry
from ml.registry import CHAMPION, CHALLENGER, GateConfig, gate, register_version
from ml.scoring import evaluate_version
from ml.training import TuningConfig, tune_and_log
from orchestration.resources import LakehouseResource, MLflowResource, SparkResource

SPLIT_TABLES = ("train_set", "validation_set", "test_set")


class TuningRunConfig(Config):
    n_trials: int = Field(default=6, ge=1, description="Optuna trials in the study")
    seed: int = 42
    algorithms: list[str] = Field(default_factory=list, description="empty: every algorithm of the task")
    metric: Optional[str] = Field(default=None, description="primary metric; empty: the dataset spec's")
    refit_on_train_and_validation: bool = False


def lineage_tags(context: AssetExecutionContext, inputs: dict[str, tuple[str, int]]) -> dict[str, str]:
    return registry.lineage_tags(SPEC, inputs, {
        "dagster.run_id": context.run.run_id,
        "dagster.asset_key": context.asset_key.to_user_string(),
        "dagster.partition": context.partition_key if context.has_partition_key else "",
    })


@asset(
    deps=list(SPLIT_TABLES),
    group_name="training",
    kinds={"spark", "mlflow", "optuna"},
    description="Spark ML pipeline tuned by an Optuna TPE study; every trial is a nested MLflow run.",
)
def tuned_pipeline(context: AssetExecutionContext, config: TuningRunConfig, spark: SparkResource,
                   mlflow: MLflowResource, lakehouse: LakehouseResource) -> Output[dict]:
    session = spark.spark_session
    frames, inputs = {}, {}
    for table in SPLIT_TABLES:
        path = lakehouse.table_path(table)
        frames[table], version = read_pinned(session, path)
        inputs[table] = (path, version)
    experiment_id = mlflow.experiment_id()
    outcome = tune_and_log(
        SPEC, frames["train_set"], frames["validation_set"], frames["test_set"],
        TuningConfig(n_trials=config.n_trials, seed=config.seed, algorithms=tuple(config.algorithms),
                     metric=config.metric, refit_on_train_and_validation=config.refit_on_train_and_validation,
                     study_name=f"{SPEC.model_name}-{context.run.run_id[:8]}"),
        experiment_id=experiment_id,
        tags=lineage_tags(context, inputs),
        progress=context.log.info,
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
            "best_algorithm": outcome.best_algorithm,
            "best_params": MetadataValue.json(outcome.best_params),
            f"best_trial_validation_{outcome.metric}": outcome.best_validation_value,
            **{f"validation_{k}": v for k, v in outcome.validation_metrics.items()},
            **{f"test_{k}": v for k, v in outcome.test_metrics.items()},
            **{f"{t}_delta_version": v for t, (_, v) in inputs.items()},
        },
    )


class GateRunConfig(Config):
    margin: float = Field(default=0.001, ge=0.0, description=(
        "the challenger must beat the champion by more than this: retraining on the same data moves the metric "
        "by ~1e-5 (row order changes tree sampling), which must not flip the champion"))
    min_value: Optional[float] = Field(default=0.55, description=(
        "floor, for higher-is-better metrics only (AUC, R2): a version below it is never promoted"))
    max_value: Optional[float] = Field(default=None, description=(
        "ceiling, for lower-is-better metrics only (RMSE, MAE): a version above it is never promoted"))


@asset(
    ins={"tuned_pipeline": AssetIn()},
    group_name="training",
    kinds={"mlflow"},
    description="The tuned pipeline as a version of catalog.schema.model; @champion only if it beats the champion.",
)
def registered_model(context: AssetExecutionContext, config: GateRunConfig, tuned_pipeline: dict,
                     spark: SparkResource, mlflow: MLflowResource, lakehouse: LakehouseResource) -> Output[dict]:
    client = mlflow.client
    name = lakehouse.model_name
    run_id = tuned_pipeline["run_id"]
    inputs = {t: (i["path"], i["delta_version"]) for t, i in tuned_pipeline["inputs"].items()}
    tags = registry.lineage_tags(SPEC, inputs, {"mlflow.run_id": run_id, "dagster.run_id": context.run.run_id})
    trained_on = ", ".join(f"{t} v{v}" for t, (_, v) in inputs.items())
    version = register_version(
        client, name, tuned_pipeline["model_uri"], run_id, tags=tags,
        description=(f"Trained by MLflow run {run_id} in Dagster run {context.run.run_id} on {trained_on} "
                     f"(dataset {SPEC.name}, spec {tags['dataset.spec_fingerprint']}, code {tags['code.version'][:12]})."),
    )
    context.log.info(f"registered {name} v{version.version}")

    # Both versions are judged on the same, current test_set.
    test_set, test_version = read_pinned(spark.spark_session, tuned_pipeline["inputs"]["test_set"]["path"])
    metric = tuned_pipeline["metric"]
    gate_config = GateConfig(config.margin, config.min_value, config.max_value)
    decision = gate(client, name, version.version, metric,
                    lambda v: evaluate_version(name, v, test_set, SPEC.task, metric),
                    gate_config)
    aliases = client.get_registered_model(name).aliases
    context.log.info(f"gate: {'promoted' if decision.promoted else 'rejected'} v{version.version}: {decision.reason}")
    model_url = mlflow.model_url(name, version.version)
    return Output(
        {"name": name, "version": version.version, "promoted": decision.promoted},
        metadata={
            "model_name": name,
            "model_version": int(version.version),
            "model_url": MetadataValue.url(model_url) if model_url else "",
            "mlflow_run_id": run_id,
            "aliases": MetadataValue.json({k: str(v) for k, v in aliases.items()}),
            "champion_version": str(aliases.get(CHAMPION, "")),
            "challenger_version": str(aliases.get(CHALLENGER, "")),
            "gate_decision": "promoted" if decision.promoted else "rejected",
            "gate_reason": decision.reason,
            "gate_metric": metric,
            "gate_margin": config.margin,
            "gate_threshold": gate_config.threshold(metric),
            "challenger_metric": decision.challenger_value,
            "champion_metric": decision.champion_value if decision.champion_value is not None else "",
            "previous_champion_version": str(decision.champion_version or ""),
            "test_set_delta_version": test_version,
            "code_version": tags["code.version"],
            "dataset_spec_fingerprint": tags["dataset.spec_fingerprint"],
        },
    )
