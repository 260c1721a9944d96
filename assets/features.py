"""validated_features and quarantine: typed features of each day, gated by row-level rules and a GX suite.

Rows that break a row-level rule go to `quarantine` with the rules they broke; the rest become features.
raw rows = feature rows + quarantined rows, recorded on every materialization. A day above the spec's
quarantine budget, or days whose feature suite fails, are not written to validated_features, and the assets
downstream do not run for them. Check results are recorded per day, in range runs too.
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
from pyspark.sql import functions as F

from assets.checks import per_partition, suite_check_result
from assets.common import (
    SPEC,
    daily_partitions,
    day_materializations,
    days_label,
    days_of,
    delta_metadata,
    is_single_day,
    partition_label,
    partition_window,
)
from assets.ingest import raw_data
from ml import quarantine as q
from ml.dataset import EVENT_DATE
from ml.delta_io import read_pinned, window_predicate, write_days, write_partitions
from ml.features import with_derived
from ml.quality import feature_suite, run_suite_by_day, with_key_column
from orchestration.resources import LakehouseResource, SparkResource

SUITE_CHECK = "feature_suite"
BUDGET_CHECK = "quarantine_budget"


def budget_check(counts: q.QuarantineCounts, partition: str) -> AssetCheckResult:
    """One day's quarantined share against the spec's budget. A day without raw rows fails: there is nothing
    to validate, and its downstream must not run on whatever the table held before."""
    passed = counts.rows > 0 and counts.fraction <= SPEC.max_quarantine_fraction
    if counts.rows == 0:
        description = f"raw_data has no rows for {partition}: materialize raw_data for it first"
    else:
        description = None if passed else (
            f"{counts.quarantined} of {counts.rows} rows ({counts.fraction:.2%}) broke row-level rules, over the "
            f"budget of {SPEC.max_quarantine_fraction:.2%}: " + ", ".join(f"{k}: {v}" for k, v in counts.by_rule.items()))
    return AssetCheckResult(
        asset_key="validated_features",
        check_name=BUDGET_CHECK,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "partition": partition,
            "raw_rows": counts.rows,
            "quarantined_rows": counts.quarantined,
            "quarantined_fraction": counts.fraction,
            "budget": SPEC.max_quarantine_fraction,
            "rows_by_rule": MetadataValue.json(counts.by_rule),
        },
    )


def reconciliation(counts: q.QuarantineCounts) -> dict:
    return {"raw_rows": counts.rows, "feature_rows": counts.kept, "quarantined_rows": counts.quarantined,
            "unlabelled_rows": counts.unlabelled, "reconciles": counts.rows == counts.kept + counts.quarantined,
            "quarantined_rows_by_rule": MetadataValue.json(counts.by_rule)}


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
    """Every day of the run is judged on its own: its quarantine budget, then the suite over the days that
    passed, which finds the days that fail it (ml.quality.run_suite_by_day). Days that pass are written even
    when another day of the range fails (the run then fails, and nothing downstream runs); a failed day keeps
    its previous rows. Each day gets its own check results."""
    session = spark.spark_session
    start, end = partition_window(context)
    partition = partition_label(start, end)
    days = days_of(start, end)
    raw, raw_version = read_pinned(session, lakehouse.table_path("raw_data"))
    annotated = q.annotate(with_derived(raw.where(window_predicate(start, end)), SPEC), SPEC)
    annotated = annotated.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_day = q.count_by_day(annotated, SPEC)
        counts = {d: by_day.get(d, q.QuarantineCounts(0, 0, 0, {})) for d in days}
        budgets = {d: budget_check(counts[d], d.isoformat()) for d in days}
        quarantined = q.quarantined_rows(annotated, SPEC, partition)
        q_commit = write_partitions(quarantined, lakehouse.table_path("quarantine"), start, end)
        passed = [d for d in days if budgets[d].passed]
        verdicts, good, commit = {}, [], None
        if passed:
            kept = annotated if len(passed) == len(days) else annotated.where(F.col(EVENT_DATE).isin(passed))
            features = q.good_rows(kept, SPEC)
            verdicts = run_suite_by_day(with_key_column(features, SPEC), lambda n: feature_suite(SPEC, days=n), passed)
            good = [d for d in passed if verdicts[d].outcome.success]
            if good:
                commit = write_days(features, lakehouse.table_path("validated_features"), start, end, good)
    finally:
        annotated.unpersist()
    total = q.total(list(counts.values()))
    yield MaterializeResult(
        asset_key="quarantine",
        metadata=delta_metadata(q_commit, lakehouse.table_name("quarantine"), quarantined.schema,
                                whole_output=is_single_day(start, end), partition=partition,
                                rows_by_rule=MetadataValue.json(total.by_rule)),
    )
    suites = {d: suite_check_result(v.outcome, SUITE_CHECK, "validated_features", d.isoformat(), validated_with=days_label(v.days))
              for d, v in verdicts.items()}
    written = good if commit else []
    table = lakehouse.table_name("validated_features")
    if commit:
        context.log.info(f"validated_features {partition}: {commit.rows_written} rows of {len(written)} day(s), "
                         f"{total.quarantined} quarantined, Delta v{commit.version}")
    yield from day_materializations(
        "validated_features", days, written,
        lambda: delta_metadata(commit, table, features.schema, whole_output=is_single_day(start, end), partition=partition,
                               raw_data_delta_version=raw_version, **reconciliation(total)),
        lambda d: delta_metadata(commit, table, features.schema, whole_output=False, partition=d.isoformat(),
                                 raw_data_delta_version=raw_version, **{"dagster/row_count": counts[d].kept},
                                 **reconciliation(counts[d])))
    yield from per_partition(context, "validated_features", [(d.isoformat(), budgets[d]) for d in days]
                             + [(d.isoformat(), suites[d]) for d in passed])
    if len(written) < len(days):
        failed = [f"{d}: {budgets[d].description}" for d in days if not budgets[d].passed]
        failed += [f"{days_label(v.days)}: the feature suite failed: {suites[v.days[0]].description}"
                   for v in {v.days: v for v in verdicts.values() if not v.outcome.success}.values()]
        outcome = (f"The other {len(written)} day(s) were written (Delta v{commit.version})" if written
                   else "Nothing was written to validated_features")
        raise Failure(
            description=f"validated_features {partition}: {'; '.join(failed)}. {outcome}; the failed day(s) keep "
                        f"their previous rows. Rows that broke a row-level rule are in quarantine (Delta v{q_commit.version}).",
            metadata={"raw_data_delta_version": raw_version, "failed_days": [d.isoformat() for d in days if d not in written]})
