"""Registration + gate decision: the embedded sqlite registry vs. a real MLflow server on 127.0.0.1.

One round is what `registered_model` does after training: register a version with its lineage tags, then
gate it, which loads the challenger and the champion from the registry and evaluates both on the same
(small) test set. The server is started by infra/mlflow-server.sh, as a user would start it. The stores
alternate round by round; the first round of each warms up and is not counted. Prints medians and the ratio.

    make bench-registry        # or: .venv/bin/python -m bench.registry_gate --rounds 5
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.world import session
from ml.dataset import DatasetSpec, table_source
from ml.registry import GateConfig, gate, lineage_tags, register_version
from ml.scoring import evaluate_version
from orchestration.deployments import REPO_ROOT
from orchestration.resources import MLflowResource

NAME = "main.bench.gate"
SPEC = DatasetSpec(
    name="bench",
    load_source=table_source("delta", "/unused"),
    source_description="synthetic",
    event_time="ts",
    key_columns=("id", "event_date"),
    label_expr="label",
    task="classification",
    numeric_features=("x1", "x2"),
    categorical_features=("color",),
    start_date="2024-01-01",
    model_name="gate",
)


def logged_model(spark, experiment_id: str):
    """A logistic regression on 240 synthetic rows over 12 days, logged with a signature as training logs it.
    Returns (model URI, run id, the test rows: the last 3 days)."""
    import mlflow
    from pyspark.sql import functions as F

    from ml.pipeline import build_pipeline
    from ml.training import model_signature, pip_requirements

    x1, x2 = F.randn(1), F.randn(2)
    color = F.element_at(F.array(*map(F.lit, ("red", "green", "blue"))), (F.col("id") % 3 + 1).cast("int"))
    signal = 1.5 * x1 - x2 + F.when(color == "red", 0.8).otherwise(0.0) + 0.5 * F.randn(3)
    frame = (
        spark.range(240)
        .withColumn("event_date", F.date_add(F.lit("2024-01-01").cast("date"), (F.col("id") % 12).cast("int")))
        .select(
            "id",
            "event_date",
            x1.alias("x1"),
            x2.alias("x2"),
            color.alias("color"),
            (signal > 0).cast("double").alias("label"),
        )
    )
    train, test = frame.where("event_date < '2024-01-10'"), frame.where("event_date >= '2024-01-10'")
    model = build_pipeline(SPEC, "logistic_regression", {"maxIter": 20}).fit(train)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.spark.log_model(
            model, artifact_path="model", signature=model_signature(SPEC), pip_requirements=pip_requirements()
        )
    return info.model_uri, run.info.run_id, test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_round(client, logged, test) -> float:
    uri, run_id = logged[:2]
    started = time.perf_counter()
    tags = lineage_tags(
        SPEC,
        {"test_set": ("/lakehouse/main/bench/test_set", 3)},
        {"mlflow.run_id": run_id, "dagster.run_id": "none: bench"},
    )
    version = register_version(client, NAME, uri, run_id, "bench", tags).version
    gate(
        client,
        NAME,
        version,
        "auc",
        lambda v: evaluate_version(NAME, v, test, "classification", "auc"),
        GateConfig(margin=0.001, floors={}),
    )
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds per store")
    args = parser.parse_args(argv)

    state = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    env = {**os.environ, "FLIGHTLINE_STATE_DIR": str(state), "MLFLOW_SERVER_PORT": str(free_port())}
    script = ["bash", str(REPO_ROOT / "infra" / "mlflow-server.sh")]
    t0 = time.perf_counter()
    subprocess.run([*script, "start"], env=env, check=True, timeout=300)
    print(f"server start: {time.perf_counter() - t0:.1f}s")
    try:
        spark = session("bench-registry")
        stores = {
            "sqlite": MLflowResource(
                tracking_uri=f"sqlite:///{state / 'mlflow.db'}",
                artifact_root=str(state / "artifacts"),
                experiment="bench",
            ),
            "http server": MLflowResource(
                tracking_uri=f"http://127.0.0.1:{env['MLFLOW_SERVER_PORT']}", experiment="bench"
            ),
        }
        logged = {}
        for label, store in stores.items():
            store.configure()
            logged[label] = logged_model(spark, store.experiment_id())
        test = logged["sqlite"][2].cache()
        test.count()
        timings: dict[str, list[float]] = {label: [] for label in stores}
        for round_ in range(args.rounds + 1):
            for label, store in stores.items():
                store.configure()  # points the process-wide MLflow URIs at this store
                seconds = one_round(store.client, logged[label], test)
                if round_:
                    timings[label].append(seconds)
        medians = {label: statistics.median(t) for label, t in timings.items()}
        for label, t in timings.items():
            print(f"{label:12s} median {medians[label]:.2f}s  rounds {', '.join(f'{s:.2f}' for s in t)}")
        print(f"ratio http server / sqlite: {medians['http server'] / medians['sqlite']:.2f}x")
    finally:
        subprocess.run([*script, "stop"], env=env, timeout=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
