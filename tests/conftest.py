"""One real SparkSession (Delta-enabled, local[2]) for the whole pytest session: startup costs 5-6 s."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def forget_mlflow_uris() -> None:
    """The local deployment takes these for a store to use: a developer's server, or the store that an earlier
    `mlflow.set_tracking_uri` (the `mlflow_store` fixture, a Dagster run) exported for its subprocesses."""
    for var in MLFLOW_URI_VARS:
        os.environ.pop(var, None)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a process a test starts: this one's, without the MLflow URIs that an in-process Dagster
    run exported (`mlflow.set_tracking_uri` / `set_registry_uri` write them to os.environ); a child would take them for
    its deployment's store. What the test sets in `extra` wins."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_URI_VARS}
    env.update(extra)
    return env


forget_mlflow_uris()
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "3g",
    "spark.scheduler.mode": "FAIR",
}


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from ml.spark import get_or_create_session

    conf = {**TEST_SPARK_CONF, "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("warehouse"))}
    session = get_or_create_session(master="local[2]", conf=conf, app_name="flightline-tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def world(spark, tmp_path_factory):
    """The tiny world of tests/world.py (three real days, the whole graph materialized once), shared by
    tests/assets/ and tests/bad_inputs/: building it costs a minute or two, so it is built once per session."""
    from tests.world import build_tiny_world

    return build_tiny_world(tmp_path_factory.mktemp("world"))


WORLD_TESTS = ("tests/assets/", "tests/bad_inputs/")  # the modules that read and write the shared world
# The heavier suites' longest units (`make test-heavy`, .ci/run), started first so that the two workers end together;
# by their junit times in the two-worker run of bench/RESULTS.md's "Stop 26" (e2e 676 s, the training race 383 s, the
# stack 382 s, the queue 289 s, the training crashes 284 s, each datasets test about 230 s, the CLI runs 179 s, each
# incremental crash about 134 s).
LONGEST_FIRST = (
    "tests/e2e/test_ui.py",
    "tests/reliability/test_training_runs.py",
    "tests/infra/test_stack.py",
    "tests/reliability/test_training_queue.py",
    "tests/reliability/test_training_crashes.py",
    "tests/integration/test_datasets.py",
    "tests/reliability/test_concurrent_runs.py",
    "tests/reliability/test_incremental_crash.py",
)
# Modules whose tests share nothing but session fixtures: each test is a unit of its own for the two workers.
TEST_UNITS = ("tests/integration/test_datasets.py", "tests/reliability/test_incremental_crash.py")


def run_order(path: str) -> int:
    """tests/assets/ first: its tests read the shared world as its runs left it, and the tests of tests/bad_inputs/
    then write more days and bad sources into it. Then the heavier suites' longest units, then the rest."""
    if "/tests/assets/" in path:
        return 0
    if "/tests/bad_inputs/" in path:
        return 1
    ranks = [i for i, module in enumerate(LONGEST_FIRST) if path.endswith(module)]
    return 2 + (ranks[0] if ranks else len(LONGEST_FIRST))


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: run_order(str(item.path)))  # a stable sort: each module keeps its tests' order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` and `make test-heavy` run on two pytest workers (`-n 2`): the tests of the shared world are one
    unit of work, so one worker builds it once and runs them in the order above; the tests of a TEST_UNITS module are
    a unit each; every other module is a unit of its own, so a module's fixtures are built once, on one worker. Units
    are handed out in the order above (the Makefile passes `--no-loadscope-reorder`: xdist's default orders them by
    their number of tests)."""
    from xdist.scheduler import LoadScopeScheduling

    class WorldThenModules(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(WORLD_TESTS):
                return "world"
            if nodeid.startswith(TEST_UNITS):
                return nodeid
            return super()._split_scope(nodeid)

    return WorldThenModules(config, log)


@pytest.fixture(scope="session")
def mlflow_session_store(tmp_path_factory):
    """A real MLflow tracking and registry store (sqlite + local artifacts), shared by the session:
    creating its tables takes ~10 s. Tests that register models use names of their own."""
    import mlflow

    from orchestration.resources import MLflowResource

    tmp_path = tmp_path_factory.mktemp("mlflow")
    resource = MLflowResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_root=str(tmp_path / "artifacts"),
        experiment="tests",
    )
    resource.configure()
    yield resource
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def mlflow_store(mlflow_session_store):
    """The session's store, made MLflow's current one again for each module: `ml/` logs through MLflow's fluent
    API (the process-wide URIs), and a world's Dagster run in an earlier module points those at the world's own
    store, so the module's runs would land there while its client reads this one."""
    mlflow_session_store.configure()
    return mlflow_session_store


def world_definitions(state):
    """Definitions (every asset, job and schedule) bound to resources over a temporary state folder."""
    from dagster import Definitions

    from ml.datasets.flights import SPEC
    from orchestration import definitions as d
    from orchestration.deployments import local_resources

    forget_mlflow_uris()  # a world keeps its own MLflow store, under its state folder
    resources = local_resources(SPEC, state=state, master="local[2]", spark_conf=TEST_SPARK_CONF)
    defs = Definitions(
        assets=d.defs.assets,
        asset_checks=d.defs.asset_checks,
        jobs=d.defs.jobs,
        schedules=d.defs.schedules,
        sensors=d.defs.sensors,
        resources=resources,
        executor=d.defs.executor,
    )
    return defs, resources


def build_world(state):
    """Definitions bound to a temporary state folder, and a real on-disk Dagster instance."""
    from dagster import DagsterInstance

    defs, resources = world_definitions(state)
    (state / "dagster").mkdir(exist_ok=True)
    instance = DagsterInstance.local_temp(str(state / "dagster"))
    return defs, instance, resources, state


def table(spark, resources, name):
    return spark.read.format("delta").load(resources["lakehouse"].table_path(name))


def latest_metadata(instance, key):
    from dagster import AssetKey

    return instance.get_latest_materialization_event(AssetKey(key)).asset_materialization.metadata
