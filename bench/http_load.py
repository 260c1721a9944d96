"""HTTP load clients for bench/serving.py, each its own process (stdlib only: a spawned process imports just this).

Threads in one process would share its GIL, so with 8 clients a request's latency would include the time other
clients spend building requests and parsing answers: not what a client of the server sees.
"""

from __future__ import annotations

import http.client
import multiprocessing
import time

_BODIES: list[bytes] = []


def _load(bodies: list[bytes]) -> None:
    _BODIES[:] = bodies


def client(port: int, count: int, deadline: float, start: int) -> tuple[list[float], float, float]:
    """(latencies in ms, first start, last end) of up to `count` POST /predict on one keep-alive connection to
    127.0.0.1, until `deadline` (time.time())."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    first = time.time()
    for i in range(count):
        if time.time() >= deadline:
            break
        body = _BODIES[(start + i) % len(_BODIES)]
        t0 = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        latencies.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
    last = time.time()
    conn.close()
    return latencies, first, last


def run(port: int, bodies: list[bytes], clients: int, max_requests: int, seconds: float) -> tuple[list[float], float]:
    """(every latency in ms, seconds from the first request's start to the last one's end): `clients` processes
    share `max_requests`, and all stop after `seconds`. The bodies reach each process before the clock starts."""
    context = multiprocessing.get_context("spawn")
    share = [max_requests // clients + (1 if i < max_requests % clients else 0) for i in range(clients)]
    with context.Pool(clients, initializer=_load, initargs=(bodies,)) as pool:
        pool.map(abs, range(clients))  # every process is up
        deadline = time.time() + seconds
        parts = pool.starmap(client, [(port, share[i], deadline, i * 37) for i in range(clients)])
    latencies = [x for part, _, _ in parts for x in part]
    return latencies, max(p[2] for p in parts) - min(p[1] for p in parts)
