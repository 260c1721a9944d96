"""A throwaway PostgreSQL for benchmarks: infra/postgres.sh on a free port in a temporary state folder."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "infra" / "postgres.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_databases(names: list[str]):
    """Starts a private cluster with one database per name, yields {name: SQLAlchemy URL}, stops it at the end."""
    state = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    state.chmod(0o755)  # PostgreSQL runs as the `postgres` user when we are root
    env = {
        **os.environ,
        "FLIGHTLINE_STATE_DIR": str(state),
        "FLIGHTLINE_PG_PORT": str(free_port()),
        "FLIGHTLINE_PG_DATABASES": " ".join(names),
    }
    script = ["bash", str(SCRIPT)]
    subprocess.run([*script, "start"], env=env, check=True, capture_output=True)
    try:
        yield {
            n: subprocess.run([*script, "url", n], env=env, check=True, capture_output=True, text=True).stdout.strip()
            for n in names
        }
    finally:
        subprocess.run([*script, "stop"], env=env, capture_output=True)
