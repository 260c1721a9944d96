"""raw_data and raw_quarantine: the source's rows of each day, as they came, in a Delta table partitioned by event date;
the source's rows without a partition date, which no day can hold, in raw_quarantine (ml/undated.py)."""

import json

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

from assets import contracts as c
from assets.common import SPEC, daily_partitions, ownership, window_of
from assets.gate import daily_gate, suite_check_result
from ml import undated
from ml.contract import enforce_contract
from ml.dataset import MALFORMED, SourceContext
from ml.days import days_label
from ml.delta_io import DeltaCommit
from ml.features import raw_window
from ml.quality import raw_suite, run_suite_by_day
from orchestration.lakehouse import LakehouseResource

RAW_CHECK = "raw_suite"
RAW_QUARANTINE = "raw_quarantine"


@multi_asset(
    outs={
        "raw_data": AssetOut(
            kinds={"spark", "delta", "great_expectations"},
            group_name="daily",
            **ownership("ingest"),
            description=f"Source rows by event date: {SPEC.source_description}. Checked against the spec's schema "
            "contract before anything is written.",
        ),
        RAW_QUARANTINE: AssetOut(
            kinds={"spark", "delta"},
            group_name="daily",
            **ownership("ingest"),
            description="The source's rows without a partition date (rule no_partition_date), with the raw record: "
            "one copy per source, which each run over it replaces.",
        ),
    },
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
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
            context.log.warning(f"raw_data {window.label}: {report.describe(RAW_QUARANTINE)}")
        q_commit = lakehouse.replace_rows(
            quarantined,
            RAW_QUARANTINE,
            undated.stored_predicate(source_label),
            run_id=context.run.run_id,
            frame_is_empty=not report.rows,
        )
        undated_meta = undated_metadata(report, q_commit)
        yield MaterializeResult(
            asset_key=RAW_QUARANTINE,
            metadata=raw_quarantine_metadata(lakehouse, q_commit, quarantined.schema, window, source_label),
        )
        rows = undated.dated(seen)
        verdicts = run_suite_by_day(
            rows, lambda n: raw_suite(SPEC, days=n, malformed=MALFORMED in rows.columns), window.days
        )
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
            f" The {report.rows} rows without a partition date are in {RAW_QUARANTINE} (Delta v{q_commit.version})."
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
            commit_lineage={c.COMMIT_SOURCE: lakehouse.source_location or SPEC.source_description},
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


def raw_quarantine_metadata(
    lakehouse: LakehouseResource, commit: DeltaCommit | None, schema, window, source: str
) -> dict:
    """What a run stored in raw_quarantine: all of its source's undated rows (not one day's), or nothing (a clean
    source adds no commit)."""
    if commit is None:
        return lakehouse.unwritten_metadata(RAW_QUARANTINE, window, source_partition=source)
    return {**lakehouse.metadata(commit, RAW_QUARANTINE, schema), "partition": window.label, "source_partition": source}


def undated_metadata(report: undated.UndatedRows, q_commit: DeltaCommit | None) -> dict:
    """The source's rows without a partition date, for the raw check and the materialization."""
    metadata = {
        "rows_without_partition_date": report.rows,
        "rows_without_partition_date_fraction": report.fraction,
        "sample_rows_without_partition_date": MetadataValue.json([json.loads(r) for r in report.samples]),
    }
    if q_commit is not None:
        metadata[f"{RAW_QUARANTINE}_delta_version"] = q_commit.version
    return metadata
