"""Replay (ml/replay.py): is Spark's training deterministic enough for a 1e-9 tolerance, and what does a replay cost?

The splits of a window of real flights are written as Delta tables, once as one file and once as four (one
partition each when read). For each algorithm, one seeded single-trial study is run (the original), then run again
on the same Delta versions (the replay: the same rows in the same partitions), then once more on the four-file copy
(the same rows, partitioned otherwise). Printed: the largest |Δ test metric| of the replay against the original, of a
second replay against the first (both in a warm JVM), and of the repartitioned run against the original; and the
replay's time ÷ the original's (the baseline, in the same run).

    make bench-replay ARGS="--end 2013-03-31 --train-days 30 --validation-days 7 --test-days 7"
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date

import mlflow

from bench.tuning import load_splits
from bench.world import session
from ml import delta_io
from ml.datasets.flights import SPEC
from ml.splits import SplitWindow
from ml.training import TuningConfig, tune_and_log

ALGORITHMS = ("logistic_regression", "random_forest", "gbt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--end", default="2013-03-31")
    parser.add_argument("--train-days", type=int, default=30)
    parser.add_argument("--validation-days", type=int, default=7)
    parser.add_argument("--test-days", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    spark = session("bench-replay")
    tmp = tempfile.mkdtemp(prefix="bench-replay-")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    experiment_id = mlflow.create_experiment("bench-replay", artifact_location=f"file://{tmp}/artifacts")
    window = SplitWindow.ending(date.fromisoformat(args.end), args.train_days, args.validation_days, args.test_days)
    splits, counts = load_splits(spark, f"{tmp}/staging", window)
    print(f"rows: {counts}  window: {window.as_dict()}", flush=True)

    layouts = {}
    for layout, parts in (("one file", 1), (f"{args.partitions} files", args.partitions)):
        layouts[layout] = {}
        for name, frame in splits.items():
            path = f"{tmp}/{parts}/{name}"
            delta_io.overwrite_table(frame.repartition(parts) if parts > 1 else frame.coalesce(1), path)
            layouts[layout][name] = delta_io.read_table(spark, path, 0)
    other = f"{args.partitions} files"
    print(
        f"partitions when read: one file {layouts['one file']['train'].rdd.getNumPartitions()}, "
        f"{other} {layouts[other]['train'].rdd.getNumPartitions()}",
        flush=True,
    )

    def train(frames, algorithm, label):
        config = TuningConfig(
            n_trials=1, seed=42, algorithms=(algorithm,), reports=False, profile=False, study_name=label
        )
        t0 = time.perf_counter()
        outcome = tune_and_log(
            SPEC,
            frames["train"],
            frames["validation"],
            frames["test"],
            config,
            experiment_id,
            tags={},
            progress=lambda _: None,
        )
        return outcome.test_metrics, time.perf_counter() - t0

    def worst(a, b):
        key = max(a, key=lambda k: abs(a[k] - b[k]))
        return f"{abs(a[key] - b[key]):.3g} ({key})"

    print(
        f"{'algorithm':<20} {'test auc':>9}  {'|Δ| replay':<22} {'|Δ| 2nd replay':<22} {'|Δ| repartitioned':<22} "
        "replay ÷ original"
    )
    for algorithm in ALGORITHMS:
        original, t_original = train(layouts["one file"], algorithm, f"{algorithm}-original")
        replayed, t_replay = train(layouts["one file"], algorithm, f"{algorithm}-replay")
        again, _ = train(layouts["one file"], algorithm, f"{algorithm}-replay-2")
        moved, _ = train(layouts[other], algorithm, f"{algorithm}-repartitioned")
        print(
            f"{algorithm:<20} {original['auc']:>9.6f}  {worst(replayed, original):<22} {worst(again, replayed):<22} "
            f"{worst(moved, original):<22} {t_replay / t_original:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
