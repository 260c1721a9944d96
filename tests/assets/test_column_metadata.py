"""The column schema each asset declares at definition (from the spec, ml/columns.py) against what the world's writes
committed, and the column lineage (`dagster/column_lineage`) of validated_features and batch_predictions: every
column it names exists, upstream and downstream."""

import pytest
from dagster import AssetKey

from tests.world import materializations

DECLARED = ("validated_features", "train_set", "validation_set", "test_set", "batch_predictions")
UPSTREAM = {"validated_features": "raw_data", "batch_predictions": "validated_features"}


def written_columns(world, asset: str) -> dict[str, str]:
    [meta, *_] = [m.metadata for m in materializations(world.results[_result_of(asset)], asset)]
    return {c.name: c.type for c in meta["dagster/column_schema"].schema.columns}


def _result_of(asset: str) -> str:
    return "splits" if asset.endswith("_set") else asset


@pytest.mark.parametrize("asset", DECLARED)
def test_the_declared_schema_is_the_one_written(world, asset):
    node = world.defs.resolve_asset_graph().get(AssetKey(asset))
    declared = {c.name: c.type for c in node.metadata["dagster/column_schema"].columns}
    assert declared == written_columns(world, asset)


@pytest.mark.parametrize("asset", sorted(UPSTREAM))
def test_column_lineage_names_columns_that_exist(world, asset):
    [meta, *_] = [m.metadata for m in materializations(world.results[asset], asset)]
    lineage = meta["dagster/column_lineage"].value.deps_by_column
    upstream = written_columns(world, UPSTREAM[asset])
    assert set(lineage) <= set(written_columns(world, asset))
    for column, deps in lineage.items():
        assert deps, column
        for dep in deps:
            assert dep.asset_key == AssetKey(UPSTREAM[asset]) and dep.column_name in upstream, (column, dep)
    if asset == "validated_features":  # a derived feature comes from the raw columns its expression reads
        assert {d.column_name for d in lineage["sched_dep_minute_of_day"]} == {"sched_dep_time"}
        assert {d.column_name for d in lineage["label"]} == {"arr_delay"}
    else:
        assert {d.column_name for d in lineage["prediction"]} >= {"distance", "carrier", "temp"}
