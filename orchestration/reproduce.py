"""reproduce_job: retrain a registered version from exactly what it recorded, and say whether its test metric came back.

Launch it from the Launchpad of `reproduce_job` (config: the version), or from the command line (README). The
replay itself is ml/replay.py: the recorded spec fingerprint (a different current spec is refused), the split tables
at their recorded Delta versions, the recorded tuning configuration and seed. The verdict is recorded as tags of the
version (`replay.verdict`, `replay.max_abs_delta`, ...) and as an AssetObservation of `registered_model` (no model is
registered: the replay's MLflow run is kept, tagged `replay.of_version`). A mismatch fails the run, after recording.
"""

from dagster import AssetObservation, Config, Failure, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from assets.common import SPEC
from assets.contracts import SPLIT_TABLES, SPLITS
from ml import registry
from ml.delta_io import CorruptDeltaLogError
from ml.replay import DEFAULT_TOLERANCE, ReplayRefused, compare, plan_replay, record_verdict, replay
from ml.training import SplitSource
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource


class ReproduceConfig(Config):
    version: int = Field(ge=1, description="the model version to retrain from what it recorded")
    tolerance: float = Field(
        default=DEFAULT_TOLERANCE,
        ge=0.0,
        description="largest |replayed - recorded| of a test metric that still matches (1e-9: Spark's training of "
        "the same rows in the same partitions is deterministic)",
    )


@op(
    description="Retrain the configured version from its recorded splits, spec and tuning config; compare its test metrics."
)
def reproduce_version(
    context: OpExecutionContext, config: ReproduceConfig, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> dict:
    client = mlflow.client
    name = lakehouse.model_name
    try:
        plan = plan_replay(client, name, config.version, SPEC, SPLIT_TABLES, lakehouse.table_path)
    except (ReplayRefused, registry.ModelVersionNotFoundError) as exc:
        raise Failure(description=f"reproduce {name} v{config.version} refused: {exc}") from exc
    frames, sources = {}, {}
    for split, table in zip(SPLITS, SPLIT_TABLES, strict=True):
        path, version = plan.inputs[table]
        current = lakehouse.version(table)
        if current is None or version > current:
            raise Failure(
                description=f"reproduce {name} v{plan.version} refused: {table} has no Delta version {version} "
                f"(its current version: {current})"
            )
        try:
            frames[split] = lakehouse.read_at(table, version).frame
        except CorruptDeltaLogError as exc:  # an expired or vacuumed version: time travel no longer reaches it
            raise Failure(
                description=f"reproduce {name} v{plan.version} refused: {table} v{version} can no longer be read "
                f"(log retention or VACUUM): {exc}"
            ) from exc
        sources[split] = SplitSource(lakehouse.table_name(table), path, version)
    context.log.info(
        f"replaying {name} v{plan.version} (run {plan.run_id}): {plan.n_trials} trial(s), seed {plan.record['seed']}, "
        + ", ".join(f"{t} v{v}" for t, (_, v) in plan.inputs.items())
    )
    experiment_id = mlflow.experiment_id()
    tags = registry.lineage_tags(SPEC, plan.inputs, {"dagster.run_id": context.run_id})
    outcome = replay(plan, SPEC, frames, sources, experiment_id, tags, progress=context.log.info)
    verdict = compare(plan, outcome, config.tolerance)
    record_verdict(client, plan, verdict, outcome.run_id, context.run_id)
    context.log.info(f"replay of {name} v{plan.version}: {verdict.reason}")
    run_url = mlflow.run_url(experiment_id, outcome.run_id)
    metadata = {
        "action": "reproduce",
        "model_name": name,
        "model_version": int(plan.version),
        "replay_verdict": "match" if verdict.matches else "mismatch",
        "replay_reason": verdict.reason,
        "metric": verdict.metric,
        f"recorded_test_{verdict.metric}": verdict.recorded[verdict.metric],
        f"replayed_test_{verdict.metric}": verdict.replayed.get(verdict.metric, float("nan")),
        "max_abs_delta": verdict.max_abs_delta,
        "tolerance": verdict.tolerance,
        "test_metric_deltas": MetadataValue.json(verdict.deltas),
        "best_trial_matches": verdict.best_matches,
        "max_trial_value_delta": verdict.max_trial_delta if verdict.max_trial_delta is not None else "",
        "trials_replayed": plan.n_trials,
        "recorded_mlflow_run_id": plan.run_id,
        "replay_mlflow_run_id": outcome.run_id,
        "replay_mlflow_run_url": MetadataValue.url(run_url) if run_url else "",
        "spec_fingerprint": plan.spec_fingerprint,
        **{f"{t}_delta_version": v for t, (_, v) in plan.inputs.items()},
    }
    context.log_event(AssetObservation(asset_key="registered_model", metadata=metadata))
    if not verdict.matches:
        raise Failure(description=f"replay of {name} v{plan.version}: {verdict.reason}", metadata=metadata)
    return {"version": plan.version, "matches": verdict.matches, "max_abs_delta": verdict.max_abs_delta}


@job(description="Replay: retrain a model version from its recorded splits (time travel), spec and tuning config.")
def reproduce_job():
    reproduce_version()
