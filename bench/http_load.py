"""HTTP load clients for bench/serving.py, each its own process: `python -m bench.http_load` (stdlib only).

Threads in one process would share its GIL, so with 8 clients a request's latency would include the time other
clients spend building requests and parsing answers: not what a client of the server sees. A client reads its
request bodies (JSON lines) from a file, waits for the start time, sends at most COUNT requests on one keep-alive
connection to 127.0.0.1 until the deadline, and prints its latencies (ms) and first-start/last-end times as JSON.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def client(port: int, bodies: list[bytes], count: int, begin: float, deadline: float, offset: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    time.sleep(max(0.0, begin - time.time()))
    first = time.time()
    for i in range(count):
        if time.time() >= deadline:
            break
        t0 = time.perf_counter()
        conn.request("POST", "/predict", bodies[(offset + i) % len(bodies)], {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        latencies.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
    conn.close()
    return {"latencies": latencies, "first": first, "last": time.time()}


def run(port: int, bodies: list[bytes], clients: int, max_requests: int, seconds: float) -> tuple[list[float], float]:
    """(every latency in ms, seconds from the first request's start to the last one's end): `clients` processes
    share `max_requests`, all start together (after every process is up) and stop after `seconds`."""
    share = [max_requests // clients + (1 if i < max_requests % clients else 0) for i in range(clients)]
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
        f.write(b"\n".join(bodies))
    begin = time.time() + 3.0  # a stdlib-only process starts in well under that, even on a busy machine
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.http_load",
                str(port),
                f.name,
                str(share[i]),
                str(begin),
                str(seconds),
                str(i),
            ],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        for i in range(clients)
    ]
    try:
        parts = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        Path(f.name).unlink()
    latencies = [x for part in parts for x in part["latencies"]]
    return latencies, max(p["last"] for p in parts) - min(p["first"] for p in parts)


if __name__ == "__main__":
    port, path, count, begin, seconds, index = sys.argv[1:7]
    lines = Path(path).read_bytes().split(b"\n")
    result = client(int(port), lines, int(count), float(begin), float(begin) + float(seconds), int(index) * 37)
    print(json.dumps(result))
