"""The ONNX export's conversion of a tree ensemble: each ensemble read in one pass, against the converter's own way.

    make bench-onnx-convert [ARGS="--trees 20 80 --rounds 3"]

A random forest and a GBT of ml/pipeline.py's stages, fitted on NYC flights 2013-01-01..07 (our features: the
spec's numeric and categorical columns), are converted by `ml.onnx_export.raw_convert` in turn:
- **one pass:** as registration converts them (`trees_read_once`: one save of the ensemble, one read of its nodes);
- **baseline:** onnxmltools' own path, a Spark save and read per tree (`trees_read_once` replaced by a no-op).
The two alternate, `--rounds` times per model; each pair's ratio is baseline / one pass, and both graphs must be the
same bytes (else the bench fails). Conversion only: the parity check that follows it in `export_version` is the
same for both.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from datetime import date

from bench.world import session
from ml import onnx_export as ox
from ml.dataset import LABEL, SourceContext
from ml.datasets.flights import SPEC
from ml.features import build_features, raw_window
from ml.pipeline import build_pipeline


def timed(fitted, spark) -> tuple[float, bytes]:
    started = time.perf_counter()
    graph = ox.raw_convert(fitted, SPEC, spark)
    return time.perf_counter() - started, graph.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, nargs="+", default=[20, 80])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spark = session("flightline-bench-onnx")
    own = ox.trees_read_once
    with tempfile.TemporaryDirectory() as tmp:
        tempfile.tempdir = tmp  # the converter's per-tree folders land here, and go with it
        source = SPEC.load_source(spark, SourceContext(tmp + "/staging"))
        train = build_features(raw_window(source, SPEC, date(2013, 1, 1), date(2013, 1, 8)), SPEC)
        train = train.where(f"{LABEL} IS NOT NULL").cache()
        print(f"training rows {train.count():,}")
        print("| model | trees | one pass (s, median) | baseline (s, median) | ratio per pair | median ratio |")
        print("|---|---:|---:|---:|---|---:|")
        for algorithm in ("random_forest", "gbt"):
            for trees in args.trees:
                params = {"numTrees": trees, "maxDepth": 6} if algorithm == "random_forest" else {"maxIter": trees}
                fitted = build_pipeline(SPEC, algorithm, {**params, "maxDepth": 6}).fit(train)
                ours, theirs = [], []
                for _ in range(args.rounds):
                    t_ours, g_ours = timed(fitted, spark)
                    ox.trees_read_once = lambda pipeline, spark: contextlib.nullcontext()
                    try:
                        t_theirs, g_theirs = timed(fitted, spark)
                    finally:
                        ox.trees_read_once = own
                    if g_ours != g_theirs:
                        raise SystemExit(f"{algorithm} {trees}: the two conversions differ")
                    ours.append(t_ours)
                    theirs.append(t_theirs)
                ratios = [b / a for a, b in zip(ours, theirs, strict=True)]
                print(
                    f"| {algorithm} | {trees} | {statistics.median(ours):.2f} | {statistics.median(theirs):.2f} | "
                    f"{', '.join(f'{r:.1f}' for r in ratios)} | {statistics.median(ratios):.1f}x |"
                )


if __name__ == "__main__":
    main()
