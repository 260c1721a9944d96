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


def test_op_outputs_are_kept_per_run_and_an_unpicklable_value_leaves_no_file(tmp_path):
    """An op's output has no asset key (rollback_job, reproduce_job): it is kept under ops/<run>/<step>/<output>.
    A value that cannot be pickled fails its step and leaves nothing behind, not even a temporary file."""
    import threading

    import pytest
    from dagster import DagsterInstance, job, op

    (tmp_path / "dagster").mkdir()
    instance = DagsterInstance.local_temp(str(tmp_path / "dagster"))

    @op
    def make():
        return 21

    @op
    def double(value):
        return value * 2

    @job(resource_defs={"io_manager": RunValuesIOManager()})
    def chain():
        double(make())

    result = chain.execute_in_process(instance=instance)
    assert result.output_for_node("double") == 42
    ops = tmp_path / "dagster" / "storage" / "ops" / result.run_id
    assert sorted(p.name for p in ops.iterdir()) == ["double", "make"]
    assert [p.name for p in (ops / "make").iterdir()] == ["result"]

    @op
    def unpicklable():
        return threading.Lock()

    @job(resource_defs={"io_manager": RunValuesIOManager()})
    def broken():
        unpicklable()

    with pytest.raises(TypeError, match="cannot pickle"):
        broken.execute_in_process(instance=instance)
    [run] = [r for r in instance.get_runs() if r.job_name == "broken"]
    step = tmp_path / "dagster" / "storage" / "ops" / run.run_id / "unpicklable"
    assert not step.exists() or list(step.iterdir()) == []
