"""tune_and_log and scoring, on tiny data with a real MLflow store (the registry and its gate: test_registry.py)."""

from datetime import date

import mlflow
import pytest

from ml.registry import register_version
from ml.scoring import ResolvedModel, SignatureMismatchError, check_signature, load_model, score
from ml.splits import SplitWindow, time_splits
from ml.training import TuningConfig, tune_and_log
from tests.unit.tiny import tiny_features, tiny_lineage, tiny_spec


@pytest.fixture()
def NAME(request):
    """A model name of the test's own, since the MLflow store is shared by the session."""
    return f"main.tiny.{request.node.name.replace('[', '_').replace(']', '')}"


@pytest.fixture(scope="module")
def trained(spark, mlflow_store):
    spec = tiny_spec()
    splits = time_splits(tiny_features(spark), SplitWindow.ending(date(2024, 1, 12), 8, 2, 2))
    outcome = tune_and_log(
        spec,
        splits["train"],
        splits["validation"],
        splits["test"],
        TuningConfig(n_trials=2, algorithms=("logistic_regression",), study_name="unit"),
        experiment_id=mlflow_store.experiment_id(),
        tags={"dagster.run_id": "r-1"},
    )
    return spec, outcome, splits


def test_tuning_logs_a_parent_run_with_nested_trials(trained, mlflow_store):
    spec, outcome, _ = trained
    client = mlflow_store.client
    parent = client.get_run(outcome.run_id)
    assert parent.data.tags["dagster.run_id"] == "r-1"
    assert parent.data.params["n_trials"] == "2"
    assert "test_auc" in parent.data.metrics and "validation_auc" in parent.data.metrics
    children = client.search_runs([outcome.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    assert len(children) == 2 == outcome.n_complete
    assert all("validation_auc" in c.data.metrics for c in children)
    signature = mlflow.models.get_model_info(outcome.model_uri).signature
    assert signature.inputs.input_names() == ["x1", "x2", "color"]


def test_scoring_names_the_model_on_every_row(spark, trained, mlflow_store, NAME):
    spec, outcome, splits = trained
    v = str(
        register_version(
            mlflow_store.client, NAME, outcome.model_uri, outcome.run_id, "v", tiny_lineage(outcome.run_id)
        ).version
    )
    model = ResolvedModel(NAME, v, outcome.run_id, f"models:/{NAME}/{v}")
    features = splits["test"]
    scored = score(features, load_model(model), model, spec)
    assert scored.columns == [
        "id",
        "event_date",
        "prediction",
        "probability",
        "model_name",
        "model_version",
        "model_run_id",
        "scored_at",
    ]
    rows = scored.collect()
    assert len(rows) == features.count() > 0
    assert {(r.model_name, r.model_version, r.model_run_id) for r in rows} == {(NAME, v, outcome.run_id)}
    assert all(0.0 <= r.probability <= 1.0 for r in rows)


def test_signature_mismatch_names_the_columns(trained, mlflow_store):
    from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

    _, outcome, _ = trained
    schema = StructType(
        [
            StructField("id", IntegerType()),
            StructField("x1", IntegerType()),  # any numeric will do
            StructField("x2", StringType()),
        ]
    )
    with pytest.raises(SignatureMismatchError) as error:
        check_signature(outcome.model_uri, schema)
    assert str(error.value) == (
        f"model {outcome.model_uri} does not match the feature table: expects columns ['color'] that the feature "
        "table does not have; expects other types for columns: x2 (model expects double, the table has string). "
        "Nothing was scored or written."
    )
    ok = StructType([*schema.fields[:2], StructField("x2", DoubleType()), StructField("color", StringType())])
    assert check_signature(outcome.model_uri, ok) == ["x1", "x2", "color"]
