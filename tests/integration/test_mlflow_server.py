"""A real MLflow server started by infra/mlflow-server.sh on 127.0.0.1 (sqlite back end, served artifacts):
registration and the champion/challenger gate through its REST API, then the script's stop."""

import socket
import subprocess
import urllib.request

import mlflow
import pytest

from ml.registry import CHALLENGER, CHAMPION, GateConfig, gate, register_version
from ml.scoring import evaluate_version
from orchestration.deployments import REPO_ROOT
from orchestration.resources import MLflowResource
from tests.conftest import child_env
from tests.unit.tiny import log_tiny_model, tiny_lineage

pytestmark = pytest.mark.infra  # a real MLflow server of its own: make test-infra

NAME = "main.tiny.served_model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    state = tmp_path_factory.mktemp("server-state")
    env = child_env(FLIGHTLINE_STATE_DIR=str(state), MLFLOW_SERVER_PORT=str(free_port()))

    def script(command):
        return subprocess.run(
            ["bash", str(REPO_ROOT / "infra" / "mlflow-server.sh"), command],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    started = script("start")
    assert started.returncode == 0, started.stdout + started.stderr
    yield f"http://127.0.0.1:{env['MLFLOW_SERVER_PORT']}", script, state / "mlflow-server"
    script("stop")


@pytest.fixture()
def restore_mlflow_uris():
    """The session's other tests use the process-wide MLflow URIs: put them back."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


def test_start_is_idempotent_and_status_answers(server):
    url, script, _ = server
    again = script("start")
    assert again.returncode == 0 and again.stdout.startswith("mlflow server already running: pid ")
    status = script("status")
    assert status.returncode == 0 and status.stdout.strip().endswith(url)


def test_registration_and_the_gate_through_the_server(spark, server, restore_mlflow_uris):
    url, _, state = server
    resource = MLflowResource(tracking_uri=url, experiment="served")
    resource.configure()
    client, experiment = resource.client, resource.experiment_id()
    good = log_tiny_model(spark, experiment)  # artifacts uploaded through the server's proxy
    weak = log_tiny_model(spark, experiment, weak=True)
    test = good[3]
    versions = [
        str(register_version(client, NAME, uri, run_id, f"tiny model of run {run_id}", tiny_lineage(run_id)).version)
        for uri, run_id, *_ in (good, weak)
    ]

    decisions = [
        gate(
            client,
            NAME,
            v,
            "auc",
            lambda v: evaluate_version(NAME, v, test, "classification", "auc"),
            GateConfig(margin=0.001, floors={"auc": 0.55}),
        )
        for v in versions
    ]

    assert [d.promoted for d in decisions] == [True, False]
    assert decisions[1].challenger_value < decisions[1].champion_value
    fresh = mlflow.MlflowClient(url)  # what any other client of the server sees
    assert {k: str(v) for k, v in fresh.get_registered_model(NAME).aliases.items()} == {
        CHAMPION: versions[0],
        CHALLENGER: versions[1],
    }
    tags = fresh.get_model_version(NAME, versions[1]).tags
    assert tags["gate.decision"] == "rejected" and tags["mlflow.run_id"] == weak[1]
    assert fresh.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
    assert any((state / "artifacts").rglob("MLmodel"))  # stored by the server, under its artifact root


def test_stop_ends_the_server_and_only_its_processes(server):
    url, script, state = server
    pid = int((state / "server.pid").read_text().split()[0])
    group = subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(group) >= 2  # the mlflow CLI and its uvicorn worker
    stopped = script("stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"mlflow server stopped (pid {pid})"
    assert subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True).stdout.split() == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
    assert script("status").returncode == 3
    assert script("stop").stdout.strip().startswith("mlflow server not running")
