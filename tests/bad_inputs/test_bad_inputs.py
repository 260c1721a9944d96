"""Bad configuration and environments: each gets a clear error that names the problem, and nothing earlier is lost."""

import re
import socket
import subprocess
import sys
import time

import pytest
from dagster import materialize
from delta.tables import DeltaTable

from assets.predictions import batch_predictions
from orchestration.deployments import REPO_ROOT
from tests.conftest import child_env

SPLIT = {"end_date": "2013-02-03", "train_days": 1, "validation_days": 1, "test_days": 1}


@pytest.fixture(scope="module")
def world(world):
    """The session's tiny world (tests/world.py: 2013-02-01..03 ingested, v1 champion, scored), as these tests take it."""
    return world.defs, world.instance, world.resources, world.state


def versions(spark, resources, *tables):
    return {
        t: DeltaTable.forPath(spark, resources["lakehouse"].table_path(t)).history(1).first()["version"] for t in tables
    }


def test_a_split_window_without_data_names_the_empty_split_and_keeps_the_old_splits(spark, world):
    defs, instance, resources, _ = world
    before = versions(spark, resources, "train_set", "validation_set", "test_set")
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"splits": {"config": {**SPLIT, "end_date": "2013-03-31"}}}},
    )
    assert not result.success
    error = str(result.failure_data_for_node("splits").error)
    assert (
        "no labelled rows in train_set [2013-03-29, 2013-03-30), validation_set [2013-03-30, 2013-03-31), "
        "test_set [2013-03-31, 2013-04-01)" in error
    )
    assert versions(spark, resources, "train_set", "validation_set", "test_set") == before


def test_a_malformed_end_date_is_named(world):
    defs, instance, _, _ = world
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {"splits": {"config": {"end_date": "2013-13-01"}}}}
    )
    assert not result.success
    assert "end_date '2013-13-01' is not a date of the form YYYY-MM-DD" in str(
        result.failure_data_for_node("splits").error
    )


def test_no_champion_names_the_model_and_writes_nothing(spark, world):
    defs, instance, resources, _ = world
    before = versions(spark, resources, "batch_predictions")
    other = resources["lakehouse"].replaced(model="never_trained")
    result = materialize(
        [batch_predictions],
        instance=instance,
        partition_key="2013-02-02",
        raise_on_error=False,
        resources={**resources, "lakehouse": other},
    )
    assert not result.success
    assert "model main.flights.never_trained has no version with the alias @champion" in str(
        result.failure_data_for_node("batch_predictions").error
    )
    assert versions(spark, resources, "batch_predictions") == before


def closed_port() -> int:
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_champion_whose_signature_does_not_match_names_the_columns_and_writes_nothing(spark, world):
    """The champion's own pipeline, logged with a signature that wants a column the features lack and
    another type for one they have."""
    import mlflow
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema

    from ml.datasets.flights import SPEC
    from ml.registry import register_version
    from ml.training import pip_requirements

    defs, instance, resources, _ = world
    mlflow_resource, other = resources["mlflow"], resources["lakehouse"].replaced(model="wrong_signature")
    mlflow_resource.configure()
    client = mlflow_resource.client
    champion = client.get_model_version_by_alias(resources["lakehouse"].model_name, "champion")
    inputs = [ColSpec("string" if c == "distance" else "double", c) for c in SPEC.numeric_features]
    inputs += [ColSpec("string", c) for c in SPEC.categorical_features] + [ColSpec("double", "seat_pitch")]
    with mlflow.start_run(experiment_id=mlflow_resource.experiment_id()) as run:
        info = mlflow.spark.log_model(
            mlflow.spark.load_model(champion.source),
            artifact_path="model",
            signature=ModelSignature(inputs=Schema(inputs)),
            pip_requirements=pip_requirements(),
        )
    lineage = {k: v for k, v in champion.tags.items() if not k.startswith("gate.")}
    version = register_version(client, other.model_name, info.model_uri, run.info.run_id, "wrong signature", lineage)
    client.set_registered_model_alias(other.model_name, "champion", str(version.version))
    before = versions(spark, resources, "batch_predictions")
    result = materialize(
        [batch_predictions],
        instance=instance,
        partition_key="2013-02-02",
        raise_on_error=False,
        resources={**resources, "lakehouse": other},
    )
    assert not result.success
    assert (
        f"model models:/main.flights.wrong_signature/{version.version} does not match the feature table: expects "
        "columns ['seat_pitch'] that the feature table does not have; expects other types for columns: distance "
        "(model expects string, the table has double). Nothing was scored or written."
    ) in str(result.failure_data_for_node("batch_predictions").error)
    assert versions(spark, resources, "batch_predictions") == before


def test_an_unreachable_mlflow_server_fails_fast_and_clearly():
    from orchestration.resources import MLflowResource, MLflowUnreachableError

    port = closed_port()
    started = time.monotonic()
    with pytest.raises(
        MLflowUnreachableError, match=f"MLflow tracking server at http://127.0.0.1:{port} is unreachable"
    ):
        MLflowResource(tracking_uri=f"http://127.0.0.1:{port}").configure()
    assert time.monotonic() - started < 5


def test_an_unreachable_registry_fails_fast_and_names_its_uri(tmp_path):
    """Tracking works (sqlite), the registry does not: a closed port, then a server that accepts and never answers."""
    from orchestration.resources import MLflowResource, MLflowUnreachableError

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(
        MLflowUnreachableError,
        match=re.escape(
            f"MLflow registry at uc:http://127.0.0.1:{port} is unreachable: [Errno 111] Connection refused "
            f"(GET http://127.0.0.1:{port}/health, timeout 2 s)"
        ),
    ):
        MLflowResource(
            tracking_uri=tracking, registry_uri=f"uc:http://127.0.0.1:{port}", http_timeout_seconds=2
        ).configure()
    assert time.monotonic() - started < 2

    with socket.socket() as hung:  # listens (the kernel completes the handshake) but never reads or answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(
            MLflowUnreachableError, match=re.escape(f"MLflow registry at {uri} is unreachable: timed out")
        ):
            MLflowResource(tracking_uri=tracking, registry_uri=uri, http_timeout_seconds=2).configure()
        assert time.monotonic() - started < 4


def test_a_rollback_run_against_an_unreachable_registry_fails_in_seconds(world, tmp_path):
    from dagster import Definitions

    from orchestration.resources import MLflowResource
    from orchestration.rollback import rollback_job

    _, instance, resources, _ = world
    unreachable = MLflowResource(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", registry_uri=f"http://127.0.0.1:{closed_port()}"
    )
    defs = Definitions(jobs=[rollback_job], resources={"mlflow": unreachable, "lakehouse": resources["lakehouse"]})
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        defs.resolve_job_def("rollback_job").execute_in_process(instance=instance, run_config=rollback(1))
    assert time.monotonic() - started < 10
    assert "MLflow registry at http://127.0.0.1:" in str(raised.value) + str(raised.value.__cause__)
    assert champion(resources) == "1"


def rollback(version, requested_by="ops@example.com", reason="INC-1"):
    return {
        "ops": {
            "set_champion_version": {"config": {"version": version, "requested_by": requested_by, "reason": reason}}
        }
    }


def champion(resources) -> str:
    client, name = resources["mlflow"].client, resources["lakehouse"].model_name
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_a_rollback_to_a_missing_version_is_refused_and_the_champion_stays(world):
    defs, instance, resources, _ = world
    result = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance, run_config=rollback(99), raise_on_error=False
    )
    assert not result.success
    assert "model main.flights.arrival_delay has no version 99 (its versions: [1" in str(
        result.failure_data_for_node("set_champion_version").error
    )
    assert champion(resources) == "1"
    assert result.asset_observations_for_node("set_champion_version") == []


def test_a_rollback_to_a_version_scoring_cannot_feed_is_refused_and_the_champion_stays(world):
    """A version whose model takes a column scoring does not give (the leaky arrival delay)."""
    import mlflow
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema

    from ml.datasets.flights import SPEC
    from ml.registry import register_version
    from ml.training import model_signature, pip_requirements

    defs, instance, resources, _ = world
    client, name = resources["mlflow"].client, resources["lakehouse"].model_name  # also points mlflow at the world
    current = client.get_model_version_by_alias(name, "champion")
    leaky = ModelSignature(
        inputs=Schema([*model_signature(SPEC).inputs.inputs, ColSpec("double", "arr_delay")]),
        outputs=model_signature(SPEC).outputs,
    )
    with mlflow.start_run(experiment_id=resources["mlflow"].experiment_id()) as run:
        info = mlflow.spark.log_model(
            mlflow.spark.load_model(f"models:/{name}/{current.version}"),
            artifact_path="model",
            signature=leaky,
            pip_requirements=pip_requirements(),
        )
    lineage = {k: v for k, v in current.tags.items() if not k.startswith("gate.")}
    bad = str(
        register_version(client, name, info.model_uri, run.info.run_id, "trained with arr_delay", lineage).version
    )

    result = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance, run_config=rollback(int(bad)), raise_on_error=False
    )

    assert not result.success
    assert (
        f"{name} v{bad} cannot be @champion: its signature does not match what scoring gives it: "
        "it expects columns ['arr_delay'] that scoring does not give"
    ) in str(result.failure_data_for_node("set_champion_version").error)
    assert champion(resources) == str(current.version)
    assert "champion.set_by" not in client.get_model_version(name, bad).tags


def test_missing_java_is_named(monkeypatch, tmp_path):
    from ml.spark import SparkSetupError, ensure_java

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SparkSetupError, match=r"Java was not found: Spark needs a JDK 17"):
        ensure_java()


def test_an_unresolvable_delta_jar_is_named_before_any_query(tmp_path):
    """Ivy that can reach no repository: Spark must not start with a broken DeltaCatalog."""
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(
        '<ivysettings><settings defaultResolver="nowhere"/><resolvers>'
        f'<filesystem name="nowhere"><artifact pattern="{tmp_path}/none/[artifact].[ext]"/></filesystem>'
        "</resolvers></ivysettings>"
    )
    code = (
        "from ml.spark import get_or_create_session, SparkSetupError\n"
        "try:\n"
        f"    get_or_create_session('local[1]', conf={{'spark.jars.ivy': '{tmp_path}/ivy', "
        f"'spark.jars.ivySettings': '{settings}', 'spark.ui.enabled': 'false'}})\n"
        "except SparkSetupError as e:\n"
        "    print('ERROR:', e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(PYTHONPATH=str(REPO_ROOT)),
    )
    assert "ERROR: Delta Lake's jar io.delta:delta-spark_4.2_2.13:4.4.0 is not in the Ivy cache" in proc.stdout, (
        proc.stderr[-2000:]
    )
    assert "could not be fetched from Maven Central" in proc.stdout
