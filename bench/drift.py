"""Cost of the full drift computation on ~1M rows (flights upsampled 3x) as a ratio to one count() scan.

"Full drift computation" is what feature_drift does for every day of the data: bucket counts of every
feature per day in one Spark job (a few features per pass, ml.drift.CODE_BUDGET), then PSI/KS/JS over each
day's trailing window on the driver. The reference profile is not in it: it is built once at training
time and stored with the model, so it is timed once, apart.

Each round times count(), a scan of every column and the drift, one after the other, so the three share
the machine's load. Round 1 is the drift's first run in this JVM: its generated code is still being
compiled, as in a fresh run process. The ratio of the medians is the steady state.

    make bench-drift      # or: .venv/bin/python -m bench.drift --copies 3 --rounds 3
"""

from __future__ import annotations

import statistics
import time

from pyspark.sql import functions as F

from bench.data import million_rows, timed
from ml.dataset import EVENT_DATE
from ml.datasets.flights import SPEC
from ml.drift import DriftPolicy, build_profile, daily_counts, day_summaries, window_drift

ROUNDS = 3


def main() -> None:
    spark, data, _, _ = million_rows("drift")
    r: dict[str, float] = {}
    timed("warm-up count (not counted)", data.count, r)
    spark.conf.set("spark.databricks.delta.optimizeMetadataQuery.enabled", "false")  # a real scan, not the log
    spring = data.where((F.col("event_date") >= "2013-03-01") & (F.col("event_date") < "2013-05-01"))
    built = []  # timed() prints what it returns: the row count, not the whole profile
    timed(
        "reference profile (training time, 2 months)",
        lambda: built.append(build_profile(spring, SPEC)) or built[0].rows,
        r,
    )
    reference = built[0]
    policy = DriftPolicy()

    rounds: list[dict[str, float]] = []
    for i in range(ROUNDS):
        t = {}
        n = timed(f"round {i + 1}: count() scan", data.count, t)
        timed(
            f"round {i + 1}: full scan (count of every column)",
            lambda: data.agg(*[F.count(c) for c in data.columns]).first()[0],
            t,
        )
        timed(
            f"round {i + 1}: read the drift's 17 columns (noop sink)",
            lambda: data.select(EVENT_DATE, *reference.features).write.format("noop").mode("overwrite").save(),
            t,
        )
        start = time.perf_counter()
        counts = {}
        timed(
            f"round {i + 1}: drift, Spark pass (daily bucket counts)",
            lambda: counts.update(daily_counts(data, reference)) or len(counts),
            t,
        )
        days = timed(
            f"round {i + 1}: drift, PSI/KS/JS of every day's window",
            lambda: len(day_summaries(window_drift(counts, sorted(counts), reference, policy), policy)),
            t,
        )
        t["drift"] = time.perf_counter() - start
        print(f"round {i + 1}: drift of every day (pass + metrics)    {t['drift']:7.2f}s", flush=True)
        rounds.append(
            {
                "count": t[f"round {i + 1}: count() scan"],
                "full": t[f"round {i + 1}: full scan (count of every column)"],
                "read": t[f"round {i + 1}: read the drift's 17 columns (noop sink)"],
                "drift": t["drift"],
            }
        )

    print(f"\nrows: {n:,}; days: {days}; features: {len(SPEC.features)}; rounds: {ROUNDS}")
    median = {k: statistics.median(x[k] for x in rounds) for k in ("count", "full", "read", "drift")}
    for label, row in (("round 1 (first run of the drift's code)", rounds[0]), ("median of the rounds", median)):
        print(
            f"{label}: drift {row['drift']:.2f}s = {row['drift'] / row['count']:.2f}x count() "
            f"({row['count']:.2f}s; target <= 3x), {row['drift'] / row['full']:.2f}x the full scan ({row['full']:.2f}s)"
        )
    print(
        f"floor: only reading the drift's columns, with no work on them, is {median['read'] / median['count']:.2f}x "
        f"count() ({median['read']:.2f}s)"
    )


if __name__ == "__main__":
    main()
