"""raw_data: the source's rows of each day, as they came, in a Delta table partitioned by event date."""

import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MetadataValue,
    asset,
)
from pyspark import StorageLevel

from assets.checks import per_partition, suite_check_result
from assets.common import SPEC, daily_partitions, day_materializations, days_of, delta_metadata, is_single_day
from assets.common import days_label, partition_label, partition_window
from ml import undated
from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.delta_io import DeltaCommit, write_days
from ml.features import raw_window
from ml.quality import raw_suite, run_suite_by_day
from orchestration.resources import LakehouseResource, SparkResource

RAW_CHECK = "raw_suite"


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta", "great_expectations"},
    check_specs=[AssetCheckSpec(RAW_CHECK, asset="raw_data", blocking=True, partitions_def=daily_partitions,
                                description="rows per day within bounds; malformed records and source rows without a "
                                            "partition date within the quarantine budget")],
    description=f"Source rows by event date: {SPEC.source_description}. Checked against the spec's schema "
                "contract before anything is written.",
)
def raw_data(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource):
    session = spark.spark_session
    start, end = partition_window(context)
    partition, days = partition_label(start, end), days_of(start, end)
    source = SPEC.load_source(session, SourceContext(lakehouse.staging_dir, lakehouse.source_location))
    source, contract = enforce_contract(source, SPEC)
    if contract.ignored_columns:
        context.log.warning(f"ignoring extra source columns {list(contract.ignored_columns)}")
    seen = raw_window(source, SPEC, start, end, undated=True).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        source_label = undated.source_label(lakehouse.source_location)
        report, quarantined = undated.measure(seen, SPEC, source_label)  # the pass that reads the source
        if report.rows:
            context.log.warning(f"raw_data {partition}: {report.describe()}")
        q_commit = undated.store(quarantined, report, lakehouse.table_path("quarantine"), source_label)
        undated_meta = undated_metadata(report, q_commit)
        rows = undated.dated(seen)
        verdicts = run_suite_by_day(rows, lambda n: raw_suite(SPEC, days=n), days)
        outcomes = {d: v.outcome.with_result(report.outcome()) for d, v in verdicts.items()}
        checks = {d: day_check(suite_check_result(outcomes[d], RAW_CHECK, "raw_data", d.isoformat(),
                                                  validated_with=days_label(v.days),
                                                  **undated_meta), report.rows_by_day.get(d, 0), d)
                  for d, v in verdicts.items()}
        passed, commit = [d for d in days if checks[d].passed], None
        if passed:
            commit = write_days(rows, lakehouse.table_path("raw_data"), start, end, passed)
    finally:
        seen.unpersist()
    table = lakehouse.table_name("raw_data")
    if commit:
        context.log.info(f"raw_data {partition}: {commit.rows_written} rows, Delta v{commit.version}")
    yield from day_materializations(
        "raw_data", days, passed,
        lambda: delta_metadata(commit, table, rows.schema, whole_output=is_single_day(start, end), partition=partition,
                               source=SPEC.source_description, ignored_columns=", ".join(contract.ignored_columns), **undated_meta),
        lambda d: delta_metadata(commit, table, rows.schema, whole_output=False, partition=d.isoformat(),
                                 source=SPEC.source_description, **{"dagster/row_count": report.rows_by_day[d]}))
    yield from per_partition(context, "raw_data", [(d.isoformat(), checks[d]) for d in days])
    if len(passed) < len(days):
        stored = f" The {report.rows} rows without a partition date are in quarantine (Delta v{q_commit.version})." \
            if report.rows else ""
        if not passed and not outcomes[days[0]].success and len({checks[d].description for d in days}) == 1:
            raise Failure(description=f"raw_data {partition}: the raw suite failed, nothing was written "
                                      f"(the partition keeps its previous rows): {checks[days[0]].description}.{stored}")
        reasons = {}  # a suite failure shared by several days is told once, for them all
        for d in (d for d in days if d not in passed):
            label = d.isoformat() if outcomes[d].success else days_label(verdicts[d].days)
            reasons.setdefault(label, checks[d].description if outcomes[d].success else
                               f"{label}: the raw suite failed: {checks[d].description}")
        outcome_note = f"The other {len(passed)} day(s) were written (Delta v{commit.version})" if passed else "Nothing was written"
        raise Failure(description=f"raw_data {partition}: " + "; ".join(reasons.values())
                                  + f". {outcome_note}; the failed day(s) keep their previous rows.{stored}")


def day_check(suite: AssetCheckResult, rows: int, day) -> AssetCheckResult:
    """The raw check of one day: the suite's result for it (run_suite_by_day), and the day's own rows within the
    spec's bounds: the suite bounds the rows of the days it validated together, where a cut-off day would hide."""
    low, high = SPEC.rows_per_day
    metadata = {**suite.metadata, "day_rows": rows}
    if not suite.passed or low <= rows <= high:
        return suite.with_metadata(metadata)
    return AssetCheckResult(asset_key="raw_data", check_name=RAW_CHECK, passed=False, severity=AssetCheckSeverity.ERROR,
                            metadata=metadata,
                            description=f"{day}: {rows} source rows, outside the spec's bounds of {low}..{high} rows per day")


def undated_metadata(report: undated.UndatedRows, q_commit: DeltaCommit | None) -> dict:
    """The source's rows without a partition date, for the raw check and the materialization."""
    metadata = {"rows_without_partition_date": report.rows,
                "rows_without_partition_date_fraction": report.fraction,
                "sample_rows_without_partition_date": MetadataValue.json([json.loads(r) for r in report.samples])}
    if q_commit is not None:
        metadata["quarantine_delta_version"] = q_commit.version
    return metadata
