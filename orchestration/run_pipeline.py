"""`make run`: materialize the whole graph on the default data, in a persistent Dagster instance.

Three runs, as an operator would launch them: the daily path's ingest over the whole date range (one
single-run backfill), the training job, then scoring over the whole range. Every run is recorded in
DAGSTER_HOME, so `make ui` shows them with their lineage metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import mlflow
from dagster import DagsterEventType, DagsterInstance

from assets import contracts as c
from ml.splits import SplitSizes
from ml.training import TuningConfig

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def held_by_the_gate(result) -> list[str]:
    """The failures of a run whose gated steps held some days back and wrote the others (empty if the run
    succeeded, or if any step failed otherwise): the range goes on without those days, as a backfill would.

    A gated step's Failure says so in its metadata (assets.gate: `failed_days`, `written_days`)."""
    failed = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    held = []
    for step in failed:
        failure = result.failure_data_for_node(step).user_failure_data
        metadata = failure.metadata if failure is not None else {}
        written = metadata.get(c.WRITTEN_DAYS)
        if c.FAILED_DAYS not in metadata or not (written and written.value):
            return []  # a failure of another kind, or a gate that wrote nothing: the run cannot go on
        held.append(failure.description)
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", help="first partition (default: the dataset's first day)")
    parser.add_argument("--end", help="last partition, inclusive (default: the dataset's last day)")
    parser.add_argument("--trials", type=int, default=TuningConfig.n_trials, help="Optuna trials")
    parser.add_argument("--train-days", type=int, default=SplitSizes.train_days)
    parser.add_argument("--validation-days", type=int, default=SplitSizes.validation_days)
    parser.add_argument("--test-days", type=int, default=SplitSizes.test_days)
    args = parser.parse_args(argv)

    from assets.common import daily_partitions
    from orchestration.definitions import INGEST_KEYS, SCORING_KEYS, defs

    keys = daily_partitions.get_partition_keys()
    start, end = args.start or keys[0], args.end or keys[-1]
    instance = DagsterInstance.get()
    range_tags = {RANGE_START_TAG: start, RANGE_END_TAG: end}
    daily_job = defs.resolve_job_def("daily_job")
    training_job = defs.resolve_job_def("training_job")
    timings = {}
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # progress, without per-event DEBUG lines

    held: list[str] = []

    def step(label, fn):
        t0 = time.monotonic()
        result = fn()
        timings[label] = time.monotonic() - t0
        gated = [] if result.success else held_by_the_gate(result)
        if gated:
            held.extend(gated)
            print(
                f"-- {label}: the gate held some days back, the others were written, in {timings[label]:.1f}s "
                f"(run {result.run_id}):\n   " + "\n   ".join(gated),
                flush=True,
            )
            return result
        if not result.success:
            print(f"FAILED: {label} (run {result.run_id}); see `make ui` for the logs", file=sys.stderr)
            raise SystemExit(1)
        print(f"-- {label}: ok in {timings[label]:.1f}s (run {result.run_id})", flush=True)
        return result

    ingest = step(
        f"ingest {start}..{end}",
        lambda: daily_job.execute_in_process(
            instance=instance,
            tags=range_tags,
            asset_selection=INGEST_KEYS,
            run_config=quiet,
            raise_on_error=False,
        ),
    )
    split_config = {
        "end_date": end,
        "train_days": args.train_days,
        "validation_days": args.validation_days,
        "test_days": args.test_days,
    }
    trained = step(
        "training",
        lambda: training_job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={
                **quiet,
                "ops": {"splits": {"config": split_config}, "tuned_pipeline": {"config": {"n_trials": args.trials}}},
            },
        ),
    )
    step(
        f"scoring {start}..{end}",
        lambda: daily_job.execute_in_process(
            instance=instance,
            tags=range_tags,
            asset_selection=SCORING_KEYS,
            run_config=quiet,
            raise_on_error=False,
        ),
    )

    # From what the runs recorded: in prod the resources' fields are EnvVars, which only a run may read.
    raw_uri = next(
        m.metadata[c.URI].value
        for m in ingest.asset_materializations_for_node("raw_data")
        if m.asset_key.path == ["raw_data"]
    )
    gate = trained.asset_materializations_for_node("registered_model")[0].metadata
    print("\nDone. The whole graph is materialized" + (", but for the days the gate held (below)." if held else "."))
    print(
        f"  Delta tables:      {os.path.dirname(raw_uri.removeprefix('file://'))}/  "
        f"(raw_data, raw_quarantine, validated_features, quarantine, train_set, validation_set, test_set, batch_predictions, "
        f"model_performance, drift_metrics)"
    )
    print(f"  MLflow store:      {mlflow.get_tracking_uri()}")
    print(
        f"  model:             {gate[c.MODEL_NAME].value} v{gate[c.MODEL_VERSION].value}, gate "
        f"{gate[c.GATE_DECISION].value}: {gate[c.GATE_REASON].value}"
    )
    print(f"  Dagster instance:  {instance.root_directory}")
    print("  Open the UIs:      make ui         (Dagster, http://127.0.0.1:3000)")
    print("                     make mlflow-ui  (MLflow,  http://127.0.0.1:5000)")
    print("  Timings:           " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    for failure in held:
        print(f"  Held by the gate:  {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
