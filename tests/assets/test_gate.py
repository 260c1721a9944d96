"""assets/gate.daily_gate, through a tiny gated asset of this file whose checks the test decides: which days are
written, what is recorded on each day (materializations, check evaluations and their targets), and the Failure a
run with failed days raises (`failed_days`, `written_days`, read by orchestration.run_pipeline).

The real gated assets (raw_data, validated_features) go through it in test_ingest.py and test_features.py."""

from collections import defaultdict

import pytest
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    DagsterInstance,
    DailyPartitionsDefinition,
    asset,
    materialize,
)

from assets.common import window_of
from assets.contracts import FAILED_DAYS, WRITTEN_DAYS
from assets.gate import daily_gate
from orchestration.lakehouse import LakehouseResource
from orchestration.resources import SparkResource
from orchestration.run_pipeline import held_by_the_gate
from tests.conftest import TEST_SPARK_CONF
from tests.world import check_evaluations, materializations

PROBE, CHECK, ROWS = "gate_probe", "probe_check", 2
probe_days = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-02-01")


class ProbeConfig(Config):
    failing: list[str] = []  # the days whose check fails
    value: int = 1  # written in every row, to tell the runs' rows apart
    shared_reason: bool = False  # every failed day gives the same reason
    own_message: bool = False  # all_failed() has a message of its own


@asset(
    name=PROBE,
    partitions_def=probe_days,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=[AssetCheckSpec(CHECK, asset=PROBE, blocking=True, partitions_def=probe_days)],
)
def gate_probe(context: AssetExecutionContext, config: ProbeConfig, lakehouse: LakehouseResource):
    window = window_of(context)
    rows = lakehouse.session.createDataFrame(
        [(d, config.value, i) for d in window.days for i in range(ROWS)], "event_date DATE, value INT, i INT"
    )
    checks = {
        d: [
            AssetCheckResult(
                asset_key=PROBE,
                check_name=CHECK,
                passed=d.isoformat() not in config.failing,
                metadata={"day": d.isoformat()},
            )
        ]
        for d in window.days
    }
    yield from daily_gate(
        context,
        lakehouse,
        PROBE,
        rows,
        window,
        checks,
        metadata=lambda commit: {"probe": "every day", "probe_commit": commit.version},
        day_metadata=lambda commit, d: {"probe": f"day {d}", "probe_commit": commit.version, "dagster/row_count": ROWS},
        reasons=lambda failed: (
            ["a shared reason"] * len(failed) if config.shared_reason else [f"{d} is bad" for d in failed]
        ),
        note="Look in the probe.",
        all_failed=lambda: "every day failed, said the probe" if config.own_message else None,
        failure_metadata={"probe_failure": True},
    )


@pytest.fixture(scope="module")
def probe(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    lake = LakehouseResource(
        spark=SparkResource(master="local[2]", spark_config=TEST_SPARK_CONF),
        root=str(root / "lakehouse"),
        catalog="main",
        schema_name="probe",
        model="m",
        staging_dir=str(root / "staging"),
    )
    with DagsterInstance.ephemeral() as instance:

        def run(first: str, last: str, **config):
            return materialize(
                [gate_probe],
                instance=instance,
                resources={"lakehouse": lake},
                raise_on_error=False,
                run_config={"ops": {PROBE: {"config": config}}},
                tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
            )

        yield run, lake


def table(lake) -> dict[str, list[int]]:
    out = defaultdict(list)
    for r in lake.read(PROBE).frame.collect():
        out[r.event_date.isoformat()].append(r.value)
    return {d: sorted(v) for d, v in sorted(out.items())}


def evaluations(result) -> dict[str, tuple[bool, str | None]]:
    """partition -> (passed, run id of the materialization the evaluation is aimed at)."""
    return {
        e.partition: (e.passed, e.target_materialization_data and e.target_materialization_data.run_id)
        for e in check_evaluations(result)
    }


def failure(result):
    return result.failure_data_for_node(PROBE).user_failure_data


def test_a_range_whose_days_all_pass_is_written_in_one_commit_and_recorded_on_every_day(probe):
    run, lake = probe
    result = run("2024-01-01", "2024-01-03")
    assert result.success
    version = lake.version(PROBE)
    written = {m.partition: {k: v.value for k, v in m.metadata.items()} for m in materializations(result, PROBE)}
    assert sorted(written) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    for meta in written.values():  # the one MaterializeResult, recorded on each day of the range
        assert meta["partition"] == "2024-01-01...2024-01-03" and meta["probe"] == "every day"
        assert meta["rows_written_in_run"] == 3 * ROWS and "dagster/row_count" not in meta
        assert meta["delta_version"] == meta["probe_commit"] == version  # the gate hands its commit to metadata()
    assert evaluations(result) == {d: (True, result.run_id) for d in written}  # aimed at this run's materializations
    assert {e.partition: e.metadata["day"].value for e in check_evaluations(result)} == {d: d for d in written}
    assert {d: v for d, v in table(lake).items() if d <= "2024-01-03"} == {d: [1] * ROWS for d in written}


def test_a_failed_day_keeps_its_rows_and_the_days_that_passed_are_written(probe):
    run, lake = probe
    first = run("2024-01-05", "2024-01-07", value=1)
    assert first.success
    version = lake.version(PROBE)
    result = run("2024-01-05", "2024-01-07", value=2, failing=["2024-01-06"])
    assert not result.success
    assert lake.version(PROBE) == version + 1  # one commit, of the two good days
    message = (
        f"gate_probe 2024-01-05...2024-01-07: 2024-01-06 is bad. The other 2 days were written "
        f"(Delta v{version + 1}); the failed day keeps its previous rows. Look in the probe."
    )
    assert failure(result).description == message
    meta = {k: v.value for k, v in failure(result).metadata.items()}
    assert meta == {FAILED_DAYS: ["2024-01-06"], WRITTEN_DAYS: ["2024-01-05", "2024-01-07"], "probe_failure": True}
    assert held_by_the_gate(result) == [message]  # `make run` reports it and goes on

    written = {m.partition: {k: v.value for k, v in m.metadata.items()} for m in materializations(result, PROBE)}
    assert sorted(written) == ["2024-01-05", "2024-01-07"]
    for day, m in written.items():  # each written day with its own metadata, not the range's
        assert (m["partition"], m["probe"], m["dagster/row_count"], m["delta_version"], m["probe_commit"]) == (
            day,
            f"day {day}",
            ROWS,
            version + 1,
            version + 1,
        )
    # the failed day's evaluation is aimed at the materialization it keeps: the first run's
    assert evaluations(result) == {
        "2024-01-05": (True, result.run_id),
        "2024-01-06": (False, first.run_id),
        "2024-01-07": (True, result.run_id),
    }
    assert {d: v for d, v in table(lake).items() if "2024-01-05" <= d <= "2024-01-07"} == {
        "2024-01-05": [2] * ROWS,
        "2024-01-06": [1] * ROWS,
        "2024-01-07": [2] * ROWS,
    }


@pytest.mark.parametrize("own_message", [False, True])
def test_a_run_whose_days_all_fail_writes_nothing(probe, own_message):
    run, lake = probe
    days = ("2024-01-10", "2024-01-11") if own_message else ("2024-01-13", "2024-01-14")
    if lake.version(PROBE) is None:  # the table exists, so that "nothing written" shows as an unchanged version
        run("2024-01-20", "2024-01-20")
    version = lake.version(PROBE)
    result = run(*days, failing=list(days), shared_reason=True, own_message=own_message)
    assert not result.success
    assert lake.version(PROBE) == version
    assert materializations(result, PROBE) == []
    expected = (
        "every day failed, said the probe"
        if own_message
        else f"gate_probe {days[0]}...{days[1]}: a shared reason. Nothing was written to gate_probe; the failed "
        "days keep their previous rows. Look in the probe."
    )  # a reason shared by two days, told once
    assert failure(result).description == expected
    assert failure(result).metadata[WRITTEN_DAYS].value == [] and failure(result).metadata[FAILED_DAYS].value == list(
        days
    )
    assert held_by_the_gate(result) == []  # nothing written: `make run` stops
    assert evaluations(result) == {d: (False, None) for d in days}  # never materialized: no target
    assert not set(days) & set(table(lake))
