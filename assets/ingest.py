"""raw_data: the source's rows of each day, as they came, in a Delta table partitioned by event date."""

import json

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pyspark import StorageLevel

from assets.checks import suite_check_result
from assets.common import SPEC, daily_partitions, delta_metadata, is_single_day, partition_label, partition_window
from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.delta_io import DeltaCommit, write_partitions
from ml.features import raw_window
from ml import undated
from ml.quality import raw_suite, run_suite
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
    partition = partition_label(start, end)
    source = SPEC.load_source(session, SourceContext(lakehouse.staging_dir, lakehouse.source_location))
    source, contract = enforce_contract(source, SPEC)
    if contract.ignored_columns:
        context.log.warning(f"ignoring extra source columns {list(contract.ignored_columns)}")
    seen = raw_window(source, SPEC, start, end, undated=True).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        report, quarantined = undated.measure(seen, SPEC, partition)  # the pass that reads the source
        if report.rows:
            context.log.warning(f"raw_data {partition}: {report.describe()}")
        q_commit = undated.store(quarantined, report, lakehouse.table_path("quarantine"), partition)
        undated_meta = undated_metadata(report, q_commit)
        rows = undated.dated(seen)
        outcome = run_suite(rows, raw_suite(SPEC, days=(end - start).days)).with_result(report.outcome())
        check = suite_check_result(outcome, RAW_CHECK, "raw_data", partition, **undated_meta)
        if not outcome.success:
            yield check
            stored = f" The {report.rows} rows without a partition date are in quarantine (Delta v{q_commit.version})." \
                if report.rows else ""
            raise Failure(description=f"raw_data {partition}: the raw suite failed, nothing was written "
                                      f"(the partition keeps its previous rows): {check.description}.{stored}")
        commit = write_partitions(rows, lakehouse.table_path("raw_data"), start, end)
    finally:
        seen.unpersist()
    context.log.info(f"raw_data {partition}: {commit.rows_written} rows, Delta v{commit.version}")
    yield MaterializeResult(
        metadata=delta_metadata(commit, lakehouse.table_name("raw_data"), rows.schema, whole_output=is_single_day(start, end),
                                partition=partition, source=SPEC.source_description,
                                ignored_columns=", ".join(contract.ignored_columns), **undated_meta),
        check_results=[check],
    )


def undated_metadata(report: undated.UndatedRows, q_commit: DeltaCommit | None) -> dict:
    """The source's rows without a partition date, for the raw check and the materialization."""
    metadata = {"rows_without_partition_date": report.rows,
                "rows_without_partition_date_fraction": report.fraction,
                "sample_rows_without_partition_date": MetadataValue.json([json.loads(r) for r in report.samples])}
    if q_commit is not None:
        metadata["quarantine_delta_version"] = q_commit.version
    return metadata
