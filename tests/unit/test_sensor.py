"""The retraining sensor, evaluated with build_sensor_context on a real Dagster instance holding real events."""

from datetime import date, timedelta

import pytest
from dagster import AssetMaterialization, DagsterInstance, MetadataValue, build_sensor_context

from orchestration.sensors import RetrainPolicy, build_retrain_sensor, retrain_day

JAN = date(2013, 1, 1)


@pytest.fixture()
def instance(tmp_path):
    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        yield instance


def report_drift(instance, flags: dict[int, bool], start=JAN):
    """A feature_drift materialization per day, as the asset records it (day i of `flags` after `start`)."""
    for i, drifted in sorted(flags.items()):
        day = (start + timedelta(days=i)).isoformat()
        instance.report_runless_asset_event(
            AssetMaterialization(
                "feature_drift",
                partition=day,
                metadata={
                    "drift_by_day": MetadataValue.json(
                        {day: {"drifted": drifted, "share_drifted": 0.5 if drifted else 0.0, "max_psi": 1.0}}
                    )
                },
            )
        )


def report_performance(instance, values: dict[int, float], version="3", test_value=0.72):
    """registered_model's gate metadata for the version, then model_performance as the asset records it."""
    instance.report_runless_asset_event(
        AssetMaterialization(
            "registered_model", metadata={"model_version": int(version), "challenger_metric": test_value}
        )
    )
    for i, value in sorted(values.items()):
        day = (JAN + timedelta(days=i)).isoformat()
        instance.report_runless_asset_event(
            AssetMaterialization(
                "model_performance",
                partition=day,
                metadata={"metric_name": "auc", "primary_metric_by_day": MetadataValue.json({day: {version: value}})},
            )
        )


def tick(instance, policy, cursor=None):
    sensor = build_retrain_sensor("training_job", policy)
    return sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))


def test_needs_consecutive_drifted_days(instance):
    policy = RetrainPolicy(consecutive_days=3)
    report_drift(instance, {0: True, 1: True, 2: False, 3: True, 4: True})  # never 3 in a row
    result = tick(instance, policy)
    assert not result.run_requests and "no 3 consecutive signalled days" in result.skip_message
    report_drift(instance, {5: True})
    result = tick(instance, policy)
    (request,) = result.run_requests
    assert request.run_key == "retrain-2013-01-06"
    assert request.run_config["ops"]["splits"]["config"]["end_date"] == "2013-01-06"  # window includes the drift
    assert request.tags["flightline/trigger"] == "feature drift"
    assert result.cursor == '{"last_trigger": "2013-01-06"}'


def test_a_gap_breaks_the_streak(instance):
    report_drift(instance, {0: True, 1: True, 3: True})  # day 2 has no result: not consecutive
    assert not tick(instance, RetrainPolicy(consecutive_days=3)).run_requests


def test_a_long_drifted_period_triggers_once_per_cooldown(instance):
    policy = RetrainPolicy(consecutive_days=3, cooldown_days=14)
    report_drift(instance, {i: True for i in range(10)})
    first = tick(instance, policy)
    (request,) = first.run_requests
    assert request.run_key == "retrain-2013-01-10"  # the latest day: one retrain for the whole period
    report_drift(instance, {i: True for i in range(10, 20)})  # still drifted, 10 more days
    second = tick(instance, policy, cursor=first.cursor)
    assert not second.run_requests  # within the cooldown
    report_drift(instance, {i: True for i in range(20, 24)})
    third = tick(instance, policy, cursor=first.cursor)
    assert [r.run_key for r in third.run_requests] == ["retrain-2013-01-24"]  # 14 days after the trigger


def test_the_same_tick_twice_asks_for_the_same_run_key(instance):
    report_drift(instance, {0: True, 1: True, 2: True})
    policy = RetrainPolicy(consecutive_days=3)
    keys = [r.run_key for _ in range(2) for r in tick(instance, policy).run_requests]  # e.g. a retried tick
    assert keys == ["retrain-2013-01-03", "retrain-2013-01-03"]  # Dagster starts a run key once
    assert (
        retrain_day({JAN: True, JAN + timedelta(1): True, JAN + timedelta(2): True}, JAN + timedelta(2), policy) is None
    )


def test_the_latest_result_of_a_day_wins(instance):
    report_drift(instance, {0: True, 1: True, 2: True})
    report_drift(instance, {2: False})  # day 3 recomputed (e.g. against a new champion): no longer drifted
    assert not tick(instance, RetrainPolicy(consecutive_days=3)).run_requests


def test_performance_below_the_threshold_is_a_signal(instance):
    policy = RetrainPolicy(consecutive_days=2, performance_drop=0.05)
    report_performance(instance, {0: 0.70, 1: 0.69})  # within 5% of the version's test AUC 0.72 (>= 0.684)
    assert not tick(instance, policy).run_requests
    report_performance(instance, {2: 0.66, 3: 0.65})
    (request,) = tick(instance, policy).run_requests
    assert request.run_key == "retrain-2013-01-04" and request.tags["flightline/trigger"] == "performance drop"


def test_extra_run_config_is_kept(instance):
    report_drift(instance, {0: True})
    policy = RetrainPolicy(
        consecutive_days=1,
        run_config={"ops": {"splits": {"config": {"train_days": 5}}, "tuned_pipeline": {"config": {"n_trials": 2}}}},
    )
    (request,) = tick(instance, policy).run_requests
    assert request.run_config["ops"]["splits"]["config"] == {"train_days": 5, "end_date": "2013-01-01"}
    assert policy.run_config["ops"]["splits"]["config"] == {"train_days": 5}  # the policy itself is not changed
