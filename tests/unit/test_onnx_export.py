"""ml/onnx_export.py on tiny real Spark fits and real onnxruntime: each converter breakage, its fix, and parity.

The fixture's pipeline has a constant numeric column `k` (std 0) next to the tiny spec's x1, x2 and color, and
color is NULL on some training rows: Spark's StringIndexer (handleInvalid=keep) gives them the extra index, whose
one-hot slot then gets a coefficient of its own. (Without such rows that slot's coefficient is 0 and an all-zero
one-hot scores the same: the encoder fix would be invisible.)
"""

import contextlib
import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from pyspark.sql import functions as F

from ml import onnx_export as ox
from ml.pipeline import build_pipeline
from ml.registry import register_version
from tests.unit.tiny import log_tiny_model, tiny_features, tiny_lineage, tiny_spec


@pytest.fixture(scope="module")
def constant_column(spark):
    spec = dataclasses.replace(tiny_spec(), numeric_features=("x1", "x2", "k"))
    frame = (
        tiny_features(spark)
        .withColumn("k", F.lit(3.0))
        .withColumn("color", F.when(F.col("id") % 5 == 0, F.lit(None)).otherwise(F.col("color")))
    )
    pipeline = build_pipeline(spec, "logistic_regression", {"maxIter": 20}).fit(frame)
    return spec, pipeline, frame


def manifest(spec):
    return ox.Manifest("main.tiny.m", "1", "run", spec.numeric_features, spec.categorical_features, spec.task)


def loads(model) -> bool:
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return True
    except Exception as exc:
        assert "split" in str(exc).lower(), exc
        return False


def test_converter_graph_does_not_load_until_split_sizes_are_an_input(constant_column, spark):
    spec, pipeline, _ = constant_column
    model = ox.raw_convert(pipeline, spec, spark)
    # The converter names the default domain twice ('' at 8 and 'ai.onnx' at 13), in an order that follows
    # Python's string hashing: whether onnxruntime loads the raw graph changes with PYTHONHASHSEED.
    defaults = sorted((o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert defaults == [("", 8), ("ai.onnx", 13)]
    ox.fix_default_opset(model)
    assert [(o.domain, o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")] == [("", 13)]
    assert not loads(model)  # the Imputer's Split-2 `split` attribute in an opset-13 graph
    assert ox.fix_split_sizes(model) == 1
    assert loads(model)


def test_zero_std_column_gives_nan_until_its_scale_is_zero(constant_column, spark):
    spec, pipeline, frame = constant_column
    model = ox.raw_convert(pipeline, spec, spark)
    ox.fix_default_opset(model)
    ox.fix_split_sizes(model)
    rows = ox._spark_scored(pipeline, frame.where("color IS NOT NULL").limit(20), spec)  # NULLs: the next test
    _, broken = ox.OnnxScorer(model.SerializeToString(), manifest(spec)).predict(rows)
    assert np.isnan(broken).all()  # (x - mean) * 1/0: 0 * inf
    assert ox.fix_zero_std(model, pipeline) == 1
    _, fixed = ox.OnnxScorer(model.SerializeToString(), manifest(spec)).predict(rows)
    assert np.abs(fixed - [r["__probability"] for r in rows]).max() <= ox.TOLERANCE


def test_unseen_and_null_categories_agree_with_spark_only_after_the_encoder_fix(constant_column, spark):
    spec, pipeline, frame = constant_column
    model = ox.raw_convert(pipeline, spec, spark)
    ox.fix_default_opset(model)
    ox.fix_split_sizes(model)
    ox.fix_zero_std(model, pipeline)
    base = ox._spark_scored(pipeline, frame.limit(10), spec)
    probes = ox.probe_rows(base, spec)
    rows = probes["unseen:color"] + probes["null:color"]
    schema = "x1 double, x2 double, k double, color string"
    spark_rows = ox._spark_scored(pipeline, spark.createDataFrame(rows, schema), spec)
    expected = np.array([r["__probability"] for r in spark_rows])
    _, before = ox.OnnxScorer(model.SerializeToString(), manifest(spec)).predict(rows)
    assert np.abs(before - expected).max() > 1e-3  # ONNX's all-zero one-hot is not Spark's extra index
    assert ox.fix_unseen_categories(model, pipeline) == 1
    _, after = ox.OnnxScorer(model.SerializeToString(), manifest(spec)).predict(rows)
    assert np.abs(after - expected).max() <= ox.TOLERANCE


def test_parity_with_every_fix_on_rows_and_probes(constant_column, spark):
    spec, pipeline, frame = constant_column
    model, fixes = ox.convert(pipeline, spec, spark)
    assert fixes == {"split_sizes": 1, "zero_std_scales": 1, "unseen_category_encoders": 1}
    parity = ox.check_parity(pipeline, ox.OnnxScorer(model.SerializeToString(), manifest(spec)), frame, spec)
    assert parity.ok, parity.reason
    assert parity.rows == 240 and parity.within_tolerance == 240 and parity.class_mismatches == 0
    assert parity.max_abs_diff <= ox.TOLERANCE
    assert set(parity.probes) == {"unseen:color", "null:color", "null:x1", "null:x2", "null:k", "null:all_numerics"}
    assert all(p["rows"] == ox.PROBE_BASE_ROWS and p["class_mismatches"] == 0 for p in parity.probes.values())


def test_request_rows_are_checked_against_the_signature(constant_column, spark):
    spec, pipeline, _ = constant_column
    model, _ = ox.convert(pipeline, spec, spark)
    scorer = ox.OnnxScorer(model.SerializeToString(), manifest(spec))
    good = {"x1": 0.1, "x2": 1, "k": 3.0, "color": "red"}
    assert scorer.predict([good])[1].shape == (1,)
    for row, field in [
        ({k: v for k, v in good.items() if k != "x2"}, "x2"),
        ({**good, "x1": "0.1"}, "x1"),
        ({**good, "x1": True}, "x1"),
        ({**good, "k": float("inf")}, "k"),
        ({**good, "color": 3}, "color"),
    ]:
        with pytest.raises(ox.RequestError) as err:
            scorer.predict([good, row])
        assert err.value.field == field and err.value.row == 1 and repr(field) in str(err.value)


def test_a_setting_onnx_cannot_reproduce_is_refused_naming_it(constant_column):
    spec, pipeline, _ = constant_column
    pipeline.stages[3].setHandleInvalid("error")  # the StringIndexer: Spark would fail on an unseen category
    try:
        with pytest.raises(ox.ExportRefusedError, match="handleInvalid='error'"):
            ox.check_supported(pipeline, spec)
    finally:
        pipeline.stages[3].setHandleInvalid("keep")


@pytest.mark.serving  # 30-60 s (two fits, two exports): make test-serving
def test_export_stores_the_graph_with_the_version_or_tags_why_not(spark, mlflow_store):
    client, experiment = mlflow_store.client, mlflow_store.experiment_id()
    name = "main.tiny.onnx_export"
    uri, run_id, _, test = log_tiny_model(spark, experiment)
    v1 = register_version(client, name, uri, run_id, "LR", tiny_lineage(run_id))
    outcome = ox.export_version(client, name, v1.version, test, tiny_spec())
    assert outcome.servable, outcome.reason
    tags = client.get_model_version(name, v1.version).tags
    assert tags[ox.TAG] == "ok" and tags[ox.TAG_URI] == f"runs:/{run_id}/serving/{name}/v{v1.version}"
    assert float(tags["serving.parity.share_within"]) == 1.0 and tags["serving.parity.class_mismatches"] == "0"
    client.set_registered_model_alias(name, "champion", v1.version)
    served = ox.load_served(client, name)
    assert (served.version, served.run_id) == (str(v1.version), run_id)
    assert served.scorer.manifest.parity["rows"] == outcome.parity.rows > 0

    # A random forest: onnxmltools writes its one-hot (categorical) splits wrongly; parity catches it.
    features = tiny_features(spark)
    forest = build_pipeline(tiny_spec(), "random_forest", {"numTrees": 3, "maxDepth": 3}).fit(features)
    import mlflow

    from ml.training import model_signature

    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.spark.log_model(forest, artifact_path="model", signature=model_signature(tiny_spec()))
    v2 = register_version(client, name, info.model_uri, run.info.run_id, "RF", tiny_lineage(run.info.run_id))
    refused = ox.export_version(client, name, v2.version, features, tiny_spec())
    tags = client.get_model_version(name, v2.version).tags  # still registered
    assert not refused.servable and tags[ox.TAG] == "refused" and ox.TAG_URI not in tags
    assert "within 0.0001" in tags[ox.TAG_REASON] and "in {1.0}" in tags[ox.TAG_REASON]
    client.set_registered_model_alias(name, "champion", v2.version)
    with pytest.raises(ox.NotServableError, match=f"v{v2.version}, which is not servable in real time: "):
        ox.load_served(client, name)


@pytest.mark.parametrize(
    "task, algorithm",
    [
        ("classification", "random_forest"),
        ("classification", "gbt"),
        ("regression", "random_forest"),
        ("regression", "gbt"),
    ],
)
def test_an_ensemble_read_in_one_pass_converts_to_the_same_graph(spark, tmp_path, monkeypatch, task, algorithm):
    """`trees_read_once` hands the converter every tree's nodes from one save of the ensemble: the graph is the
    converter's own, byte for byte, and neither the temporary folder nor the patched reader outlives the export."""
    from onnxmltools.convert.sparkml.operator_converters import random_forest_classifier, tree_ensemble_common

    monkeypatch.setattr(ox.tempfile, "tempdir", str(tmp_path))  # both paths' temporary folders: here
    spec = tiny_spec(task)
    fitted = build_pipeline(spec, algorithm, {"maxIter": 3} if algorithm == "gbt" else {"numTrees": 4}).fit(
        tiny_features(spark, task=task)
    )
    ensemble = fitted.stages[-1]
    assert isinstance(ensemble, ox.ENSEMBLES) and len(ensemble.trees) >= 3
    ours = ox.raw_convert(fitted, spec, spark)
    assert {p.name for p in tmp_path.iterdir()} == set()  # our one save is removed after the export
    assert random_forest_classifier.save_read_sparkml_model_data is tree_ensemble_common.save_read_sparkml_model_data
    with monkeypatch.context() as m:
        m.setattr(ox, "trees_read_once", lambda pipeline, spark: contextlib.nullcontext())
        theirs = ox.raw_convert(fitted, spec, spark)
    assert len(list(tmp_path.iterdir())) == len(ensemble.trees)  # the converter's way: a folder per tree, left behind
    assert ours.SerializeToString() == theirs.SerializeToString()
