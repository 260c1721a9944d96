"""Great Expectations outcomes as Dagster asset check results that an ops engineer can read, per partition."""

from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    MetadataValue,
    Output,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from ml.quality import SuiteOutcome


def suite_check_result(outcome: SuiteOutcome, check_name: str, asset: str, partition: str,
                       **extra_metadata) -> AssetCheckResult:
    failures = outcome.failures
    return AssetCheckResult(
        asset_key=asset,
        check_name=check_name,
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
            **extra_metadata,
        },
    )


def per_partition(context: AssetExecutionContext, asset: str, results: list[tuple[str, AssetCheckResult]]) -> Iterator:
    """Each (partition key, result) as the check's evaluation of that one partition.

    Dagster records an AssetCheckResult yielded by a range run (a single-run backfill) once, with no
    partition, so the UI's per-partition check status would never show it, and a failed day would hide in
    the range. Here every day gets its own evaluation, aimed at that day's latest materialization as Dagster
    does in a one-day run (an evaluation aimed at an older one shows as "not evaluated"). Yield this after
    the materializations, so that a day written by this run is the one its check points at.
    """
    key = AssetKey(asset)
    latest = context.instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, {p for p, _ in results})
    records = {r.storage_id: r for r in context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)).records} if latest else {}
    for name in dict.fromkeys(r.check_name for _, r in results):  # each check's output, once
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(AssetCheckKey(key, name)))
    for partition, r in results:
        record = records.get(latest.get(partition))
        yield AssetCheckEvaluation(
            asset_key=key, check_name=r.check_name, passed=r.passed, metadata=r.metadata, severity=r.severity,
            description=r.description, partition=partition,
            blocking=context.assets_def.get_spec_for_check_key(AssetCheckKey(key, r.check_name)).blocking,
            target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp) if record else None,
        )
