"""raw_data: the source's rows of each day, as they came, in a Delta table partitioned by event date."""

import json

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    MetadataValue,
    asset,
)
from pyspark import StorageLevel

from assets.common import SPEC, daily_partitions, window_of
from assets.gate import daily_gate, suite_check_result
from ml import undated
from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.days import days_label
from ml.delta_io import DeltaCommit
from ml.features import raw_window
from ml.quality import raw_suite, run_suite_by_day
from orchestration.lakehouse import LakehouseResource

RAW_CHECK = "raw_suite"


@asset(
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"spark", "delta", "great_expectations"},
    check_specs=[
        AssetCheckSpec(
            RAW_CHECK,
            asset="raw_data",
            blocking=True,
            partitions_def=daily_partitions,
            description="rows per day within bounds; malformed records and source rows without a "
            "partition date within the quarantine budget",
        )
    ],
    description=f"Source rows by event date: {SPEC.source_description}. Checked against the spec's schema "
    "contract before anything is written.",
)
def raw_data(context: AssetExecutionContext, lakehouse: LakehouseResource):
    window = window_of(context)
    source = SPEC.load_source(lakehouse.session, SourceContext(lakehouse.staging_dir, lakehouse.source_location))
    source, contract = enforce_contract(source, SPEC)
    if contract.ignored_columns:
        context.log.warning(f"ignoring extra source columns {list(contract.ignored_columns)}")
    seen = raw_window(source, SPEC, window.start, window.end, undated=True).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        source_label = undated.source_label(lakehouse.source_location)
        report, quarantined = undated.measure(seen, SPEC, source_label)  # the pass that reads the source
        if report.rows:
            context.log.warning(f"raw_data {window.label}: {report.describe()}")
        q_commit = lakehouse.replace_rows(
            quarantined,
            "quarantine",
            undated.stored_predicate(source_label),
            run_id=context.run.run_id,
            frame_is_empty=not report.rows,
        )
        undated_meta = undated_metadata(report, q_commit)
        rows = undated.dated(seen)
        verdicts = run_suite_by_day(rows, lambda n: raw_suite(SPEC, days=n), window.days)
        outcomes = {d: v.outcome.with_result(report.outcome()) for d, v in verdicts.items()}
        checks = {
            d: day_check(
                suite_check_result(
                    outcomes[d], RAW_CHECK, "raw_data", d.isoformat(), validated_with=days_label(v.days), **undated_meta
                ),
                report.rows_by_day.get(d, 0),
                d,
            )
            for d, v in verdicts.items()
        }

        def reasons(failed):  # a suite failure shared by several days is told once, for them all
            return [
                checks[d].description
                if outcomes[d].success
                else f"{days_label(verdicts[d].days)}: the raw suite failed: {checks[d].description}"
                for d in failed
            ]

        def all_failed():  # every day failed the same suite: one sentence, no list of days
            first = window.days[0]
            if outcomes[first].success or len({checks[d].description for d in window.days}) > 1:
                return None
            return (
                f"raw_data {window.label}: the raw suite failed, nothing was written (the partition keeps its "
                f"previous rows): {checks[first].description}.{stored}"
            )

        stored = (
            f" The {report.rows} rows without a partition date are in quarantine (Delta v{q_commit.version})."
            if report.rows
            else ""
        )
        yield from daily_gate(
            context,
            lakehouse,
            "raw_data",
            rows,
            window,
            {d: [c] for d, c in checks.items()},
            metadata=lambda _: {
                "source": SPEC.source_description,
                "ignored_columns": ", ".join(contract.ignored_columns),
                **undated_meta,
            },
            day_metadata=lambda _, d: {"source": SPEC.source_description, "dagster/row_count": report.rows_by_day[d]},
            reasons=reasons,
            note=stored.strip(),
            all_failed=all_failed,
        )
    finally:
        seen.unpersist()


def day_check(suite: AssetCheckResult, rows: int, day) -> AssetCheckResult:
    """The raw check of one day: the suite's result for it (run_suite_by_day), and the day's own rows within the
    spec's bounds: the suite bounds the rows of the days it validated together, where a cut-off day would hide."""
    low, high = SPEC.rows_per_day
    metadata = {**suite.metadata, "day_rows": rows}
    if not suite.passed or low <= rows <= high:
        return suite.with_metadata(metadata)
    return AssetCheckResult(
        asset_key="raw_data",
        check_name=RAW_CHECK,
        passed=False,
        severity=AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=f"{day}: {rows} source rows, outside the spec's bounds of {low}..{high} rows per day",
    )


def undated_metadata(report: undated.UndatedRows, q_commit: DeltaCommit | None) -> dict:
    """The source's rows without a partition date, for the raw check and the materialization."""
    metadata = {
        "rows_without_partition_date": report.rows,
        "rows_without_partition_date_fraction": report.fraction,
        "sample_rows_without_partition_date": MetadataValue.json([json.loads(r) for r in report.samples]),
    }
    if q_commit is not None:
        metadata["quarantine_delta_version"] = q_commit.version
    return metadata
