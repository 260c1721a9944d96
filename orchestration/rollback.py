"""rollback_job: point @champion at a given earlier version by hand (a rollback, or an override of the gate).

Launch it from the Launchpad of `rollback_job` with the config below, or from the command line (README). `model`
chooses which registered model: `global` (the default, `catalog.schema.<model>`) or `by_segment` (the segment bundle,
`catalog.schema.<model>_by_segment`, for a dataset spec with a segment column). Either way the version is loaded and
scores a sample of the current features before the alias moves (a bundle: with the global @champion for the rows its
segments leave to it, as segment_predictions scores them); a refusal leaves @champion where it was.

The change is recorded twice: as tags on the model version (who, why, the previous champion) and as an
AssetObservation of the asset that registers the model (`registered_model`, or `segment_models` for the bundle), so
the asset's event history in the Dagster UI shows it next to the gate decisions. It is an observation, not a
materialization: no model was trained or registered.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from dagster import AssetObservation, Config, MetadataValue, OpExecutionContext, job, op
from mlflow.models.signature import ModelSignature
from pydantic import Field

from assets.common import SPEC
from assets.segments import bundle_name, resolved
from ml import spark_models
from ml.dataset import DatasetSpec
from ml.registry import CHALLENGER, CHAMPION, champion_version, set_champion
from ml.scoring import smoke_score
from ml.segment_bundle import bundle_signature, smoke_score_bundle
from ml.training import model_signature
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource

PROMOTION_TAG = "flightline/promotion"  # infra/dagster.yaml limits runs with one value of it to one at a time
MAX_RUNTIME_TAG = "dagster/max_runtime"  # Dagster's run monitoring fails a run past it (seconds): a dead run's slot
PROMOTION_MAX_RUNTIME_SECONDS = 6 * 3600  # frees after this; a training run that needs longer sets its own tag
SAMPLE_ROWS = 100  # current features the version must score before it becomes @champion (a bundle: per own segment)
RolledBackModel = Literal["global", "by_segment"]  # RollbackConfig.model: the global model, or its segment bundle
GLOBAL_MODEL, BUNDLE = get_args(RolledBackModel)


class RollbackConfig(Config):
    version: int = Field(ge=1, description="the model version to make @champion (see the model's versions in MLflow)")
    requested_by: str = Field(min_length=1, description="who asks: a name or an email, recorded on the version")
    reason: str = Field(min_length=1, description="why: an incident or ticket, recorded on the version")
    model: RolledBackModel = Field(
        default=GLOBAL_MODEL,
        description="which registered model: global (catalog.schema.<model>) or by_segment (the segment bundle, "
        "catalog.schema.<model>_by_segment; only for a dataset spec with a segment column)",
    )


@dataclass(frozen=True)
class Target:
    """The registered model a rollback moves, what scoring gives it, how it proves it can serve, and the asset whose
    event history records the change."""

    name: str
    signature: ModelSignature
    verify: Callable[[str], object]
    asset_key: str


def rollback_target(
    model: str, spec: DatasetSpec, mlflow: MLflowResource, lakehouse: LakehouseResource, log: Callable[[str], None]
) -> Target:
    """The model `model` names (RollbackConfig.model); a bundle of a spec without a segment column is refused here,
    before anything is read."""
    if model not in (GLOBAL_MODEL, BUNDLE):
        raise ValueError(f"model {model!r} is not one of {[GLOBAL_MODEL, BUNDLE]}")
    if model == BUNDLE and spec.segment_column is None:
        raise ValueError(
            f"dataset {spec.name} names no segment_column: there is no {BUNDLE} bundle to roll back "
            f"(model: {GLOBAL_MODEL} moves @{CHAMPION} of {lakehouse.model_name})"
        )
    features = lakehouse.read("validated_features").frame
    if model == GLOBAL_MODEL:
        sample = features.limit(SAMPLE_ROWS)
        return Target(
            lakehouse.model_name, model_signature(spec), lambda uri: smoke_score(uri, sample, spec), "registered_model"
        )

    def verify(uri: str) -> None:
        # The rows its segments leave to the global model are scored by the global @champion, as segment_predictions
        # scores them: resolved here, after the registry found the version and checked its signature.
        global_model = resolved(lakehouse.model_name, champion_version(mlflow.client, lakehouse.model_name))
        pipeline = spark_models.load_model(f"models:/{global_model.name}/{global_model.version}")
        check = smoke_score_bundle(uri, features, spec, pipeline, global_model, SAMPLE_ROWS)
        log(
            f"{uri} scored {check.rows} sample rows, {check.rows_by_segment_models} of them by its segment models "
            f"({', '.join(check.segments) or 'none'}), the others by {global_model.name} v{global_model.version}"
        )

    return Target(bundle_name(lakehouse), bundle_signature(spec), verify, "segment_models")


@op(
    description="Set @champion of the configured model (global, or the segment bundle) to the configured version; "
    "refuses a missing version, one scoring cannot feed, and one that does not load and score a sample of the "
    "current features."
)
def set_champion_version(
    context: OpExecutionContext, config: RollbackConfig, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> None:
    target = rollback_target(config.model, SPEC, mlflow, lakehouse, context.log.info)
    name = target.name
    change = set_champion(
        mlflow.client,
        name,
        config.version,
        target.signature,
        requested_by=config.requested_by,
        reason=config.reason,
        dagster_run_id=context.run_id,
        verify=target.verify,
    )
    aliases = {k: str(v) for k, v in mlflow.client.get_registered_model(name).aliases.items()}
    context.log.info(
        f"@{CHAMPION} of {name}: v{change.previous_version or '-'} -> v{change.version} "
        f"(by {change.requested_by}: {change.reason})"
    )
    model_url = mlflow.model_url(name, change.version)
    context.log_event(
        AssetObservation(
            asset_key=target.asset_key,
            metadata={
                "action": "set_champion",
                "model_name": name,
                "champion_version": change.version,
                "previous_champion_version": change.previous_version or "",
                "challenger_version": aliases.get(CHALLENGER, ""),
                "aliases": MetadataValue.json(aliases),
                "requested_by": change.requested_by,
                "reason": change.reason,
                "model_url": MetadataValue.url(model_url) if model_url else "",
            },
        )
    )


def promotion_tags(spec: DatasetSpec) -> dict[str, str]:
    """The tags of the runs that move @champion (training, segments, rollback): they queue one at a time per model, and
    a run whose process died frees the queue once it is past its maximum runtime (infra/dagster.yaml's run monitoring).

    The value is the dataset's model name, for the global model and its segment bundle alike: segments_job reads the
    global @champion and moves the bundle's, so the runs that move either queue behind each other (one rollback_job,
    whichever `model` its config names)."""
    return {PROMOTION_TAG: spec.model_name, MAX_RUNTIME_TAG: str(PROMOTION_MAX_RUNTIME_SECONDS)}


@job(
    tags=promotion_tags(SPEC),
    description="Rollback / override: set @champion of the global model or of the segment bundle to a given version, "
    "recording who asked and why.",
)
def rollback_job():
    set_champion_version()
