"""The production shape on 127.0.0.1 (make test-infra): infra/stack.sh starts PostgreSQL, an MLflow server whose
back-end store is in it, and a Spark standalone cluster (a master, two workers); the `prod` deployment, configured
by the environment the script writes and nothing else, materializes the whole graph through them as `make run`
does; the test checks what each service holds, then stops them and checks that nothing of theirs is left."""

import json
import socket
import stat
import subprocess
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from orchestration.deployments import REPO_ROOT
from tests.conftest import MLFLOW_URI_VARS, child_env
from tests.integration.test_graph import source_rows_per_day
from tests.listening import group_members, listening, on_loopback

pytestmark = pytest.mark.infra

START, END = "2013-01-01", "2013-01-06"
ASSETS = {
    "raw_data",
    "raw_quarantine",
    "validated_features",
    "quarantine",
    "train_set",
    "validation_set",
    "test_set",
    "tuned_pipeline",
    "registered_model",
    "batch_predictions",
    "segment_models",
    "segment_predictions",
    "segment_performance",
    "incremental_predictions",
}
# `make run`'s runs: ingest, training, scoring, segment models, segment scoring, incremental
RUNS = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_env_file(path: Path) -> dict[str, str]:
    """What `source <state>/infra.env` exports, read by bash itself, in an otherwise empty environment (not this
    process's: it may hold MLflow URIs that an earlier in-process run exported)."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; source '{path}'; env -0"], capture_output=True, check=True, env={}
    ).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    return {k: v for k, v in env.items() if k.startswith(("FLIGHTLINE_", "MLFLOW_", "DAGSTER_", "SPARK_"))}


@pytest.fixture(scope="module")
def stack():
    # Under /tmp and world-searchable: PostgreSQL runs as the `postgres` user, which cannot enter pytest's 0700 dirs.
    state = Path(tempfile.mkdtemp(prefix="flightline-infra-"))
    state.chmod(0o755)
    env = child_env(
        FLIGHTLINE_STATE_DIR=str(state),
        FLIGHTLINE_PG_PORT=str(free_port()),
        MLFLOW_SERVER_PORT=str(free_port()),
        FLIGHTLINE_SPARK_MASTER_PORT=str(free_port()),
        FLIGHTLINE_SPARK_MASTER_UI_PORT=str(free_port()),
    )
    for var in ("FLIGHTLINE_DEPLOYMENT", "DAGSTER_HOME"):
        env.pop(var, None)

    def script(command):
        return subprocess.run(
            ["bash", str(REPO_ROOT / "infra" / "stack.sh"), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    # What an earlier in-process Dagster run in this worker leaves behind (`mlflow.set_tracking_uri` and
    # `set_registry_uri` export them): the stack's processes must take their stores from infra.env all the same.
    with pytest.MonkeyPatch.context() as env_vars:
        for var in MLFLOW_URI_VARS:
            env_vars.setenv(var, f"sqlite:///{state}/not-the-server.db")
        started = script("start")
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield {"state": state, "script": script, "env": read_env_file(state / "infra.env")}
        finally:
            script("stop")
    assert not (state / "not-the-server.db").exists()


@pytest.fixture(scope="module")
def pipeline_run(stack):
    """`make run` on a small slice, with the environment infra.env exports: the prod deployment, unchanged code."""
    env = child_env(**stack["env"], PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [
            str(REPO_ROOT / ".venv" / "bin" / "python"),
            "-m",
            "orchestration.run_pipeline",
            "--start",
            START,
            "--end",
            END,
            "--trials",
            "2",
            "--train-days",
            "3",
            "--validation-days",
            "1",
            "--test-days",
            "2",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def dagster_instance(stack, pipeline_run):
    from dagster import DagsterInstance

    with pytest.MonkeyPatch.context() as env_vars:
        for var, value in stack[
            "env"
        ].items():  # the instance's dagster.yaml reads the database URL from the environment
            env_vars.setenv(var, value)
        instance = DagsterInstance.get()
        yield instance
        instance.dispose()


def ended(pid: int, within_s: float = 10) -> bool:
    """The process is gone (or a zombie waiting to be reaped): pg_ctl's -w returns just before the exit."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        try:
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False


def sql(url: str, query: str):
    import psycopg2

    with psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_start_is_idempotent_and_writes_the_prod_environment(stack):
    again = stack["script"]("start")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].startswith("postgres already running: 127.0.0.1:")
    assert lines[1].startswith("mlflow server already running: pid ")
    assert lines[2].startswith("spark cluster already running: master pid ")
    env = stack["env"]
    assert env["FLIGHTLINE_DEPLOYMENT"] == "prod"
    assert env["FLIGHTLINE_SPARK_MASTER"].startswith("spark://127.0.0.1:")
    assert env["FLIGHTLINE_DAGSTER_PG_URL"].startswith("postgresql+psycopg2://flightline:")
    assert stack["script"]("status").returncode == 0


def test_no_process_has_the_database_password_on_its_command_line_and_its_files_are_private(stack, pipeline_run):
    """While every service runs (and after the pipeline's runs): any local user can read each process's argv."""
    state = stack["state"]
    password = (state / "postgres.password").read_text().strip()
    assert len(password) >= 16 and password in stack["env"]["FLIGHTLINE_DAGSTER_PG_URL"]
    leaks = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            if password.encode() in argv:
                leaks.append(f"{proc.name}: {argv.replace(bytes(1), b' ').decode(errors='replace')}")
    assert leaks == []
    servers = [
        p for p in Path("/proc").iterdir() if p.name.isdigit() and b"mlflow" in _argv(p) and b"server" in _argv(p)
    ]
    assert servers, "no mlflow server process found: the check above proved nothing"
    for secret in ("postgres.password", "infra.env"):
        assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600, secret
    assert not list(state.glob("infra.env.*"))  # stack.sh's temporary env file was renamed, none is left


def _argv(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_dagster_runs_and_events_are_in_postgres(stack, dagster_instance):
    from dagster import AssetKey, DagsterRunStatus
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(dagster_instance.run_storage, PostgresRunStorage)
    assert isinstance(dagster_instance.event_log_storage, PostgresEventLogStorage)
    runs = dagster_instance.get_runs()
    assert [r.status for r in runs] == [DagsterRunStatus.SUCCESS] * RUNS
    for key in ASSETS:
        assert dagster_instance.get_latest_materialization_event(AssetKey(key)) is not None, key
    stored = sql(stack["env"]["FLIGHTLINE_DAGSTER_PG_URL"], "SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
    assert stored == [(RUNS,)]


def test_the_model_is_on_the_mlflow_server_with_its_store_in_postgres(stack, dagster_instance):
    from dagster import AssetKey
    from mlflow import MlflowClient

    server = stack["env"]["MLFLOW_TRACKING_URI"]
    client = MlflowClient(server, registry_uri=server)  # not a registry URI that this process's earlier runs exported
    champion = client.get_model_version_by_alias("main.flights.arrival_delay", "champion")
    training_run = dagster_instance.get_latest_materialization_event(AssetKey("registered_model")).run_id
    assert champion.tags["dagster.run_id"] == training_run
    assert client.get_run(champion.run_id).data.tags["dagster.run_id"] == training_run
    mlflow_db = stack["env"]["FLIGHTLINE_DAGSTER_PG_URL"].rsplit("/", 1)[0] + "/mlflow"
    bundle = client.get_model_version_by_alias("main.flights.arrival_delay_by_segment", "champion")
    assert sorted(sql(mlflow_db, "SELECT name, CAST(version AS TEXT) FROM model_versions")) == [
        ("main.flights.arrival_delay", str(champion.version)),
        ("main.flights.arrival_delay_by_segment", str(bundle.version)),
    ]
    # the ONNX export ran on the cluster (its converter writes the trees through ONNX_DFS_PATH there): servable, or
    # refused by the parity check against Spark's own predictions, never for want of a setting
    status, reason = champion.tags["serving.onnx"], champion.tags.get("serving.reason", "")
    assert status == "ok" or (status == "refused" and "rows" in reason and "ONNX_DFS_PATH" not in reason), reason
    assert list((stack["state"] / "mlflow-server" / "artifacts").rglob("MLmodel"))  # the server's artifact root
    predictions = dagster_instance.get_latest_materialization_event(AssetKey("batch_predictions"))
    assert predictions.asset_materialization.metadata["model_version"].value == int(champion.version)


def test_spark_ran_on_the_cluster_with_delta_on_both_workers(stack, pipeline_run):
    ui = f"http://127.0.0.1:{(stack['state'] / 'spark-cluster' / 'ports').read_text().split()[2]}"
    status = json.load(urllib.request.urlopen(f"{ui}/json/", timeout=5))
    assert status["aliveworkers"] == 2
    apps = status["completedapps"] + status["activeapps"]
    assert [(a["name"], a["cores"]) for a in apps] == [("flightline", 2)]  # one session for all the runs
    for worker in ("work-1", "work-2"):  # each worker's executor fetched Delta's jar from the driver
        jars = list((stack["state"] / "spark-cluster" / worker).glob("app-*/*/io.delta_delta-spark_*.jar"))
        assert len(jars) == 1, worker


def test_the_tables_hold_every_source_row(stack, pipeline_run):
    from deltalake import DeltaTable

    root = Path(stack["env"]["FLIGHTLINE_LAKEHOUSE_ROOT"]) / "main" / "flights"
    expected = source_rows_per_day(date.fromisoformat(START), date.fromisoformat(END))
    count = {
        t: DeltaTable(str(root / t)).to_pyarrow_dataset().count_rows()
        for t in ("raw_data", "validated_features", "quarantine", "batch_predictions")
    }
    assert count["raw_data"] == sum(expected.values())
    assert count["validated_features"] + count["quarantine"] == count["raw_data"]
    assert count["batch_predictions"] == count["validated_features"]


def test_every_service_listens_on_loopback_only(stack, pipeline_run):
    """PostgreSQL, the MLflow server (and its workers), the Spark master and both workers: every listening socket of
    theirs is on 127.0.0.1 (or ::1), none on 0.0.0.0 or an outside address."""
    state, env = stack["state"], stack["env"]
    leaders = {
        "mlflow": int((state / "mlflow-server" / "server.pid").read_text().split()[0]),
        "postgres": int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0]),
    }
    leaders.update(
        {f: int((state / "spark-cluster" / f"{f}.pid").read_text()) for f in ("master", "worker-1", "worker-2")}
    )
    by_service = {name: listening(group_members(pid) | {pid}) for name, pid in leaders.items()}
    addresses = {name: sorted(a for found in pids.values() for a in found) for name, pids in by_service.items()}
    assert all(addresses.values()), addresses  # each service was found listening: the check below is not vacuous
    assert env["MLFLOW_TRACKING_URI"].rsplit(":", 1)[1].strip("/") in {a.rsplit(":", 1)[1] for a in addresses["mlflow"]}
    assert env["FLIGHTLINE_SPARK_MASTER"].rsplit(":", 1)[1] in {a.rsplit(":", 1)[1] for a in addresses["master"]}
    outside = {name: [a for a in found if not on_loopback(a)] for name, found in addresses.items()}
    assert outside == {name: [] for name in addresses}, addresses
    print(f"\nlistening: {addresses}")


def test_stop_ends_every_service_and_only_them(stack, pipeline_run):
    state = stack["state"]
    pids = [int((state / "mlflow-server" / "server.pid").read_text().split()[0])]
    pids += [int((state / "spark-cluster" / f).read_text()) for f in ("master.pid", "worker-1.pid", "worker-2.pid")]
    postmaster = int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    stopped = stack["script"]("stop")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:  # each was the leader of its own process group: the whole group is gone
        assert subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True).stdout == ""
    assert ended(postmaster)
    assert stack["script"]("status").returncode == 3
    again = stack["script"]("stop")
    assert again.returncode == 0 and "not running" in again.stdout
