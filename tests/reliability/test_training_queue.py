"""The daemon's run queue serializes two training runs of one model (the `flightline/promotion` tag limit of
infra/dagster.yaml): real `dagster job launch` and `dagster-daemon run` processes on a deployment of their own
(tests/reliability/training.py)."""

from __future__ import annotations

import time

import pytest

from ml.datasets.flights import SPEC
from ml.registry import CHAMPION
from orchestration.rollback import PROMOTION_TAG
from tests.reliability.processes import materializations
from tests.reliability.training import GOOD, training_config

pytestmark = pytest.mark.reliability


def test_the_daemon_runs_two_training_runs_of_one_model_one_after_the_other(world):
    """`dagster job launch` submits to the instance's run queue (QueuedRunCoordinator, infra/dagster.yaml); the daemon
    dequeues a run only while no other run with the same `flightline/promotion` tag is in progress."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    instance = world.d.instance()
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"  # Dagster's default, with our limit:
    assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits == [
        {"key": PROMOTION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    known = {r.run_id for r in instance.get_runs()}
    champion = world.aliases().get(CHAMPION, "")  # the race test's, or none when this test runs alone
    daemon = world.d.start("daemon", "dagster-daemon", "run", "-w", "workspace.yaml")
    try:
        daemon.wait_for(r"QueuedRunCoordinatorDaemon", timeout=300)
        config = world.d.config("queued", training_config(GOOD))
        for n in (1, 2):
            launch = world.d.dagster(
                f"launch-{n}", "job", "launch", "-w", "workspace.yaml", "-j", "training_job", "-c", str(config)
            )
            launch.succeeded(timeout=300)
        runs = sorted(
            (r for r in instance.get_runs(RunsFilter(job_name="training_job")) if r.run_id not in known),
            key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp,
        )
        assert len(runs) == 2
        ids = [r.run_id for r in runs]
        seen = set()
        deadline = time.monotonic() + 1500
        while True:
            statuses = tuple(instance.get_run_by_id(i).status for i in ids)
            seen.add(statuses)
            if all(
                s in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED) for s in statuses
            ):
                break
            assert time.monotonic() < deadline and daemon.popen.poll() is None, f"{statuses}:\n{daemon.tail()}"
            time.sleep(0.5)
    finally:
        daemon.shut_down()

    assert statuses == (DagsterRunStatus.SUCCESS, DagsterRunStatus.SUCCESS)
    assert (DagsterRunStatus.STARTED, DagsterRunStatus.QUEUED) in seen  # the second waited in the queue
    records = [instance.get_run_record_by_id(i) for i in ids]
    assert all(r.dagster_run.tags[PROMOTION_TAG] == SPEC.model_name for r in records)
    assert records[1].start_time >= records[0].end_time  # started only after the first had ended

    def when(run_id, event_type):
        [record] = instance.get_records_for_run(run_id, of_type=event_type).records
        return record.event_log_entry.timestamp

    # The second was in the queue before the first ended, and was launched (RUN_STARTING) only after it ended.
    assert when(ids[1], DagsterEventType.RUN_ENQUEUED) < when(ids[0], DagsterEventType.RUN_SUCCESS)
    assert when(ids[1], DagsterEventType.RUN_STARTING) >= when(ids[0], DagsterEventType.RUN_SUCCESS)
    decisions = []
    for run_id in ids:
        meta = materializations(instance, run_id)["registered_model"]
        version = str(meta["model_version"])
        tags = world.tags(version)
        assert tags["gate.rounds"] == "1"  # one after the other: no gate saw @champion move
        decisions.append((version, tags["gate.champion_version"], tags["gate.decision"]))
    assert decisions[0][1] == champion
    assert decisions[1][1] == (decisions[0][0] if decisions[0][2] == "promoted" else champion)
    print(
        f"\ndaemon: run 2 queued while run 1 ran; run 1 {records[0].start_time:.0f}-{records[0].end_time:.0f}, "
        f"run 2 started {records[1].start_time - records[0].end_time:.1f} s after run 1 ended; gates {decisions}"
    )
