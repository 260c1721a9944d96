"""raw_data: the source's rows of each day, as they came, in a Delta table partitioned by event date."""

from dagster import AssetExecutionContext, BackfillPolicy, MaterializeResult, asset

from assets.common import SPEC, daily_partitions, delta_metadata, is_single_day, partition_label, partition_window
from ml.delta_io import write_partitions
from ml.features import raw_window
from orchestration.resources import LakehouseResource, SparkResource


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta"},
    description=f"Source rows by event date: {SPEC.source_description}.",
)
def raw_data(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource) -> MaterializeResult:
    session = spark.spark_session
    start, end = partition_window(context)
    rows = raw_window(SPEC.load_source(session, lakehouse.staging_dir), SPEC, start, end)
    commit = write_partitions(rows, lakehouse.table_path("raw_data"), start, end)
    context.log.info(f"raw_data {partition_label(start, end)}: {commit.rows_written} rows, Delta v{commit.version}")
    return MaterializeResult(
        metadata=delta_metadata(commit, lakehouse.table_name("raw_data"), rows.schema, whole_output=is_single_day(start, end),
                                partition=partition_label(start, end), source=SPEC.source_description)
    )
