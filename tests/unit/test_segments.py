"""ml/segments.py on tiny data: one model per segment in a grouped map, the choice against the global model, the
fallbacks (too small, training raised, unseen), the bundle in MLflow, and scoring. Real Spark and MLflow."""

from __future__ import annotations

import json
import math
import pickle
from datetime import date

import pytest
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from ml.metrics import evaluate, is_better
from ml.pipeline import build_pipeline
from ml.registry import CHAMPION, GateConfig, gate, register_version, set_champion
from ml.segment_bundle import bundle_signature, load_bundle, log_segments
from ml.segments import (
    FAILED,
    GLOBAL,
    OWN,
    TOO_SMALL,
    TRAINED,
    Bundle,
    Scorer,
    SegmentConfig,
    bundle_metric,
    metrics_of,
    predict,
    score_segments,
    train_segments,
)
from ml.splits import SplitWindow, time_splits
from tests.unit.tiny import tiny_features, tiny_lineage, tiny_spec

CONFIG = SegmentConfig(n_trials=2, min_rows=20)
COLORS = ("red", "green", "blue")


def segmented(spark, task):
    """red, green, blue: 130 rows each, 10 a day on each of 13 days (90 train, 20 validation, 20 test); purple: 6 rows (too small); yellow (classification): 72 rows whose
    label is always 0, so its training raises (a classifier needs both classes)."""
    base = tiny_features(spark, n=390, days=13, task=task, colors=COLORS)  # 13 days: colors and days independent
    purple = tiny_features(spark, n=6, days=12, seed=5, task=task, colors=("purple",))
    frames = [base, purple.withColumn("id", F.col("id") + 20_000)]
    if task == "classification":
        yellow = tiny_features(spark, n=72, days=12, seed=3, task=task, colors=("yellow",))
        frames.append(yellow.withColumn("id", F.col("id") + 10_000).withColumn("label", F.lit(0.0)))
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return time_splits(out, SplitWindow.ending(date(2024, 1, 13), 9, 2, 2))


def global_model(spec, splits):
    algorithm = "logistic_regression" if spec.task == "classification" else "linear_regression"
    return build_pipeline(spec, algorithm, {"maxIter": 20}).fit(splits["train"])


@pytest.fixture(scope="module")
def classification(spark):
    spec = tiny_spec(segment_column="color", min_segment_rows=20)
    splits = segmented(spark, "classification")
    model = global_model(spec, splits)
    results = train_segments(spec, splits["train"], splits["validation"], splits["test"], model, CONFIG)
    return spec, splits, model, {r.segment: r.asDict() for r in results.collect()}


def check_choices(spec, splits, model, rows, metric):
    """Each recorded metric recomputed independently (the global one by Spark, the segment's from its pickle), and
    the choice: the segment's own model only where it is better on the segment's test rows."""
    for segment, r in rows.items():
        if r["status"] != TRAINED:
            continue
        test = splits["test"].where(F.col("color") == segment)
        theirs = evaluate(model.transform(test), spec.task, (metric,))[metric]
        assert r["global_test_metric"] == pytest.approx(theirs, abs=1e-9), segment
        frame = test.toPandas()  # tiny
        job = CONFIG.job(spec, True)
        prediction, probability = predict(pickle.loads(r["model"]), frame, job)
        own = metrics_of(spec.task, frame["label"].to_numpy(float), prediction, probability)[metric]
        assert r["test_metric"] == pytest.approx(own, abs=1e-12), segment
        # the rule, on the recorded values (equal AUCs may differ by 1e-16 between scikit-learn and Spark) ...
        assert r["choice"] == (OWN if is_better(own, r["global_test_metric"], metric) else GLOBAL), segment
        if r["choice"] == OWN:  # ... and never a model worse than the global one on the segment's test rows
            assert not is_better(theirs, own, metric, 1e-9), segment


def test_classification_segments_are_trained_recorded_and_chosen(classification):
    spec, splits, model, rows = classification
    assert set(rows) == {*COLORS, "purple", "yellow"}
    assert {s: rows[s]["status"] for s in rows} == {
        "red": TRAINED,
        "green": TRAINED,
        "blue": TRAINED,
        "purple": TOO_SMALL,
        "yellow": FAILED,
    }
    assert rows["purple"]["reason"] == "6 training rows, fewer than the minimum 20"
    assert rows["yellow"]["reason"].startswith("ValueError: ")
    for fallback in ("purple", "yellow"):
        assert rows[fallback]["choice"] == GLOBAL and rows[fallback]["model"] is None
    assert rows["yellow"]["global_test_metric"] is None  # one class: the AUC is undefined there
    for segment in COLORS:
        r = rows[segment]
        assert (r["train_rows"], r["validation_rows"], r["test_rows"]) == (90, 20, 20)
        assert r["metric"] == "auc" and r["algorithm"] in ("logistic_regression", "random_forest")
        assert set(json.loads(r["test_metrics"])) == {"auc", "pr_auc", "f1", "log_loss"}
        assert set(json.loads(r["validation_metrics"])) == {"auc", "pr_auc", "f1", "log_loss"}
    check_choices(spec, splits, model, rows, "auc")


def test_a_margin_the_segment_models_cannot_beat_keeps_every_segment_on_the_global_model(spark, classification):
    spec, splits, model, rows = classification
    config = SegmentConfig(n_trials=2, min_rows=20, margin=1.0)
    again = {
        r.segment: r
        for r in train_segments(spec, *(splits[s] for s in ("train", "validation", "test")), model, config).collect()
    }
    assert {r.choice for r in again.values()} == {GLOBAL}
    for segment in COLORS:  # the same seeded studies: the same params and metrics
        assert again[segment].params == rows[segment]["params"]
        assert again[segment].test_metric == rows[segment]["test_metric"]
        assert "does not beat the global model" in again[segment].reason


def test_regression_segments(spark):
    spec = tiny_spec("regression", segment_column="color", min_segment_rows=20)
    splits = segmented(spark, "regression")
    model = global_model(spec, splits)
    rows = {
        r.segment: r.asDict()
        for r in train_segments(spec, splits["train"], splits["validation"], splits["test"], model, CONFIG).collect()
    }
    assert {s: r["status"] for s, r in rows.items()} == {
        "red": TRAINED,
        "green": TRAINED,
        "blue": TRAINED,
        "purple": TOO_SMALL,
    }
    for segment in COLORS:
        assert rows[segment]["metric"] == "rmse"
        assert rows[segment]["algorithm"] in ("ridge", "random_forest")
        assert set(json.loads(rows[segment]["test_metrics"])) == {"rmse", "mae", "r2"}
    check_choices(spec, splits, model, rows, "rmse")


def test_a_spec_without_a_segment_column_is_refused_by_name():
    with pytest.raises(ValueError) as error:
        SegmentConfig().job(tiny_spec(), has_global=True)
    assert str(error.value) == "dataset tiny names no segment_column: there are no segments to train"
    with pytest.raises(ValueError) as error:
        tiny_spec(segment_column="x1")
    assert str(error.value) == (
        "dataset tiny: segment_column 'x1' must be a key column or a categorical feature (one of ['color', 'id'])"
    )


def test_scoring_uses_each_segments_own_model_and_the_global_one_elsewhere(spark, classification):
    spec, splits, model, rows = classification
    bundle = Bundle.from_results(spec, list(rows.values()), CONFIG.job(spec, True))
    own = set(bundle.own_segments)
    assert own == {s for s, r in rows.items() if r["choice"] == OWN}
    bundle_model, global_scorer = Scorer("main.tiny.m_by_segment", "3", "run-b"), Scorer("main.tiny.m", "7", "run-g")
    unseen = tiny_features(spark, n=12, days=12, seed=9, colors=("orange",)).withColumn("id", F.col("id") + 30_000)
    features = splits["test"].unionByName(unseen)
    scored = score_segments(features, spec, bundle, bundle_model, model, global_scorer)
    got = scored.collect()
    assert len(got) == features.count()
    for r in got:
        assert (r.model_name, r.model_version, r.model_run_id) == ("main.tiny.m_by_segment", "3", "run-b")
        if r.segment in own:
            assert (r.scored_by, r.scored_by_model, r.scored_by_version) == (
                OWN,
                f"main.tiny.m_by_segment/{r.segment}",
                "3",
            )
        else:  # orange (never seen), purple (too small), yellow (failed), and segments that lost to the global model
            assert (r.scored_by, r.scored_by_model, r.scored_by_version) == (GLOBAL, "main.tiny.m", "7")
        assert 0.0 <= r.probability <= 1.0
    assert {r.segment for r in got if r.scored_by == GLOBAL} >= {"orange", "yellow"}
    # the global rows carry the global model's own probabilities; a rerun gives the same rows
    native = model.transform(features).select("id", vector_to_array("probability")[1].alias("p")).collect()
    native = {r.id: r.p for r in native}
    for r in got:
        if r.scored_by == GLOBAL:
            assert r.probability == pytest.approx(native[r.id], abs=1e-12)
    again = {r.id: r for r in score_segments(features, spec, bundle, bundle_model, model, global_scorer).collect()}
    assert {r.id: (r.prediction, r.probability, r.scored_by) for r in got} == {
        i: (r.prediction, r.probability, r.scored_by) for i, r in again.items()
    }


def test_the_bundle_in_mlflow_is_registered_gated_and_rolled_back(spark, classification, mlflow_store, request):
    spec, splits, model, rows = classification
    client = mlflow_store.client
    name = f"main.tiny.{request.node.name}_by_segment"
    outcome = log_segments(
        spec,
        list(rows.values()),
        CONFIG,
        mlflow_store.experiment_id(),
        {"dagster.run_id": "r-seg"},
        run_name="tiny_by_color",
        global_model={"name": "main.tiny.m", "version": "7"},
    )
    children = client.search_runs([outcome.experiment_id], f"tags.mlflow.parentRunId = '{outcome.run_id}'")
    assert {c.data.tags["segment"] for c in children} == set(rows)
    by_segment = {c.data.tags["segment"]: c for c in children}
    assert by_segment["purple"].data.tags["segment.status"] == TOO_SMALL
    assert by_segment["yellow"].info.status == "FAILED"
    red = by_segment["red"].data
    assert red.metrics["train_rows"] == 90 and "test_auc" in red.metrics and "global_test_auc" in red.metrics
    assert red.params["algorithm"] == rows["red"]["algorithm"]
    assert client.get_run(outcome.run_id).data.metrics["segments"] == 5

    import mlflow

    assert mlflow.models.get_model_info(outcome.model_uri).signature == bundle_signature(spec)
    loaded = load_bundle(outcome.model_uri)
    assert loaded.own_segments == outcome.bundle.own_segments
    pyfunc = mlflow.pyfunc.load_model(outcome.model_uri)
    sample = splits["test"].toPandas()[["x1", "x2", "color"]]
    out = pyfunc.predict(sample)
    own = sample["color"].isin(loaded.own_segments)
    assert (out["scored_by"] == own.map({True: OWN, False: GLOBAL})).all()
    assert out.loc[~own, "prediction"].isna().all() and out.loc[own, "prediction"].notna().all()

    test = splits["test"]
    global_scorer = Scorer("main.tiny.m", "7", "run-g")

    def evaluate_version(v):
        b = load_bundle(f"models:/{name}/{v}")
        return bundle_metric(
            score_segments(test, spec, b, Scorer(name, v, "x"), model, global_scorer), test, spec, "auc"
        )

    versions = []
    for _ in range(2):
        v = register_version(client, name, outcome.model_uri, outcome.run_id, "bundle", tiny_lineage(outcome.run_id))
        versions.append(str(v.version))
    first = gate(client, name, versions[0], "auc", evaluate_version, GateConfig(floors={}))
    assert first.promoted and math.isfinite(first.challenger_value)
    second = gate(client, name, versions[1], "auc", evaluate_version, GateConfig(floors={}))
    assert not second.promoted  # the same bundle does not beat itself by the margin
    assert second.challenger_value == pytest.approx(first.challenger_value, abs=1e-12)
    # the bundle's AUC equals the AUC of its rows as scored, computed here by Spark's evaluator
    scored = score_segments(test, spec, loaded, Scorer(name, "1", "x"), model, global_scorer)
    joined = scored.join(test.select("id", "event_date", "label"), ["id", "event_date"])
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    auc = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="probability", numBins=0).evaluate(joined)
    assert first.challenger_value == pytest.approx(auc, abs=1e-9)
    # rollback: @champion set back by hand through the registry's own path
    change = set_champion(client, name, versions[1], bundle_signature(spec), "tester", "rollback drill")
    assert change.previous_version == versions[0]
    assert str(client.get_registered_model(name).aliases[CHAMPION]) == versions[1]


def test_a_bundle_scores_a_sample_of_each_own_segment_before_it_can_be_champion(
    spark, classification, mlflow_store, tmp_path
):
    """smoke_score_bundle (rollback_job's check of a bundle): a sound bundle scores `rows` rows of each of its own
    segments and `rows` of any; one whose segment model is damaged is refused, naming the URI and the cause."""
    import mlflow

    from ml.scoring import ModelLoadError
    from ml.segment_bundle import SegmentBundle, bundle_requirements, smoke_score_bundle

    spec, splits, model, rows = classification
    forced = [{**r, "choice": OWN} if s == "red" else {**r, "choice": GLOBAL} for s, r in rows.items()]
    sound = Bundle.from_results(spec, forced, CONFIG.job(spec, True))
    damaged = Bundle(sound.manifest, {"red": b"not a pickle"})
    uris = {}
    for name, bundle in (("sound", sound), ("damaged", damaged)):
        with mlflow.start_run(experiment_id=mlflow_store.experiment_id()):
            uris[name] = mlflow.pyfunc.log_model(
                name="segment_bundle",
                python_model=SegmentBundle(),
                artifacts=bundle.save(tmp_path / name),
                signature=bundle_signature(spec),
                pip_requirements=bundle_requirements(),
            ).model_uri
    global_scorer = Scorer("main.tiny.m", "7", "run-g")
    test = splits["test"]
    check = smoke_score_bundle(uris["sound"], test, spec, model, global_scorer, rows=5)
    first = test.orderBy("id", "event_date").limit(5).collect()
    assert check.rows == 10  # the first 5 rows of red, and the first 5 rows of any segment
    assert (check.rows_by_segment_models, check.segments) == (5 + sum(r.color == "red" for r in first), ("red",))
    with pytest.raises(ModelLoadError) as refused:
        smoke_score_bundle(uris["damaged"], test, spec, model, global_scorer, rows=5)
    assert str(refused.value).startswith(f"model {uris['damaged']} loads but cannot score the sample: ")
    assert "PythonException: _pickle.UnpicklingError: invalid load key" in str(refused.value)


def test_a_bundle_rollback_of_a_spec_without_segments_is_refused_by_name(tmp_path):
    from orchestration.deployments import local_resources
    from orchestration.rollback import rollback_target

    spec = tiny_spec()
    resources = local_resources(spec, state=tmp_path)
    with pytest.raises(ValueError) as refused:
        rollback_target("by_segment", spec, resources["mlflow"], resources["lakehouse"], print)
    assert str(refused.value) == (
        "dataset tiny names no segment_column: there is no by_segment bundle to roll back "
        "(model: global moves @champion of main.tiny.tiny_model)"
    )
