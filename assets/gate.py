"""The daily gate: each day of a run is judged on its own, the days that pass are written, and the run says which.

`raw_data` and `validated_features` (and any later gated asset) give `daily_gate` the table, the rows, and each
day's check results. It writes the days whose checks all passed (the others keep their previous rows), records a
materialization per written day and a check evaluation per day (also in range runs), and fails the run with a
structured `Failure`: its metadata lists `failed_days` and `written_days` (assets.contracts), which
orchestration.run_pipeline reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    Failure,
    MaterializeResult,
    MetadataValue,
    Output,
)
from pyspark.sql import DataFrame

from assets.contracts import FAILED_DAYS, WRITTEN_DAYS
from assets.dagster_adapter import latest_materializations
from ml.days import DayWindow
from ml.delta_io import DeltaCommit
from ml.quality import SuiteOutcome
from orchestration.lakehouse import LakehouseResource


def daily_gate(
    context: AssetExecutionContext,
    lakehouse: LakehouseResource,
    table: str,
    rows: DataFrame,
    window: DayWindow,
    checks: Mapping[date, Sequence[AssetCheckResult]],
    *,
    metadata: Callable[[DeltaCommit], dict],
    day_metadata: Callable[[DeltaCommit, date], dict],
    reasons: Callable[[list[date]], list[str]],
    note: str = "",
    all_failed: Callable[[], str | None] = lambda: None,
    failure_metadata: dict | None = None,
    commit_lineage: dict | None = None,
) -> Iterator:
    """Write the days of `window` whose `checks` all passed, and record the run's outcome.

    - `metadata(commit)`: the domain metadata of a run that wrote every day; `day_metadata(commit, day)`: a written
      day's own, when other days failed (it should hold the day's `dagster/row_count`).
    - `reasons(failed_days)`: why they failed, one phrase per reason (a reason shared by several days once);
      `note`: a sentence appended to the failure (where the rejected rows went); `all_failed()`: a message of its
      own for a run where nothing passed, or None.
    - `commit_lineage`: what the write records in its Delta commit's userMetadata besides the run id (the input
      versions it read, the source), so that a table's history alone says where a day's rows came from.
    """
    days = window.days
    passed = [d for d in days if all(c.passed for c in checks[d])]
    commit = (
        lakehouse.write_window(rows, table, window, passed, run_id=context.run.run_id, **(commit_lineage or {}))
        if passed
        else None
    )
    if commit:
        context.log.info(
            f"{table} {window.label}: {commit.rows_written} rows of {_days(len(passed), 'written', 'written')}, "
            f"Delta v{commit.version}"
        )
    if passed and len(passed) == len(days):  # one MaterializeResult, which Dagster records on every day
        yield MaterializeResult(
            asset_key=table, metadata=lakehouse.metadata(commit, table, rows.schema, window, **metadata(commit))
        )
    else:  # only the days written, each with its own metadata; the run fails below
        for d in passed:
            yield AssetMaterialization(
                asset_key=table,
                partition=d.isoformat(),
                metadata=lakehouse.metadata(
                    commit, table, rows.schema, window, **{**day_metadata(commit, d), "partition": d.isoformat()}
                ),
            )
    yield from per_partition(context, table, [(d.isoformat(), c) for d in days for c in checks[d]])
    failed = [d for d in days if d not in passed]
    if not failed:
        return
    message = None if passed else all_failed()
    if message is None:
        outcome = (
            f"The other {_days(len(passed), 'was', 'were')} written (Delta v{commit.version})"
            if passed
            else f"Nothing was written to {table}"
        )
        message = (
            f"{table} {window.label}: {'; '.join(dict.fromkeys(reasons(failed)))}. {outcome}; "
            f"{'the failed day keeps its' if len(failed) == 1 else 'the failed days keep their'} previous rows."
            f"{' ' + note if note else ''}"
        )
    raise Failure(
        description=message,
        metadata={
            FAILED_DAYS: [d.isoformat() for d in failed],
            WRITTEN_DAYS: [d.isoformat() for d in passed],
            **(failure_metadata or {}),
        },
    )


def _days(n: int, singular: str, plural: str) -> str:
    """'1 day was' / '3 days were'."""
    return f"{n} day {singular}" if n == 1 else f"{n} days {plural}"


def suite_check_result(
    outcome: SuiteOutcome, check_name: str, asset: str, partition: str, **extra_metadata
) -> AssetCheckResult:
    """A Great Expectations outcome as a check result an ops engineer can read."""
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
    """Each (partition key, result) as the check's evaluation of that one partition, aimed at that partition's
    latest materialization, as Dagster does in a one-day run (an evaluation aimed at an older one shows as "not
    evaluated"). Yielded after the materializations, so that a day written by this run is the one its check
    points at."""
    key = AssetKey(asset)
    targets = latest_materializations(context, key, {p for p, _ in results})
    for name in dict.fromkeys(r.check_name for _, r in results):  # each check's output, once
        yield Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(AssetCheckKey(key, name)))
    for partition, r in results:
        yield AssetCheckEvaluation(
            asset_key=key,
            check_name=r.check_name,
            passed=r.passed,
            metadata=r.metadata,
            severity=r.severity,
            description=r.description,
            partition=partition,
            blocking=context.assets_def.get_spec_for_check_key(AssetCheckKey(key, r.check_name)).blocking,
            target_materialization_data=targets.get(partition),
        )
