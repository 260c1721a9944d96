"""The retraining sensor: reads drift and performance results from the Dagster instance, never starts Spark.

A day is a retraining signal when `feature_drift` flagged it, or when `model_performance` shows the primary
metric fallen below the champion's test metric by more than `performance_drop`. The sensor asks for one run of
the training job when `consecutive_days` signals in a row end on a day at least `cooldown_days` after the
previous trigger; the run key names that day, so a retried tick never starts it twice. The cursor keeps the
last trigger day. The training window of the run ends on the trigger day, so it includes the recent
partitions; the registry gate then decides whether the retrained model becomes champion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultSensorStatus,
    EventLogEntry,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset_sensor,
    sensor,
)

from assets import contracts as c
from ml.metrics import HIGHER_IS_BETTER


@dataclass(frozen=True)
class RetrainPolicy:
    consecutive_days: int = 3  # signals in a row before a retrain
    cooldown_days: int = 14  # days after a trigger before the next one
    performance_drop: float = 0.05  # relative fall of the primary metric below the champion's test metric
    lookback: int = 500  # materializations read per tick
    run_config: dict[str, Any] = field(default_factory=dict)  # extra training-job config (e.g. split sizes)


def _metadata(record, key: str):
    value = record.asset_materialization.metadata.get(key) if record.asset_materialization else None
    return getattr(value, "value", value)


def drift_signals(instance: DagsterInstance, lookback: int) -> dict[date, bool]:
    """day -> drifted, from `feature_drift`'s `drift_by_day` metadata; the latest materialization wins."""
    signals: dict[date, bool] = {}
    for record in instance.fetch_materializations(AssetKey("feature_drift"), limit=lookback).records:
        for day, summary in (_metadata(record, c.DRIFT_BY_DAY) or {}).items():
            signals.setdefault(date.fromisoformat(day), bool(summary["drifted"]))
    return signals


def test_metrics(instance: DagsterInstance, lookback: int) -> dict[str, float]:
    """model version -> its primary metric on the test set, as `registered_model` measured it at the gate."""
    metrics: dict[str, float] = {}
    for record in instance.fetch_materializations(AssetKey("registered_model"), limit=lookback).records:
        version, value = _metadata(record, c.MODEL_VERSION), _metadata(record, c.CHALLENGER_METRIC)
        if version is not None and isinstance(value, (int, float)):
            metrics.setdefault(str(version), float(value))
    return metrics


def performance_signals(instance: DagsterInstance, lookback: int, drop: float) -> dict[date, bool]:
    """day -> the served version's metric fell more than `drop` (relative) below its own test metric, from
    `model_performance`'s `primary_metric_by_day` and `registered_model`'s gate metadata."""
    reference = test_metrics(instance, lookback)
    signals: dict[date, bool] = {}
    for record in instance.fetch_materializations(AssetKey("model_performance"), limit=lookback).records:
        higher = HIGHER_IS_BETTER.get(_metadata(record, c.METRIC_NAME) or "", True)
        for day, by_version in (_metadata(record, c.PRIMARY_METRIC_BY_DAY) or {}).items():
            fell = [
                value < reference[v] * (1 - drop) if higher else value > reference[v] * (1 + drop)
                for v, value in by_version.items()
                if value is not None and v in reference
            ]
            if fell:
                signals.setdefault(date.fromisoformat(day), any(fell))
    return signals


def retrain_day(signals: dict[date, bool], last_trigger: date | None, policy: RetrainPolicy) -> date | None:
    """The latest day that ends `consecutive_days` signals in a row, after the cooldown since `last_trigger`.
    Only days after the last trigger count, so one drifted period gives one trigger per cooldown."""
    streak, previous, found = 0, None, None
    for day in sorted(d for d in signals if last_trigger is None or d > last_trigger):
        consecutive = previous is not None and (day - previous).days == 1
        streak = (streak + 1 if consecutive else 1) if signals[day] else 0
        previous = day
        cooled = last_trigger is None or (day - last_trigger).days >= policy.cooldown_days
        if streak >= policy.consecutive_days and cooled:
            found = day
    return found


def build_retrain_sensor(
    job_name: str,
    policy: RetrainPolicy,
    name: str = "drift_retrain_sensor",
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
):
    @sensor(
        name=name,
        job_name=job_name,
        minimum_interval_seconds=300,
        default_status=default_status,
        description=f"Retrain after {policy.consecutive_days} drifted (or underperforming) days in a row; "
        f"cooldown {policy.cooldown_days} days.",
    )
    def retrain_sensor(context: SensorEvaluationContext):
        state = json.loads(context.cursor) if context.cursor else {}
        last = date.fromisoformat(state["last_trigger"]) if state.get("last_trigger") else None
        drift = drift_signals(context.instance, policy.lookback)
        performance = performance_signals(context.instance, policy.lookback, policy.performance_drop)
        signals = {d: drift.get(d, False) or performance.get(d, False) for d in set(drift) | set(performance)}
        day = retrain_day(signals, last, policy)
        if day is None:
            flagged = sorted(d.isoformat() for d, s in signals.items() if s and (last is None or d > last))
            return SkipReason(
                f"no {policy.consecutive_days} consecutive signalled days after "
                f"{last or 'the start'} (cooldown {policy.cooldown_days} days); signalled: {flagged[-5:]}"
            )
        reasons = [r for r, s in (("feature drift", drift), ("performance drop", performance)) if s.get(day)]
        run_config = json.loads(json.dumps(policy.run_config))  # a copy to add the window to
        run_config.setdefault("ops", {}).setdefault("splits", {}).setdefault("config", {})["end_date"] = day.isoformat()
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=f"retrain-{day.isoformat()}",
                    run_config=run_config,
                    tags={"flightline/trigger": " + ".join(reasons), "flightline/trigger_day": day.isoformat()},
                )
            ],
            cursor=json.dumps({"last_trigger": day.isoformat()}),
        )

    return retrain_sensor


def build_incremental_sensor(
    job_name: str,
    name: str = "incremental_scoring_sensor",
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
):
    """One run of the incremental job after validated_features gets new materializations (all of them since the
    last tick: a backfill of a year is one run). The run key names the newest materialization (its run and time),
    so a retried tick never starts it twice; the query's checkpoint makes a run with nothing new a no-op."""

    @asset_sensor(
        asset_key=AssetKey("validated_features"),
        name=name,
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=default_status,
        description="Score validated_features' changes (incremental_predictions) after each new materialization.",
    )
    def incremental_sensor(context: SensorEvaluationContext, asset_event: EventLogEntry):
        materialization = asset_event.asset_materialization
        partition = materialization.partition if materialization else None
        return RunRequest(
            run_key=f"incremental-{asset_event.run_id}-{asset_event.timestamp:.6f}",
            tags={"flightline/trigger": f"validated_features materialized{f' ({partition})' if partition else ''}"},
        )

    return incremental_sensor
