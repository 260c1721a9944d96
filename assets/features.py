"""validated_features and quarantine: typed features of each day, gated by row-level rules and a GX suite.

Rows that break a row-level rule go to `quarantine` with the rules they broke; the rest become features.
raw rows = feature rows + quarantined rows, recorded on every materialization. Above the spec's
quarantine budget, or when the feature suite fails, nothing is written to validated_features and the
assets downstream do not run for that partition.
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pyspark import StorageLevel

from assets.checks import suite_check_result
from assets.common import SPEC, daily_partitions, delta_metadata, is_single_day, partition_label, partition_window
from assets.ingest import raw_data
from ml import quarantine as q
from ml.delta_io import read_pinned, window_predicate, write_partitions
from ml.features import with_derived
from ml.quality import feature_suite, run_suite, with_key_column
from orchestration.resources import LakehouseResource, SparkResource

SUITE_CHECK = "feature_suite"
BUDGET_CHECK = "quarantine_budget"


def budget_check(counts: q.QuarantineCounts, partition: str) -> AssetCheckResult:
    passed = counts.fraction <= SPEC.max_quarantine_fraction
    return AssetCheckResult(
        asset_key="validated_features",
        check_name=BUDGET_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=None if passed else (
            f"{counts.quarantined} of {counts.rows} rows ({counts.fraction:.2%}) broke row-level rules, over the "
            f"budget of {SPEC.max_quarantine_fraction:.2%}: " + ", ".join(f"{k}: {v}" for k, v in counts.by_rule.items())),
        metadata={
            "partition": partition,
            "raw_rows": counts.rows,
            "quarantined_rows": counts.quarantined,
            "quarantined_fraction": counts.fraction,
            "budget": SPEC.max_quarantine_fraction,
            "rows_by_rule": MetadataValue.json(counts.by_rule),
        },
    )


@multi_asset(
    outs={
        "validated_features": AssetOut(kinds={"spark", "delta", "great_expectations"}, group_name="daily",
                                       description="Cleaned, typed features and the label (NULL while unknown)."),
        "quarantine": AssetOut(kinds={"spark", "delta"}, group_name="daily",
                               description="Rows that broke a row-level rule, with the rules and the raw record."),
    },
    deps=[raw_data],
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=[
        AssetCheckSpec(BUDGET_CHECK, asset="validated_features", blocking=True, partitions_def=daily_partitions,
                       description="quarantined share of the partition within the spec's budget"),
        AssetCheckSpec(SUITE_CHECK, asset="validated_features", blocking=True, partitions_def=daily_partitions,
                       description="Great Expectations suite derived from the dataset spec"),
    ],
)
def validated_features(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource):
    session = spark.spark_session
    start, end = partition_window(context)
    partition = partition_label(start, end)
    raw, raw_version = read_pinned(session, lakehouse.table_path("raw_data"))
    annotated = q.annotate(with_derived(raw.where(window_predicate(start, end)), SPEC), SPEC)
    annotated = annotated.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = q.count(annotated, SPEC)
        budget = budget_check(counts, partition)
        quarantined = q.quarantined_rows(annotated, SPEC, partition)
        q_commit = write_partitions(quarantined, lakehouse.table_path("quarantine"), start, end)
        if not budget.passed:
            yield budget
            raise Failure(description=f"validated_features {partition}: {budget.description}. Nothing was written to "
                                      f"validated_features; the rows are in quarantine (Delta v{q_commit.version}).")
        features = q.good_rows(annotated, SPEC)
        outcome = run_suite(with_key_column(features, SPEC), feature_suite(SPEC, days=(end - start).days))
        suite = suite_check_result(outcome, SUITE_CHECK, "validated_features", partition)
        if not outcome.success:
            yield budget
            yield suite
            raise Failure(description=f"validated_features {partition}: the feature suite failed, nothing was "
                                      f"written: {suite.description}", metadata={"raw_data_delta_version": raw_version})
        commit = write_partitions(features, lakehouse.table_path("validated_features"), start, end)
    finally:
        annotated.unpersist()
    single = is_single_day(start, end)
    context.log.info(f"validated_features {partition}: {commit.rows_written} rows, {counts.quarantined} quarantined, "
                     f"Delta v{commit.version}")
    reconciliation = {"raw_rows": counts.rows, "feature_rows": counts.kept, "quarantined_rows": counts.quarantined,
                      "unlabelled_rows": counts.unlabelled, "reconciles": counts.rows == counts.kept + counts.quarantined}
    yield MaterializeResult(
        asset_key="validated_features",
        metadata=delta_metadata(commit, lakehouse.table_name("validated_features"), features.schema, whole_output=single,
                                partition=partition, raw_data_delta_version=raw_version,
                                quarantined_rows_by_rule=MetadataValue.json(counts.by_rule), **reconciliation),
    )
    yield MaterializeResult(
        asset_key="quarantine",
        metadata=delta_metadata(q_commit, lakehouse.table_name("quarantine"), quarantined.schema, whole_output=single,
                                partition=partition, rows_by_rule=MetadataValue.json(counts.by_rule)),
    )
    yield budget
    yield suite
