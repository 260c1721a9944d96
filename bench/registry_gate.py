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

from ml.registry import GateConfig, gate, register_version
from ml.scoring import evaluate_version
from ml.spark import get_or_create_session
from orchestration.deployments import REPO_ROOT
from orchestration.resources import MLflowResource
from tests.conftest import TEST_SPARK_CONF
from tests.unit.tiny import log_tiny_model, tiny_lineage

NAME = "main.bench.gate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_round(client, logged, test) -> float:
    uri, run_id = logged[:2]
    started = time.perf_counter()
    version = register_version(client, NAME, uri, run_id, "bench", tiny_lineage(run_id)).version
    gate(client, NAME, version, "auc", lambda v: evaluate_version(NAME, v, test, "classification", "auc"),
         GateConfig(margin=0.001, floors={}))
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
        spark = get_or_create_session("local[2]", conf=TEST_SPARK_CONF, app_name="bench-registry")
        stores = {
            "sqlite": MLflowResource(tracking_uri=f"sqlite:///{state / 'mlflow.db'}", artifact_root=str(state / "artifacts"),
                                     experiment="bench"),
            "http server": MLflowResource(tracking_uri=f"http://127.0.0.1:{env['MLFLOW_SERVER_PORT']}", experiment="bench"),
        }
        logged = {}
        for label, store in stores.items():
            store.configure()
            logged[label] = log_tiny_model(spark, store.experiment_id())
        test = logged["sqlite"][3].cache()
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
