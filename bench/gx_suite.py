"""Cost of the feature suite on ~1M rows (flights upsampled 3x) as a ratio to one full count() scan.

    make bench-gx      # or: .venv/bin/python -m bench.gx_suite --copies 3
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import functions as F

from bench.data import million_rows, timed
from ml.datasets.flights import SPEC
from ml.features import with_derived
from ml.quality import feature_suite, run_suite, with_key_column
from ml.quarantine import annotate, count as quarantine_count


def main() -> None:
    spark, data, copies, tmp = million_rows("gx")
    days = 365 * copies
    suite = feature_suite(SPEC, days=days)
    r: dict[str, float] = {}
    timed("warm-up count (not counted)", data.count, r)
    timed("count(), Delta answers from its log", data.count, r)
    spark.conf.set("spark.databricks.delta.optimizeMetadataQuery.enabled", "false")
    n = timed("count() scan", data.count, r)
    timed("full scan (count of every column)", lambda: data.agg(*[F.count(c) for c in data.columns]).first()[0], r)
    timed("feature suite, SUMMARY (as before)", lambda: run_suite(with_key_column(data, SPEC), suite, fast=False).success, r)
    timed("feature suite (fast path)", lambda: run_suite(with_key_column(data, SPEC), suite).success, r)

    def cached_suite():  # what validated_features does: the frame is persisted once, GX reads memory
        frame = with_key_column(data, SPEC).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            frame.count()
            return run_suite(frame, suite).success
        finally:
            frame.unpersist()

    timed("feature suite (fast path, persisted first)", cached_suite, r)
    raw_derived = with_derived(spark.read.format("delta").load(tmp + "/raw"), SPEC)
    timed("row-level rules: annotate + count", lambda: quarantine_count(annotate(raw_derived, SPEC), SPEC).quarantined, r)
    print(f"\nrows: {n:,}")
    for base in ("count() scan", "full scan (count of every column)"):
        print(f"vs {base}: suite SUMMARY {r['feature suite, SUMMARY (as before)'] / r[base]:.2f}x, "
              f"suite fast path {r['feature suite (fast path)'] / r[base]:.2f}x, "
              f"persisted first {r['feature suite (fast path, persisted first)'] / r[base]:.2f}x (target <= 3x), "
              f"row-level rules {r['row-level rules: annotate + count'] / r[base]:.2f}x")


if __name__ == "__main__":
    main()
