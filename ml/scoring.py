"""Batch scoring with a registered model: every row says which model version made it, and how.

Two scorers, picked by name:
- `native` (default): the MLflow model loaded as a Spark `PipelineModel` and applied with `transform`, on the
  cluster, in the JVM. It yields the prediction and, for classification, the positive-class probability.
- `spark_udf`: `mlflow.pyfunc.spark_udf`, for models of non-Spark flavors. Rows travel to Python workers as
  pandas batches; a Spark-flavor model then starts its own local SparkSession inside each worker. The pyfunc
  of a Spark model returns the `prediction` column only, so the probability is written as NULL, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import mlflow
from mlflow.models.signature import ModelSignature
from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from ml import spark_models
from ml.dataset import EVENT_DATE, DatasetSpec
from ml.delta_io import java_message
from ml.metrics import evaluate

T = TypeVar("T")

SCORERS = ("native", "spark_udf")
NUMERIC_TYPES = {"tinyint", "smallint", "int", "bigint", "float", "double"}


class SignatureMismatchError(ValueError):
    pass


class ModelLoadError(ValueError):
    """A registered model that cannot be loaded (artifacts missing or damaged) or cannot score a sample."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str
    uri: str  # models:/name/version: pinned, not the moving alias


def check_signature(model_uri: str, schema: StructType) -> list[str]:
    """The model's input columns, in order; one clear error naming every column the features cannot supply.

    A column is missing, or has another type than the signature says (any numeric type feeds a numeric
    input: the pipeline's imputer and assembler take them all). Called before anything is scored or written.
    """
    signature = mlflow.models.get_model_info(model_uri).signature
    if signature is None:
        raise SignatureMismatchError(f"model {model_uri} has no signature, so its inputs cannot be checked")
    actual = {f.name: f.dataType.simpleString() for f in schema.fields}
    missing, retyped = [], []
    for spec in signature.inputs.inputs:
        to_spark = getattr(spec.type, "to_spark", None)  # a column spec; tensor specs have no Spark type
        expected = to_spark().simpleString() if to_spark else None
        if spec.name not in actual:
            missing.append(spec.name)
        elif expected and actual[spec.name] != expected and not {actual[spec.name], expected} <= NUMERIC_TYPES:
            retyped.append(f"{spec.name} (model expects {expected}, the table has {actual[spec.name]})")
    problems = ([f"expects columns {missing} that the feature table does not have"] if missing else []) + (
        [f"expects other types for columns: {', '.join(retyped)}"] if retyped else []
    )
    if problems:
        raise SignatureMismatchError(
            f"model {model_uri} does not match the feature table: {'; '.join(problems)}. Nothing was scored or written."
        )
    return signature.inputs.input_names()


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
    return spark_models.load_model(model.uri)


def load_to_serve(load: Callable[[str], T], model_uri: str, kind: str = "") -> T:
    """`load(model_uri)`, or ModelLoadError naming the URI and the cause (`kind`: " as a segment bundle", ...)."""
    try:
        return load(model_uri)
    except Exception as exc:
        cause = java_message(exc).rstrip(".")
        raise ModelLoadError(
            f"model {model_uri} cannot be loaded{kind}: {type(exc).__name__}: {cause}. "
            "Its artifacts are missing or damaged: it cannot serve."
        ) from exc


def smoke_score(model_uri: str, sample: DataFrame, spec: DatasetSpec) -> int:
    """Load `model_uri` as scoring does and score `sample` (current feature rows; the caller limits it, e.g. 100);
    the number of rows scored. Before @champion moves (a rollback), this proves the version can actually serve.

    ModelLoadError names the URI and the cause if the artifacts are missing or damaged, the transform fails, or
    a row gets no finite prediction. The predictions are collected, so every stage really ran (a count alone
    lets Spark prune the model's columns away).
    """
    pipeline = load_to_serve(spark_models.load_model, model_uri)
    columns = [F.col("prediction").cast("double").alias("prediction")]
    if spec.task == "classification":
        columns.append(vector_to_array(F.col("probability"))[1].alias("probability"))
    try:
        rows = pipeline.transform(sample).select(*columns).collect()
    except Exception as exc:
        raise ModelLoadError(
            f"model {model_uri} loads but cannot score the sample: {type(exc).__name__}: {java_message(exc)}"
        ) from exc
    if not rows:
        raise ModelLoadError(f"model {model_uri}: the sample has no rows, so nothing shows that it can score")
    unscored = sum(1 for r in rows if any(v is None or not math.isfinite(v) for v in r))
    if unscored:
        raise ModelLoadError(
            f"model {model_uri} scored the sample, but {unscored} of {len(rows)} rows got no finite prediction"
        )
    return len(rows)


def evaluate_version(name: str, version: str, data: DataFrame, task: str, metric: str) -> float:
    """`metric` of a registered version on `data`, computed by Spark (nothing collected): what the gate compares."""
    return evaluate(spark_models.load_model(f"models:/{name}/{version}").transform(data), task, (metric,))[metric]


def score(
    features: DataFrame, pipeline: PipelineModel, model: ResolvedModel, spec: DatasetSpec, carry: tuple[str, ...] = ()
) -> DataFrame:
    """Native scoring: `PipelineModel.transform`, with the positive-class probability for classification.
    `carry`: columns of `features` kept on each row as they are, after scored_at (incremental scoring's feature
    version, ml/incremental.py)."""
    scored = pipeline.transform(features)
    probability = vector_to_array(F.col("probability"))[1] if spec.task == "classification" else None
    return _prediction_rows(scored, F.col("prediction"), probability, model, spec, carry)


def score_with_pyfunc(features: DataFrame, model: ResolvedModel, spec: DatasetSpec, inputs: list[str]) -> DataFrame:
    """`mlflow.pyfunc.spark_udf` on the pinned version; the signature's `inputs` are passed by name."""
    udf = mlflow.pyfunc.spark_udf(features.sparkSession, model.uri, result_type="double", env_manager="local")
    prediction = udf(F.struct(*[F.col(c) for c in inputs]))
    probability = F.lit(None).cast("double") if spec.task == "classification" else None
    return _prediction_rows(features, prediction, probability, model, spec)


def score_with(
    scorer: str, features: DataFrame, model: ResolvedModel, spec: DatasetSpec, inputs: list[str]
) -> DataFrame:
    if scorer == "native":
        return score(features, load_model(model), model, spec)
    if scorer == "spark_udf":
        return score_with_pyfunc(features, model, spec, inputs)
    raise ValueError(f"scorer {scorer!r} is not one of {list(SCORERS)}")


def _prediction_rows(
    scored: DataFrame,
    prediction: Column,
    probability: Column | None,
    model: ResolvedModel,
    spec: DatasetSpec,
    carry: tuple[str, ...] = (),
) -> DataFrame:
    """The batch_predictions row: keys, event date, prediction [, probability], the model's lineage, scored_at."""
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    columns = [*[F.col(k) for k in keys], F.col(EVENT_DATE), prediction.cast("double").alias("prediction")]
    if probability is not None:
        columns.append(probability.alias("probability"))
    columns += [
        F.lit(model.name).alias("model_name"),
        F.lit(str(model.version)).alias("model_version"),
        F.lit(model.run_id).alias("model_run_id"),
        F.current_timestamp().alias("scored_at"),
        *[F.col(c) for c in carry],
    ]
    return scored.select(*columns)
