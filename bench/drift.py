"""Cost of the full drift computation on ~1M rows (flights upsampled 3x) as a ratio to one count() scan.

"Full drift computation" is what feature_drift does for every day of the data: bucket counts of every
feature per day in one Spark pass, then PSI/KS/JS over each day's trailing window on the driver. The
reference profile is built at training time; its cost is reported too, but not in the ratio.

    make bench-drift      # or: .venv/bin/python -m bench.drift --copies 3
"""

from __future__ import annotations

from pyspark.sql import functions as F

from bench.data import million_rows, timed
from ml.datasets.flights import SPEC
from ml.drift import DriftPolicy, build_profile, daily_counts, day_summaries, window_drift


def main() -> None:
    spark, data, _, _ = million_rows("drift")
    r: dict[str, float] = {}
    timed("warm-up count (not counted)", data.count, r)
    spark.conf.set("spark.databricks.delta.optimizeMetadataQuery.enabled", "false")  # a real scan, not the log
    n = timed("count() scan", data.count, r)
    timed("full scan (count of every column)", lambda: data.agg(*[F.count(c) for c in data.columns]).first()[0], r)
    spring = data.where((F.col("event_date") >= "2013-03-01") & (F.col("event_date") < "2013-05-01"))
    reference = timed("reference profile (training time, 2 months)", lambda: build_profile(spring, SPEC), r)
    policy = DriftPolicy()

    def drift():
        counts = daily_counts(data, reference)
        return len(day_summaries(window_drift(counts, sorted(counts), reference, policy), policy))

    days = timed("drift of every day (one pass + windows)", drift, r)
    print(f"\nrows: {n:,}; days: {days}; features: {len(SPEC.features)}")
    for base in ("count() scan", "full scan (count of every column)"):
        print(f"vs {base}: drift {r['drift of every day (one pass + windows)'] / r[base]:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
