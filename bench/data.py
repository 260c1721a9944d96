"""Bench data: the flights year upsampled to ~1M rows, written as a features Delta table."""

from __future__ import annotations

import time

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ml.dataset import SourceContext
from ml.datasets.flights import SPEC
from ml.features import select_features, with_derived, with_event_date


def timed(label, fn, results):
    t0 = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - t0
    print(f"{label:<44} {results[label]:7.2f}s  {value}", flush=True)
    return value


def upsampled_features(spark: SparkSession, tmp: str, copies: int) -> DataFrame:
    """`copies` copies of the year (flight numbers shifted so keys stay unique); raw at tmp/raw, features at
    tmp/features. Returns the features table as read back from Delta."""
    source = with_event_date(SPEC.load_source(spark, SourceContext(tmp + "/staging")), SPEC)
    upsampled = source
    for i in range(1, copies):
        upsampled = upsampled.unionByName(source.withColumn("flight", F.col("flight") + 10_000 * i))
    upsampled.write.format("delta").save(tmp + "/raw")
    features = select_features(with_derived(spark.read.format("delta").load(tmp + "/raw"), SPEC), SPEC)
    features.write.format("delta").save(tmp + "/features")
    return spark.read.format("delta").load(tmp + "/features")


def copies_parser():
    """The bench's command line: `--copies` (default 3: 1,010,328 rows); a bench may add its own options."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=3)
    return parser


def million_rows(name: str, args=None):
    """The bench's SparkSession (local[2]) and the upsampled features table, from `args.copies` (parsed by
    `copies_parser` when not given). Returns (spark, features, copies, tmp folder)."""
    import tempfile

    from bench.world import session

    args = args or copies_parser().parse_args()
    spark = session(f"bench-{name}", {"spark.sql.shuffle.partitions": "8"})
    tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
    return spark, upsampled_features(spark, tmp, args.copies), args.copies, tmp
