"""Launch a backfill as the Dagster daemon does, in this process: the backfill is planned by Dagster's own
backfill loop, so `BackfillPolicy.single_run()` decides how many runs a range becomes.

This uses Dagster's test utilities (private modules, `dagster._core` / `dagster._daemon`): there is no public
API that runs the daemon's planning without a daemon process. Runs execute synchronously in this process
(`SyncInMemoryRunLauncher`), so they share the session's SparkSession.
"""

import importlib
import logging
import os
import sys
import time

from dagster import AssetKey, DagsterInstance, DagsterRun
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import RunsFilter
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_backfill_id
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration

LOCATION = "tests.integration.world_location"
IN_PROCESS = {
    "run_launcher": {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    },
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
}


def run_backfill(state, assets: list[str], partitions: list[str], max_iterations: int = 5):
    """The finished backfill and its runs. `state` is a world's state folder (see tests/conftest.build_world)."""
    os.environ["FLIGHTLINE_TEST_WORLD"] = str(state)
    if LOCATION in sys.modules:  # loaded for another world earlier in this process
        importlib.reload(sys.modules[LOCATION])
    instance = DagsterInstance.local_temp(str(state / "dagster"), overrides=IN_PROCESS)  # the world's storage
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name=LOCATION, attribute="defs"))
    )
    with create_test_daemon_workspace_context(target, instance) as context:
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=context.create_request_context().asset_graph,
            partition_names=partitions,
            asset_selection=[AssetKey(a) for a in assets],
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        for _ in range(max_iterations):  # the daemon's loop: plan and launch runs, then see that they finished
            list(execute_backfill_iteration(context, logging.getLogger("backfill")))
            if instance.get_backfill(backfill.backfill_id).status != BulkActionStatus.REQUESTED:
                break
    runs: list[DagsterRun] = list(instance.get_runs(RunsFilter.for_backfill(backfill.backfill_id)))
    return instance.get_backfill(backfill.backfill_id), runs
