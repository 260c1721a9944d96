"""orchestration/io.RunValuesIOManager: each run's asset values apart (the two-process race is in
tests/reliability/test_training_runs.py); a run reads what its own steps wrote, or else the last materialization."""

from dagster import AssetKey, DagsterInstance, asset, materialize

from orchestration.io import RunValuesIOManager


def test_a_run_reads_its_own_values_and_otherwise_the_last_materialization(tmp_path):
    (tmp_path / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster"))
    io = {"io_manager": RunValuesIOManager()}
    value = {"a": 1}

    @asset
    def upstream():
        return value["a"]

    @asset
    def downstream(upstream):
        return upstream * 10

    first = materialize([upstream, downstream], instance=instance, resources=io)
    value["a"] = 2
    second = materialize([upstream], instance=instance, resources=io)
    assert first.output_for_node("downstream") == 10  # its own upstream, not a later one

    storage = tmp_path / "dagster" / "storage" / "runs"
    assert sorted(p.name for p in storage.iterdir()) == sorted([first.run_id, second.run_id])
    assert sorted(p.name for p in (storage / first.run_id).iterdir()) == ["downstream", "upstream"]

    alone = materialize([upstream, downstream], selection=[downstream], instance=instance, resources=io)
    assert alone.output_for_node("downstream") == 20  # from the run that materialized upstream last
    latest = instance.get_latest_materialization_event(AssetKey("upstream"))
    assert latest.run_id == second.run_id
