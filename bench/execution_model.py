"""What a Spark step costs before it does any work, under each way Dagster could execute Spark assets.

- in-process executor (what the project uses): the steps of a run share one process and one SparkSession,
  so a run pays one JVM start plus Delta's jar resolution (Ivy), whatever its number of steps;
- multiprocess executor, local Spark: every step is a fresh process, and pays that start itself;
- multiprocess executor with a Spark Connect server: every step is a fresh process that opens a Connect
  session to a long-running server (which paid the JVM start and the jars once).

Each is timed from a fresh Python process to the first query answered (`spark.range(1).count()`), `--reps`
times, medians, in the same run. Then the session cost of the whole graph (3 runs, 6 steps) under each.

    make bench-execution-model        # or: .venv/bin/python -m bench.execution_model --reps 3
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ml.spark import DELTA_CONF, delta_maven_coordinate

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS, STEPS = 3, 6  # the whole graph: ingest (raw_data, validated_features), training (3 steps), scoring (1)

LOCAL = """
from bench.world import SPARK_CONF
from ml.spark import get_or_create_session
get_or_create_session("local[2]", conf=SPARK_CONF).range(1).count()
"""
CONNECT = """
import sys
from pyspark.sql import SparkSession
SparkSession.builder.remote(sys.argv[1]).getOrCreate().range(1).count()
"""


def timed_process(code: str, *args: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_connect_server(port: int) -> tuple[subprocess.Popen, float]:
    """A Spark Connect server with Delta, from the Spark that pyspark ships; returns it and its start time."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    conf = {
        **DELTA_CONF,
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
    }
    cmd = [
        str(spark_home / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master",
        "local[2]",
        "--packages",
        delta_maven_coordinate(),
    ]
    for key, value in conf.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd.append("spark-internal")
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1"}
    t0 = time.perf_counter()
    server = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, time.perf_counter() - t0
        except OSError:
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                os.killpg(server.pid, signal.SIGKILL)
                raise RuntimeError("the Spark Connect server did not start") from None
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server, server_start = start_connect_server(port)
    try:
        timed_process(CONNECT, f"sc://127.0.0.1:{port}")  # the server's first session warms it up; not counted
        local, connect = [], []
        for _ in range(args.reps):  # alternated, so that neither gets all the quiet moments
            local.append(timed_process(LOCAL))
            connect.append(timed_process(CONNECT, f"sc://127.0.0.1:{port}"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    lo, co = statistics.median(local), statistics.median(connect)
    print(f"fresh process to first answer, median of {args.reps}:")
    print(f"  local JVM + Delta via Ivy   {lo:6.1f}s   ({', '.join(f'{t:.1f}' for t in local)})")
    print(f"  Spark Connect client        {co:6.1f}s   ({', '.join(f'{t:.1f}' for t in connect)})")
    print(f"  Connect server start        {server_start:6.1f}s   (once, outside the runs)")
    print(f"session cost of the whole graph ({RUNS} runs, {STEPS} steps):")
    print(f"  in-process executor              {RUNS * lo:6.1f}s   ({RUNS} x local)")
    print(f"  multiprocess executor, local     {STEPS * lo:6.1f}s   ({STEPS} x local)")
    print(f"  multiprocess executor + Connect  {STEPS * co:6.1f}s   ({STEPS} x Connect client, plus the server)")


if __name__ == "__main__":
    main()
