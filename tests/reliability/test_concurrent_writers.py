"""Two processes (two JVMs, as two Dagster runs are) write different days of one Delta table at once, many times:
no commit is lost, every write gets its own version, and each day holds its last write's rows."""

import json

import pytest
from delta.tables import DeltaTable

from ml.datasets.flights import SPEC
from orchestration.deployments import local_resources
from tests.reliability.writer import start

pytestmark = pytest.mark.reliability

ROUNDS = 8
DAYS = ("2013-01-01", "2013-01-02")
ROWS = 3


def race(state, unlocked=False):
    """Start one writer per day, release them together, and return what each printed."""
    procs = [start(state, day, ROUNDS, *(["--unlocked"] if unlocked else [])) for day in DAYS]
    for p in procs:  # each has its session and is about to write
        assert json.loads(p.stdout.readline()) == {"ready": DAYS[procs.index(p)]}
    for p in procs:
        p.stdin.write("\n")
        p.stdin.flush()
    outputs = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        outputs.append([json.loads(line) for line in out.splitlines() if line.strip()])
    return [p.returncode for p in procs], outputs


def test_two_processes_writing_days_of_one_table_lose_no_commit(spark, tmp_path):
    codes, outputs = race(tmp_path)
    assert codes == [0, 0]
    writes = [w for out in outputs for w in out]
    assert len(writes) == 2 * ROUNDS and all(w["rows"] == ROWS for w in writes)
    assert sorted(w["version"] for w in writes) == list(range(2 * ROUNDS))  # one version each, none shared

    path = local_resources(SPEC, state=tmp_path)["lakehouse"].table_path("contended")
    history = DeltaTable.forPath(spark, path).history().select("version", "userMetadata").collect()
    assert sorted(h["version"] for h in history) == list(range(2 * ROUNDS))  # every commit is in the log
    by_run = {json.loads(h["userMetadata"])["dagster_run_id"]: h["version"] for h in history}
    assert by_run == {f"{w['day']}-{w['round']}": w["version"] for w in writes}  # and it is the writer's own
    rows = spark.read.format("delta").load(path).groupBy("event_date", "round").count().collect()
    assert {(r["event_date"].isoformat(), r["round"], r["count"]) for r in rows} == {
        (day, ROUNDS - 1, ROWS) for day in DAYS
    }  # each day holds exactly its last write
    print(
        f"\n{2 * ROUNDS} writes by 2 processes; conflicts retried: {sum(w['retries'] for w in writes)}; commits lost: 0"
    )
