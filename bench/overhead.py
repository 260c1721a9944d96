"""Orchestration overhead: the whole graph through Dagster vs. a plain script calling the same ml/ functions.

Same process, same SparkSession, same data slice and config; fresh state for every repetition; the two
variants alternate so that neither gets all the warm caches. Prints the medians and the ratio.

    make bench-overhead        # or: .venv/bin/python -m bench.overhead --days 31 --reps 3

`--instance postgres` runs the Dagster side on the PostgreSQL instance of infra/ (started and stopped here),
as prod does; `--event-batch-size N` sets DAGSTER_EVENT_BATCH_SIZE, which makes Dagster store the per-partition
materializations of a range run in one PostgreSQL transaction (SQLite stores a batch one event at a time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from dagster import AssetKey, DagsterInstance
from pyspark import StorageLevel

from bench.postgres import postgres_databases
from bench.world import build_world, session
from ml import delta_io, undated
from ml import quarantine as q
from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.datasets.flights import SPEC
from ml.features import raw_window, with_derived
from ml.onnx_export import export_version
from ml.quality import feature_suite, raw_suite, run_suite_by_day, with_key_column
from ml.registry import GateConfig, champion_version, gate, lineage_tags, register_version
from ml.scoring import ResolvedModel, check_signature, evaluate_version, load_model, score
from ml.splits import SplitWindow, split_counts, time_splits
from ml.training import TuningConfig, tune_and_log
from orchestration.definitions import INGEST_KEYS

TUNING = {"n_trials": 2, "algorithms": ["logistic_regression"]}


def plain(spark, resources, start: date, end: date, window: SplitWindow) -> None:
    """The assets' ml/ calls in the assets' order, including their pinned reads and their checks before writing
    (split counts, the model's signature): everything but Dagster."""
    lake, mlf = resources["lakehouse"], resources["mlflow"]
    mlf.configure()
    days = (end - start).days
    source, _ = enforce_contract(SPEC.load_source(spark, SourceContext(lake.staging_dir)), SPEC)
    seen = raw_window(source, SPEC, start, end, undated=True).persist(StorageLevel.MEMORY_AND_DISK)
    report, _ = undated.measure(seen, SPEC, "bench")  # the asset's one count: undated rows and rows per day
    low, high = SPEC.rows_per_day
    assert report.within_budget and all(low <= n <= high for n in report.rows_by_day.values())
    raw = undated.dated(seen)
    dates = [start + timedelta(days=i) for i in range(days)]
    assert all(v.outcome.success for v in run_suite_by_day(raw, lambda n: raw_suite(SPEC, n), dates).values())
    delta_io.write_partitions(raw, lake.table_path("raw_data"), start, end)
    seen.unpersist()
    raw, _ = delta_io.read_pinned(spark, lake.table_path("raw_data"))
    annotated = q.annotate(with_derived(raw.where(delta_io.window_predicate(start, end)), SPEC), SPEC)
    annotated = annotated.persist(StorageLevel.MEMORY_AND_DISK)
    assert all(c.within_budget(SPEC) for c in q.count_by_day(annotated, SPEC).values())
    delta_io.write_partitions(q.quarantined_rows(annotated, SPEC, "bench"), lake.table_path("quarantine"), start, end)
    features = q.good_rows(annotated, SPEC)
    verdicts = run_suite_by_day(with_key_column(features, SPEC), lambda n: feature_suite(SPEC, n), dates)
    assert all(v.outcome.success for v in verdicts.values())
    delta_io.write_partitions(features, lake.table_path("validated_features"), start, end)
    annotated.unpersist()
    feats, _ = delta_io.read_pinned(spark, lake.table_path("validated_features"))
    assert all(split_counts(feats, window).values())
    inputs = {}
    for name, frame in time_splits(feats, window).items():
        path = lake.table_path(f"{name}_set")
        inputs[f"{name}_set"] = (path, delta_io.overwrite_table(frame, path).version)
    splits = {n: delta_io.read_pinned(spark, lake.table_path(f"{n}_set"))[0] for n in ("train", "validation", "test")}
    outcome = tune_and_log(
        SPEC,
        splits["train"],
        splits["validation"],
        splits["test"],
        TuningConfig(n_trials=TUNING["n_trials"], algorithms=tuple(TUNING["algorithms"])),
        mlf.experiment_id(),
        tags={},
    )
    v = register_version(
        mlf.client,
        lake.model_name,
        outcome.model_uri,
        outcome.run_id,
        "bench",
        lineage_tags(SPEC, inputs, {"dagster.run_id": "none: plain script"}),
    ).version
    test_set, _ = delta_io.read_pinned(spark, lake.table_path("test_set"))
    export_version(mlf.client, lake.model_name, v, test_set, SPEC)  # registered_model's ONNX export and parity check
    gate(
        mlf.client,
        lake.model_name,
        v,
        "auc",
        lambda ver: evaluate_version(lake.model_name, ver, test_set, "classification", "auc"),
        GateConfig(),
    )
    champ = champion_version(mlf.client, lake.model_name)
    model = ResolvedModel(
        lake.model_name, str(champ.version), champ.run_id, f"models:/{lake.model_name}/{champ.version}"
    )
    feats, _ = delta_io.read_pinned(spark, lake.table_path("validated_features"))
    check_signature(model.uri, feats.schema)
    scored = score(feats.where(delta_io.window_predicate(start, end)), load_model(model), model, SPEC)
    delta_io.write_partitions(scored, lake.table_path("batch_predictions"), start, end)


def through_dagster(world, start: date, end: date, split_config: dict) -> None:
    defs, instance, _, _ = world
    tags = {
        "dagster/asset_partition_range_start": start.isoformat(),
        "dagster/asset_partition_range_end": (end - timedelta(days=1)).isoformat(),
    }
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    daily, training = defs.resolve_job_def("daily_job"), defs.resolve_job_def("training_job")
    assert daily.execute_in_process(
        instance=instance,
        tags=tags,
        run_config=quiet,
        asset_selection=INGEST_KEYS,
    ).success
    assert training.execute_in_process(
        instance=instance,
        run_config={**quiet, "ops": {"splits": {"config": split_config}, "tuned_pipeline": {"config": TUNING}}},
    ).success
    assert daily.execute_in_process(
        instance=instance, tags=tags, run_config=quiet, asset_selection=[AssetKey("batch_predictions")]
    ).success


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--instance",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Dagster instance's storage: the embedded SQLite of local, or PostgreSQL as in prod",
    )
    parser.add_argument("--event-batch-size", type=int, default=0, help="DAGSTER_EVENT_BATCH_SIZE (0: off)")
    args = parser.parse_args()
    os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(args.event_batch_size)
    with contextlib.ExitStack() as stack:
        urls = (
            stack.enter_context(postgres_databases([f"dagster{r}" for r in range(args.reps + 1)]))
            if args.instance == "postgres"
            else {}
        )
        run(args, urls)


def run(args, urls: dict[str, str]) -> None:
    spark = session("bench-overhead")
    start = date(2013, 1, 1)
    end = start + timedelta(days=args.days)
    split_config = {
        "end_date": (end - timedelta(days=1)).isoformat(),
        "train_days": args.days - 10,
        "validation_days": 5,
        "test_days": 5,
    }
    window = SplitWindow.ending(end - timedelta(days=1), args.days - 10, 5, 5)
    times: dict[str, list[float]] = {"plain": [], "dagster": []}
    for rep in range(args.reps + 1):  # the first round warms the JVM and the caches, and is not counted
        for variant in ("plain", "dagster") if rep % 2 == 0 else ("dagster", "plain"):
            world = build_world(Path(tempfile.mkdtemp(prefix=f"bench-{variant}-")))
            if variant == "dagster" and urls:  # the same world on a fresh PostgreSQL database
                (world[3] / "dagster-pg").mkdir()
                instance = DagsterInstance.local_temp(
                    str(world[3] / "dagster-pg"),
                    overrides={"storage": {"postgres": {"postgres_url": urls[f"dagster{rep}"]}}},
                )
                world = (world[0], instance, *world[2:])
            t0 = time.perf_counter()
            if variant == "plain":
                plain(spark, world[2], start, end, window)
            else:
                through_dagster(world, start, end, split_config)
            elapsed = time.perf_counter() - t0
            if rep:
                times[variant].append(elapsed)
            print(f"rep {rep} {variant}: {elapsed:.1f}s" + ("" if rep else " (warm-up)"), flush=True)
    p, d = statistics.median(times["plain"]), statistics.median(times["dagster"])
    print(f"\n{args.instance} instance, DAGSTER_EVENT_BATCH_SIZE={args.event_batch_size}")
    print(
        f"{args.days} days, {args.reps} reps: plain median {p:.1f}s, dagster median {d:.1f}s, ratio {d / p:.3f} "
        f"(target <= 1.15)"
    )


if __name__ == "__main__":
    main()
