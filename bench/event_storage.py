"""What one Dagster event costs to store: the embedded SQLite instance vs. the PostgreSQL instance of infra/.

Profiling bench.overhead showed that what the Dagster path adds to the plain script is, almost entirely, the
instance's event writes: a range run stores an ASSET_MATERIALIZATION_PLANNED and an ASSET_MATERIALIZATION event
per partition and asset (174 events for 12 days of the graph), and Dagster's SQLite storage opens a new engine
and connection for each write. This stores the same materialization events (with the metadata our assets
record) in both instances, alternating, and prints the cost per event and the ratio.

    make bench-event-storage        # or: .venv/bin/python -m bench.event_storage --events 200 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from dagster import AssetMaterialization, DagsterInstance, MetadataValue, TableColumn, TableSchema

from bench.postgres import postgres_databases

SCHEMA = TableSchema(columns=[TableColumn(name=f"column_{i}", type="double") for i in range(20)])


def store(instance: DagsterInstance, n: int, label: str) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key="bench_events",
                partition=f"{label}-{i}",
                metadata={
                    "dagster/uri": MetadataValue.path("file:///lakehouse/main/flights/raw_data"),
                    "dagster/column_schema": SCHEMA,
                    "delta_version": i,
                    "dagster/row_count": 900,
                },
            )
        )
    return (time.perf_counter() - t0) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with postgres_databases(["dagster"]) as urls:
        state = Path(tempfile.mkdtemp(prefix="flightline-events-"))
        (state / "sqlite").mkdir()
        (state / "pg").mkdir()
        sqlite = DagsterInstance.local_temp(str(state / "sqlite"))
        postgres = DagsterInstance.local_temp(
            str(state / "pg"), overrides={"storage": {"postgres": {"postgres_url": urls["dagster"]}}}
        )
        store(sqlite, 10, "warm"), store(postgres, 10, "warm")
        times: dict[str, list[float]] = {"sqlite": [], "postgres": []}
        for rep in range(args.reps):
            for name, instance in (("sqlite", sqlite), ("postgres", postgres))[:: 1 if rep % 2 == 0 else -1]:
                times[name].append(store(instance, args.events, f"{name}-{rep}"))
        postgres.dispose()
        sqlite.dispose()
    s, p = statistics.median(times["sqlite"]), statistics.median(times["postgres"])
    print(f"{args.events} materialization events x {args.reps} reps, median cost per event:")
    print(f"  SQLite instance      {s * 1000:7.1f} ms   ({', '.join(f'{t * 1000:.1f}' for t in times['sqlite'])})")
    print(f"  PostgreSQL instance  {p * 1000:7.1f} ms   ({', '.join(f'{t * 1000:.1f}' for t in times['postgres'])})")
    print(f"  ratio SQLite / PostgreSQL: {s / p:.2f}x")


if __name__ == "__main__":
    main()
