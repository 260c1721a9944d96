"""incremental_scoring_sensor, evaluated with build_sensor_context on a real Dagster instance holding real events."""

from dagster import AssetMaterialization, DagsterInstance, DefaultSensorStatus, build_sensor_context

from orchestration.definitions import defs


def test_a_new_validated_features_materialization_starts_one_incremental_run(tmp_path):
    sensor = defs.resolve_sensor_def("incremental_scoring_sensor")
    assert sensor.default_status == DefaultSensorStatus.STOPPED  # off until an operator turns it on
    assert sensor.job_name == "incremental_job"
    assert {k.to_user_string() for k in defs.resolve_job_def("incremental_job").asset_layer.executable_asset_keys} == {
        "incremental_predictions"
    }
    with DagsterInstance.ephemeral(tempdir=str(tmp_path)) as instance:
        first = sensor.evaluate_tick(build_sensor_context(instance=instance))
        assert first.run_requests == []  # nothing materialized yet

        instance.report_runless_asset_event(AssetMaterialization("batch_predictions", partition="2013-02-01"))
        other = sensor.evaluate_tick(build_sensor_context(instance=instance))
        assert other.run_requests == []  # another asset's materialization is not a trigger

        for day in ("2013-02-01", "2013-02-02"):  # two days of one backfill: one run
            instance.report_runless_asset_event(AssetMaterialization("validated_features", partition=day))
        tick = sensor.evaluate_tick(build_sensor_context(instance=instance))
        assert len(tick.run_requests) == 1 and tick.run_requests[0].run_key.startswith("incremental-")
        assert tick.run_requests[0].tags["flightline/trigger"] == "validated_features materialized (2013-02-02)"

        again = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=tick.cursor))
        assert again.run_requests == []  # nothing new since the cursor
        instance.report_runless_asset_event(AssetMaterialization("validated_features", partition="2013-02-03"))
        later = sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=tick.cursor))
        assert len(later.run_requests) == 1 and later.run_requests[0].run_key != tick.run_requests[0].run_key
