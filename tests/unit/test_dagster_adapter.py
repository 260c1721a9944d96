"""The Dagster internals that assets/dagster_adapter.py uses: if an upgrade moves or changes them, this fails by name."""

from dagster import AssetKey, AssetMaterialization, DagsterEventType, DagsterInstance


def test_the_private_target_class_still_has_the_fields_the_adapter_sets():
    from assets import dagster_adapter

    target = dagster_adapter.AssetCheckEvaluationTargetMaterializationData(storage_id=7, run_id="r", timestamp=1.5)
    assert (target.storage_id, target.run_id, target.timestamp) == (7, "r", 1.5), (
        "Dagster changed AssetCheckEvaluationTargetMaterializationData: update assets/dagster_adapter.py"
    )


def test_latest_materializations_finds_each_partitions_latest_record():
    from assets.dagster_adapter import latest_materializations

    with DagsterInstance.ephemeral() as instance:
        key = AssetKey("tiny")
        for partition in ("2024-01-01", "2024-01-02", "2024-01-01"):
            instance.report_runless_asset_event(AssetMaterialization(key, partition=partition))
        latest = instance.event_log_storage.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, {"2024-01-01", "2024-01-02"}
        )

        class Context:  # the one attribute of AssetExecutionContext that the adapter reads
            pass

        context = Context()
        context.instance = instance
        targets = latest_materializations(context, key, {"2024-01-01", "2024-01-02", "2024-01-03"})
        assert sorted(targets) == ["2024-01-01", "2024-01-02"]  # none for a partition never materialized
        assert {p: t.storage_id for p, t in targets.items()} == latest
        assert targets["2024-01-01"].storage_id > targets["2024-01-02"].storage_id  # the second 01-01, not the first


def test_the_placeholder_run_id_is_still_what_an_unplanned_upstream_carries(tmp_path):
    """orchestration/io.py reads an input that no step of the run produced from the last materialization; it knows
    that case by RUN_ID_PLACEHOLDER. If Dagster renames it, or stops putting it there, this fails by name."""
    from dagster import InputContext, IOManager, asset, io_manager, materialize

    from assets.dagster_adapter import RUN_ID_PLACEHOLDER

    seen = {}

    class Recorder(IOManager):
        def handle_output(self, context, obj):
            pass

        def load_input(self, context: InputContext):
            seen["run_id"] = context.upstream_output.run_id
            return 1

    @asset
    def upstream():
        return 1

    @asset
    def downstream(upstream):
        return upstream

    with DagsterInstance.ephemeral() as instance:
        resources = {"io_manager": io_manager(lambda _: Recorder())}
        assert materialize(
            [upstream, downstream], selection=[downstream], instance=instance, resources=resources
        ).success
    assert isinstance(RUN_ID_PLACEHOLDER, str) and seen["run_id"] == RUN_ID_PLACEHOLDER, (
        "Dagster changed the run id of an unplanned upstream output: update orchestration/io.py's producing_run"
    )
