"""The prod deployment is configured by the environment alone, and says which variable is wrong."""

import os

import pytest

from ml.datasets.flights import SPEC
from orchestration.deployments import resources_for


def test_spark_conf_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLIGHTLINE_SPARK_MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("FLIGHTLINE_SPARK_CONF", '{"spark.executor.memory": "1536m", "spark.executor.cores": 1}')
    spark = resources_for(SPEC, "prod")["spark"]
    assert spark.master == "spark://127.0.0.1:7077"
    assert spark.spark_config == {
        "spark.sql.session.timeZone": "UTC",
        "spark.executor.memory": "1536m",
        "spark.executor.cores": "1",
    }


@pytest.mark.parametrize(
    "raw, message",
    [
        ("spark.executor.memory=2g", r"FLIGHTLINE_SPARK_CONF is not valid JSON \(Expecting value: line 1 column 1"),
        ('["spark.executor.memory"]', r"FLIGHTLINE_SPARK_CONF must be a JSON object of Spark conf keys to values"),
    ],
)
def test_a_malformed_spark_conf_is_named(monkeypatch, raw, message):
    monkeypatch.setenv("FLIGHTLINE_SPARK_CONF", raw)
    with pytest.raises(ValueError, match=message):
        resources_for(SPEC, "prod")


@pytest.mark.parametrize(
    "uri, root",
    [
        (None, "artifacts"),  # the state folder's own store
        ("sqlite:////tmp/other/mlflow.db", "artifacts"),  # as `mlflow.set_tracking_uri` exports it: not a server
        ("http://127.0.0.1:5001", None),  # a tracking server keeps the artifacts itself
    ],
)
def test_the_local_store_keeps_its_artifact_root_unless_a_server_is_named(monkeypatch, tmp_path, uri, root):
    from orchestration.deployments import local_mlflow

    if uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resource = local_mlflow(SPEC, tmp_path)
    assert resource.tracking_uri == (uri or f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    assert resource.artifact_root == (str(tmp_path / "mlflow" / root) if root else None)


def test_a_test_world_keeps_its_own_store_after_mlflow_exported_another(monkeypatch, tmp_path):
    """`mlflow.set_tracking_uri` (the session's `mlflow_store`) exports MLFLOW_TRACKING_URI; a world built after it
    in the same worker must still write to the store under its own state folder, not to that one."""
    from tests.conftest import world_definitions

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other/mlflow.db")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////tmp/other/mlflow.db")
    _, resources = world_definitions(tmp_path)
    mlflow = resources["mlflow"]
    assert (mlflow.tracking_uri, mlflow.registry_uri, mlflow.artifact_root) == (
        f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
        None,
        str(tmp_path / "mlflow" / "artifacts"),
    )


def test_a_child_process_does_not_inherit_the_mlflow_uris_an_earlier_run_exported(monkeypatch):
    """In-process runs call `mlflow.set_tracking_uri` / `set_registry_uri`, which export both variables; a deployment
    started by a test would take them for its store (CI once saw the stack register to a world's sqlite)."""
    from tests.conftest import child_env

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other/mlflow.db")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:////tmp/other/mlflow.db")
    env = child_env(MLFLOW_TRACKING_URI="http://127.0.0.1:5001", PYTHONPATH="/repo")
    assert (env["MLFLOW_TRACKING_URI"], env["PYTHONPATH"], "MLFLOW_REGISTRY_URI" in env) == (
        "http://127.0.0.1:5001",
        "/repo",
        False,
    )
    assert env["PATH"] == os.environ["PATH"]
