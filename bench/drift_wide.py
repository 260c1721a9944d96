"""The drift's Spark pass on wider datasets: one pass for all features (before) vs. passes under
ml.drift.CODE_BUDGET (after), as ratios to one count() scan in the same run.

Why: whole-stage codegen puts a pass's per-row work in one Java method, and HotSpot never JIT-compiles a
method over 8,000 bytes. Flights' 16 features made 7,685 bytes; a spec with more features crossed the limit.

Data: ~1M rows over 365 days with 64 DOUBLE features (2% NULL) and 3 categoricals (5, 30 and 100 values:
the last has values beyond the profile's top 30), written once as a Delta table; specs of its first 16, 32
and 64 numeric features + the 3 categoricals; plus the flights features upsampled 3x (bench/data.py). For
each: the largest generated method of the pass (bytes, from Spark's codegen debug), then `--rounds` rounds
of count() / before / after `daily_counts` (before first in odd rounds, after first in even ones), checked
equal, and one build_profile (2 months) each way.

    make bench-drift-wide      # or: .venv/bin/python -m bench.drift_wide --rounds 2 [--specs flights,16,32,64]
"""

from __future__ import annotations

import statistics
import time

from pyspark.sql import functions as F

import ml.drift as drift
from bench.data import copies_parser, million_rows
from ml.dataset import DatasetSpec, table_source
from ml.datasets.flights import SPEC as FLIGHTS

WIDTHS = (16, 32, 64)
ONE_PASS = 10**9  # a budget every spec fits: the code as it was before passes


def wide_table(spark, tmp: str, rows: int = 1_010_328, numeric: int = max(WIDTHS)):
    columns = [F.date_add(F.lit("2013-01-01").cast("date"), (F.col("id") % 365).cast("int")).alias("event_date")]
    columns += [F.when(F.rand(1000 + i) > 0.02, F.randn(i) * (i + 1) + i).alias(f"n{i}") for i in range(numeric)]
    columns += [
        F.concat(F.lit(f"c{j}_"), (F.rand(2000 + j) * k).cast("int").cast("string")).alias(f"c{j}")
        for j, k in enumerate((5, 30, 100))
    ]
    spark.range(rows).select(*columns).write.format("delta").save(tmp + "/wide")
    return spark.read.format("delta").load(tmp + "/wide")


def wide_spec(numeric: int) -> DatasetSpec:
    return DatasetSpec(
        name=f"wide{numeric}",
        load_source=table_source("delta", "/unused"),
        source_description="bench",
        event_time="ts",
        key_columns=("id",),
        label_expr="1",
        task="classification",
        numeric_features=tuple(f"n{i}" for i in range(numeric)),
        categorical_features=("c0", "c1", "c2"),
        start_date="2024-01-01",
    )


def largest_method(spark, df) -> int:
    """Bytes of the largest generated method in `df`'s plan, compiled without adaptive execution (AQE plans
    its stages only when they run)."""
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    try:
        debug = getattr(getattr(spark._jvm.org.apache.spark.sql.execution.debug, "package$"), "MODULE$")
        stages = debug.codegenStringSeq(df._jdf.queryExecution().executedPlan())
        return max(stages.apply(i)._3().maxMethodCodeSize() for i in range(stages.size()))
    finally:
        spark.conf.unset("spark.sql.adaptive.enabled")


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def with_budget(budget: int, fn):
    saved, drift.CODE_BUDGET = drift.CODE_BUDGET, budget
    try:
        return fn()
    finally:
        drift.CODE_BUDGET = saved


def measure(spark, name: str, data, spec: DatasetSpec, rounds: int) -> dict:
    spring = data.where((F.col("event_date") >= "2013-03-01") & (F.col("event_date") < "2013-05-01"))
    profile_before, reference = with_budget(ONE_PASS, lambda: seconds(lambda: drift.build_profile(spring, spec)))
    profile_after, again = seconds(lambda: drift.build_profile(spring, spec))
    assert again == reference, f"{name}: the profile changed"
    profiles = list(reference.features.values())

    def method_bytes():
        return largest_method(spark, drift._code_counts(data, profiles, ["event_date"]))

    sizes = {"before": with_budget(ONE_PASS, method_bytes), "after": method_bytes()}
    print(
        f"\n{name}: {len(profiles)} features, passes after: {[len(p) for p in drift._passes(profiles)]}, largest "
        f"method {sizes['before']:,} -> {sizes['after']:,} bytes; build_profile {profile_before:.2f}s -> "
        f"{profile_after:.2f}s",
        flush=True,
    )
    times = []
    for i in range(rounds):
        count, _ = seconds(data.count)
        runs = {
            "before": lambda: with_budget(ONE_PASS, lambda: seconds(lambda: drift.daily_counts(data, reference))),
            "after": lambda: seconds(lambda: drift.daily_counts(data, reference)),
        }
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]  # neither always runs on the other's heels
        timed = {which: runs[which]() for which in order}
        (before, old), (after, new) = timed["before"], timed["after"]
        assert new == old, f"{name}: the counts changed"
        times.append({"count": count, "before": before, "after": after})
        print(
            f"  round {i + 1}: count() {count:.2f}s  before {before:.2f}s ({before / count:.1f}x)  "
            f"after {after:.2f}s ({after / count:.1f}x)  after/before {after / before:.2f}",
            flush=True,
        )
    median = {k: statistics.median(t[k] for t in times) for k in ("count", "before", "after")}
    return {"name": name, "sizes": sizes, **median, "profile": (profile_before, profile_after)}


def main() -> None:
    parser = copies_parser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--specs",
        type=lambda text: text.split(","),
        default=["flights", *map(str, WIDTHS)],
        help="comma-separated, of: flights,16,32,64",
    )
    args = parser.parse_args()
    spark, flights, _, tmp = million_rows("drift-wide", args)
    spark.conf.set("spark.databricks.delta.optimizeMetadataQuery.enabled", "false")  # a real scan, not the log
    widths = [n for n in WIDTHS if str(n) in args.specs]
    wide = wide_table(spark, tmp) if widths else flights
    print(f"rows: flights {flights.count():,}, wide {wide.count():,}", flush=True)
    results = [measure(spark, "flights", flights, FLIGHTS, args.rounds)] if "flights" in args.specs else []
    results += [measure(spark, f"{n} numeric + 3 categorical", wide, wide_spec(n), args.rounds) for n in widths]
    print(f"\nmedians of {args.rounds} rounds (round 1 includes compiling the generated code):")
    print(
        f"{'spec':<28}{'method bytes':>16}{'count()':>9}{'before':>9}{'after':>9}{'before/count':>14}"
        f"{'after/count':>13}{'after/before':>14}{'profile b/a':>14}"
    )
    for r in results:
        print(
            f"{r['name']:<28}{r['sizes']['before']:>7,} -> {r['sizes']['after']:<6,}{r['count']:>8.2f}s"
            f"{r['before']:>8.2f}s{r['after']:>8.2f}s"
            f"{r['before'] / r['count']:>13.1f}x{r['after'] / r['count']:>12.1f}x"
            f"{r['after'] / r['before']:>14.2f}{r['profile'][0]:>7.1f}/{r['profile'][1]:.1f}s"
        )


if __name__ == "__main__":
    main()
