"""assets/ingest.raw_data: the source's rows by event date, gated by the raw suite, on the world's three days."""

from assets.contracts import FAILED_DAYS, WRITTEN_DAYS
from assets.ingest import raw_data
from tests.world import DAYS, RANGE, check_evaluations, materializations, metadata_of, started, write_csv


def test_a_range_run_writes_every_day_of_the_source_in_one_commit(world):
    result = world.results["raw_data"]
    assert sorted(m.partition for m in materializations(result, "raw_data")) == DAYS
    meta = metadata_of(result, "raw_data", DAYS[1])
    total = sum(world.rows_per_day.values())
    assert meta["partition"] == "2013-02-01...2013-02-03"
    assert meta["rows_written_in_run"] == total and "dagster/row_count" not in meta
    assert (meta["delta_version"], meta["delta_operation"]) == (0, "WRITE")
    assert meta["dagster/table_name"] == "main.flights.raw_data"
    assert meta["dagster/uri"] == f"file://{world.lake.table_path('raw_data')}"
    assert meta["rows_without_partition_date"] == 0 and meta["ignored_columns"] == ""
    assert "raw_quarantine_delta_version" not in meta  # a clean source stores nothing in raw_quarantine
    assert world.lake.version("raw_quarantine") is None  # ... and adds no empty commit there
    quarantined = metadata_of(result, "raw_quarantine", DAYS[1])  # the step's other table: declared, so in the graph
    assert (quarantined["rows_written"], quarantined["delta_version"]) == (0, -1)
    assert {c.name for c in meta["dagster/column_schema"].columns} >= set(world.header) | {"event_date", "temp"}

    assert world.counts_by_day("raw_data", version=0) == world.rows_per_day  # counted in Python from the CSV
    [commit] = world.commit_of("raw_data", result.run_id)
    assert commit["version"] == 0

    checks = {e.partition: e for e in check_evaluations(result)}
    assert sorted(checks) == DAYS and all(e.check_name == "raw_suite" and e.passed for e in checks.values())
    assert {d: e.metadata["day_rows"].value for d, e in checks.items()} == world.rows_per_day
    assert {e.metadata["validated_with"].value for e in checks.values()} == {"2013-02-01...2013-02-03"}  # one suite run
    assert {e.target_materialization_data.run_id for e in checks.values()} == {result.run_id}


def test_a_cut_off_day_fails_its_own_raw_check_and_keeps_its_rows(world, tmp_path):
    """The suite over the three days passes (1,790 rows for three days); the day's own bounds (100..2000) catch
    the 50-row day, which keeps its previous rows while the others are written."""
    cut = world.rows_of(DAYS[1])[:50]
    source = write_csv(tmp_path, world.header, world.rows_of(DAYS[0]) + cut + world.rows_of(DAYS[2]))
    before, version = world.counts_by_day("raw_data"), world.version("raw_data")
    result = world.materialize(
        raw_data, tags=RANGE, lake=world.lake.replaced(source_location=str(source)), raise_on_error=False
    )
    assert not result.success and started(result) == ["raw_data"]
    failure = result.failure_data_for_node("raw_data").user_failure_data
    assert failure.description == (
        "raw_data 2013-02-01...2013-02-03: 2013-02-02: 50 source rows, outside the spec's bounds of 100..2000 rows "
        f"per day. The other 2 days were written (Delta v{version + 1}); the failed day keeps its previous rows."
    )
    assert failure.metadata[FAILED_DAYS].value == [DAYS[1]]
    assert failure.metadata[WRITTEN_DAYS].value == [DAYS[0], DAYS[2]]
    checks = {e.partition: e for e in check_evaluations(result)}
    assert {d: e.passed for d, e in checks.items()} == {DAYS[0]: True, DAYS[1]: False, DAYS[2]: True}
    assert checks[DAYS[1]].metadata["day_rows"].value == 50
    written = {m.partition: m.metadata["dagster/row_count"].value for m in materializations(result, "raw_data")}
    assert written == {d: world.rows_per_day[d] for d in (DAYS[0], DAYS[2])}
    [commit] = world.commit_of("raw_data", result.run_id)
    assert commit["version"] == version + 1 == world.version("raw_data")
    assert commit["operationParameters"]["mode"] == "Overwrite"
    assert commit["operationParameters"]["predicate"] == "event_date IN ('2013-02-01', '2013-02-03')"
    assert {m.partition: m.metadata["delta_version"].value for m in materializations(result, "raw_data")} == {
        DAYS[0]: version + 1,
        DAYS[2]: version + 1,
    }
    assert world.counts_by_day("raw_data") == before  # Feb 1 and 3 replaced, not appended; Feb 2 keeps its rows
    assert world.lake.version("raw_quarantine") is None  # no rows without a date: nothing for raw_quarantine
