"""raw_data: the source's rows of each day, as they came, in a Delta table partitioned by event date."""

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    asset,
)
from pyspark import StorageLevel

from assets.checks import per_partition, suite_check_result
from assets.common import SPEC, daily_partitions, days_of, delta_metadata, is_single_day, partition_label, partition_window
from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.delta_io import write_partitions
from ml.features import raw_window
from ml.quality import raw_suite, run_suite
from orchestration.resources import LakehouseResource, SparkResource

RAW_CHECK = "raw_suite"


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta", "great_expectations"},
    check_specs=[AssetCheckSpec(RAW_CHECK, asset="raw_data", blocking=True, partitions_def=daily_partitions,
                                description="rows per day within bounds; malformed records within the quarantine budget")],
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
    rows = raw_window(source, SPEC, start, end).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        outcome = run_suite(rows, raw_suite(SPEC, days=(end - start).days))
        check = suite_check_result(outcome, RAW_CHECK, "raw_data", partition)
        checks = [(d.isoformat(), check) for d in days_of(start, end)]  # recorded on every day of the run
        if not outcome.success:
            yield from per_partition(context, "raw_data", checks)
            raise Failure(description=f"raw_data {partition}: the raw suite failed, nothing was written "
                                      f"(the partition keeps its previous rows): {check.description}")
        commit = write_partitions(rows, lakehouse.table_path("raw_data"), start, end)
    finally:
        rows.unpersist()
    context.log.info(f"raw_data {partition}: {commit.rows_written} rows, Delta v{commit.version}")
    yield MaterializeResult(
        metadata=delta_metadata(commit, lakehouse.table_name("raw_data"), rows.schema, whole_output=is_single_day(start, end),
                                partition=partition, source=SPEC.source_description,
                                ignored_columns=", ".join(contract.ignored_columns)),
    )
    yield from per_partition(context, "raw_data", checks)
