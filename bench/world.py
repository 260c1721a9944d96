"""What the benchmarks share: a small local Spark and the whole graph bound to a temporary state folder.

The benchmarks do not import tests/: they are run on their own (`make bench-*`), and what they measure must not
change when a test fixture does. Only `os` is imported at module level: bench.execution_model times a fresh
process that imports SPARK_CONF from here.
"""

from __future__ import annotations

import os

# local[2] with small shuffles, as the tests run (tests/conftest.py's TEST_SPARK_CONF), so that figures compare.
SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "3g",
    "spark.scheduler.mode": "FAIR",
}


def quiet_environment() -> None:
    """Everything local and quiet: no developer's MLflow server (the local deployment would use the one
    MLFLOW_TRACKING_URI names), no retries against a dead one, no progress bars, no telemetry."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def session(app_name: str = "flightline-bench", conf: dict[str, str] | None = None):
    """The benchmark's SparkSession: local[2] with SPARK_CONF and `conf` on top, errors-only logging."""
    from ml.spark import get_or_create_session

    quiet_environment()
    spark = get_or_create_session("local[2]", conf={**SPARK_CONF, **(conf or {})}, app_name=app_name)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def build_world(state):
    """The Definitions of orchestration.definitions (every asset, job, schedule and sensor) bound to the local
    deployment's resources over `state` (a Path), and a real on-disk Dagster instance under it.
    Returns (defs, instance, resources, state); resources["lakehouse"] knows every table's path."""
    from dagster import DagsterInstance, Definitions

    from ml.datasets.flights import SPEC
    from orchestration.definitions import defs as project
    from orchestration.deployments import local_resources

    quiet_environment()
    resources = local_resources(SPEC, state=state, master="local[2]", spark_conf=SPARK_CONF)
    defs = Definitions(
        assets=project.assets,
        asset_checks=project.asset_checks,
        jobs=project.jobs,
        schedules=project.schedules,
        sensors=project.sensors,
        resources=resources,
        executor=project.executor,
    )
    (state / "dagster").mkdir(exist_ok=True)
    return defs, DagsterInstance.local_temp(str(state / "dagster")), resources, state
