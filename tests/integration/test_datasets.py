"""The two example specs besides flights, each run as a user runs it: `FLIGHTLINE_DATASET=<name> make run` on a short
window, in a process of its own (the spec is chosen at import), on a state folder of its own. Then the tables are
read back with an independent Delta reader, and the model's test metric is set against a naive baseline (the train
mean; the majority class) on the same rows. `make test-datasets`: not in `make test` (two whole pipelines)."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from tests.conftest import child_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.datasets


def make_run(tmp_path: Path, dataset: str, *args: str) -> tuple[Path, str]:
    state = tmp_path / "state"
    (state / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "infra" / "dagster.yaml", state / "dagster" / "dagster.yaml")
    env = child_env(FLIGHTLINE_DATASET=dataset, FLIGHTLINE_STATE_DIR=str(state), DAGSTER_HOME=str(state / "dagster"))
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.run_pipeline", "--trials", "2", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return state / "lakehouse" / "main" / dataset, done.stdout


def frame(lake: Path, table: str):
    return DeltaTable(str(lake / table)).to_pandas()


def test_a_snapshot_classification_table_runs_end_to_end(tmp_path):
    lake, out = make_run(tmp_path, "breast_cancer")
    raw, features = frame(lake, "raw_data"), frame(lake, "validated_features")
    assert len(raw) == len(features) == 569 and raw["event_date"].astype(str).unique().tolist() == ["2025-01-01"]
    splits = {s: frame(lake, f"{s}_set") for s in ("train", "validation", "test")}
    ids = {s: set(f["sample_id"]) for s, f in splits.items()}
    assert sum(len(i) for i in ids.values()) == len(set().union(*ids.values())) == 569  # a partition of the rows
    assert abs(len(ids["train"]) / 569 - 0.7) < 0.06  # the hash split's fractions
    test = splits["test"].merge(frame(lake, "batch_predictions"), on=["sample_id", "event_date"])
    assert len(test) == len(splits["test"])
    accuracy = float((test["prediction"] == test["label"]).mean())
    majority = max(float(test["label"].mean()), 1 - float(test["label"].mean()))  # always the commoner class
    print(f"breast_cancer rows per split {[len(i) for i in ids.values()]}; accuracy {accuracy:.4f} vs {majority:.4f}")
    assert accuracy > majority + 0.2


def test_a_daily_regression_table_of_one_row_a_day_runs_end_to_end(tmp_path):
    lake, out = make_run(
        tmp_path,
        "seattle_weather",
        *("--start", "2012-01-01", "--end", "2012-06-30"),
        *("--train-days", "120", "--validation-days", "30", "--test-days", "31"),
    )
    features = frame(lake, "validated_features")
    assert len(features) == 182  # every day of the window, one row each: none held, none quarantined
    assert "held by the gate" not in out
    splits = {s: frame(lake, f"{s}_set") for s in ("train", "validation", "test")}
    assert [len(f) for f in splits.values()] == [120, 30, 31]
    test = splits["test"].merge(frame(lake, "batch_predictions"), on=["event_date"])
    assert len(test) == 31
    rmse = float(np.sqrt(((test["prediction"] - test["label"]) ** 2).mean()))
    naive = float(np.sqrt(((splits["train"]["label"].mean() - test["label"]) ** 2).mean()))  # the train mean
    print(f"seattle_weather rows per split {[len(f) for f in splits.values()]}; test rmse {rmse:.3f} vs {naive:.3f}")
    assert rmse < naive
