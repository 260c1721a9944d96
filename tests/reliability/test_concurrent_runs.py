"""Two `dagster asset materialize` processes, two runs as the UI or a schedule launches them (each its own process and
JVM), materialize different days of raw_data at once, round after round, on one Dagster instance and lakehouse:
every run's commit is in the Delta log, on a version of its own, the versions are contiguous, and each day holds
exactly the source's rows of that day, counted in Python from the CSV."""

import json

import pytest
from dagster import AssetKey, DagsterRunStatus
from delta.tables import DeltaTable

from tests.reliability.processes import deployment

pytestmark = pytest.mark.reliability

ROUNDS = 3
DAYS = ("2013-02-01", "2013-02-02")


def materialize_raw(d, day: str, round_: int):
    return d.dagster(
        f"raw-{day}-{round_}",
        "asset",
        "materialize",
        "-m",
        "orchestration.definitions",
        "--select",
        "raw_data,raw_quarantine",  # the raw_data step, whole (a multi-asset)
        "--partition",
        day,
    )


def test_two_cli_runs_on_different_days_of_one_table_lose_no_commit(spark, flights_source, tmp_path):
    d = deployment(tmp_path, flights_source.folder)
    instance = d.instance()
    assert instance.get_runs() == []  # the instance's storage exists before two processes open it at once

    rounds = []
    for round_ in range(ROUNDS):
        procs = [materialize_raw(d, day, round_) for day in DAYS]  # started together
        for p in procs:
            p.succeeded(timeout=900)
        rounds.append(procs)

    records = instance.get_run_records()
    assert len(records) == 2 * ROUNDS and {r.dagster_run.status for r in records} == {DagsterRunStatus.SUCCESS}
    runs = {r.dagster_run.run_id: r for r in records}
    by_day = {day: [r for r in records if r.dagster_run.tags["dagster/partition"] == day] for day in DAYS}
    assert {day: len(rs) for day, rs in by_day.items()} == {day: ROUNDS for day in DAYS}
    # The two runs of each round overlapped in time: the race was real. Runs start in the order they were created.
    ordered = sorted(records, key=lambda r: r.start_time)
    for a, b in zip(ordered[::2], ordered[1::2], strict=True):
        assert b.start_time < a.end_time, "the two runs of a round did not overlap"

    path = d.state / "lakehouse" / "main" / "flights" / "raw_data"
    history = DeltaTable.forPath(spark, str(path)).history().select("version", "userMetadata", "operationMetrics")
    history = history.collect()  # one row per commit: 2 * ROUNDS
    assert sorted(h["version"] for h in history) == list(range(2 * ROUNDS))  # contiguous, none lost
    commits = {json.loads(h["userMetadata"])["dagster_run_id"]: h for h in history}
    assert set(commits) == set(runs)  # one commit per run, each run's own

    materializations = {
        e.run_id: e.asset_materialization
        for e in (r.event_log_entry for r in instance.fetch_materializations(AssetKey("raw_data"), limit=100).records)
    }
    assert set(materializations) == set(runs)
    expected = flights_source.rows_per_day
    for run_id, commit in commits.items():
        day = runs[run_id].dagster_run.tags["dagster/partition"]
        meta = {k: v.value for k, v in materializations[run_id].metadata.items()}
        assert (materializations[run_id].partition, meta["delta_version"]) == (day, commit["version"])
        assert meta["dagster/row_count"] == int(commit["operationMetrics"]["numOutputRows"]) == expected[day]

    counts = spark.read.format("delta").load(str(path)).groupBy("event_date").count().collect()
    assert {r["event_date"].isoformat(): r["count"] for r in counts} == {day: expected[day] for day in DAYS}
    retries = sum(
        int(m.metadata["delta_conflict_retries"].value)
        for m in materializations.values()
        if "delta_conflict_retries" in m.metadata
    )
    shown = {day: expected[day] for day in DAYS}
    print(
        f"\n{2 * ROUNDS} `dagster asset materialize` runs in {ROUNDS} rounds of 2 at once: {len(history)} commits, "
        f"versions 0..{2 * ROUNDS - 1}, conflicts retried: {retries}, commits lost: 0; rows per day {shown}"
    )
