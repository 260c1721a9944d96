"""incremental_predictions: what changed in validated_features since the last run, scored by @champion, exactly once
(ml/incremental.py: a Structured Streaming query over the table's change data feed, availableNow, one MERGE per
micro-batch). The query's checkpoint lives next to the table (`LakehouseResource.checkpoint_path`)."""

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets import contracts as c
from assets.common import SPEC, ownership
from assets.features import validated_features
from assets.training import registered_model
from ml import delta_io
from ml.columns import incremental_table_columns, prediction_column_lineage
from ml.incremental import IncrementalSettings, score_changes
from ml.registry import champion_version
from ml.scoring import ResolvedModel, check_signature, load_model
from orchestration.lakehouse import LakehouseResource, column_lineage, declared_schema
from orchestration.resources import MLflowResource

TABLE = "incremental_predictions"
DEFAULTS = IncrementalSettings()


class IncrementalConfig(Config):
    starting_version: int | None = Field(
        default=DEFAULTS.starting_version,
        description="validated_features version a new checkpoint starts reading changes at (None: the table's "
        "current rows first, then every change after them). Ignored once the checkpoint exists.",
    )
    max_files_per_trigger: int = Field(
        default=DEFAULTS.max_files_per_trigger, ge=1, description="feature files per micro-batch"
    )
    rescore: bool = Field(
        default=DEFAULTS.rescore,
        description="also rescore every current feature row with the champion (after a champion change: rows "
        "scored before keep their version otherwise)",
    )


@asset(
    deps=[validated_features, registered_model],
    group_name="incremental",
    kinds={"spark", "delta", "mlflow"},
    metadata=declared_schema(incremental_table_columns(SPEC)),
    **ownership("serving"),
    description="Predictions of the @champion for every feature row, kept up to date from validated_features' "
    "change data feed (new and rewritten days, exactly once); every row names the model and the feature version.",
)
def incremental_predictions(
    context: AssetExecutionContext, config: IncrementalConfig, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    name = lakehouse.model_name
    version = champion_version(mlflow.client, name)  # resolved once per run, then pinned
    model = ResolvedModel(
        name=name, version=str(version.version), run_id=version.run_id, uri=f"models:/{name}/{version.version}"
    )
    source = lakehouse.change_feed("validated_features")
    check_signature(model.uri, delta_io.read_table(lakehouse.session, source).schema)  # before anything is written
    result = score_changes(
        lakehouse.session,
        source,
        lakehouse.table_path(TABLE),
        lakehouse.checkpoint_path(TABLE),
        load_model(model),
        model,
        SPEC,
        IncrementalSettings(config.starting_version, config.max_files_per_trigger, config.rescore),
        user_metadata=lakehouse.commit_tag(context.run.run_id, model_uri=model.uri, scorer="native"),
        lock=lambda: lakehouse.lock(TABLE),
        on_batch=lambda b: context.log.info(f"{TABLE} batch {b.batch_id}: {b}"),
    )
    commit = delta_io.last_commit(lakehouse.session, result.target)
    predictions = delta_io.read_table(lakehouse.session, result.target)
    context.log.info(
        f"{TABLE}: {result.rows_scored} rows scored, {result.rows_deleted} deleted, versions "
        f"{result.first_version}..{result.last_version} of validated_features, by {name} v{model.version}"
    )
    model_url = mlflow.model_url(name, model.version)
    return MaterializeResult(
        metadata=lakehouse.metadata(
            commit,
            TABLE,
            predictions.schema,
            **{
                "dagster/row_count": predictions.count(),  # the table's rows (a MERGE's output rows are not)
                c.FIRST_VERSION_CONSUMED: -1 if result.first_version is None else result.first_version,
                c.LAST_VERSION_CONSUMED: -1 if result.last_version is None else result.last_version,
                c.ROWS_SCORED: result.rows_scored,
                "rows_deleted": result.rows_deleted,
                "rows_rescored": result.rows_rescored,
                "micro_batches": len(result.merged),
                "micro_batches_replayed": result.replayed,
                "streaming_query_id": result.query_id,
                "checkpoint": MetadataValue.path(lakehouse.checkpoint_path(TABLE)),
                "model_name": name,
                "model_version": int(model.version),
                "model_run_id": model.run_id,
                "model_uri": model.uri,
                "model_url": MetadataValue.url(model_url) if model_url else "",
                "mlflow_run": model.run_id,
                **{c.delta_version_key("validated_features"): lakehouse.version("validated_features")},
                **column_lineage(prediction_column_lineage(SPEC, "validated_features")),
            },
        )
    )
