"""One writer process of tests/reliability/test_concurrent_writers.py: writes one day of one table, many times,
through the lakehouse boundary, and prints each commit's version as JSON lines.

    python -m tests.reliability.writer STATE_DIR DAY ROUNDS [--unlocked] [--overwrite]
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta

from ml import delta_io
from ml.datasets.flights import SPEC
from ml.days import DayWindow
from orchestration.deployments import local_resources
from tests.conftest import child_env

TINY_SPARK = {
    "spark.sql.shuffle.partitions": "1",
    "spark.default.parallelism": "1",
    "spark.ui.enabled": "false",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
}
ROWS = 3


def start(state, day: str, rounds: int, *flags: str) -> subprocess.Popen:
    """This script as a process of its own, in a session of its own (so that its whole group can be killed)."""
    from orchestration.deployments import REPO_ROOT

    env = child_env(PYTHONPATH=str(REPO_ROOT), SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.writer", str(state), day, str(rounds), *flags],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def main(state: str, day: str, rounds: int, unlocked: bool = False, overwrite: bool = False) -> None:
    from pathlib import Path

    lakehouse = local_resources(SPEC, state=Path(state), master="local[1]", spark_conf=TINY_SPARK)["lakehouse"]
    first = date.fromisoformat(day)
    window = DayWindow(first, first + timedelta(days=1))
    print(json.dumps({"ready": day}), flush=True)
    sys.stdin.readline()  # both processes start writing at the same moment
    for n in range(rounds):
        frame = lakehouse.session.createDataFrame(
            [(first, n, i) for i in range(ROWS)], "event_date DATE, round INT, i INT"
        )
        if overwrite:  # a whole-table overwrite, as the splits are written
            commit = lakehouse.overwrite(frame, "overwritten", run_id=f"{day}-{n}")
        elif unlocked:  # the control: Delta alone, without the boundary's writer lock
            commit = delta_io.write_days(
                frame,
                lakehouse.table_path("contended"),
                window.start,
                window.end,
                window.days,
                user_metadata=json.dumps({"dagster_run_id": f"{day}-{n}"}),
            )
        else:
            commit = lakehouse.write_window(frame, "contended", window, run_id=f"{day}-{n}")
        print(
            json.dumps(
                {
                    "day": day,
                    "round": n,
                    "version": commit.version,
                    "rows": commit.rows_written,
                    "retries": commit.conflict_retries,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        unlocked="--unlocked" in sys.argv[4:],
        overwrite="--overwrite" in sys.argv[4:],
    )
