"""orchestration/serving.py as a real process on a free port of 127.0.0.1, sent real HTTP requests: parity with batch
scoring for the same rows, unseen and NULL values, bad requests, and reloads (endpoint and SIGHUP) after promotions.

The models are tiny real Spark fits, registered and exported (ml/onnx_export.py) in the session's MLflow store.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ml import onnx_export as ox
from ml.registry import register_version
from ml.scoring import ResolvedModel, load_model, score
from tests.conftest import child_env
from tests.listening import listening, on_loopback
from tests.unit.tiny import log_tiny_model, tiny_lineage, tiny_spec

pytestmark = pytest.mark.serving  # about 3 minutes (a server process, Spark fits): make test-serving

ROOT = Path(__file__).resolve().parents[2]
NAME = "main.tiny.serving"
FEATURES = list(tiny_spec().features)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, path: str, body=None, raw: bytes | None = None):
    """(status, headers, JSON body) of one request to the server."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method="POST" if data is not None or path == "/reload" else "GET"
    )
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def start_server(port: int, tracking_uri: str) -> subprocess.Popen:
    env = child_env(PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestration.serving",
            "--port",
            str(port),
            "--model",
            NAME,
            "--tracking-uri",
            tracking_uri,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(process: subprocess.Popen, port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stdout.read()}")
        try:
            if call(port, "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not answer /health in time")


def register_exported(client, spark, experiment, description, **kwargs):
    uri, run_id, pipeline, test = log_tiny_model(spark, experiment, **kwargs)
    version = register_version(client, NAME, uri, run_id, description, tiny_lineage(run_id))
    outcome = ox.export_version(client, NAME, version.version, test, tiny_spec())
    assert outcome.servable, outcome.reason
    return str(version.version), run_id, test


@pytest.fixture(scope="module")
def served(spark, mlflow_store):
    client, experiment = mlflow_store.client, mlflow_store.experiment_id()
    v1, run_id, test = register_exported(client, spark, experiment, "LR")
    client.set_registered_model_alias(NAME, "champion", v1)
    port = free_port()
    process = start_server(port, mlflow_store.tracking_uri)
    try:
        wait_healthy(process, port)
        yield {"port": port, "process": process, "client": client, "v1": v1, "run_id": run_id, "test": test}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def batch_scored(spark, test, version: str, run_id: str) -> dict[int, tuple[float, float]]:
    """Batch scoring's prediction and probability per id (ml.scoring.score, the native path)."""
    model = ResolvedModel(NAME, version, run_id, f"models:/{NAME}/{version}")
    rows = score(test, load_model(model), model, tiny_spec()).select("id", "prediction", "probability").collect()
    return {r["id"]: (r["prediction"], r["probability"]) for r in rows}


def test_the_server_listens_on_127_0_0_1_only(served):
    """Every listening socket of the server's process is on loopback (from `ss -ltnp`), and its port is one of them."""
    found = listening({served["process"].pid})
    addresses = found.get(served["process"].pid, set())
    assert f"127.0.0.1:{served['port']}" in addresses, found  # found listening: the check below is not vacuous
    assert all(on_loopback(a) for a in addresses), addresses
    print(f"\nserving listening: {sorted(addresses)}")


def test_predictions_match_batch_scoring_for_the_same_rows(spark, served):
    port, v1 = served["port"], served["v1"]
    rows = [r.asDict() for r in served["test"].select("id", *FEATURES).orderBy("id").collect()]
    expected = batch_scored(spark, served["test"], v1, served["run_id"])
    status, headers, body = call(port, "/predict", {"instances": [{c: r[c] for c in FEATURES} for r in rows]})
    assert status == 200 and (body["model_name"], body["model_version"]) == (NAME, v1)
    assert (headers["x-model-name"], headers["x-model-version"]) == (NAME, v1)
    assert len(body["predictions"]) == len(rows) == len(expected) > 0
    for row, got in zip(rows, body["predictions"], strict=True):
        prediction, probability = expected[row["id"]]
        assert got["prediction"] == prediction and abs(got["probability"] - probability) <= ox.TOLERANCE
    for row in rows[:3]:  # single rows
        status, headers, body = call(port, "/predict", {"instance": {c: row[c] for c in FEATURES}})
        assert status == 200 and body["model_version"] == v1 and headers["x-model-version"] == v1
        assert abs(body["prediction"]["probability"] - expected[row["id"]][1]) <= ox.TOLERANCE


def test_unseen_category_and_null_numeric_score_as_spark_does(spark, served):
    rows = [
        {"x1": 0.3, "x2": -0.2, "color": "purple"},  # a color the model never saw
        {"x1": 0.3, "x2": None, "color": "red"},  # NULL numeric: the Imputer's median
        {"x1": None, "x2": None, "color": None},  # everything missing
    ]
    frame = spark.createDataFrame(
        [(i, *r.values()) for i, r in enumerate(rows)], "id INT, x1 DOUBLE, x2 DOUBLE, color STRING"
    ).withColumn("event_date", F.current_date())
    expected = batch_scored(spark, frame, served["v1"], served["run_id"])
    status, _, body = call(served["port"], "/predict", {"instances": rows})
    assert status == 200
    for i, got in enumerate(body["predictions"]):
        assert got["prediction"] == expected[i][0] and abs(got["probability"] - expected[i][1]) <= ox.TOLERANCE


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_stays_up(served):
    port, version = served["port"], served["v1"]
    good = {"x1": 0.1, "x2": 0.2, "color": "red"}
    cases = [
        ({"instance": {"x1": 0.1, "color": "red"}}, 422, "x2", "missing"),
        ({"instances": [good, {**good, "x1": "fast"}]}, 422, "x1", "finite number"),
        ({"instance": {**good, "color": 7}}, 422, "color", "string"),
        ({"rows": [good]}, 422, None, "instances"),
    ]
    for body, status, field, words in cases:
        got_status, headers, got = call(port, "/predict", body)
        assert got_status == status, got
        assert got.get("field") == field and words in got["error"] and (field is None or repr(field) in got["error"])
        assert got["model_version"] == version and headers["x-model-version"] == version
    status, _, got = call(port, "/predict", raw=b"{not json")
    assert status == 400 and "not JSON" in got["error"]
    assert call(port, "/health")[0] == 200
    assert call(port, "/predict", {"instance": good})[0] == 200


def test_reload_after_a_promotion_by_endpoint_and_by_sighup(spark, served, mlflow_store):
    port, client, v1 = served["port"], served["client"], served["v1"]
    v2, _, _ = register_exported(client, spark, mlflow_store.experiment_id(), "weak", weak=True, seed=3)
    row = {"instance": {"x1": 1.0, "x2": -1.0, "color": "red"}}
    before = call(port, "/predict", row)[2]["prediction"]["probability"]
    client.set_registered_model_alias(NAME, "champion", v2)
    assert call(port, "/predict", row)[2]["model_version"] == v1  # nothing moves until a reload
    status, _, body = call(port, "/reload")
    assert status == 200 and (body["model_version"], body["previous_version"]) == (v2, v1)
    _, headers, body = call(port, "/predict", row)
    assert body["model_version"] == v2 == headers["x-model-version"]
    assert abs(body["prediction"]["probability"] - before) > 1e-6

    client.set_registered_model_alias(NAME, "champion", v1)  # a rollback, picked up on SIGHUP
    served["process"].send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while call(port, "/health")[2]["model_version"] != v1:
        assert time.monotonic() < deadline, "SIGHUP did not reload @champion"
        time.sleep(0.2)

    # A champion without an export (never exported, or refused) is not loaded: the server keeps v1 and says why.
    v3 = register_version(
        client, NAME, f"models:/{NAME}/{v1}", served["run_id"], "no export", tiny_lineage(served["run_id"])
    )
    client.set_registered_model_alias(NAME, "champion", str(v3.version))
    status, _, body = call(port, "/reload")
    assert status == 409 and "never exported" in body["error"] and body["model_version"] == v1
    assert call(port, "/predict", row)[2]["model_version"] == v1


def test_the_server_refuses_to_start_on_a_champion_it_cannot_serve(served, mlflow_store):
    """Runs after the reload test: @champion is then v3, which has no export."""
    process = start_server(free_port(), mlflow_store.tracking_uri)
    try:
        out, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 2 and "not servable in real time" in out and "never exported" in out
