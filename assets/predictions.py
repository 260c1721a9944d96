"""batch_predictions: each day's features scored by the model version behind @champion."""

from typing import Literal

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import SPEC, daily_partitions, ownership, window_of
from assets.features import validated_features
from assets.training import registered_model
from ml.columns import prediction_column_lineage, prediction_table_columns
from ml.registry import champion_version
from ml.scoring import ResolvedModel, check_signature, score_with
from orchestration.lakehouse import LakehouseResource, column_lineage, declared_schema
from orchestration.resources import MLflowResource


class ScoringConfig(Config):
    scorer: Literal["native", "spark_udf"] = Field(
        default="native",
        description=(
            "native: PipelineModel.transform in the JVM, with the positive-class probability. spark_udf: "
            "mlflow.pyfunc.spark_udf, for non-Spark flavors; slower, and the pyfunc of a Spark model returns no "
            "probability, so that column is NULL"
        ),
    )


@asset(
    deps=[validated_features, registered_model],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta", "mlflow"},
    metadata=declared_schema(prediction_table_columns(SPEC)),
    **ownership("serving"),
    description="Predictions of the @champion model; every row names the model name, version and run.",
)
def batch_predictions(
    context: AssetExecutionContext, config: ScoringConfig, mlflow: MLflowResource, lakehouse: LakehouseResource
) -> MaterializeResult:
    window = window_of(context)
    name = lakehouse.model_name
    version = champion_version(mlflow.client, name)  # resolved once per run, then pinned
    model = ResolvedModel(
        name=name, version=str(version.version), run_id=version.run_id, uri=f"models:/{name}/{version.version}"
    )
    features = lakehouse.read("validated_features")
    inputs = check_signature(model.uri, features.frame.schema)  # before anything is written
    predictions = score_with(config.scorer, features.frame.where(window.predicate()), model, SPEC, inputs)
    commit = lakehouse.write_window(
        predictions,
        "batch_predictions",
        window,
        run_id=context.run.run_id,
        model_uri=model.uri,
        scorer=config.scorer,
        **features.lineage,
    )
    context.log.info(
        f"batch_predictions {window.label}: {commit.rows_written} rows by {name} v{model.version} ({config.scorer})"
    )
    model_url = mlflow.model_url(name, model.version)
    return MaterializeResult(
        metadata=lakehouse.metadata(
            commit,
            "batch_predictions",
            predictions.schema,
            window,
            model_name=name,
            model_version=int(model.version),
            model_run_id=model.run_id,
            model_uri=model.uri,
            model_url=MetadataValue.url(model_url) if model_url else "",
            scorer=config.scorer,
            probability_available=SPEC.task == "classification" and config.scorer == "native",
            rows_scored=commit.rows_written or 0,
            **features.lineage,
            **column_lineage(prediction_column_lineage(SPEC, "validated_features")),
        )
    )
