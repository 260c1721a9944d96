"""Optuna TPE vs. a Spark grid search over the same space, on the flights data, in one run.

The grid is Spark's own `TrainValidationSplit` loop (`Estimator.fitMultiple` over a `ParamGridBuilder` grid,
each model evaluated on the validation set), run on our fixed, time-based holdout: `TrainValidationSplit`
itself can only split rows at random, which would validate on days older than the training days. Then TPE
runs on the same holdout until it reaches the grid's best within the tolerance (or the grid's wall time runs
out), and we report the time it took. Finally the same TPE study with 1 and with 2 parallel trials.

    make bench-tuning      # or: .venv/bin/python -m bench.tuning --train-days 45 --validation-days 14
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date

import mlflow
from pyspark import StorageLevel
from pyspark.ml.tuning import ParamGridBuilder

from bench.world import session
from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.datasets.flights import SPEC
from ml.features import raw_window, with_derived
from ml.metrics import evaluator
from ml.pipeline import build_pipeline
from ml.quarantine import annotate, good_rows
from ml.search_space import grid, resolve_space
from ml.splits import SplitWindow, time_splits
from ml.training import TuningConfig, tune_and_log


def load_splits(spark, staging: str, window: SplitWindow):
    source, _ = enforce_contract(SPEC.load_source(spark, SourceContext(staging)), SPEC)
    raw = raw_window(source, SPEC, window.train_start, window.end)
    features = good_rows(annotate(with_derived(raw, SPEC), SPEC), SPEC)
    splits = {k: v.persist(StorageLevel.MEMORY_AND_DISK) for k, v in time_splits(features, window).items()}
    return splits, {k: v.count() for k, v in splits.items()}


def grid_search(spark, splits, space, points: int, metric: str):
    """TrainValidationSplit's loop on the fixed holdout: one fitMultiple per algorithm over its param grid."""
    evaluate = evaluator(SPEC.task, metric)
    best, started, fits = None, time.monotonic(), 0
    for algorithm in space:
        combos = [p for a, p in grid({algorithm: space[algorithm]}, points) if a == algorithm]
        pipeline = build_pipeline(SPEC, algorithm, {})
        estimator = pipeline.getStages()[-1]
        builder = ParamGridBuilder()
        for name in combos[0]:
            builder.addGrid(estimator.getParam(name), sorted({c[name] for c in combos}))
        for _, model in pipeline.fitMultiple(splits["train"], builder.build()):
            value = evaluate.evaluate(model.transform(splits["validation"]))
            fits += 1
            if best is None or value > best[0]:
                best = (value, algorithm)
    return best[0], best[1], fits, time.monotonic() - started


def tpe(splits, space_algorithms, metric, experiment_id, **kw):
    started = time.monotonic()
    outcome = tune_and_log(
        SPEC,
        splits["train"],
        splits["validation"],
        splits["test"],
        TuningConfig(metric=metric, algorithms=space_algorithms, reports=False, **kw),
        experiment_id=experiment_id,
        tags={"bench": "tuning"},
        progress=print,
    )
    return outcome, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--end", default="2013-07-31")
    parser.add_argument("--train-days", type=int, default=45)
    parser.add_argument("--validation-days", type=int, default=14)
    parser.add_argument(
        "--points",
        type=int,
        default=3,
        help="grid values per hyperparameter: 3 is the least that puts a point inside each range",
    )
    parser.add_argument("--tolerance", type=float, default=0.002)
    parser.add_argument("--parallel-trials", type=int, default=6)
    args = parser.parse_args()

    spark = session("bench-tuning", {"spark.driver.memory": "6g"})
    tmp = tempfile.mkdtemp(prefix="bench-tuning-")
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    experiment_id = mlflow.create_experiment("bench-tuning", artifact_location=f"file://{tmp}/artifacts")
    window = SplitWindow.ending(date.fromisoformat(args.end), args.train_days, args.validation_days, 7)
    splits, counts = load_splits(spark, f"{tmp}/staging", window)
    print(f"rows: {counts}  window: {window.as_dict()}")
    metric = "auc"
    space = resolve_space(SPEC.task)

    grid_best, grid_algorithm, fits, grid_time = grid_search(spark, splits, space, args.points, metric)
    print(f"grid: {fits} fits, best {metric} {grid_best:.4f} ({grid_algorithm}) in {grid_time:.1f}s")

    target = grid_best - args.tolerance
    outcome, _ = tpe(
        splits,
        tuple(space),
        metric,
        experiment_id,
        n_trials=10 * fits,
        seed=42,
        timeout_seconds=grid_time,
        target_value=target,
        study_name="tpe-vs-grid",
    )
    trials = [t for t in outcome.trials if t["state"] == "COMPLETE"]
    reached = next((t for t in trials if t["value"] >= target), None)
    # Time to reach: from the first trial's start to the end of the first trial at the target.
    tpe_time = (reached["finished_at"] - trials[0]["started_at"]) if reached else float("nan")
    where = f"at trial {reached['number'] + 1} " if reached else ""
    print(
        f"tpe: {len(trials)} trials, best {metric} {outcome.best_validation_value:.4f}; "
        f"{'reached' if reached else 'did NOT reach'} {target:.4f} {where}in {tpe_time:.1f}s "
        f"= {tpe_time / grid_time:.2f}x the grid's time (target <= 0.33x)"
    )

    times = {}
    for parallelism in (1, 2):
        _, times[parallelism] = tpe(
            splits,
            ("logistic_regression", "random_forest"),
            metric,
            experiment_id,
            n_trials=args.parallel_trials,
            seed=1,
            parallelism=parallelism,
            study_name=f"parallel-{parallelism}",
        )
    print(
        f"{args.parallel_trials} trials: 1 at a time {times[1]:.1f}s, 2 at a time {times[2]:.1f}s, "
        f"speedup {times[1] / times[2]:.2f}x"
    )


if __name__ == "__main__":
    main()
