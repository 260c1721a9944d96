"""Batch scoring: throughput of the two scorers against a plain Delta copy, table maintenance, and backfills.

One process, one SparkSession (local[2]), the same rows for every variant:

1. Throughput on the full year of flights features upsampled `--copies` times (~1M rows with 3), each
   variant Delta read -> [score] -> Delta write of all days in one job, as batch_predictions writes them:
   - copy: the features read and written as they are (the I/O limit),
   - native: `PipelineModel.transform` (ml.scoring.score),
   - spark_udf: `mlflow.pyfunc.spark_udf` (ml.scoring.score_with_pyfunc).
   Targets: native >= 0.5x copy, native >= 3x spark_udf.
2. Maintenance of the predictions table: file counts, time, and two typical reads (a month of one model
   version; one flight's predictions for a month) as written, after OPTIMIZE (compaction) and after
   OPTIMIZE ZORDER BY, each on its own copy of the table.
3. A month's backfill through Dagster: one single-run backfill (the range in one run) against one run per
   day, on a fresh test world (ingest and training are not timed).

    make bench-scoring       # or: .venv/bin/python -m bench.scoring --copies 3 --reps 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import mlflow
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from bench.world import build_world, session
from ml import delta_io
from ml.dataset import EVENT_DATE, LABEL, SourceContext
from ml.datasets.flights import SPEC
from ml.features import build_features, with_event_date
from ml.pipeline import build_pipeline
from ml.registry import lineage_tags, register_version
from ml.scoring import ResolvedModel, load_model, score, score_with_pyfunc
from ml.spark import get_or_create_session
from ml.training import model_signature, pip_requirements

YEAR = (date(2013, 1, 1), date(2014, 1, 1))
MODEL_NAME = "bench.flights.arrival_delay"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def upsampled_features(spark, tmp: str, copies: int) -> str:
    """The year's features, `copies` times over (flight numbers shifted so keys stay unique), as Delta."""
    source = with_event_date(SPEC.load_source(spark, SourceContext(tmp + "/staging")), SPEC)
    features = build_features(source, SPEC)
    upsampled = features
    for i in range(1, copies):
        upsampled = upsampled.unionByName(features.withColumn("flight", F.col("flight") + 10_000 * i))
    path = tmp + "/features"
    delta_io.write_partitions(upsampled, path, *YEAR)
    return path


def registered_model(spark, tmp: str, features_path: str) -> ResolvedModel:
    """Logistic regression on January's labelled rows, logged and registered as batch_predictions would find it."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp}/mlflow.db")
    experiment = mlflow.create_experiment("bench", artifact_location=Path(tmp, "artifacts").as_uri())
    train = spark.read.format("delta").load(features_path).where(f"{EVENT_DATE} < '2013-02-01' AND {LABEL} IS NOT NULL")
    pipeline = build_pipeline(SPEC, "logistic_regression", {"regParam": 0.01, "elasticNetParam": 0.0, "maxIter": 50})
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.spark.log_model(
            pipeline.fit(train),
            artifact_path="model",
            signature=model_signature(SPEC),
            pip_requirements=pip_requirements(),
        )
    client = mlflow.MlflowClient()
    tags = lineage_tags(SPEC, {"features": (features_path, 0)}, {"dagster.run_id": "none: bench"})
    version = register_version(client, MODEL_NAME, info.model_uri, run.info.run_id, "bench", tags)
    return ResolvedModel(MODEL_NAME, str(version.version), run.info.run_id, f"models:/{MODEL_NAME}/{version.version}")


def throughput(spark, tmp: str, features_path: str, model: ResolvedModel, reps: int, udf_reps: int) -> None:
    inputs = list(SPEC.features)
    variants = {
        "copy": lambda df: df,
        "native": lambda df: score(df, load_model(model), model, SPEC),  # the model load is part of every run
        "spark_udf": lambda df: score_with_pyfunc(df, model, SPEC, inputs),
    }
    rows = spark.read.format("delta").load(features_path).count()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(reps + 1):  # rep 0 warms the JVM up for copy and native and is not counted
        for name, transform in variants.items():
            if name == "spark_udf" and not 1 <= rep <= udf_reps:
                continue
            out = f"{tmp}/out-{name}-{rep}"
            elapsed = timed(
                lambda: delta_io.write_partitions(transform(spark.read.format("delta").load(features_path)), out, *YEAR)
            )
            if rep:
                times[name].append(elapsed)
            print(
                f"rep {rep} {name:<10} {elapsed:7.2f}s  {rows / elapsed:>10,.0f} rows/s"
                + ("" if rep else "  (warm-up)"),
                flush=True,
            )
        if rep:
            print(f"rep {rep} native / copy = {times['copy'][-1] / times['native'][-1]:.2f}", flush=True)
    median = {v: statistics.median(t) for v, t in times.items()}
    rate = {v: rows / t for v, t in median.items()}
    print(
        f"\n{rows:,} rows. Median rows/s: copy {rate['copy']:,.0f}, native {rate['native']:,.0f}, "
        f"spark_udf {rate['spark_udf']:,.0f}"
    )
    print(f"native / copy      = {rate['native'] / rate['copy']:.2f}  (target >= 0.5)")
    print(f"native / spark_udf = {rate['native'] / rate['spark_udf']:.2f}  (target >= 3)\n", flush=True)


def file_count(spark, path: str) -> int:
    return DeltaTable.forPath(spark, path).detail().first()["numFiles"]


def size_mb(spark, path: str) -> float:
    return DeltaTable.forPath(spark, path).detail().first()["sizeInBytes"] / 1e6


def maintenance(spark, tmp: str, predictions_path: str, reps: int = 5) -> None:
    """As written vs OPTIMIZE vs OPTIMIZE ZORDER BY, each on a copy of the same table."""
    version = spark.read.format("delta").load(predictions_path).select("model_version").first()[0]
    month = "event_date >= '2013-06-01' AND event_date < '2013-07-01'"
    queries = {
        "month of one version (count, avg probability)": lambda df: (
            df.where(f"{month} AND model_version = '{version}'").agg(F.count(F.lit(1)), F.avg("probability")).first()
        ),
        "one flight for a month": lambda df: (
            df.where(f"{month} AND carrier = 'UA' AND flight = 1545").agg(F.count(F.lit(1))).first()
        ),
    }
    layouts = {
        "as written": None,
        "OPTIMIZE": lambda t: t.optimize().executeCompaction(),
        "ZORDER BY (carrier, flight)": lambda t: t.optimize().executeZOrderBy("carrier", "flight"),
    }
    for layout, action in layouts.items():
        path = f"{tmp}/maintenance-{len(layout)}"
        shutil.copytree(predictions_path, path)
        seconds = timed(lambda: action(DeltaTable.forPath(spark, path))) if action else 0.0
        table = spark.read.format("delta").load(path)
        query_times = {}
        for q, run in queries.items():
            run(table)  # warm: the first read pays for listing and the Delta snapshot
            query_times[q] = statistics.median(timed(lambda: run(table)) for _ in range(reps))
        print(
            f"{layout:<28} files {file_count(spark, path):>5} ({size_mb(spark, path):.1f} MB)  "
            f"maintenance {seconds:6.2f}s  " + "  ".join(f"{q}: {t * 1000:6.0f} ms" for q, t in query_times.items()),
            flush=True,
        )


def backfill(month_days: int) -> None:
    """A month of batch_predictions through Dagster: one single-run backfill vs one run per day."""
    from dagster import AssetKey

    from orchestration.definitions import INGEST_KEYS

    start = date(2013, 1, 1)
    last = start + timedelta(days=month_days - 1)
    tags = {
        "dagster/asset_partition_range_start": start.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    defs, instance, resources, state = build_world(Path(tempfile.mkdtemp(prefix="bench-backfill-")))
    daily, training = defs.resolve_job_def("daily_job"), defs.resolve_job_def("training_job")
    assert daily.execute_in_process(
        instance=instance,
        tags=tags,
        run_config=quiet,
        asset_selection=INGEST_KEYS,
    ).success
    assert training.execute_in_process(
        instance=instance,
        run_config={
            **quiet,
            "ops": {
                "splits": {
                    "config": {
                        "end_date": last.isoformat(),
                        "train_days": month_days - 10,
                        "validation_days": 5,
                        "test_days": 5,
                    }
                },
                "tuned_pipeline": {"config": {"n_trials": 1, "algorithms": ["logistic_regression"]}},
            },
        },
    ).success
    selection = [AssetKey("batch_predictions")]
    path = resources["lakehouse"].table_path("batch_predictions")
    one_run = timed(
        lambda: daily.execute_in_process(instance=instance, tags=tags, run_config=quiet, asset_selection=selection)
    )
    spark = get_or_create_session()
    files_one_run = file_count(spark, path)
    per_day = timed(
        lambda: [
            daily.execute_in_process(
                instance=instance,
                run_config=quiet,
                asset_selection=selection,
                partition_key=(start + timedelta(days=i)).isoformat(),
            )
            for i in range(month_days)
        ]
    )
    print(
        f"{month_days} days of batch_predictions: one run {one_run:.1f}s ({files_one_run} files), "
        f"{month_days} single-day runs {per_day:.1f}s ({file_count(spark, path)} files); "
        f"ratio {per_day / one_run:.1f}x",
        flush=True,
    )
    shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=3, help="the year's flights, this many times (3: ~1M rows)")
    parser.add_argument("--reps", type=int, default=3, help="counted repetitions, after one warm-up")
    parser.add_argument("--udf-reps", type=int, default=1, help="spark_udf is slow: fewer repetitions")
    parser.add_argument("--month-days", type=int, default=31)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "maintenance", "backfill"])
    args = parser.parse_args()
    spark = session("bench-scoring", {"spark.sql.shuffle.partitions": "8"})
    tmp = tempfile.mkdtemp(prefix="bench-scoring-")
    try:
        if "throughput" not in args.skip or "maintenance" not in args.skip:
            features_path = upsampled_features(spark, tmp, args.copies)
            model = registered_model(spark, tmp, features_path)
            predictions_path = f"{tmp}/out-native-0"  # the warm-up's output: the year scored in one run
            if "throughput" not in args.skip:
                throughput(spark, tmp, features_path, model, args.reps, args.udf_reps)
            else:
                delta_io.write_partitions(
                    score(spark.read.format("delta").load(features_path), load_model(model), model, SPEC),
                    predictions_path,
                    *YEAR,
                )
            if "maintenance" not in args.skip:
                maintenance(spark, tmp, predictions_path)
        if "backfill" not in args.skip:
            backfill(args.month_days)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
