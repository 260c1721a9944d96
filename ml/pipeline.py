"""The Spark ML pipeline: categoricals indexed and one-hot encoded, numerics imputed, assembled and scaled."""

from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline
from pyspark.ml.classification import GBTClassifier, LogisticRegression, RandomForestClassifier
from pyspark.ml.feature import Imputer, OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler
from pyspark.ml.regression import GBTRegressor, LinearRegression, RandomForestRegressor

from ml.dataset import LABEL, DatasetSpec

ESTIMATORS = {
    "classification": {
        "logistic_regression": LogisticRegression,
        "random_forest": RandomForestClassifier,
        "gbt": GBTClassifier,
    },
    "regression": {
        "linear_regression": LinearRegression,
        "random_forest": RandomForestRegressor,
        "gbt": GBTRegressor,
    },
}


def estimator_for(task: str, algorithm: str, params: dict[str, Any]):
    try:
        cls = ESTIMATORS[task][algorithm]
    except KeyError:
        known = sorted(ESTIMATORS.get(task, {}))
        raise ValueError(f"algorithm {algorithm!r} is not available for {task}; choose one of {known}") from None
    kwargs = {"featuresCol": "features", "labelCol": LABEL, "predictionCol": "prediction", **params}
    if cls in (RandomForestClassifier, RandomForestRegressor, GBTClassifier, GBTRegressor):
        kwargs.setdefault("seed", 42)
    return cls(**kwargs)


def build_pipeline(spec: DatasetSpec, algorithm: str, params: dict[str, Any]) -> Pipeline:
    cats = list(spec.categorical_features)
    nums = list(spec.numeric_features)
    stages: list[Any] = []
    vector_inputs: list[str] = []
    if nums:
        stages += [
            Imputer(inputCols=nums, outputCols=[f"{c}__imputed" for c in nums], strategy="median"),
            VectorAssembler(inputCols=[f"{c}__imputed" for c in nums], outputCol="numeric_vector"),
            StandardScaler(inputCol="numeric_vector", outputCol="numeric_scaled", withMean=True, withStd=True),
        ]
        vector_inputs.append("numeric_scaled")
    if cats:
        stages += [
            StringIndexer(inputCols=cats, outputCols=[f"{c}__index" for c in cats], handleInvalid="keep"),
            OneHotEncoder(
                inputCols=[f"{c}__index" for c in cats], outputCols=[f"{c}__onehot" for c in cats], handleInvalid="keep"
            ),
        ]
        vector_inputs += [f"{c}__onehot" for c in cats]
    stages.append(VectorAssembler(inputCols=vector_inputs, outputCol="features"))
    stages.append(estimator_for(spec.task, algorithm, params))
    return Pipeline(stages=stages)
