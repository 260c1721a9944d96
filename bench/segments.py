"""Many models: training every segment through `groupBy(segment).applyInPandas` against a serial driver loop over
the same segments with the same per-segment work (ml.segments.train_one), in one run, on local[2].

Both read the same persisted training frame (the splits of real flights, with the global model's test predictions).
The loop is what a single machine does without the grouped map: for each segment, `where(segment = s).toPandas()`
on the driver, then the segment's study. Per segment column (carrier: 16 segments; dest: about 100), it reports both
wall times, the ratio, the per-segment cost of each, and whether both chose the same params for every segment.

    make bench-segments      # or: .venv/bin/python -m bench.segments --train-days 60 --trials 4 --columns carrier,dest
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from datetime import date

from pyspark import StorageLevel
from pyspark.sql import functions as F

from bench.tuning import load_splits
from bench.world import session
from ml.datasets.flights import SPEC
from ml.pipeline import build_pipeline
from ml.segments import SegmentConfig, train_grouped, train_one, training_frame
from ml.splits import SplitWindow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--end", default="2013-12-30")
    parser.add_argument("--train-days", type=int, default=60)
    parser.add_argument("--validation-days", type=int, default=15)
    parser.add_argument("--test-days", type=int, default=15)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--min-rows", type=int, default=SPEC.min_segment_rows)
    parser.add_argument("--columns", default="carrier,dest")
    args = parser.parse_args()

    spark = session("bench-segments", {"spark.sql.shuffle.partitions": "8"})
    window = SplitWindow.ending(date.fromisoformat(args.end), args.train_days, args.validation_days, args.test_days)
    splits, counts = load_splits(spark, tempfile.mkdtemp(prefix="bench-segments-"), window)
    print(f"splits train/validation/test {counts['train']}/{counts['validation']}/{counts['test']}", flush=True)
    global_model = build_pipeline(SPEC, "logistic_regression", {"maxIter": 20}).fit(splits["train"])
    config = SegmentConfig(n_trials=args.trials, min_rows=args.min_rows)

    report = []
    for column in args.columns.split(","):
        spec = replace(SPEC, segment_column=column)
        job = config.job(spec, has_global=True)
        frame = training_frame(spec, splits["train"], splits["validation"], splits["test"], global_model)
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        segments = sorted(r[0] for r in frame.select(column).distinct().collect())  # the names only
        frame.count()

        t0 = time.perf_counter()
        grouped = {r.segment: r for r in train_grouped(frame, column, job).collect()}
        grouped_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        serial = {s: train_one(s, frame.where(F.col(column) == s).toPandas(), job) for s in segments}
        serial_s = time.perf_counter() - t0
        frame.unpersist()

        same = all(
            grouped[s].params == serial[s]["params"] and grouped[s].status == serial[s]["status"] for s in segments
        )
        trained = sum(r.status == "trained" for r in grouped.values())
        own = sum(r.choice == "segment" for r in grouped.values())
        row = {
            "column": column,
            "segments": len(segments),
            "trained": trained,
            "own_model": own,
            "grouped_s": round(grouped_s, 2),
            "serial_s": round(serial_s, 2),
            "ratio": round(serial_s / grouped_s, 3),
            "grouped_s_per_segment": round(grouped_s / len(segments), 3),
            "serial_s_per_segment": round(serial_s / len(segments), 3),
            "same_choices": same,
            "per_segment_work_s": round(sum(r.seconds for r in grouped.values()), 2),
        }
        report.append(row)
        print(json.dumps(row), flush=True)
        if column == args.columns.split(",")[0]:
            print("segment | status | rows train/val/test | test metric | global metric | choice", flush=True)
            for s in segments:
                r = grouped[s]
                fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
                print(
                    f"{s} | {r.status} | {r.train_rows}/{r.validation_rows}/{r.test_rows} | {fmt(r.test_metric)} "
                    f"| {fmt(r.global_test_metric)} | {r.choice}",
                    flush=True,
                )

    print("\n| segment column | segments | trained | own model | grouped map | serial loop | ratio | per segment |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report:
        print(
            f"| {r['column']} | {r['segments']} | {r['trained']} | {r['own_model']} | {r['grouped_s']} s | "
            f"{r['serial_s']} s | **{r['ratio']}x** | {r['grouped_s_per_segment']} s vs {r['serial_s_per_segment']} s |"
        )
    spark.stop()


if __name__ == "__main__":
    main()
