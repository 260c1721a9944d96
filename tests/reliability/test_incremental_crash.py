"""Incremental scoring's exactly-once guarantee, with a real process SIGKILLed (its whole group: the JVM too) in the
middle of a micro-batch and restarted from its checkpoint: every feature row then has exactly one prediction, scored
from its latest version, with nothing missing and no duplicates.

Two kill points: between a batch's MERGE commit and the checkpoint's (the restart replays that batch; Delta's
idempotent write, txnAppId/txnVersion, skips it), and at an arbitrary moment inside the next batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta

import pytest
from pyspark.sql import functions as F

from ml import delta_io
from ml.columns import FEATURES_VERSION
from ml.pipeline import build_pipeline
from ml.scoring import score
from orchestration.deployments import REPO_ROOT
from tests.reliability.incremental_runner import MODEL
from tests.reliability.processes import JVM_OPTIONS, Process
from tests.unit.tiny import tiny_features, tiny_spec

pytestmark = pytest.mark.reliability

SPEC = tiny_spec()
DAYS = 6
ROWS = 120  # 20 a day
FIRST = date(2024, 1, 1)
REWRITTEN = FIRST + timedelta(days=2)  # day 3 is corrected after the first load


def seed(spark, root):
    """The tiny feature table written one day per commit (versions 0..5), then day 3 rewritten (version 6) with
    changed features and two rows fewer; the model, saved. Returns the current features."""
    features = tiny_features(spark, n=ROWS, days=DAYS).coalesce(1)
    path = str(root / "features")
    for i in range(DAYS):
        day = FIRST + timedelta(days=i)
        delta_io.write_partitions(
            features.where(F.col("event_date") == day),
            path,
            day,
            day + timedelta(days=1),
            properties=delta_io.CHANGE_FEED_PROPERTIES,
        )
    dropped = [r["id"] for r in features.where(F.col("event_date") == REWRITTEN).orderBy("id").limit(2).collect()]
    corrected = features.where((F.col("event_date") == REWRITTEN) & ~F.col("id").isin(dropped)).withColumn(
        "x1", F.col("x1") * -1.0
    )
    delta_io.write_partitions(
        corrected, path, REWRITTEN, REWRITTEN + timedelta(days=1), properties=delta_io.CHANGE_FEED_PROPERTIES
    )
    build_pipeline(SPEC, "logistic_regression", {"maxIter": 10}).fit(features).write().overwrite().save(
        str(root / "model")
    )
    return spark.read.format("delta").load(path)


def runner(root, name: str, *args: str) -> Process:
    log = root / f"{name}.log"
    tmpdir = root / "tmp" / name
    tmpdir.mkdir(parents=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FLIGHTLINE_"))},
        "PYTHONPATH": str(REPO_ROOT),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "JAVA_TOOL_OPTIONS": JVM_OPTIONS,
        "TMPDIR": str(tmpdir),
    }
    with open(log, "w") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.incremental_runner", str(root), *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log, tmpdir)


def lines(proc: Process) -> list[dict]:
    return [json.loads(line) for line in proc.text().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("kill_point", ["after_merge", "inside_a_batch"])
def test_a_query_killed_mid_batch_and_restarted_scores_every_row_exactly_once(spark, tmp_path, kill_point):
    features = seed(spark, tmp_path)
    if kill_point == "after_merge":
        first = runner(tmp_path, "first", "--pause-after", "2")
        first.wait_for(r'\{"paused": 2\}', timeout=900)
    else:
        first = runner(tmp_path, "first")
        first.wait_for(r'\{"batch": 2, ', timeout=900)
        time.sleep(0.4)  # into batch 3: reading, scoring or merging
    first.kill()  # SIGKILL the group: Python and the JVM, mid-batch
    assert first.popen.returncode == -9
    before = lines(first)
    assert [b["batch"] for b in before if "batch" in b][:3] == [0, 1, 2]
    assert not any("done" in b for b in before)

    second = runner(tmp_path, "second")
    second.succeeded(timeout=1200)
    after = lines(second)
    assert after[-1]["done"] >= 1
    if kill_point == "after_merge":
        # batch 2's MERGE had committed, its checkpoint entry had not: the restart replays it and Delta skips it
        assert after[0] == {"batch": 2, "outcome": "replayed", "query": before[0]["query"]}
        assert after[-1]["replayed"] == 1
    assert {b["query"] for b in after if "query" in b} == {before[0]["query"]}  # the same query, from its checkpoint

    keys = list(SPEC.key_columns)
    predictions = spark.read.format("delta").load(str(tmp_path / "predictions"))
    assert predictions.groupBy(*keys).count().where("count > 1").count() == 0  # no duplicates
    assert features.join(predictions, keys, "left_anti").count() == 0  # nothing missing
    assert predictions.join(features, keys, "left_anti").count() == 0  # the corrected day's dropped rows are gone
    assert predictions.count() == features.count() == ROWS - 2
    rewritten = predictions.where(F.col("event_date") == REWRITTEN)
    assert {r[0] for r in rewritten.select(FEATURES_VERSION).distinct().collect()} == {DAYS}  # from the correction
    from pyspark.ml import PipelineModel

    expected = score(features, PipelineModel.load(str(tmp_path / "model")), MODEL, SPEC)
    joined = predictions.alias("p").join(expected.alias("e"), keys)
    assert joined.where(F.abs(F.col("p.probability") - F.col("e.probability")) > 1e-12).count() == 0
    assert joined.count() == ROWS - 2
    third = runner(tmp_path, "third")  # nothing new: no batch, nothing written
    version = delta_io.current_version(spark, str(tmp_path / "predictions"))
    third.succeeded(timeout=900)
    assert lines(third)[-1] == {"done": 0, "replayed": 0, "rows": 0}
    assert delta_io.current_version(spark, str(tmp_path / "predictions")) == version
