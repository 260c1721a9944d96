"""Batch scoring with a registered Spark ML pipeline: every row says which model made it."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow.models.signature import ModelSignature
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, DatasetSpec
from ml.metrics import evaluate


class SignatureMismatchError(ValueError):
    pass


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str
    uri: str  # models:/name/version: pinned, not the moving alias


def check_signature(model_uri: str, available_columns: list[str]) -> list[str]:
    """The model's input columns; a clear error naming the columns the feature table lacks."""
    signature = mlflow.models.get_model_info(model_uri).signature
    if signature is None:
        raise SignatureMismatchError(f"model {model_uri} has no signature, so its inputs cannot be checked")
    inputs = signature.inputs.input_names()
    missing = [c for c in inputs if c not in available_columns]
    if missing:
        raise SignatureMismatchError(
            f"model {model_uri} expects columns {missing} that the feature table does not have "
            f"(it has {sorted(available_columns)})"
        )
    return inputs


def signature_problems(signature: ModelSignature | None, expected: ModelSignature) -> list[str]:
    """What stops scoring from feeding a model: no signature, inputs scoring does not give, or other types.

    `expected` is what scoring gives (ml.training.model_signature of the dataset spec). A model that uses
    fewer of those columns can still be scored, so only its own inputs are checked.
    """
    if signature is None:
        return ["it has no signature"]
    given = {c["name"]: c["type"] for c in expected.inputs.to_dict()}
    inputs = {c.get("name"): c.get("type") for c in signature.inputs.to_dict()}
    problems = []
    unknown = [c for c in inputs if c not in given]
    if unknown:
        problems.append(f"it expects columns {unknown} that scoring does not give (it gives {sorted(given)})")
    retyped = [f"{c} is {t}, scoring gives {given[c]}" for c, t in inputs.items() if c in given and t != given[c]]
    if retyped:
        problems.append("other types: " + ", ".join(retyped))
    return problems


def load_model(model: ResolvedModel) -> PipelineModel:
    return mlflow.spark.load_model(model.uri)


def evaluate_version(name: str, version: str, data: DataFrame, task: str, metric: str) -> float:
    """`metric` of a registered version on `data`, computed by Spark (nothing collected): what the gate compares."""
    return evaluate(mlflow.spark.load_model(f"models:/{name}/{version}").transform(data), task, (metric,))[metric]


def score(features: DataFrame, pipeline: PipelineModel, model: ResolvedModel, spec: DatasetSpec) -> DataFrame:
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    scored = pipeline.transform(features)
    columns = [*[F.col(k) for k in keys], F.col(EVENT_DATE), F.col("prediction").cast("double").alias("prediction")]
    if spec.task == "classification":
        columns.append(vector_to_array(F.col("probability"))[1].alias("probability"))
    columns += [
        F.lit(model.name).alias("model_name"),
        F.lit(str(model.version)).alias("model_version"),
        F.lit(model.run_id).alias("model_run_id"),
        F.current_timestamp().alias("scored_at"),
    ]
    return scored.select(*columns)
