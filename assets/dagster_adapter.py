"""The one place that uses Dagster internals, because Dagster 1.13 has no public API for them.

A range run (a single-run backfill) that yields an AssetCheckResult gets one evaluation with no partition, so
the UI's per-partition check status would never show a failed day. An `AssetCheckEvaluation` per day, aimed at
that day's latest materialization, needs the target materialization's storage id, which only the event log
storage and a class under `dagster._core` carry. tests/unit/test_dagster_adapter.py fails loudly if an upgrade
moves them.

The lineage CLI (orchestration/lineage.py) asks whether a day was held by the gate: the latest evaluation of a
check for one partition, which only the event log storage answers (`PartitionKeyFilter`, under `dagster._core`).

orchestration/io.py tells an input produced by no step of the run (an asset materialized alone) by the run id
Dagster gives its stand-in upstream context, `RUN_ID_PLACEHOLDER`, which has no public name.
"""

from __future__ import annotations

from dagster import (
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # no public equivalent in 1.13
    AssetCheckEvaluationTargetMaterializationData,
)
from dagster._core.event_api import PartitionKeyFilter  # no public equivalent in 1.13
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER  # no public name for it in 1.13

__all__ = ["RUN_ID_PLACEHOLDER", "latest_check_evaluations", "latest_materializations"]


def latest_materializations(context: AssetExecutionContext, key: AssetKey, partitions: set[str]) -> dict:
    """partition -> the target of a check evaluation aimed at that partition's latest materialization."""
    latest = context.instance.event_log_storage.get_latest_storage_id_by_partition(
        key, DagsterEventType.ASSET_MATERIALIZATION, partitions
    )
    if not latest:
        return {}
    records = {
        r.storage_id: r
        for r in context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)
        ).records
    }
    return {
        p: AssetCheckEvaluationTargetMaterializationData(
            storage_id=r.storage_id, run_id=r.run_id, timestamp=r.timestamp
        )
        for p, storage_id in latest.items()
        if (r := records.get(storage_id)) is not None
    }


def latest_check_evaluations(instance: DagsterInstance, keys: list[AssetCheckKey], partition: str) -> dict:
    """check key -> the latest completed evaluation of that check for one partition: {passed, run_id, timestamp,
    description}; a check never evaluated for it is left out."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=partition)
    )
    found = {}
    for key, record in latest.items():
        event = record.event
        evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
        if evaluation is None or not hasattr(evaluation, "passed"):  # planned, not evaluated (yet)
            continue
        found[key] = {
            "passed": bool(evaluation.passed),
            "run_id": record.run_id,
            "timestamp": record.create_timestamp,
            "description": evaluation.description,
        }
    return found
