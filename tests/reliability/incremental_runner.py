"""One incremental-scoring process of tests/reliability/test_incremental_crash.py: ml.incremental.score_changes over
the tiny feature table under ROOT, printing one JSON line per micro-batch (after its MERGE, before the checkpoint
records it) and a last line with the result.

    python -m tests.reliability.incremental_runner ROOT [--pause-after BATCH]

`--pause-after BATCH`: after that batch's MERGE has committed, print `{"paused": BATCH}` and sleep, so that a test can
SIGKILL the process exactly between the MERGE's commit and the checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ml.incremental import IncrementalSettings, score_changes
from ml.scoring import ResolvedModel
from tests.unit.tiny import tiny_spec

TINY_SPARK = {
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "1",  # Delta's default 50 tasks per log replay, per batch
}
MODEL = ResolvedModel("main.tiny.incremental", "1", "run-1", "models:/main.tiny.incremental/1")
FILES_PER_BATCH = 1


def main(root: str, pause_after: int | None) -> None:
    from pyspark.ml import PipelineModel

    from ml.spark import get_or_create_session

    spark = get_or_create_session(master="local[1]", conf=TINY_SPARK, app_name="incremental-runner")
    spark.sparkContext.setLogLevel("ERROR")
    base = Path(root)
    pipeline = PipelineModel.load(str(base / "model"))

    def on_batch(report) -> None:
        print(json.dumps({"batch": report.batch_id, "outcome": report.outcome, "query": report.query_id}), flush=True)
        if report.batch_id == pause_after:
            print(json.dumps({"paused": report.batch_id}), flush=True)
            while True:
                time.sleep(60)

    result = score_changes(
        spark,
        str(base / "features"),
        str(base / "predictions"),
        str(base / "checkpoint"),
        pipeline,
        MODEL,
        tiny_spec(),
        IncrementalSettings(starting_version=0, max_files_per_trigger=FILES_PER_BATCH),
        on_batch=on_batch,
    )
    print(
        json.dumps({"done": len(result.batches), "replayed": result.replayed, "rows": result.rows_scored}), flush=True
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--pause-after", type=int)
    args = parser.parse_args()
    main(args.root, args.pause_after)
