"""batch_predictions: each day's features scored by the model version behind @champion."""

import json
from typing import Literal

from dagster import AssetExecutionContext, BackfillPolicy, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import SPEC, daily_partitions, delta_metadata, is_single_day, partition_label, partition_window
from assets.features import validated_features
from assets.training import registered_model
from ml.delta_io import read_pinned, window_predicate, write_partitions
from ml.registry import champion_version
from ml.scoring import ResolvedModel, check_signature, score_with
from orchestration.resources import LakehouseResource, MLflowResource, SparkResource


class ScoringConfig(Config):
    scorer: Literal["native", "spark_udf"] = Field(default="native", description=(
        "native: PipelineModel.transform in the JVM, with the positive-class probability. spark_udf: "
        "mlflow.pyfunc.spark_udf, for non-Spark flavors; slower, and the pyfunc of a Spark model returns no "
        "probability, so that column is NULL"))


@asset(
    deps=[validated_features, registered_model],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta", "mlflow"},
    description="Predictions of the @champion model; every row names the model name, version and run.",
)
def batch_predictions(context: AssetExecutionContext, config: ScoringConfig, spark: SparkResource,
                      mlflow: MLflowResource, lakehouse: LakehouseResource) -> MaterializeResult:
    session = spark.spark_session
    start, end = partition_window(context)
    partition = partition_label(start, end)
    name = lakehouse.model_name
    version = champion_version(mlflow.client, name)  # resolved once per run, then pinned
    model = ResolvedModel(name=name, version=str(version.version), run_id=version.run_id,
                          uri=f"models:/{name}/{version.version}")
    features, features_version = read_pinned(session, lakehouse.table_path("validated_features"))
    inputs = check_signature(model.uri, features.schema)  # before anything is written
    predictions = score_with(config.scorer, features.where(window_predicate(start, end)), model, SPEC, inputs)
    lineage = {"dagster_run_id": context.run.run_id, "model_uri": model.uri, "scorer": config.scorer}
    commit = write_partitions(predictions, lakehouse.table_path("batch_predictions"), start, end,
                              user_metadata=json.dumps(lineage))
    context.log.info(f"batch_predictions {partition}: {commit.rows_written} rows by {name} v{model.version} "
                     f"({config.scorer})")
    model_url = mlflow.model_url(name, model.version)
    return MaterializeResult(
        metadata=delta_metadata(
            commit, lakehouse.table_name("batch_predictions"), predictions.schema, whole_output=is_single_day(start, end),
            partition=partition,
            model_name=name,
            model_version=int(model.version),
            model_run_id=model.run_id,
            model_uri=model.uri,
            model_url=MetadataValue.url(model_url) if model_url else "",
            scorer=config.scorer,
            probability_available=SPEC.task == "classification" and config.scorer == "native",
            rows_scored=commit.rows_written or 0,
            validated_features_delta_version=features_version,
        )
    )
