"""The whole graph over Spark Connect (make test-connect): infra/spark-connect.sh starts a Spark Connect server on a
free port of 127.0.0.1 from pyspark's own jars, with Delta on the server; the local deployment, configured by
FLIGHTLINE_SPARK_REMOTE alone, runs ingest and the gate, training (an Optuna study), registration, scoring,
model_performance and drift through Dagster's in-process execution, as `make run` runs its three phases; the test
checks what the tables, MLflow and Dagster hold, that this process never had a JVM, then stops the server."""

import json
import os
import socket
import subprocess
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, Definitions

from orchestration.deployments import REPO_ROOT
from tests.conftest import child_env
from tests.integration.test_graph import source_rows_per_day
from tests.listening import group_members, listening, on_loopback

pytestmark = pytest.mark.connect

START, END = "2013-01-01", "2013-01-06"
RANGE = {"dagster/asset_partition_range_start": START, "dagster/asset_partition_range_end": END}
SPLIT = {"end_date": END, "train_days": 3, "validation_days": 1, "test_days": 2}
TUNING = {"n_trials": 2, "algorithms": ["logistic_regression"]}
SCRIPT = REPO_ROOT / "infra" / "spark-connect.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("connect-state")
    env = child_env(FLIGHTLINE_STATE_DIR=str(state), FLIGHTLINE_SPARK_CONNECT_PORT=str(free_port()))

    def script(command):
        return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=600)

    started_at = time.monotonic()
    started = script("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        url = script("url").stdout.strip()
        assert url == f"sc://127.0.0.1:{env['FLIGHTLINE_SPARK_CONNECT_PORT']}"
        print(f"\nspark connect server up in {time.monotonic() - started_at:.1f}s: {started.stdout.strip()}")
        yield {"state": state, "url": url, "script": script}
    finally:
        script("stop")


@pytest.fixture(scope="module")
def graph(server):
    """The graph's three phases, in this process, against the server: the local deployment with the remote set."""
    from pyspark import SparkContext

    from ml.datasets.flights import SPEC
    from orchestration import definitions as d
    from orchestration.deployments import local_resources
    from tests.conftest import TEST_SPARK_CONF

    state = server["state"]
    saved = {k: os.environ.get(k) for k in ("FLIGHTLINE_SPARK_REMOTE", "MLFLOW_DFS_TMP")}
    os.environ["FLIGHTLINE_SPARK_REMOTE"] = server["url"]  # the one setting: no code change, no other argument
    os.environ["MLFLOW_DFS_TMP"] = str(state / "dfs-tmp")  # where MLflow's Spark models pass; client and server see it
    try:
        resources = local_resources(SPEC, state=state, spark_conf=TEST_SPARK_CONF)
        defs = Definitions(
            assets=d.defs.assets,
            asset_checks=d.defs.asset_checks,
            jobs=d.defs.jobs,
            resources=resources,
            executor=d.defs.executor,
        )
        (state / "dagster").mkdir(exist_ok=True)
        instance = DagsterInstance.local_temp(str(state / "dagster"))
        daily, training = defs.resolve_job_def("daily_job"), defs.resolve_job_def("training_job")
        timings = {}
        started = time.monotonic()
        ingest = daily.execute_in_process(instance=instance, tags=RANGE, asset_selection=d.INGEST_KEYS)
        timings["ingest"] = time.monotonic() - started
        started = time.monotonic()
        train = training.execute_in_process(
            instance=instance,
            run_config={"ops": {"splits": {"config": SPLIT}, "tuned_pipeline": {"config": TUNING}}},
        )
        timings["training"] = time.monotonic() - started
        started = time.monotonic()
        scoring = daily.execute_in_process(instance=instance, tags=RANGE, asset_selection=d.SCORING_KEYS)
        timings["scoring"] = time.monotonic() - started
        print(f"\nover Spark Connect: {', '.join(f'{k} {v:.1f}s' for k, v in timings.items())}")
        yield {
            "ingest": ingest,
            "train": train,
            "scoring": scoring,
            "instance": instance,
            "resources": resources,
            "state": state,
            "had_jvm": SparkContext._gateway is not None or SparkContext._active_spark_context is not None,
        }
        instance.dispose()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rows_per_day(path: Path) -> dict[str, int]:
    """Rows per event_date of a Delta table, read by delta-rs (not Spark): what the server wrote, independently."""
    from deltalake import DeltaTable

    days = DeltaTable(str(path)).to_pyarrow_table(columns=["event_date"]).column("event_date").to_pylist()
    return dict(Counter(d.isoformat() for d in days))


def test_every_phase_succeeded_over_spark_connect_and_this_process_had_no_jvm(graph):
    from ml.spark import is_connect

    assert graph["ingest"].success and graph["train"].success and graph["scoring"].success
    session = graph["resources"]["spark"].spark_session
    assert is_connect(session)
    assert not graph["had_jvm"]  # every Spark call went to the server: no py4j gateway, no SparkContext here


def test_ingest_and_the_gate_wrote_every_source_row(graph):
    lake = graph["resources"]["lakehouse"]
    expected = source_rows_per_day(date.fromisoformat(START), date.fromisoformat(END))
    raw = rows_per_day(Path(lake.table_path("raw_data")))
    assert raw == expected
    features = rows_per_day(Path(lake.table_path("validated_features")))
    quarantined = (
        rows_per_day(Path(lake.table_path("quarantine"))) if Path(lake.table_path("quarantine")).exists() else {}
    )
    assert {d: features.get(d, 0) + quarantined.get(d, 0) for d in expected} == expected
    checks = [
        e.event_specific_data
        for e in graph["ingest"].all_events
        if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    gate = [c for c in checks if c.check_name in ("raw_suite", "quarantine_budget", "feature_suite")]
    assert sorted(Counter(c.check_name for c in gate)) == ["feature_suite", "quarantine_budget", "raw_suite"]
    assert all(c.passed for c in gate), [(c.check_name, c.partition) for c in gate if not c.passed]
    meta = graph["instance"].get_latest_materialization_event(AssetKey("validated_features")).asset_materialization
    assert meta.metadata["rows_written_in_run"].value == sum(features.values())


def test_training_ran_the_optuna_study_and_registered_the_champion(graph):
    resources = graph["resources"]
    client = resources["mlflow"].client
    name = resources["lakehouse"].model_name
    champion = client.get_model_version_by_alias(name, "champion")
    run = client.get_run(champion.run_id)
    assert run.data.tags["dagster.run_id"] == graph["train"].run_id
    assert run.data.params["n_trials"] == "2"
    trials = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(t.data.tags["optuna.state"] for t in trials) == ["COMPLETE", "COMPLETE"]
    version_tags = client.get_model_version(name, champion.version).tags
    assert version_tags["gate.decision"] == "promoted"
    # The Spark flavor as mlflow.spark.log_model writes it: MLmodel with the spark flavor, and Spark ML's own files.
    artifacts = Path(client.download_artifacts(run.info.run_id, "model", str(graph["state"] / "download")))
    mlmodel = (artifacts / "MLmodel").read_text()
    assert "spark:" in mlmodel and "model_data: sparkml" in mlmodel
    # Over Connect, pyspark's own pipeline writer saved it (the server wrote the files with its DataFrame writer).
    (metadata,) = (artifacts / "sparkml" / "metadata").glob("part-*")
    assert json.loads(metadata.read_text())["class"] == "pyspark.ml.pipeline.PipelineModel"
    assert len(list((artifacts / "sparkml" / "stages").iterdir())) >= 2
    dfs_tmp = graph["state"] / "dfs-tmp"
    leftovers = list(dfs_tmp.iterdir()) if dfs_tmp.exists() else []
    assert leftovers == [], f"copies of Spark models left in {dfs_tmp}: {leftovers}"


def test_scoring_performance_and_drift_used_the_champion(graph):
    resources = graph["resources"]
    lake = resources["lakehouse"]
    client = resources["mlflow"].client
    champion = client.get_model_version_by_alias(lake.model_name, "champion")
    features = rows_per_day(Path(lake.table_path("validated_features")))
    assert rows_per_day(Path(lake.table_path("batch_predictions"))) == features

    from deltalake import DeltaTable

    used = DeltaTable(lake.table_path("batch_predictions")).to_pyarrow_table(columns=["model_version"])
    assert set(used.column("model_version").to_pylist()) == {str(champion.version)}
    instance = graph["instance"]
    performance = instance.get_latest_materialization_event(AssetKey("model_performance")).asset_materialization
    assert performance.metadata["rows_written"].value > 0
    drift = instance.get_latest_materialization_event(AssetKey("feature_drift")).asset_materialization
    assert sorted(drift.metadata["drift_by_day"].value) == sorted(features)
    drift_days = rows_per_day(Path(lake.table_path("drift_metrics")))
    assert sorted(drift_days) == sorted(features)


def test_a_folder_of_stray_files_is_refused_over_connect_as_on_a_classic_session(graph, tmp_path):
    """The stray-file scan has no Hadoop FileSystem to call over Connect: the server lists the folder instead, and
    the refusal names what it found, as the classic session's does (tests/bad_inputs/test_delta_errors.py)."""
    from ml.delta_io import NotADeltaTableError, stray_entries, table_exists, write_partitions

    spark = graph["resources"]["spark"].spark_session
    folder = tmp_path / "orphan"
    (folder / "event_date=2013-01-01").mkdir(parents=True)
    (folder / "event_date=2013-01-01" / "part-0.parquet").write_bytes(b"not parquet")
    (folder / "notes.txt").write_text("left here")
    (folder / ".hidden").write_text("skipped")
    assert not table_exists(spark, str(folder))
    assert stray_entries(spark, str(folder), "event_date") == ["event_date=2013-01-01", "notes.txt"]
    (folder / "_delta_log").mkdir()  # a log folder without a commit: another writer is creating the table
    assert stray_entries(spark, str(folder), "event_date") == ["notes.txt"]
    assert stray_entries(spark, str(tmp_path / "nothing-here")) == []
    rows = spark.createDataFrame([(date(2013, 1, 1), 1)], "event_date date, n int")
    with pytest.raises(NotADeltaTableError) as refused:
        write_partitions(rows, str(folder), date(2013, 1, 1), date(2013, 1, 2))
    assert str(refused.value).startswith(f"{folder} holds files but is not a Delta table (it has no _delta_log)")
    assert "['notes.txt']" in str(refused.value)
    assert sorted(p.name for p in folder.iterdir()) == [".hidden", "_delta_log", "event_date=2013-01-01", "notes.txt"]


def test_the_server_listens_on_loopback_only(server, graph):
    """Every listening socket of the server's process group (from `ss -ltnp`: gRPC, and the JVM's own driver and
    block manager ports) is on loopback, its gRPC port among them. After the graph ran: every port it opens is open."""
    pid = int((server["state"] / "spark-connect" / "server.pid").read_text())
    found = listening(group_members(pid) | {pid})
    addresses = set().union(*found.values()) if found else set()
    assert f"127.0.0.1:{server['url'].rsplit(':', 1)[1]}" in {
        a.replace("[::ffff:127.0.0.1]", "127.0.0.1") for a in addresses
    }
    assert all(on_loopback(a) for a in addresses), addresses
    print(f"\nspark connect server listening: {sorted(addresses)}")


def test_stop_ends_the_server(server, graph):
    state = server["state"]
    pid = int((state / "spark-connect" / "server.pid").read_text())
    # The client first: a Connect session still open at exit retries its release against a stopped server.
    graph["resources"]["spark"].spark_session.stop()
    stopped = server["script"]("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "spark connect server stopped" in stopped.stdout
    assert subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True).stdout == ""
    assert server["script"]("status").returncode == 3
