"""validated_features and quarantine: typed features of each day, gated by row-level rules and a GX suite.

Rows that break a row-level rule go to `quarantine` with the rules they broke; the rest become features.
raw rows = feature rows + quarantined rows, recorded on every materialization. A day above the spec's
quarantine budget, or days whose feature suite fails, are not written to validated_features, and the assets
downstream do not run for them. Check results are recorded per day, in range runs too.
"""

import functools

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pyspark import StorageLevel
from pyspark.sql import functions as F

from assets.common import SPEC, daily_partitions, ownership, window_of
from assets.gate import daily_gate, suite_check_result
from ml import quarantine as q
from ml.columns import feature_column_lineage, feature_table_columns
from ml.dataset import EVENT_DATE
from ml.days import days_label
from ml.features import with_derived
from ml.quality import feature_suite, run_suite_by_day, with_key_column
from orchestration.lakehouse import LakehouseResource, column_lineage, declared_schema

SUITE_CHECK = "feature_suite"
BUDGET_CHECK = "quarantine_budget"


def key_hint(counts: q.QuarantineCounts) -> str:
    """When repeated keys alone break the budget, the spec's key is the likelier culprit than the data."""
    repeated = counts.by_rule.get("duplicate_key", 0)
    if repeated / counts.rows <= SPEC.max_quarantine_fraction:
        return ""
    return (
        f". The spec's key_columns {tuple(SPEC.key_columns)} are not unique in the source: {repeated} rows repeat "
        "a key; a key column may be missing from key_columns"
    )


def budget_check(counts: q.QuarantineCounts, partition: str) -> AssetCheckResult:
    """One day's quarantined share against the spec's budget. A day without raw rows fails: there is nothing
    to validate, and its downstream must not run on whatever the table held before."""
    passed = counts.within_budget(SPEC)
    if counts.rows == 0:
        description = f"raw_data has no rows for {partition}: materialize raw_data for it first"
    else:
        description = (
            None
            if passed
            else (
                f"{counts.quarantined} of {counts.rows} rows ({counts.fraction:.2%}) broke row-level rules, over the "
                f"budget of {SPEC.max_quarantine_fraction:.2%}: "
                + ", ".join(f"{k}: {v}" for k, v in counts.by_rule.items())
                + key_hint(counts)
            )
        )
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
            "allowance_rows": SPEC.quarantine_allowance,
            "rows_by_rule": MetadataValue.json(counts.by_rule),
        },
    )


def reconciliation(raw_rows: int, feature_rows: int, quarantined_rows: int, counts: q.QuarantineCounts) -> dict:
    """raw rows read = feature rows written + quarantined rows written: three counts taken apart (the raw table as
    read, and what the two writes committed), so that a row lost or duplicated on the way shows."""
    return {
        "raw_rows": raw_rows,
        "feature_rows": feature_rows,
        "quarantined_rows": quarantined_rows,
        "unlabelled_rows": counts.unlabelled,
        "reconciles": raw_rows == feature_rows + quarantined_rows,
        "quarantined_rows_by_rule": MetadataValue.json(counts.by_rule),
    }


@multi_asset(
    outs={
        "validated_features": AssetOut(
            kinds={"spark", "delta", "great_expectations"},
            group_name="daily",
            metadata=declared_schema(feature_table_columns(SPEC)),
            **ownership("features"),
            description="Cleaned, typed features and the label (NULL while unknown).",
        ),
        "quarantine": AssetOut(
            kinds={"spark", "delta"},
            group_name="daily",
            **ownership("features"),
            description="Rows that broke a row-level rule, with the rules and the raw record.",
        ),
    },
    deps=["raw_data"],  # not raw_quarantine, the other table of its step
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    check_specs=[
        AssetCheckSpec(
            BUDGET_CHECK,
            asset="validated_features",
            blocking=True,
            partitions_def=daily_partitions,
            description="quarantined share of the partition within the spec's budget",
        ),
        AssetCheckSpec(
            SUITE_CHECK,
            asset="validated_features",
            blocking=True,
            partitions_def=daily_partitions,
            description="Great Expectations suite derived from the dataset spec",
        ),
    ],
)
def validated_features(context: AssetExecutionContext, lakehouse: LakehouseResource):
    """Every day of the run is judged on its own: its quarantine budget, then the suite over the days that
    passed, which finds the days that fail it (ml.quality.run_suite_by_day). Days that pass are written even
    when another day of the range fails (the run then fails, and nothing downstream runs); a failed day keeps
    its previous rows. Each day gets its own check results."""
    window = window_of(context)
    raw = lakehouse.read("raw_data")
    annotated = q.annotate(with_derived(raw.frame.where(window.predicate()), SPEC), SPEC)
    annotated = annotated.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_day = q.count_by_day(annotated, SPEC)
        counts = {d: by_day.get(d, q.QuarantineCounts(0, 0, 0, {})) for d in window.days}
        checks = {d: [budget_check(counts[d], d.isoformat())] for d in window.days}
        quarantined = q.quarantined_rows(annotated, SPEC, window.label)
        q_commit = lakehouse.write_window(quarantined, "quarantine", window, run_id=context.run.run_id)
        total = q.total(list(counts.values()))
        yield MaterializeResult(
            asset_key="quarantine",
            metadata=lakehouse.metadata(
                q_commit, "quarantine", quarantined.schema, window, rows_by_rule=MetadataValue.json(total.by_rule)
            ),
        )
        passed = [d for d in window.days if checks[d][0].passed]
        features = q.good_rows(
            annotated if len(passed) == len(window.days) else annotated.where(F.col(EVENT_DATE).isin(passed)), SPEC
        )
        verdicts = (
            run_suite_by_day(with_key_column(features, SPEC), lambda n: feature_suite(SPEC, days=n), passed)
            if passed
            else {}
        )
        for d, v in verdicts.items():
            checks[d].append(
                suite_check_result(
                    v.outcome, SUITE_CHECK, "validated_features", d.isoformat(), validated_with=days_label(v.days)
                )
            )

        def reasons(failed):
            return [
                f"{d}: {checks[d][0].description}"
                if not checks[d][0].passed
                else f"{days_label(verdicts[d].days)}: the feature suite failed: {checks[d][1].description}"
                for d in failed
            ]

        @functools.cache
        def written_by_day(table, version):  # the rows a commit wrote, per day, read back at that version
            frame = lakehouse.read_at(table, version).frame.where(window.predicate())
            return {r[EVENT_DATE]: r["count"] for r in frame.groupBy(EVENT_DATE).count().collect()}

        def day_reconciliation(commit, d):
            features_by_day = written_by_day("validated_features", commit.version)
            quarantined_by_day = written_by_day("quarantine", q_commit.version)
            return reconciliation(counts[d].rows, features_by_day.get(d, 0), quarantined_by_day.get(d, 0), counts[d])

        yield from daily_gate(
            context,
            lakehouse,
            "validated_features",
            features,
            window,
            checks,
            metadata=lambda commit: {
                **raw.lineage,
                **column_lineage(feature_column_lineage(SPEC, "raw_data")),
                **reconciliation(total.rows, commit.rows_written, q_commit.rows_written or 0, total),
            },
            day_metadata=lambda commit, d: {
                **raw.lineage,
                **column_lineage(feature_column_lineage(SPEC, "raw_data")),
                "dagster/row_count": counts[d].kept,
                **day_reconciliation(commit, d),
            },
            reasons=reasons,
            failure_metadata=raw.lineage,
            commit_lineage=raw.lineage,
            note=f"Rows that broke a row-level rule are in quarantine (Delta v{q_commit.version}).",
        )
    finally:
        annotated.unpersist()
