"""Many models: one single-node scikit-learn model per segment, trained and scored inside Spark's grouped map.

The dataset spec names the segment column (`DatasetSpec.segment_column`, flights: `carrier`) and the least number of
training rows a segment needs (`min_segment_rows`). Training (`train_segments`) puts the three splits in one frame,
with the global champion's predictions on the test rows (computed by Spark, natively), and runs
`groupBy(segment).applyInPandas(...)`: each segment's rows reach one Python worker as one pandas frame, where a small
seeded Optuna study tunes a scikit-learn pipeline on train, judged on validation. The worker evaluates the best model
on the segment's test rows, and the global champion on the same rows, and chooses: the segment's own model only where
it beats the global one there. What comes back to the driver is one small row per segment (status, reason, params,
row counts, metrics, the pickled model): nothing of a segment's data.

The encoding is the global pipeline's (`ml/pipeline.py`), in scikit-learn: numerics imputed with their median and
standardized, categoricals one-hot encoded; a category unseen in training (and NULL, when training had none) falls
in no column, the zero vector, as Spark's `handleInvalid="keep"` puts them in an extra bucket.

A segment below the minimum, or whose training raises, is recorded with its reason and uses the global champion.

Scoring (`score_segments`): rows of segments with a model of their own go through
`groupBy(segment, event_date).applyInPandas` (a group is one segment's day, whatever the range scored: bounded, and
the same scores bit for bit when a day is rescored alone), each segment's model unpickled from a broadcast once per
task; every other row (a segment that chose the global model, that was too small or failed, or that training never
saw) is scored by the global champion's Spark
`PipelineModel`, as `ml/scoring.py` does. Every row names the bundle (name, version, run) and which model scored it.

The bundle (`ml.segment_bundle.SegmentBundle`) is an MLflow pyfunc: the manifest (each segment's choice and why) and the chosen
models' pickles. The Python workers import this module: run with the repository on `PYTHONPATH` (the Makefile does).
"""

from __future__ import annotations

import json
import math
import pickle
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL, DatasetSpec
from ml.metrics import HIGHER_IS_BETTER, TASK_METRICS, is_better

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel

# The Python workers import this module to run the UDFs: it imports no MLflow (ml/segment_bundle.py does), which
# would cost every worker seconds of imports.

SPLIT = "_split"  # which split a row of the training frame comes from
GLOBAL_PREDICTION = "_global_prediction"  # the global champion's prediction, on the test rows
GLOBAL_PROBABILITY = "_global_probability"  # its positive-class probability (classification)
SPLITS = ("train", "validation", "test")

# Statuses of a segment, and what scores it
TRAINED, TOO_SMALL, FAILED = "trained", "too_small", "failed"
OWN, GLOBAL = "segment", "global"

RESULT_SCHEMA = (
    "segment STRING, status STRING, reason STRING, algorithm STRING, params STRING, train_rows BIGINT, "
    "validation_rows BIGINT, test_rows BIGINT, metric STRING, validation_metrics STRING, test_metrics STRING, "
    "test_metric DOUBLE, global_test_metric DOUBLE, choice STRING, model BINARY, seconds DOUBLE"
)
RESULT_COLUMNS = [part.strip().split(" ")[0] for part in RESULT_SCHEMA.split(",")]

ALGORITHMS = {
    "classification": ("logistic_regression", "random_forest"),
    "regression": ("ridge", "random_forest"),
}


@dataclass(frozen=True)
class SegmentConfig:
    n_trials: int = 4  # Optuna trials per segment
    seed: int = 42  # every study's TPE seed and every model's random_state
    min_rows: int | None = None  # None: the spec's min_segment_rows
    metric: str | None = None  # None: the spec's primary metric
    margin: float = 0.0  # a segment's own model must beat the global one on its test rows by more than this
    algorithms: tuple[str, ...] = ()  # empty: every algorithm of the task (ALGORITHMS)

    def job(self, spec: DatasetSpec, has_global: bool) -> dict[str, Any]:
        """What each worker needs, as plain data (pickled into the UDF's closure)."""
        if spec.segment_column is None:
            raise ValueError(f"dataset {spec.name} names no segment_column: there are no segments to train")
        metric = self.metric or spec.metric
        if metric not in TASK_METRICS[spec.task]:
            raise ValueError(
                f"metric {metric!r} does not fit a {spec.task} task; choose one of {TASK_METRICS[spec.task]}"
            )
        algorithms = self.algorithms or ALGORITHMS[spec.task]
        unknown = sorted(set(algorithms) - set(ALGORITHMS[spec.task]))
        if unknown:
            raise ValueError(f"segment algorithms {unknown} are not available for {spec.task}: {ALGORITHMS[spec.task]}")
        if self.n_trials < 1:
            raise ValueError(f"segment n_trials is {self.n_trials}: at least one trial is needed")
        return {
            "task": spec.task,
            "metric": metric,
            "numeric": list(spec.numeric_features),
            "categorical": list(spec.categorical_features),
            "n_trials": self.n_trials,
            "seed": self.seed,
            "min_rows": self.min_rows if self.min_rows is not None else spec.min_segment_rows,
            "margin": self.margin,
            "algorithms": list(algorithms),
            "has_global": has_global,
        }


# ---- the per-segment work (runs in a Python worker, on one segment's pandas frame) -----------------------------


def build_model(job: Mapping[str, Any], algorithm: str, params: Mapping[str, Any]):
    """The global pipeline's encoding in scikit-learn, then the estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = []
    if job["numeric"]:
        numeric = Pipeline(
            [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
        )
        parts.append(("numeric", numeric, list(job["numeric"])))
    if job["categorical"]:
        onehot = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="__null__", missing_values=None)),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        parts.append(("categorical", onehot, list(job["categorical"])))
    seed = job["seed"]
    estimators = {
        ("classification", "logistic_regression"): lambda: LogisticRegression(max_iter=300, **params),
        ("classification", "random_forest"): lambda: RandomForestClassifier(random_state=seed, n_jobs=1, **params),
        ("regression", "ridge"): lambda: Ridge(**params),
        ("regression", "random_forest"): lambda: RandomForestRegressor(random_state=seed, n_jobs=1, **params),
    }
    return Pipeline([("encode", ColumnTransformer(parts)), ("model", estimators[(job["task"], algorithm)]())])


def suggest(trial, algorithms: list[str]) -> tuple[str, dict[str, Any]]:
    algorithm = trial.suggest_categorical("algorithm", algorithms)
    if algorithm == "logistic_regression":
        return algorithm, {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}
    if algorithm == "ridge":
        return algorithm, {"alpha": trial.suggest_float("alpha", 1e-3, 1e2, log=True)}
    return algorithm, {
        "n_estimators": trial.suggest_int("n_estimators", 10, 60),
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20),
    }


def predict(model, frame: pd.DataFrame, job: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """(prediction, positive-class probability or None) of a fitted segment model."""
    X = features_of(frame, job)
    if job["task"] == "classification":
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        if 1.0 not in classes:
            known = [float(k) for k in classes]
            raise ValueError(f"the model knows only the classes {known}: its training rows have no positive label")
        p = proba[:, classes.index(1.0)]
        return (p >= 0.5).astype(float), p
    return model.predict(X).astype(float), None


def features_of(frame: pd.DataFrame, job: Mapping[str, Any]) -> pd.DataFrame:
    X = frame[list(job["numeric"]) + list(job["categorical"])].copy()
    for c in job["numeric"]:
        X[c] = pd.to_numeric(X[c], errors="coerce").astype(float)
    for c in job["categorical"]:
        X[c] = X[c].astype(object).where(X[c].notna(), None)
    return X


def metrics_of(task: str, y: np.ndarray, prediction: np.ndarray, probability: np.ndarray | None) -> dict[str, float]:
    """Every metric of the task, as ml.metrics names them (scikit-learn's definitions)."""
    from sklearn import metrics as m

    if task == "classification":
        p = np.clip(probability, 1e-15, 1 - 1e-15)
        return {
            "auc": float(m.roc_auc_score(y, probability)),
            "pr_auc": float(m.average_precision_score(y, probability)),
            "f1": float(m.f1_score(y, prediction, average="weighted")),
            "log_loss": float(m.log_loss(y, p, labels=[0.0, 1.0])),
        }
    return {
        "rmse": float(math.sqrt(m.mean_squared_error(y, prediction))),
        "mae": float(m.mean_absolute_error(y, prediction)),
        "r2": float(m.r2_score(y, prediction)),
    }


def global_metric(test: pd.DataFrame, job: Mapping[str, Any]) -> float | None:
    """The global champion's metric on the segment's test rows (None if it is undefined there, e.g. one class)."""
    if not job["has_global"] or test.empty:
        return None
    y = test[LABEL].to_numpy(dtype=float)
    prediction = test[GLOBAL_PREDICTION].to_numpy(dtype=float)
    probability = test[GLOBAL_PROBABILITY].to_numpy(dtype=float) if job["task"] == "classification" else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = metrics_of(job["task"], y, prediction, probability)[job["metric"]]
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def train_one(segment: str, frame: pd.DataFrame, job: Mapping[str, Any]) -> dict[str, Any]:
    """One segment's whole work: its study, its best model's metrics, and the choice against the global champion."""
    import optuna

    started = time.perf_counter()
    parts = {s: frame[frame[SPLIT] == s] for s in SPLITS}
    metric = job["metric"]
    row: dict[str, Any] = {
        "segment": segment,
        "algorithm": None,
        "params": "{}",
        **{f"{s}_rows": len(parts[s]) for s in SPLITS},
        "metric": metric,
        "validation_metrics": "{}",
        "test_metrics": "{}",
        "test_metric": None,
        "global_test_metric": global_metric(parts["test"], job),
        "choice": GLOBAL,
        "model": None,
    }

    def done(status: str, reason: str) -> dict[str, Any]:
        return {**row, "status": status, "reason": reason, "seconds": time.perf_counter() - started}

    if len(parts["train"]) < job["min_rows"]:
        return done(TOO_SMALL, f"{len(parts['train'])} training rows, fewer than the minimum {job['min_rows']}")
    for split in ("validation", "test"):
        if parts[split].empty:
            return done(TOO_SMALL, f"no {split} rows")
    try:
        train, validation, test = parts["train"], parts["validation"], parts["test"]
        y_train = train[LABEL].to_numpy(dtype=float)
        higher = HIGHER_IS_BETTER[metric]

        def fit(algorithm: str, params: dict[str, Any]):
            model = build_model(job, algorithm, params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(features_of(train, job), y_train)
            return model

        def score(model, part: pd.DataFrame) -> dict[str, float]:
            prediction, probability = predict(model, part, job)
            return metrics_of(job["task"], part[LABEL].to_numpy(dtype=float), prediction, probability)

        def objective(trial) -> float:
            algorithm, params = suggest(trial, list(job["algorithms"]))
            return score(fit(algorithm, params), validation)[metric]

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is recorded
        study = optuna.create_study(
            direction="maximize" if higher else "minimize",
            sampler=optuna.samplers.TPESampler(seed=job["seed"], n_startup_trials=min(job["n_trials"], 5)),
        )
        study.optimize(objective, n_trials=job["n_trials"], catch=())
        best = dict(study.best_trial.params)
        algorithm = best.pop("algorithm")
        model = fit(algorithm, best)
        validation_metrics, test_metrics = score(model, validation), score(model, test)
    except Exception as exc:  # recorded: this segment falls back to the global champion, the others go on
        return done(FAILED, f"{type(exc).__name__}: {exc}"[:1000])
    own, theirs = test_metrics[metric], row["global_test_metric"]
    row.update(
        algorithm=algorithm,
        params=json.dumps(best, sort_keys=True),
        validation_metrics=json.dumps(validation_metrics, sort_keys=True),
        test_metrics=json.dumps(test_metrics, sort_keys=True),
        test_metric=own,
        model=pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL),
    )
    n = len(test)
    if not math.isfinite(own):
        return done(TRAINED, f"its test {metric} is {own}: the global model scores it")
    if not job["has_global"]:
        row["choice"] = OWN
        return done(TRAINED, f"test {metric} {own:.4f} on {n} rows; no global model to compare with")
    if theirs is None:
        return done(TRAINED, f"the global model's {metric} is undefined on the {n} test rows: it scores them")
    wins = is_better(own, theirs, metric, job["margin"])
    row["choice"] = OWN if wins else GLOBAL
    verb = "beats" if wins else "does not beat"
    return done(
        TRAINED, f"test {metric} {own:.4f} {verb} the global model's {theirs:.4f} on {n} rows (margin {job['margin']})"
    )


# ---- training on the cluster ------------------------------------------------------------------------------------


def training_frame(
    spec: DatasetSpec, train: DataFrame, validation: DataFrame, test: DataFrame, global_model: PipelineModel | None
) -> DataFrame:
    """The three splits' labelled rows in one frame (segment, features, label, split), with the global champion's
    prediction (and probability) on the test rows: Spark computes them, natively, before the grouped map."""
    segment = spec.segment_column
    columns = list(dict.fromkeys([segment, *spec.features, LABEL]))

    def part(frame: DataFrame, split: str) -> DataFrame:
        return frame.where(F.col(LABEL).isNotNull() & F.col(segment).isNotNull()).select(
            *columns, F.lit(split).alias(SPLIT)
        )

    nothing = F.lit(None).cast("double")
    frames = [part(train, "train"), part(validation, "validation")]
    frames = [f.withColumns({GLOBAL_PREDICTION: nothing, GLOBAL_PROBABILITY: nothing}) for f in frames]
    test_rows = part(test, "test")
    if global_model is None:
        frames.append(test_rows.withColumns({GLOBAL_PREDICTION: nothing, GLOBAL_PROBABILITY: nothing}))
    else:
        from pyspark.ml.functions import vector_to_array

        scored = global_model.transform(test_rows)
        probability = vector_to_array("probability")[1] if spec.task == "classification" else nothing
        frames.append(
            scored.select(
                *columns,
                SPLIT,
                F.col("prediction").cast("double").alias(GLOBAL_PREDICTION),
                probability.alias(GLOBAL_PROBABILITY),
            )
        )
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out.withColumn(segment, F.col(segment).cast("string"))


def train_segments(
    spec: DatasetSpec,
    train: DataFrame,
    validation: DataFrame,
    test: DataFrame,
    global_model: PipelineModel | None,
    config: SegmentConfig = SegmentConfig(),
    partitions: int | None = None,
) -> DataFrame:
    """One row per segment (RESULT_SCHEMA), computed on the executors by a grouped map: lazy, collect it (small)."""
    job = config.job(spec, has_global=global_model is not None)
    frame = training_frame(spec, train, validation, test, global_model)
    return train_grouped(frame, spec.segment_column, job, partitions)


MAX_PARTITIONS = 400


def train_grouped(frame: DataFrame, segment: str, job: Mapping[str, Any], partitions: int | None = None) -> DataFrame:
    """`groupBy(segment).applyInPandas(train_one)` over a training frame (training_frame). The frame is first
    repartitioned by segment into one partition per segment (by default; at least the default parallelism): Spark
    then hands segments to free cores one task at a time, and adaptive execution cannot coalesce them into one task
    (it leaves an explicit repartition's number as it is)."""
    if partitions is None:
        segments = frame.select(segment).distinct().count()  # one number back
        partitions = max(frame.sparkSession.sparkContext.defaultParallelism, min(segments, MAX_PARTITIONS))

    def train_group(key: tuple, rows: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame([train_one(str(key[0]), rows, job)], columns=RESULT_COLUMNS)

    return frame.repartition(partitions, segment).groupBy(segment).applyInPandas(train_group, RESULT_SCHEMA)


# ---- the bundle: every chosen segment model, as one MLflow pyfunc --------------------------------------------


@dataclass
class Bundle:
    """The manifest (segment column, task, each segment's choice and why) and the chosen models' pickles."""

    manifest: dict[str, Any]
    model_bytes: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def own_segments(self) -> list[str]:
        return sorted(self.model_bytes)

    @classmethod
    def from_results(cls, spec: DatasetSpec, results: list[Mapping[str, Any]], job: Mapping[str, Any], **extra: Any):
        segments = {r["segment"]: {k: r[k] for k in RESULT_COLUMNS if k not in ("model", "segment")} for r in results}
        models = {r["segment"]: bytes(r["model"]) for r in results if r["choice"] == OWN and r["model"] is not None}
        manifest = {
            "segment_column": spec.segment_column,
            "task": spec.task,
            "metric": job["metric"],
            "numeric": list(job["numeric"]),
            "categorical": list(job["categorical"]),
            "segments": segments,
            **extra,
        }
        return cls(manifest, models)

    def save(self, folder: Path) -> dict[str, str]:
        """Write the manifest and one pickle per chosen segment; the artifacts to log (name -> path)."""
        models = folder / "models"
        models.mkdir(parents=True, exist_ok=True)
        files = {}
        for i, (segment, blob) in enumerate(sorted(self.model_bytes.items())):
            files[segment] = f"{i:04d}.pkl"
            (models / files[segment]).write_bytes(blob)
        (folder / "manifest.json").write_text(json.dumps({**self.manifest, "files": files}, indent=1, default=str))
        return {"manifest": str(folder / "manifest.json"), "models": str(models)}

    @classmethod
    def load(cls, artifacts: Mapping[str, str]) -> Bundle:
        manifest = json.loads(Path(artifacts["manifest"]).read_text())
        files = manifest.pop("files", {})
        return cls(manifest, {s: (Path(artifacts["models"]) / f).read_bytes() for s, f in files.items()})


# ---- scoring ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scorer:
    """A registered model as a row names it (ml.scoring.ResolvedModel's fields)."""

    name: str
    version: str
    run_id: str


def score_segments(
    features: DataFrame,
    spec: DatasetSpec,
    bundle: Bundle,
    bundle_model: Scorer,
    global_pipeline: PipelineModel,
    global_model: Scorer,
) -> DataFrame:
    """Every feature row scored: by its segment's own model (grouped map, one model load per group) or by the global
    champion (Spark, natively). Columns: keys, event_date, segment, prediction [, probability], the bundle's
    model_name / model_version / model_run_id, scored_by (segment | global), scored_by_model, scored_by_version,
    scored_at."""
    from pyspark.ml.functions import vector_to_array

    segment = spec.segment_column
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    job = {k: bundle.manifest[k] for k in ("task", "numeric", "categorical")}
    classification = spec.task == "classification"
    own = bundle.own_segments
    seg = F.col(segment).cast("string")
    mine = seg.isin(own) if own else F.lit(False)
    frame = features.withColumn("segment", seg)

    base = [*keys, EVENT_DATE, "segment"]
    types = dict(frame.select(*base).dtypes)
    schema = (
        ", ".join(f"`{c}` {types[c]}" for c in base)
        + ", prediction DOUBLE"
        + (", probability DOUBLE" if classification else "")
    )
    models = features.sparkSession.sparkContext.broadcast(dict(bundle.model_bytes))
    inputs = list(dict.fromkeys([*base, *spec.features]))
    loaded: dict[str, Any] = {}

    def score_group(key: tuple, rows: pd.DataFrame) -> pd.DataFrame:
        segment_key = str(key[0])
        if segment_key not in loaded:  # once per segment in a task
            loaded[segment_key] = pickle.loads(models.value[segment_key])
        model = loaded[segment_key]
        # One group is one segment's rows of one day, in key order: a day's scores are bit-for-bit the same whichever
        # range run scores it (scikit-learn's floating point depends on the batch a row is predicted in)
        rows = rows.sort_values([*keys, EVENT_DATE], kind="stable", ignore_index=True)
        prediction, probability = predict(model, rows, job)
        out = rows[base].copy()
        out["prediction"] = prediction
        if classification:
            out["probability"] = probability
        return out

    by_segment = frame.where(mine).select(*inputs).groupBy("segment", EVENT_DATE).applyInPandas(score_group, schema)
    by_segment = by_segment.withColumns(
        {
            "scored_by": F.lit(OWN),
            "scored_by_model": F.concat(F.lit(f"{bundle_model.name}/"), F.col("segment")),
            "scored_by_version": F.lit(str(bundle_model.version)),
        }
    )
    rest = global_pipeline.transform(frame.where(~mine | F.col("segment").isNull()))
    columns = [*base, F.col("prediction").cast("double").alias("prediction")]
    if classification:
        columns.append(vector_to_array("probability")[1].alias("probability"))
    by_global = rest.select(
        *columns,
        F.lit(GLOBAL).alias("scored_by"),
        F.lit(global_model.name).alias("scored_by_model"),
        F.lit(str(global_model.version)).alias("scored_by_version"),
    )
    out = by_segment.unionByName(by_global)
    return out.select(
        *keys,
        EVENT_DATE,
        "segment",
        "prediction",
        *(["probability"] if classification else []),
        F.lit(bundle_model.name).alias("model_name"),
        F.lit(str(bundle_model.version)).alias("model_version"),
        F.lit(bundle_model.run_id).alias("model_run_id"),
        "scored_by",
        "scored_by_model",
        "scored_by_version",
        F.current_timestamp().alias("scored_at"),
    )


def bundle_metric(scored: DataFrame, test: DataFrame, spec: DatasetSpec, metric: str) -> float:
    """`metric` of scored rows (score_segments) against the labels of `test`, computed by Spark (one row back)."""
    from ml.performance import performance, with_labels

    joined = with_labels(scored, test, spec).where(F.col(LABEL).isNotNull())
    row = performance(joined, spec, by=("model_name",)).select(metric).first()
    return float("nan") if row is None or row[0] is None else float(row[0])


def segment_table(results: list[Mapping[str, Any]], metric: str, url_of) -> str:
    """The segments as a Markdown table: rows, the segment model's and the global model's test metric, the choice
    and why, and the child run."""
    lines = [
        f"| segment | status | train/val/test rows | test {metric} | global {metric} | choice | why | MLflow run |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v):
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"

    for r in sorted(results, key=lambda r: r["segment"]):
        run_id = r.get("child_run_id") or ""
        url = url_of(run_id) if run_id else None
        link = f"[{run_id[:8]}]({url})" if url else run_id[:8]
        rows = f"{r['train_rows']}/{r['validation_rows']}/{r['test_rows']}"
        reason = str(r["reason"]).replace("|", "/")[:160]
        lines.append(
            f"| {r['segment']} | {r['status']} | {rows} | {fmt(r['test_metric'])} | {fmt(r['global_test_metric'])} "
            f"| {r['choice']} | {reason} | {link} |"
        )
    return "\n".join(lines)
