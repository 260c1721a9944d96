"""HTTP load clients for bench/serving.py, each its own process (stdlib only: a spawned process imports just this).

Threads in one process would share its GIL, so with 8 clients a request's latency would include the time other
clients spend building requests and parsing answers: not what a client of the server sees.
"""

from __future__ import annotations

import http.client
import multiprocessing
import time


def client(port: int, bodies: list[bytes], count: int, deadline: float, start: int) -> list[float]:
    """Latencies (ms) of up to `count` POST /predict on one keep-alive connection to 127.0.0.1, until `deadline`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    for i in range(count):
        if time.time() >= deadline:
            break
        body = bodies[(start + i) % len(bodies)]
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        latencies.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
    conn.close()
    return latencies


def run(port: int, bodies: list[bytes], clients: int, max_requests: int, seconds: float) -> tuple[list[float], float]:
    """(every latency in ms, wall seconds): `clients` processes share `max_requests`, all stop after `seconds`."""
    context = multiprocessing.get_context("spawn")
    share = [max_requests // clients + (1 if i < max_requests % clients else 0) for i in range(clients)]
    with context.Pool(clients) as pool:
        pool.map(abs, range(clients))  # the processes are up before the clock starts
        deadline = time.time() + seconds
        started = time.perf_counter()
        parts = pool.starmap(client, [(port, bodies, share[i], deadline, i * 37) for i in range(clients)])
        elapsed = time.perf_counter() - started
    return [x for part in parts for x in part], elapsed
