"""Two writers overwrite one whole (unpartitioned) Delta table at once, round after round, as two runs of a split
asset (train_set, ...) would: every overwrite commits once, on a version of its own, and returns its own commit."""

import json
import threading

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from ml import delta_io

pytestmark = pytest.mark.reliability  # a few minutes of racing commits: make test-reliability

ROUNDS = 10
WRITERS = ("a", "b")


def rows(spark, writer, round_):
    return spark.range(0, 3, 1, 1).select("id", F.lit(writer).alias("writer"), F.lit(round_).alias("round"))


def test_concurrent_overwrites_retry_their_conflicts_and_each_finds_its_own_commit(spark, tmp_path):
    path = str(tmp_path / "whole")
    first = delta_io.overwrite_table(rows(spark, "setup", -1), path)
    assert (first.version, first.conflict_retries) == (0, 0)
    barrier = threading.Barrier(len(WRITERS), timeout=300)
    commits, errors = {}, []

    def writer(name):
        try:
            for round_ in range(ROUNDS):
                barrier.wait()  # both start each round together, so their transactions overlap
                metadata = json.dumps({"writer": name, "round": round_})
                commits[(name, round_)] = delta_io.overwrite_table(rows(spark, name, round_), path, metadata)
        except Exception as exc:  # handed to the test thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(name,)) for name in WRITERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    assert len(commits) == 2 * ROUNDS
    assert sorted(c.version for c in commits.values()) == list(range(1, 1 + 2 * ROUNDS))  # distinct, none lost
    history = DeltaTable.forPath(spark, path).history().select("version", "operation", "userMetadata").collect()
    assert sorted(h["version"] for h in history) == list(range(1 + 2 * ROUNDS))  # exactly 1 + 2*rounds commits
    by_version = {h["version"]: json.loads(h["userMetadata"]) for h in history}
    for (name, round_), commit in commits.items():  # the commit each write returned is its own, not the latest
        assert {k: v for k, v in by_version[commit.version].items() if k != "write_id"} == {
            "writer": name,
            "round": round_,
        }
        assert (commit.operation, commit.rows_written) == ("WRITE", 3)
    assert len({m["write_id"] for m in by_version.values()}) == 1 + 2 * ROUNDS
    retried = sum(c.conflict_retries for c in commits.values())
    assert retried >= 1, "the writers never raced: the test did not exercise a conflict"
    last = max(commits.values(), key=lambda c: c.version)
    winner = next(key for key, c in commits.items() if c is last)
    assert [(r["writer"], r["round"]) for r in spark.read.format("delta").load(path).collect()] == [winner] * 3
    print(f"\n{2 * ROUNDS} concurrent overwrites; conflicts retried: {retried}")
