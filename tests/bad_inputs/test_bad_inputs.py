"""Bad configuration and environments: each gets a clear error that names the problem, and nothing earlier is lost."""

import os
import socket
import subprocess
import sys
import time

import pytest
from dagster import AssetKey, materialize
from delta.tables import DeltaTable

from assets.predictions import batch_predictions
from orchestration.deployments import REPO_ROOT
from tests.conftest import build_world

DAYS = {"dagster/asset_partition_range_start": "2013-02-01", "dagster/asset_partition_range_end": "2013-02-03"}
SPLIT = {"end_date": "2013-02-03", "train_days": 1, "validation_days": 1, "test_days": 1}


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    defs, instance, resources, state = build_world(tmp_path_factory.mktemp("bad"))
    daily, training = defs.resolve_job_def("daily_job"), defs.resolve_job_def("training_job")
    assert daily.execute_in_process(instance=instance, tags=DAYS,
                                    asset_selection=[AssetKey("raw_data"), AssetKey("validated_features"), AssetKey("quarantine")]).success
    assert training.execute_in_process(instance=instance, run_config={"ops": {
        "splits": {"config": SPLIT},
        "tuned_pipeline": {"config": {"n_trials": 1, "algorithms": ["logistic_regression"]}}}}).success
    assert daily.execute_in_process(instance=instance, tags=DAYS, asset_selection=[AssetKey("batch_predictions")]).success
    return defs, instance, resources, state


def versions(spark, resources, *tables):
    return {t: DeltaTable.forPath(spark, resources["lakehouse"].table_path(t)).history(1).first()["version"] for t in tables}


def test_a_split_window_without_data_names_the_empty_split_and_keeps_the_old_splits(spark, world):
    defs, instance, resources, _ = world
    before = versions(spark, resources, "train_set", "validation_set", "test_set")
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"splits": {"config": {**SPLIT, "end_date": "2013-03-31"}}}})
    assert not result.success
    error = str(result.failure_data_for_node("splits").error)
    assert "no labelled rows in train_set [2013-03-29, 2013-03-30), validation_set [2013-03-30, 2013-03-31), " \
           "test_set [2013-03-31, 2013-04-01)" in error
    assert versions(spark, resources, "train_set", "validation_set", "test_set") == before


def test_a_malformed_end_date_is_named(world):
    defs, instance, _, _ = world
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {"splits": {"config": {"end_date": "2013-13-01"}}}})
    assert not result.success
    assert "end_date '2013-13-01' is not a date of the form YYYY-MM-DD" in str(result.failure_data_for_node("splits").error)


def test_no_champion_names_the_model_and_writes_nothing(spark, world):
    defs, instance, resources, _ = world
    before = versions(spark, resources, "batch_predictions")
    other = resources["lakehouse"].replaced(model="never_trained")
    result = materialize([batch_predictions], instance=instance, partition_key="2013-02-02", raise_on_error=False,
                         resources={**resources, "lakehouse": other})
    assert not result.success
    assert "model main.flights.never_trained has no version with the alias @champion" in str(
        result.failure_data_for_node("batch_predictions").error)
    assert versions(spark, resources, "batch_predictions") == before


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
        info = mlflow.spark.log_model(mlflow.spark.load_model(champion.source), artifact_path="model",
                                      signature=ModelSignature(inputs=Schema(inputs)), pip_requirements=pip_requirements())
    version = register_version(client, other.model_name, info.model_uri, run.info.run_id, "wrong signature", {})
    client.set_registered_model_alias(other.model_name, "champion", str(version.version))
    before = versions(spark, resources, "batch_predictions")
    result = materialize([batch_predictions], instance=instance, partition_key="2013-02-02", raise_on_error=False,
                         resources={**resources, "lakehouse": other})
    assert not result.success
    assert (f"model models:/main.flights.wrong_signature/{version.version} does not match the feature table: expects "
            "columns ['seat_pitch'] that the feature table does not have; expects other types for columns: distance "
            "(model expects string, the table has double). Nothing was scored or written.") in str(
        result.failure_data_for_node("batch_predictions").error)
    assert versions(spark, resources, "batch_predictions") == before


def test_an_unreachable_mlflow_server_fails_fast_and_clearly():
    from orchestration.resources import MLflowResource, MLflowUnreachableError

    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(MLflowUnreachableError, match=f"MLflow at http://127.0.0.1:{port} is unreachable"):
        MLflowResource(tracking_uri=f"http://127.0.0.1:{port}").configure()
    assert time.monotonic() - started < 5


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
        "</resolvers></ivysettings>")
    code = (
        "from ml.spark import get_or_create_session, SparkSetupError\n"
        "try:\n"
        f"    get_or_create_session('local[1]', conf={{'spark.jars.ivy': '{tmp_path}/ivy', "
        f"'spark.jars.ivySettings': '{settings}', 'spark.ui.enabled': 'false'}})\n"
        "except SparkSetupError as e:\n"
        "    print('ERROR:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert "ERROR: Delta Lake's jar io.delta:delta-spark_4.2_2.13:4.4.0 is not in the Ivy cache" in proc.stdout, proc.stderr[-2000:]
    assert "could not be fetched from Maven Central" in proc.stdout
