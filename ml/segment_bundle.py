"""The segment models as MLflow sees them: one parent run, a child run per segment, and the bundle of chosen models
as one pyfunc (`SegmentBundle`), with a signature. The work itself is in ml/segments.py."""

from __future__ import annotations

import json
import math
import pickle
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ml.dataset import DatasetSpec
from ml.delta_io import java_message
from ml.scoring import ModelLoadError, load_to_serve
from ml.segments import (
    FAILED,
    GLOBAL,
    OWN,
    SPLITS,
    TOO_SMALL,
    TRAINED,
    Bundle,
    Scorer,
    SegmentConfig,
    predict,
    score_segments,
)

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel


class SegmentBundle(mlflow.pyfunc.PythonModel):
    """The pyfunc of a bundle: a row of a segment with a model of its own gets that model's prediction (and
    probability); any other row gets NaN with `scored_by` = global: the global champion scores it (score_segments)."""

    def load_context(self, context) -> None:
        self.bundle = Bundle.load(context.artifacts)

    def predict(self, context, model_input, params=None):
        manifest = self.bundle.manifest
        job = {k: manifest[k] for k in ("task", "numeric", "categorical")}
        segments = model_input[manifest["segment_column"]].astype(str)
        out = pd.DataFrame(
            {"prediction": np.nan, "probability": np.nan, "scored_by": GLOBAL}, index=model_input.index
        ).astype({"prediction": float, "probability": float})
        for segment in sorted(set(segments) & set(self.bundle.model_bytes)):
            rows = segments == segment
            prediction, probability = predict(pickle.loads(self.bundle.model_bytes[segment]), model_input[rows], job)
            out.loc[rows, "prediction"] = prediction
            if probability is not None:
                out.loc[rows, "probability"] = probability
            out.loc[rows, "scored_by"] = OWN
        return out


def bundle_signature(spec: DatasetSpec):
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [ColSpec("double", c) for c in spec.numeric_features] + [
        ColSpec("string", c) for c in spec.categorical_features
    ]
    if spec.segment_column not in spec.features:
        inputs.append(ColSpec("string", spec.segment_column))
    outputs = [ColSpec("double", "prediction"), ColSpec("double", "probability"), ColSpec("string", "scored_by")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def bundle_requirements() -> list[str]:
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}", f"mlflow=={mlflow.__version__}"]


# ---- MLflow: a parent run, a child run per segment, the bundle --------------------------------------------------


@dataclass
class SegmentOutcome:
    run_id: str
    experiment_id: str
    model_uri: str
    metric: str
    results: list[dict[str, Any]]  # one per segment, without the model bytes, with child_run_id
    bundle: Bundle = field(repr=False)


def log_segments(
    spec: DatasetSpec,
    results: list[Mapping[str, Any]],
    config: SegmentConfig,
    experiment_id: str,
    tags: Mapping[str, str],
    run_name: str,
    global_model: Mapping[str, str] | None = None,
) -> SegmentOutcome:
    """One parent run (the config, counts by status and choice, the bundle), one child run per segment (params,
    validation and test metrics, row counts, the global model's test metric, tag `segment`)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    job = config.job(spec, has_global=global_model is not None)
    client = MlflowClient()
    bundle = Bundle.from_results(spec, results, job, global_model=dict(global_model or {}))
    rows = [{k: v for k, v in r.items() if k != "model"} for r in sorted(results, key=lambda r: r["segment"])]
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=dict(tags)) as parent:
        mlflow.log_params(
            {
                "segment_column": spec.segment_column,
                "n_trials": config.n_trials,
                "seed": config.seed,
                "min_rows": job["min_rows"],
                "margin": config.margin,
                "algorithms": ",".join(job["algorithms"]),
                "metric": job["metric"],
                "global_model": f"{global_model['name']} v{global_model['version']}" if global_model else "",
            }
        )
        counts = {
            "segments": len(rows),
            "segments_own_model": sum(r["choice"] == OWN for r in rows),
            **{f"segments_{s}": sum(r["status"] == s for r in rows) for s in (TRAINED, TOO_SMALL, FAILED)},
        }
        mlflow.log_metrics(counts)
        now = int(time.time() * 1000)
        for r in rows:
            child = client.create_run(
                experiment_id,
                tags={
                    MLFLOW_PARENT_RUN_ID: parent.info.run_id,
                    MLFLOW_RUN_NAME: f"segment={r['segment']}",
                    "segment": r["segment"],
                    "segment.status": r["status"],
                    "segment.choice": r["choice"],
                    "segment.reason": r["reason"][:5000],
                    **{k: v for k, v in tags.items() if k.startswith(("dagster.", "input.", "dataset."))},
                },
            )
            params = {"algorithm": r["algorithm"] or "", **json.loads(r["params"])}
            metrics = {f"{s}_rows": r[f"{s}_rows"] for s in SPLITS}
            metrics.update({f"validation_{k}": v for k, v in json.loads(r["validation_metrics"]).items()})
            metrics.update({f"test_{k}": v for k, v in json.loads(r["test_metrics"]).items()})
            if r["global_test_metric"] is not None:
                metrics[f"global_test_{job['metric']}"] = r["global_test_metric"]
            metrics["train_seconds"] = r["seconds"]
            client.log_batch(
                child.info.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
                params=[Param(k, str(v)) for k, v in params.items()],
                tags=[RunTag("segment.metric", job["metric"])],
            )
            client.set_terminated(child.info.run_id, "FAILED" if r["status"] == FAILED else "FINISHED")
            r["child_run_id"] = child.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            info = mlflow.pyfunc.log_model(
                name="segment_bundle",
                python_model=SegmentBundle(),
                artifacts=bundle.save(Path(tmp)),
                signature=bundle_signature(spec),
                pip_requirements=bundle_requirements(),
            )
    return SegmentOutcome(parent.info.run_id, experiment_id, info.model_uri, job["metric"], rows, bundle)


def load_bundle(model_uri: str) -> Bundle:
    """The manifest and models of a logged or registered bundle (`models:/name/version`)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle


@dataclass(frozen=True)
class BundleCheck:
    """What smoke_score_bundle scored: rows in all, and of them those scored by a segment's own model (and which)."""

    rows: int
    rows_by_segment_models: int
    segments: tuple[str, ...]


def smoke_score_bundle(
    model_uri: str,
    features: DataFrame,
    spec: DatasetSpec,
    global_pipeline: PipelineModel,
    global_model: Scorer,
    rows: int = 100,
) -> BundleCheck:
    """Load the bundle `model_uri` (`models:/<name>/<version>`) as segment_predictions does and score a sample of
    `features` with it: the first `rows` rows (by key) of each segment that has a model of its own (so every one of its
    models is unpickled and predicts, on the executors), and the first `rows` rows of the table, of any segment. Before
    @champion of a bundle moves (a rollback), this proves the version can actually serve.

    ModelLoadError names the URI and the cause if the bundle cannot be loaded, the scoring fails, the sample is empty,
    or a row gets no finite prediction (or probability). At most `rows` x (own segments + 1) rows come back."""
    bundle = load_to_serve(load_bundle, model_uri, " as a segment bundle")
    segment = F.col(spec.segment_column).cast("string")
    keys = [F.col(k) for k in spec.key_columns]
    sample = features.orderBy(*keys).limit(rows)  # the same rows in each of score_segments' two branches
    if bundle.own_segments:
        first = Window.partitionBy(segment).orderBy(*keys)
        own = features.where(segment.isin(bundle.own_segments)).withColumn("_n", F.row_number().over(first))
        sample = own.where(F.col("_n") <= rows).drop("_n").unionByName(sample)
    name, _, version = model_uri.removeprefix("models:/").rpartition("/")
    classification = spec.task == "classification"
    try:
        scored = score_segments(sample, spec, bundle, Scorer(name, version, ""), global_pipeline, global_model)
        got = scored.select(
            "segment", "scored_by", "prediction", *(["probability"] if classification else [])
        ).collect()  # bounded: `rows` per own segment, and `rows`
    except Exception as exc:
        raise ModelLoadError(
            f"model {model_uri} loads but cannot score the sample: {type(exc).__name__}: {worker_message(exc)}"
        ) from exc
    if not got:
        raise ModelLoadError(f"model {model_uri}: the sample has no rows, so nothing shows that it can score")
    unscored = [r for r in got if any(v is None or not math.isfinite(v) for v in (r.prediction, *r[3:]))]
    if unscored:
        by = sorted({f"{r.segment} ({r.scored_by})" for r in unscored})
        raise ModelLoadError(
            f"model {model_uri} scored the sample, but {len(unscored)} of {len(got)} rows got no finite prediction: "
            f"segments {by[:10]}"
        )
    mine = [r for r in got if r.scored_by == OWN]
    return BundleCheck(len(got), len(mine), tuple(sorted({r.segment for r in mine})))


def worker_message(exc: Exception) -> str:
    """The error a Python worker raised (the last line of its traceback, e.g. `_pickle.UnpicklingError: invalid load
    key`), which Spark's PythonException puts after a first line that says only that a worker failed; else the JVM's
    first line."""
    lines = str(exc).splitlines()
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if tracebacks:
        for line in lines[tracebacks[-1] + 1 :]:
            if line.strip() and not line[0].isspace():
                return line.strip()
    return java_message(exc)
