"""`make run`: materialize the whole graph on the default data, in a persistent Dagster instance.

Four runs, as an operator would launch them: the daily path's ingest over the whole date range (one
single-run backfill), the training job, scoring over the whole range, then the incremental job (incremental_predictions
brought up to date from validated_features' change data feed). Every run is recorded in
DAGSTER_HOME, so `make ui` shows them with their lineage metadata.

The terminal gets one line per phase (its time and counts), one line per day the gate held, where everything is,
and the lineage of one sample prediction (`make lineage`'s answer). Everything else, Dagster's event log, Spark's and
Ivy's output and the tracebacks of held days, goes to a log file whose path is printed first and last
(`--log-file`, default `<state>/logs/run-<UTC time>.log`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import mlflow
from dagster import DagsterEventType, DagsterInstance

from assets import contracts as c
from ml.segments import SegmentConfig
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


# ---- what the terminal shows (pure functions of what the runs recorded) ------------------------------------------


def _value(entry):
    return getattr(entry, "value", entry)


def rows_and_days(materializations: Iterable) -> tuple[int | None, int]:
    """(rows written, days written) of one asset in one run, from its materializations: a range run that wrote every
    day records `rows_written_in_run` on each day; one that wrote some days records each day's `dagster/row_count`."""
    found = list(materializations)
    days = len({m.partition for m in found if m.partition})
    in_run = [_value(m.metadata["rows_written_in_run"]) for m in found if "rows_written_in_run" in m.metadata]
    per_day = [  # a day's commit, or 0 where the run had nothing to write (the lakehouse's unwritten_metadata)
        _value(m.metadata.get("dagster/row_count", m.metadata.get("rows_written")))
        for m in found
        if "dagster/row_count" in m.metadata or "rows_written" in m.metadata
    ]
    if per_day and len(per_day) == len(found):
        return sum(per_day), days
    if in_run:
        return in_run[0], days
    return None, days


def count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def phase_line(label: str, seconds: float, counts: Iterable[str], run_id: str, status: str = "ok") -> str:
    """`ingest 2013-01-01..2013-12-31  ok    412.3s  raw rows 336,776 · ...  run 1a2b3c4d`"""
    return f"{label:<32} {status:<5} {seconds:7.1f}s  {' · '.join(counts)}  [run {run_id[:8]}]"


def held_line(description: str) -> str:
    """A day (or days) the gate held back, as one line: the failure's own description, whitespace collapsed."""
    return "  held by the gate: " + " ".join(str(description).split())


def failure_line(label: str, run_id: str, errors: list[str], log_path: str) -> str:
    first = " ".join(errors[0].split()) if errors else "see the log"
    return f"FAILED: {label} (run {run_id}): {first}\n  full log: {log_path}"


def ingest_counts(result, held_days: int) -> list[str]:
    raw, days = rows_and_days(
        m for m in result.asset_materializations_for_node("raw_data") if m.asset_key.path == ["raw_data"]
    )
    features, written = rows_and_days(
        m
        for m in result.asset_materializations_for_node("validated_features")
        if m.asset_key.path == ["validated_features"]
    )
    quarantined, _ = rows_and_days(
        m for m in result.asset_materializations_for_node("validated_features") if m.asset_key.path == ["quarantine"]
    )
    return [
        f"raw rows {count(raw)} ({days} days)",
        f"features {count(features)}",
        f"quarantined {count(quarantined)}",
        f"days written {written}" + (f", held {held_days}" if held_days else ""),
    ]


def training_counts(result) -> list[str]:
    tuned = {k: _value(v) for k, v in result.asset_materializations_for_node("tuned_pipeline")[0].metadata.items()}
    gate = {k: _value(v) for k, v in result.asset_materializations_for_node("registered_model")[0].metadata.items()}
    splits = {
        m.asset_key.path[-1]: _value(m.metadata.get("dagster/row_count", "?"))
        for m in result.asset_materializations_for_node("splits")
    }
    metric = gate.get("gate_metric", "")
    return [
        "rows train/validation/test "
        + "/".join(count(splits.get(t)) for t in ("train_set", "validation_set", "test_set")),
        f"{tuned['n_trials']} trial{'' if tuned['n_trials'] == 1 else 's'}",
        f"best {tuned['best_algorithm']}",
        f"test {metric} {tuned.get(f'test_{metric}', float('nan')):.4f}",
        f"{gate[c.MODEL_NAME]} v{gate[c.MODEL_VERSION]} {gate[c.GATE_DECISION]}",
    ]


def scoring_counts(result) -> list[str]:
    scored, days = rows_and_days(result.asset_materializations_for_node("batch_predictions"))
    labelled = [
        _value(m.metadata.get("rows_written", 0)) for m in result.asset_materializations_for_node("model_performance")
    ]
    drift = result.asset_materializations_for_node("feature_drift")
    drifted = _value(drift[0].metadata[c.DRIFT_BY_DAY]) if drift and c.DRIFT_BY_DAY in drift[0].metadata else {}
    return [
        f"predictions {count(scored)} ({days} days)",
        f"performance rows {count(labelled[0] if labelled else None)}",
        f"drifted days {sum(1 for d in drifted.values() if d.get('drifted'))}/{len(drifted)}",
    ]


def segment_counts(result) -> list[str]:
    meta = {k: _value(v) for k, v in result.asset_materializations_for_node("segment_models")[0].metadata.items()}
    return [
        f"segments {meta['segments']} ({meta['segments_own_model']} own model, {meta['segments_too_small']} too small, "
        f"{meta['segments_failed']} failed)",
        f"{meta[c.MODEL_NAME]} v{meta[c.MODEL_VERSION]} {meta[c.GATE_DECISION]}",
    ]


def segment_scoring_counts(result) -> list[str]:
    scored, days = rows_and_days(result.asset_materializations_for_node("segment_predictions"))
    meta = result.asset_materializations_for_node("segment_predictions")
    first = {k: _value(v) for k, v in meta[0].metadata.items()} if meta else {}
    performance = [
        _value(m.metadata.get("rows_written", 0)) for m in result.asset_materializations_for_node("segment_performance")
    ]
    return [
        f"segment predictions {count(scored)} ({days} days)",
        f"by segment models {count(first.get('rows_by_segment_model'))}, by the global model "
        f"{count(first.get('rows_by_global_model'))}",
        f"segment performance rows {count(performance[0] if performance else None)}",
    ]


def incremental_counts(result) -> list[str]:
    found = result.asset_materializations_for_node("incremental_predictions")
    meta = {k: _value(v) for k, v in found[0].metadata.items()} if found else {}
    first, last = meta.get(c.FIRST_VERSION_CONSUMED, -1), meta.get(c.LAST_VERSION_CONSUMED, -1)
    return [
        f"rows scored {count(meta.get(c.ROWS_SCORED))}",
        f"validated_features v{first}..v{last}" if first != -1 else "no new feature versions",
        f"table rows {count(meta.get('dagster/row_count'))}",
        f"{meta.get(c.MODEL_NAME, '?')} v{meta.get(c.MODEL_VERSION, '?')}",
    ]


# ---- the run ----------------------------------------------------------------------------------------------------


def default_log_path() -> Path:
    from orchestration.deployments import state_dir

    return state_dir() / "logs" / f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.log"


def to_log_file(path: Path) -> TextIO:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python's, Dagster's loggers, and the JVM's,
    which inherits them when Spark starts) to `path`; return a stream to the terminal, for the lines that stay there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return terminal


def sample_lineage(instance) -> str:
    """`make lineage`'s answer for a sample prediction (the first row of the last scored day)."""
    from dagster import build_resources

    from assets.common import SPEC
    from orchestration import lineage
    from orchestration.deployments import resources_for

    resources = resources_for(SPEC)
    with build_resources({"lakehouse": resources["lakehouse"], "mlflow": resources["mlflow"]}) as built:
        keys, day = lineage.sample_keys(built.lakehouse)
        return lineage.format_chain(lineage.explain(instance, built.lakehouse, built.mlflow, keys, day))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", help="first partition (default: the dataset's first day)")
    parser.add_argument("--end", help="last partition, inclusive (default: the dataset's last day)")
    parser.add_argument("--trials", type=int, default=TuningConfig.n_trials, help="Optuna trials")
    parser.add_argument("--train-days", type=int, default=SplitSizes.train_days)
    parser.add_argument("--validation-days", type=int, default=SplitSizes.validation_days)
    parser.add_argument("--test-days", type=int, default=SplitSizes.test_days)
    parser.add_argument("--segment-trials", type=int, default=SegmentConfig.n_trials, help="Optuna trials per segment")
    parser.add_argument("--log-file", type=Path, help="where the full log goes (default: <state>/logs/run-<time>.log)")
    args = parser.parse_args(argv)

    log_path = (args.log_file or default_log_path()).resolve()
    out = to_log_file(log_path)
    out.write(f"make run: full log in {log_path}\n")

    from assets.common import daily_partitions
    from orchestration.definitions import INGEST_KEYS, SCORING_KEYS, SEGMENT_ASSETS, defs

    keys = daily_partitions.get_partition_keys()
    start, end = args.start or keys[0], args.end or keys[-1]
    instance = DagsterInstance.get()
    range_tags = {RANGE_START_TAG: start, RANGE_END_TAG: end}
    daily_job = defs.resolve_job_def("daily_job")
    training_job = defs.resolve_job_def("training_job")
    timings = {}
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # progress, without per-event DEBUG lines

    held: list[str] = []

    def step(label, fn, counts):
        print(f"==== {label}", flush=True)  # into the log: where each phase starts
        t0 = time.monotonic()
        result = fn()
        timings[label] = time.monotonic() - t0
        gated = [] if result.success else held_by_the_gate(result)
        if not result.success and not gated:
            errors = [
                e.event_specific_data.error.message
                for e in result.all_events
                if e.event_type == DagsterEventType.STEP_FAILURE and e.event_specific_data.error
            ]
            out.write(failure_line(label, result.run_id, errors, str(log_path)) + "\n")
            raise SystemExit(1)
        held.extend(gated)
        status = "held" if gated else "ok"
        out.write(phase_line(label, timings[label], counts(result, len(gated)), result.run_id, status) + "\n")
        for description in gated:
            out.write(held_line(description) + "\n")
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
        lambda result, n_held: ingest_counts(result, held_days(result) if n_held else 0),
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
        lambda result, _: training_counts(result),
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
        lambda result, _: scoring_counts(result),
    )
    if SEGMENT_ASSETS:  # the dataset spec names a segment column: one model per segment, then its daily scoring
        step(
            "segment models",
            lambda: defs.resolve_job_def("segments_job").execute_in_process(
                instance=instance,
                raise_on_error=False,
                run_config={**quiet, "ops": {"segment_models": {"config": {"n_trials": args.segment_trials}}}},
            ),
            lambda result, _: segment_counts(result),
        )
        step(
            f"segment scoring {start}..{end}",
            lambda: defs.resolve_job_def("segment_scoring_job").execute_in_process(
                instance=instance, tags=range_tags, run_config=quiet, raise_on_error=False
            ),
            lambda result, _: segment_scoring_counts(result),
        )
    incremental_job = defs.resolve_job_def("incremental_job")
    step(
        "incremental",
        lambda: incremental_job.execute_in_process(instance=instance, run_config=quiet, raise_on_error=False),
        lambda result, _: incremental_counts(result),
    )

    # From what the runs recorded: in prod the resources' fields are EnvVars, which only a run may read.
    raw_uri = next(
        m.metadata[c.URI].value
        for m in ingest.asset_materializations_for_node("raw_data")
        if m.asset_key.path == ["raw_data"]
    )
    gate = trained.asset_materializations_for_node("registered_model")[0].metadata
    lines = [
        "",
        "Done. The whole graph is materialized" + (", but for the days the gate held (above)." if held else "."),
        f"  Delta tables:      {os.path.dirname(raw_uri.removeprefix('file://'))}/",
        f"  MLflow store:      {mlflow.get_tracking_uri()}",
        f"  model:             {gate[c.MODEL_NAME].value} v{gate[c.MODEL_VERSION].value}, gate "
        f"{gate[c.GATE_DECISION].value}: {gate[c.GATE_REASON].value}",
        f"  Dagster instance:  {instance.root_directory}",
        "  Open the UIs:      make ui (Dagster, http://127.0.0.1:3000), make mlflow-ui (MLflow, http://127.0.0.1:5000)",
        "  Timings:           " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()),
        "",
        "Which data and which model made a prediction? (make lineage, on a sample one):",
    ]
    out.write("\n".join(lines) + "\n")
    try:
        out.write(sample_lineage(instance) + "\n")
    except Exception as exc:  # the pipeline ran; the answer's failure is shown, and its traceback is in the log
        import traceback

        traceback.print_exc()
        out.write(f"lineage: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}\n")
    out.write(f"\nFull log: {log_path}\n")
    return 0


def held_days(result) -> int:
    """How many days a run's gated steps held back (their Failure's `failed_days`), each day once."""
    days = set()
    for e in result.all_events:
        if e.event_type == DagsterEventType.STEP_FAILURE:
            failure = result.failure_data_for_node(e.step_key).user_failure_data
            if failure is not None and c.FAILED_DAYS in failure.metadata:
                days.update(_value(failure.metadata[c.FAILED_DAYS]))
    return len(days)


if __name__ == "__main__":
    sys.exit(main())
