"""rollback_job: point @champion at a given earlier version by hand (a rollback, or an override of the gate).

Launch it from the Launchpad of `rollback_job` with the config below, or from the command line (README).
The change is recorded twice: as tags on the model version (who, why, the previous champion) and as an
AssetObservation of `registered_model`, so the asset's event history in the Dagster UI shows it next to
the gate decisions. It is an observation, not a materialization: no model was trained or registered.
"""

from dagster import AssetObservation, Config, MetadataValue, OpExecutionContext, job, op
from pydantic import Field

from assets.common import SPEC
from ml.dataset import DatasetSpec
from ml.registry import CHALLENGER, CHAMPION, set_champion
from ml.scoring import smoke_score
from ml.training import model_signature
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import MLflowResource

PROMOTION_TAG = "flightline/promotion"  # infra/dagster.yaml limits runs with one value of it to one at a time
MAX_RUNTIME_TAG = "dagster/max_runtime"  # Dagster's run monitoring fails a run past it (seconds): a dead run's slot
PROMOTION_MAX_RUNTIME_SECONDS = 6 * 3600  # frees after this; a training run that needs longer sets its own tag
SAMPLE_ROWS = 100  # current features the version must score before it becomes @champion


class RollbackConfig(Config):
    version: int = Field(ge=1, description="the model version to make @champion (see the model's versions in MLflow)")
    requested_by: str = Field(min_length=1, description="who asks: a name or an email, recorded on the version")
    reason: str = Field(min_length=1, description="why: an incident or ticket, recorded on the version")


@op(
    description="Set @champion to the configured version; refuses a missing version, one scoring cannot feed, and "
    "one that does not load and score a sample of the current features."
)
def set_champion_version(
    context: OpExecutionContext, config: RollbackConfig, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> None:
    name = lakehouse.model_name
    sample = lakehouse.read("validated_features").frame.limit(SAMPLE_ROWS)
    change = set_champion(
        mlflow.client,
        name,
        config.version,
        model_signature(SPEC),
        requested_by=config.requested_by,
        reason=config.reason,
        dagster_run_id=context.run_id,
        verify=lambda uri: smoke_score(uri, sample, SPEC),
    )
    aliases = {k: str(v) for k, v in mlflow.client.get_registered_model(name).aliases.items()}
    context.log.info(
        f"@{CHAMPION} of {name}: v{change.previous_version or '-'} -> v{change.version} "
        f"(by {change.requested_by}: {change.reason})"
    )
    model_url = mlflow.model_url(name, change.version)
    context.log_event(
        AssetObservation(
            asset_key="registered_model",
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
    """The tags of the runs that move @champion (training, rollback): they queue one at a time per model, and a run
    whose process died frees the queue once it is past its maximum runtime (infra/dagster.yaml's run monitoring)."""
    return {PROMOTION_TAG: spec.model_name, MAX_RUNTIME_TAG: str(PROMOTION_MAX_RUNTIME_SECONDS)}


@job(
    tags=promotion_tags(SPEC),
    description="Rollback / override: set @champion to a given version, recording who asked and why.",
)
def rollback_job():
    set_champion_version()
