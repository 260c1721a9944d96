"""validated_features: typed features of each day, gated by a Great Expectations suite."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pyspark import StorageLevel

from assets.common import SPEC, daily_partitions, delta_metadata, is_single_day, partition_label, partition_window
from assets.ingest import raw_data
from ml.delta_io import read_pinned, window_predicate, write_partitions
from ml.features import build_features
from ml.quality import SuiteOutcome, feature_suite, run_suite, with_key_column
from orchestration.resources import LakehouseResource, SparkResource

SUITE_CHECK = "feature_suite"


def suite_check_result(outcome: SuiteOutcome, partition: str) -> AssetCheckResult:
    failures = outcome.failures
    return AssetCheckResult(
        check_name=SUITE_CHECK,
        passed=outcome.success,
        severity=AssetCheckSeverity.ERROR,
        description=None if outcome.success else "; ".join(f.describe() for f in failures[:5]),
        metadata={
            "suite": outcome.suite,
            "partition": partition,
            "expectations_evaluated": outcome.evaluated,
            "expectations_failed": len(failures),
            "failed_expectations": MetadataValue.json(
                [
                    {
                        "expectation": f.expectation,
                        "column": f.column,
                        "observed_value": f.observed_value,
                        "unexpected_count": f.unexpected_count,
                        "unexpected_percent": f.unexpected_percent,
                        "sample_unexpected": f.sample_unexpected,
                    }
                    for f in failures
                ]
            ),
        },
    )


@asset(
    deps=[raw_data],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta", "great_expectations"},
    check_specs=[AssetCheckSpec(SUITE_CHECK, asset="validated_features", blocking=True,
                                description="Great Expectations suite derived from the dataset spec")],
    description="Cleaned, typed features and the label; written only when the feature suite passes.",
)
def validated_features(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource):
    session = spark.spark_session
    start, end = partition_window(context)
    partition = partition_label(start, end)
    raw, raw_version = read_pinned(session, lakehouse.table_path("raw_data"))
    features = build_features(raw.where(window_predicate(start, end)), SPEC).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        outcome = run_suite(with_key_column(features, SPEC), feature_suite(SPEC))
        check = suite_check_result(outcome, partition)
        if not outcome.success:
            # The check's result is recorded, nothing is written, and downstream assets do not run.
            yield check
            raise Failure(
                description=f"validated_features {partition}: the feature suite failed, nothing was written: "
                + check.description,
                metadata={"raw_data_delta_version": raw_version},
            )
        commit = write_partitions(features, lakehouse.table_path("validated_features"), start, end)
    finally:
        features.unpersist()
    context.log.info(f"validated_features {partition}: {commit.rows_written} rows, Delta v{commit.version}")
    yield MaterializeResult(
        metadata=delta_metadata(
            commit, lakehouse.table_name("validated_features"), features.schema, whole_output=is_single_day(start, end),
            partition=partition, raw_data_delta_version=raw_version,
        ),
        check_results=[check],
    )
