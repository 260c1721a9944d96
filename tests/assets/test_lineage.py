"""The lineage of one prediction of the shared world (ml/lineage.py, orchestration/lineage.py), each hop checked
against the store it comes from, read here another way: Delta's files and history, MLflow's client, Dagster's
event log. Read only: nothing here writes to the world (other test files may have rerun some of its steps before,
so every expectation is read from the stores, not assumed)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
)
from pyspark.sql import functions as F

from assets.contracts import SPLIT_TABLES, SPLITS
from ml import lineage as L
from orchestration import lineage as cli
from tests.world import DAYS, MODEL_NAME, metadata_of

DAY = DAYS[1]  # the day with 5 quarantined rows


@pytest.fixture(scope="module")
def key(world) -> dict[str, str]:
    """A labelled, clean flight of the day."""
    row = next(r for r in world.rows_of(DAY) if r not in world.broken and r[world.col("arr_delay")] != "NA")
    return dict(zip(("carrier", "flight", "origin"), world.key_of(row), strict=True))


@pytest.fixture(scope="module")
def stores(world) -> L.Stores:
    return cli.stores_of(world.lake, world.resources["mlflow"])


@pytest.fixture(scope="module")
def chain(world, key) -> dict:
    return cli.explain(world.instance, world.lake, world.resources["mlflow"], key, date.fromisoformat(DAY))


def where_key(key: dict, day: str):
    condition = F.col("event_date") == F.lit(day)
    for column, value in key.items():
        condition &= F.col(column).cast("string") == value
    return condition


def commit(world, table: str, version: int) -> dict:
    [row] = [h for h in world.history(table) if h["version"] == version]
    return json.loads(row["userMetadata"] or "{}")


def file_names(world, table: str, version: int) -> set[str]:
    return {f.rsplit("/", 1)[-1] for f in world.table(table, version).inputFiles()}


def materialization_of(world, asset: str, run_id: str, partition: str | None = None) -> dict:
    records = world.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None), limit=1000
    ).records
    [record] = [r for r in records if r.run_id == run_id]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def test_the_prediction_row_and_the_commit_that_added_its_file(world, key, chain):
    p = chain["prediction"]
    rows = world.table("batch_predictions", p["delta_version"]).where(where_key(key, DAY))
    [row] = rows.collect()
    assert {k: p["row"][k] for k in ("model_name", "model_version", "model_run_id", "prediction", "probability")} == {
        k: row[k] for k in ("model_name", "model_version", "model_run_id", "prediction", "probability")
    }
    name = rows.select(F.input_file_name()).first()[0].rsplit("/", 1)[-1]
    version = p["commit"]["version"]
    assert name in file_names(world, "batch_predictions", version)  # the commit holds the row's file ...
    assert version == 0 or name not in file_names(world, "batch_predictions", version - 1)  # ... and added it
    meta = commit(world, "batch_predictions", version)
    assert p["commit"]["user_metadata"] == meta
    assert meta["model_uri"] == f"models:/{MODEL_NAME}/{row['model_version']}"


def test_the_model_version_its_aliases_and_their_history(world, chain):
    m, row = chain["model"], chain["prediction"]["row"]
    mv = world.client.get_model_version(MODEL_NAME, row["model_version"])
    assert (m["name"], m["version"], m["run_id"]) == (MODEL_NAME, str(mv.version), mv.run_id)
    assert m["run_id"] == row["model_run_id"]
    assert {k: m["tags"][k] for k in mv.tags} == dict(mv.tags)
    aliases = {a: str(v) for a, v in world.client.get_registered_model(MODEL_NAME).aliases.items()}
    assert m["aliases"] == sorted(a for a, v in aliases.items() if v == m["version"])
    assert m["all_aliases"] == aliases
    gated = {
        str(v.version): v.tags["gate.decision"]
        for v in world.client.search_model_versions(f"name='{MODEL_NAME}'")
        if "gate.decision" in v.tags
    }
    history = m["alias_history"]
    assert {e["version"]: e["event"] for e in history if e["event"].startswith("gate")} == {
        v: f"gate {d}" for v, d in gated.items()
    }
    first = next(e for e in history if e["version"] == "1")
    assert (first["event"], first["alias"], first["previous_champion"]) == ("gate promoted", "champion", None)
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)


def test_the_mlflow_run_its_link_and_its_tags(world, chain):
    r = chain["mlflow_run"]
    tuned = world.results["tuned_pipeline"]
    assert r["run_id"] == metadata_of(tuned, "tuned_pipeline")["mlflow_run_id"] == chain["model"]["run_id"]
    run = world.client.get_run(r["run_id"])
    assert r["tags"]["dagster.run_id"] == run.data.tags["dagster.run_id"] == tuned.run_id
    assert r["url"] == world.resources["mlflow"].run_url(run.info.experiment_id, run.info.run_id)
    assert r["url"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert r["test_metrics"] == {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    assert r["test_metrics"]["test_auc"] == metadata_of(tuned, "tuned_pipeline")["test_auc"]


def test_the_run_logs_its_three_splits_as_mlflow_datasets_with_their_delta_versions(world, chain):
    """ml/training.py: mlflow.log_input of each split (a Delta source at the version read), and the test metrics
    logged against the test dataset."""
    run = world.client.get_run(chain["mlflow_run"]["run_id"])
    inputs = {
        next((t.value for t in i.tags if t.key == "mlflow.data.context"), None): i.dataset
        for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"training", "validation", "test"}
    for context, table in zip(("training", "validation", "test"), SPLIT_TABLES, strict=True):
        dataset, version = inputs[context], int(run.data.tags[f"input.{table}.delta_version"])
        source = json.loads(dataset.source)
        assert dataset.source_type == "delta_table"
        assert (source["path"], source["delta_table_version"]) == (world.lake.table_path(table), version)
        assert dataset.name == f"main.flights.{table}@v{version}"
        assert json.loads(dataset.profile) == {"num_rows": world.table(table, version).count()}
        assert "label" in {column["name"] for column in json.loads(dataset.schema)["mlflow_colspec"]}
    # MLflow 3 keeps a metric's dataset with the logged model: the run's model lists each metric with its dataset.
    [model] = world.client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    metrics = {m.key: m for m in model.metrics}
    assert (metrics["test_auc"].dataset_name, metrics["test_auc"].dataset_digest) == (
        inputs["test"].name,
        inputs["test"].digest,
    )
    assert metrics["test_auc"].value == run.data.metrics["test_auc"]
    assert metrics["validation_auc"].dataset_name == inputs["validation"].name
    assert len(world.client.get_metric_history(run.info.run_id, "test_auc")) == 1  # logged once
    assert chain["mlflow_run"]["test_metrics_dataset"] == [inputs["test"].name]
    assert [(d["context"], d["delta_version"]) for d in chain["mlflow_run"]["datasets"]] == [
        (c, int(run.data.tags[f"input.{t}.delta_version"]))
        for c, t in zip(("training", "validation", "test"), SPLIT_TABLES, strict=True)
    ]


def test_the_split_versions_their_windows_and_the_features_they_were_cut_from(world, chain):
    run_tags = world.client.get_run(chain["mlflow_run"]["run_id"]).data.tags
    version_tags = chain["model"]["tags"]
    windows = {"train": (DAYS[0], DAYS[1]), "validation": (DAYS[1], DAYS[2]), "test": (DAYS[2], "2013-02-04")}
    for split, table in zip(SPLITS, SPLIT_TABLES, strict=True):
        s = chain["splits"][split]
        assert s["delta_version"] == int(run_tags[f"input.{table}.delta_version"])
        assert s["delta_version"] == int(version_tags[f"input.{table}.delta_version"])
        meta = commit(world, table, s["delta_version"])
        assert (s["window_start"], s["window_end_exclusive"]) == windows[split]
        assert meta["window"][f"{split}_start"] == s["window_start"]
        assert s["validated_features_delta_version"] == meta["validated_features_delta_version"]
        assert s["includes_day"] == (split == "validation")
        assert s["commit"]["user_metadata"]["dagster_run_id"] == world.results["splits"].run_id


def test_the_feature_row_its_raw_row_and_the_source(world, key, chain):
    f, raw, p = chain["features"], chain["raw"], chain["prediction"]
    scoring = materialization_of(world, "batch_predictions", p["commit"]["user_metadata"]["dagster_run_id"], DAY)
    assert f["delta_version"] == scoring["validated_features_delta_version"]  # the version scoring read
    [row] = world.table("validated_features", f["delta_version"]).where(where_key(key, DAY)).collect()
    assert f["row"]["label"] == row["label"] and f["row"]["distance"] == row["distance"]
    features_meta = commit(world, "validated_features", f["commit"]["version"])
    writer = features_meta["dagster_run_id"]
    assert writer == world.results["validated_features"].run_id
    recorded = materialization_of(world, "validated_features", writer, DAY)
    assert raw["delta_version"] == features_meta["raw_data_delta_version"] == recorded["raw_data_delta_version"]
    assert world.table("raw_data", raw["delta_version"]).where(where_key(key, DAY)).count() == 1
    raw_meta = commit(world, "raw_data", raw["commit"]["version"])
    assert raw_meta["dagster_run_id"] == world.results["raw_data"].run_id
    assert chain["source"] == raw_meta["source"] == world.lake.source_location


def test_the_day_quarantine_and_the_gate_verdict(world, key, chain):
    day = chain["day"]
    quarantined = world.table("quarantine").where(F.col("event_date") == DAY)
    assert day["quarantined_rows"] == quarantined.count() == len(world.broken)
    rules = quarantined.select(F.explode("failed_rules").alias("r")).groupBy("r").count().collect()
    assert day["by_rule"] == {r["r"]: r["count"] for r in rules}
    assert day["this_key_quarantined"] is False
    # The latest evaluation of each check of the day, found by walking every run's events.
    latest = {}
    for record in world.instance.get_run_records():
        for event in world.instance.all_logs(
            record.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ):
            evaluation = event.dagster_event.event_specific_data
            if evaluation.partition == DAY:
                check = (evaluation.asset_key.to_user_string(), evaluation.check_name)
                if check not in latest or event.timestamp > latest[check][0]:
                    latest[check] = (event.timestamp, evaluation.passed, event.run_id)
    gate = chain["dagster"]["gate"]
    assert {(ch["asset"], ch["check"]): (ch["passed"], ch.get("run_id")) for ch in gate["checks"]} == {
        check: (passed, run_id) for check, (_, passed, run_id) in latest.items()
    }
    assert gate["held_by_the_gate"] == any(not passed for _, passed, _ in latest.values())


def test_the_dagster_runs_of_each_step_with_their_links(world, chain):
    steps = chain["dagster"]["steps"]
    assert set(steps) == {
        "raw_data",
        "validated_features",
        *SPLIT_TABLES,
        "tuned_pipeline",
        "registered_model",
        "batch_predictions",
    }
    for step, s in steps.items():
        run = world.instance.get_run_by_id(s["run_id"])
        assert run is not None, step
        assert s["url"] == f"http://127.0.0.1:3000/runs/{s['run_id']}"
        assert (s["job"], s["status"]) == (run.job_name, run.status.value)
        assert s["materialization"] is not None, step
        if "agrees_with_delta" in s:
            assert s["agrees_with_delta"] is True, step
    assert steps["tuned_pipeline"]["run_id"] == world.results["tuned_pipeline"].run_id
    assert steps["registered_model"]["run_id"] == world.results["registered_model"].run_id
    assert steps["registered_model"]["materialization"]["metadata"]["model_version"] == int(chain["model"]["version"])
    assert steps["tuned_pipeline"]["materialization"]["metadata"]["mlflow_run_id"] == chain["mlflow_run"]["run_id"]


def test_the_command_line_prints_the_chain_and_its_json(world, key, chain, monkeypatch, capsys):
    monkeypatch.setenv("FLIGHTLINE_STATE_DIR", str(world.state))
    monkeypatch.setenv("DAGSTER_HOME", str(world.state / "dagster"))
    args = ["prediction", *[f"--key={k}={v}" for k, v in key.items()], "--date", DAY]
    assert cli.main(["--json", *args]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["prediction"]["row"] == chain["prediction"]["row"]
    assert parsed["model"]["version"] == chain["model"]["version"]
    assert parsed["dagster"]["steps"].keys() == chain["dagster"]["steps"].keys()
    assert cli.main(args + ["--dagster-url", "http://dagster.example:3000/"]) == 0
    text = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{text}")  # the sample shown in the README
    first = text.splitlines()[0]
    assert first.startswith("Prediction   batch_predictions") and f"event_date={DAY}" in first
    assert f"Model        {MODEL_NAME} v{chain['model']['version']}" in text
    assert "http://dagster.example:3000/runs/" in text and chain["mlflow_run"]["url"] in text
    assert cli.main([]) == 0  # a sample prediction
    assert capsys.readouterr().out.startswith("Prediction   batch_predictions")


def test_which_predictions_did_a_model_version_make(world, stores, capsys, monkeypatch):
    answer = L.predictions_of_version(stores, MODEL_NAME, 1)
    expected = {
        r["event_date"].isoformat(): r["count"]
        for r in world.table("batch_predictions").where("model_version = '1'").groupBy("event_date").count().collect()
    }
    assert {d["date"]: d["predictions"] for d in answer["days"]} == expected
    assert answer["total"] == sum(expected.values()) and answer["run_id"] == chain_run(world)
    assert [d["date"] for d in answer["days"]] == sorted(expected)
    monkeypatch.setenv("FLIGHTLINE_STATE_DIR", str(world.state))
    monkeypatch.setenv("DAGSTER_HOME", str(world.state / "dagster"))
    assert cli.main(["predictions-of", "--version", "1"]) == 0
    assert f"{MODEL_NAME} v1 (MLflow run {chain_run(world)}): {answer['total']} predictions" in capsys.readouterr().out


def chain_run(world) -> str:
    return world.client.get_model_version(MODEL_NAME, "1").run_id


def test_which_model_versions_were_trained_on_a_day(world, stores, capsys, monkeypatch):
    day = date.fromisoformat(DAYS[0])  # the world's train window
    answer = L.models_trained_on(stores, MODEL_NAME, day)
    trained = []
    for mv in world.client.search_model_versions(f"name='{MODEL_NAME}'"):
        version = int(mv.tags["input.train_set.delta_version"])
        window = commit(world, "train_set", version)["window"]
        if window["train_start"] <= DAYS[0] < window["train_end"]:
            trained.append(str(mv.version))
    assert sorted(v["version"] for v in answer["versions"]) == sorted(trained) and "1" in trained
    v1 = next(v for v in answer["versions"] if v["version"] == "1")
    assert set(v1["splits"]) == {"train"}
    assert v1["splits"]["train"]["rows_of_day"] == world.labelled_per_day[DAYS[0]]
    assert L.models_trained_on(stores, MODEL_NAME, date(2013, 1, 15))["versions"] == []
    monkeypatch.setenv("FLIGHTLINE_STATE_DIR", str(world.state))
    monkeypatch.setenv("DAGSTER_HOME", str(world.state / "dagster"))
    assert cli.main(["trained-on", "--date", DAYS[0]]) == 0
    assert "  v1 @champion" in capsys.readouterr().out


def test_what_is_missing_is_named(world, key, stores, capsys, monkeypatch):
    day = date.fromisoformat(DAY)
    with pytest.raises(L.LineageError, match=r"no row of batch_predictions \(Delta v\d+\) has carrier=.*that day has"):
        L.prediction_lineage(stores, {**key, "flight": "99999"}, day)
    with pytest.raises(L.LineageError, match="that day has 0 rows, it was never written"):
        L.prediction_lineage(stores, key, date(2013, 3, 1))
    with pytest.raises(L.LineageError, match="table no_such_table does not exist"):
        L.prediction_lineage(stores, key, day, table="no_such_table")
    with pytest.raises(L.LineageError, match=rf"model {MODEL_NAME} has no version 99 \(its versions: \[1"):
        L.predictions_of_version(stores, MODEL_NAME, 99)
    with pytest.raises(L.LineageError, match="model main.flights.nothing has no registered version"):
        L.models_trained_on(stores, "main.flights.nothing", day)
    with pytest.raises(L.LineageError, match=r"missing \['origin'\]"):
        cli.parse_keys(["carrier=UA,flight=1"])
    with pytest.raises(L.LineageError, match="not a date"):
        cli.parse_day("yesterday")
    monkeypatch.setenv("FLIGHTLINE_STATE_DIR", str(world.state))
    monkeypatch.setenv("DAGSTER_HOME", str(world.state / "dagster"))
    assert cli.main(["predictions-of", "--version", "99"]) == 2
    assert capsys.readouterr().err.startswith(f"lineage: model {MODEL_NAME} has no version 99")


def test_a_day_whose_latest_check_failed_is_held_by_the_gate():
    """gate_of_day on an instance of its own: a failed evaluation of the day holds it; a passed one does not."""
    with DagsterInstance.ephemeral() as instance:
        for day, passed in ((DAY, False), (DAYS[0], True)):  # a runless evaluation: one per check and day
            instance.report_runless_asset_event(
                AssetCheckEvaluation(
                    asset_key=AssetKey("raw_data"), check_name="raw_suite", passed=passed, partition=day
                )
            )
        gate = cli.gate_of_day(instance, DAY, "http://ui")
        assert gate["held_by_the_gate"] is True
        assert {(c["check"], c["passed"]) for c in gate["checks"]} == {
            ("raw_suite", False),
            ("quarantine_budget", None),
            ("feature_suite", None),
        }
        assert cli.gate_of_day(instance, DAYS[0], "http://ui")["held_by_the_gate"] is False
        assert cli.gate_of_day(instance, DAYS[2], "http://ui")["checks"][0]["passed"] is None  # never evaluated


def test_ml_lineage_imports_nothing_of_dagster():
    code = "import sys, ml.lineage; print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
