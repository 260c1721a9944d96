"""Cost of finding the source rows without a partition date in raw_data's gate, as a ratio to the gate without it.

    make bench-undated      # or: .venv/bin/python -m bench.undated --reps 3

The gate is what raw_data does before writing: read the source (flights CSV joined with weather), take the
run's window, persist it, run the raw suite. `undated=True` keeps the rows without an event date in the same
persisted frame and counts both kinds in one aggregation over it (ml/undated.py); the alternative, a second
count over the source, is measured too. Variants alternate round by round, Spark's cache emptied before
each; medians are compared. Without a Dagster run or a Delta write, so that only the gate is timed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import date

from pyspark import StorageLevel
from pyspark.sql import functions as F

from bench.data import timed
from ml import undated
from ml.dataset import EVENT_DATE, SourceContext
from ml.datasets.flights import SPEC
from ml.features import raw_window, with_event_date
from ml.quality import raw_suite, run_suite

BEFORE = "gate without undated rows (before)"
NOW = "gate with undated rows, one pass (now)"
SECOND_PASS = "gate + a second count over the source"


def gate(source, start: date, end: date) -> bool:
    rows = raw_window(source, SPEC, start, end).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return run_suite(rows, raw_suite(SPEC, days=(end - start).days)).success
    finally:
        rows.unpersist()


def gate_with_undated(source, start: date, end: date) -> bool:
    seen = raw_window(source, SPEC, start, end, undated=True).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        report, _ = undated.measure(seen, SPEC, start.isoformat())
        return (
            run_suite(undated.dated(seen), raw_suite(SPEC, days=(end - start).days))
            .with_result(report.outcome())
            .success
        )
    finally:
        seen.unpersist()


def gate_and_second_pass(source, start: date, end: date) -> bool:
    ok = gate(source, start, end)
    return ok and with_event_date(source, SPEC).where(F.col(EVENT_DATE).isNull()).count() >= 0


def main() -> None:
    from bench.world import session

    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--day", default="2013-06-15", help="the run's window: this day")
    args = parser.parse_args()
    spark = session("bench-undated")
    source = SPEC.load_source(spark, SourceContext(tempfile.mkdtemp(prefix="bench-undated-")))
    start = date.fromisoformat(args.day)
    end = date.fromordinal(start.toordinal() + 1)
    variants = {BEFORE: gate, NOW: gate_with_undated, SECOND_PASS: gate_and_second_pass}
    r: dict[str, float] = {}
    timed("warm-up gate (not counted)", lambda: gate(source, start, end), r)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.reps):
        print(f"-- round {round_ + 1}", flush=True)
        for name, run in variants.items():
            spark.catalog.clearCache()
            timed(name, lambda: run(source, start, end), r)
            samples[name].append(r[name])
    median = {name: statistics.median(times) for name, times in samples.items()}
    print(f"\nsource rows: {source.count():,}; window {start}; medians of {args.reps}:")
    for name, value in median.items():
        print(
            f"{name:<44} {value:7.2f}s  ({', '.join(f'{t:.2f}' for t in samples[name])})  "
            f"{value / median[BEFORE]:5.2f}x before"
        )


if __name__ == "__main__":
    main()
