"""What `make run` prints (orchestration/run_pipeline.py): one line per phase, one per held day, the log elsewhere."""

import subprocess
import sys

from dagster import AssetMaterialization

from orchestration.deployments import REPO_ROOT
from orchestration.run_pipeline import (
    count,
    failure_line,
    held_line,
    phase_line,
    rows_and_days,
)


def test_rows_of_a_range_run_that_wrote_every_day_are_counted_once():
    # a range run that wrote every day records the same metadata (rows_written_in_run) on each of its days
    found = [
        AssetMaterialization("raw_data", partition=d, metadata={"rows_written_in_run": 2400}) for d in ("a", "b", "c")
    ]
    assert rows_and_days(found) == (2400, 3)


def test_a_table_the_run_had_nothing_to_write_to_counts_zero_rows():
    # `quarantine` on clean days: the lakehouse's unwritten_metadata (rows_written 0), once per day of the range;
    # `make run` printed "quarantined ?" for it
    found = [AssetMaterialization("quarantine", partition=d, metadata={"rows_written": 0}) for d in ("a", "b")]
    assert rows_and_days(found) == (0, 2)
    mixed = found[:1] + [AssetMaterialization("quarantine", partition="c", metadata={"dagster/row_count": 4})]
    assert rows_and_days(mixed) == (4, 2)


def test_rows_of_a_run_that_held_days_are_the_written_days_rows():
    # the days written, each with its own count (and the run's total, which also counts nothing held)
    found = [
        AssetMaterialization(
            "validated_features", partition=d, metadata={"rows_written_in_run": 1500, "dagster/row_count": n}
        )
        for d, n in (("2013-12-29", 700), ("2013-12-30", 800))
    ]
    assert rows_and_days(found) == (1500, 2)
    one_day = [AssetMaterialization("batch_predictions", partition="2013-02-01", metadata={"dagster/row_count": 9})]
    assert rows_and_days(one_day) == (9, 1)
    assert rows_and_days([]) == (None, 0)
    assert rows_and_days([AssetMaterialization("tuned_pipeline", metadata={"n_trials": 6})]) == (None, 0)


def test_a_phase_is_one_line_with_its_time_counts_and_run():
    line = phase_line(
        "ingest 2013-01-01..2013-12-31",
        412.34,
        [f"raw rows {count(336776)} (365 days)", f"features {count(None)}"],
        "1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809",
        "held",
    )
    assert line == (
        "ingest 2013-01-01..2013-12-31    held    412.3s  raw rows 336,776 (365 days) · features ?  [run 1a2b3c4d]"
    )
    assert "\n" not in line


def test_a_held_day_is_one_readable_line_without_traceback():
    description = (
        "validated_features 2013-12-01...2013-12-31: 2013-12-31: the feature suite failed: temp: 776 of 776\n"
        "   values are NULL.  The other 30 days were written (Delta v1); the failed day keeps its previous rows."
    )
    assert held_line(description) == (
        "  held by the gate: validated_features 2013-12-01...2013-12-31: 2013-12-31: the feature suite failed: temp: "
        "776 of 776 values are NULL. The other 30 days were written (Delta v1); the failed day keeps its previous rows."
    )


def test_a_failed_phase_names_its_first_error_and_the_log():
    assert failure_line("training", "run-1", ["no labelled rows in\n train_set", "second"], "/s/logs/run.log") == (
        "FAILED: training (run run-1): no labelled rows in train_set\n  full log: /s/logs/run.log"
    )
    assert failure_line("training", "run-1", [], "/l").startswith("FAILED: training (run run-1): see the log")


def test_everything_but_the_terminal_lines_goes_to_the_log_file(tmp_path):
    """Python's prints, its stderr and a child process's output (as the JVM's, which inherits the descriptors): into
    the log; the lines written to the returned stream: on the terminal."""
    log = tmp_path / "logs" / "run.log"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from orchestration.run_pipeline import to_log_file\n"
        f"out = to_log_file(Path({str(log)!r}))\n"
        "print('dagster event line', flush=True)\n"
        "print('a traceback', file=sys.stderr, flush=True)\n"
        "os.system('echo ivy report; echo spark progress >&2')\n"
        "out.write('phase line\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("phase line\n", "")
    assert log.read_text().splitlines() == ["dagster event line", "a traceback", "ivy report", "spark progress"]
