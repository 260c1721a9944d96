"""assets/splits.splits: train on the first day, validate on the second, test on the third (the world's 1/1/1 window)."""

import json
from datetime import date

import pytest

from assets.common import SPEC
from assets.splits import SplitConfig, splits
from ml.splits import HashSplit
from tests.world import DAYS, metadata_of

WINDOWS = {
    "train_set": ("2013-02-01", "2013-02-02"),
    "validation_set": ("2013-02-02", "2013-02-03"),
    "test_set": ("2013-02-03", "2013-02-04"),
}


def test_each_split_holds_the_labelled_rows_of_its_days(world):
    result = world.results["splits"]
    for (table, (start, end)), day in zip(WINDOWS.items(), DAYS, strict=True):
        meta = metadata_of(result, table)
        assert (meta["window_start"], meta["window_end_exclusive"]) == (start, end), table
        assert meta["dagster/row_count"] == world.labelled_per_day[day], table  # unlabelled flights left out
        assert meta["delta_version"] == 0 and meta["delta_operation"] == "WRITE", table
        assert meta["validated_features_delta_version"] == 0 and meta["spec_fingerprint"] == SPEC.fingerprint()
        assert meta["dagster/table_name"] == f"main.flights.{table}" and "partition" not in meta
        assert result.output_for_node("splits", table) == 0  # the version written, which training reads
        rows = world.table(table, version=0)
        assert world.counts_by_day(table, version=0) == {day: world.labelled_per_day[day]}, table
        assert rows.where("label IS NULL").count() == 0
        [commit] = world.commit_of(table, result.run_id)
        lineage = json.loads(commit["userMetadata"])
        assert lineage["validated_features_delta_version"] == 0
        assert lineage["window"] == {
            **{
                f"{t.removesuffix('_set')}_{edge}": v
                for t, (s, e) in WINDOWS.items()
                for edge, v in (("start", s), ("end", e))
            },
            "strategy": "time",
        }
        assert meta["split_strategy"] == "time"


def test_a_window_without_labelled_rows_is_refused_before_anything_is_written(world):
    versions = {t: world.version(t) for t in WINDOWS}
    features = world.version("validated_features")
    result = world.materialize(
        splits,
        raise_on_error=False,
        run_config={
            "ops": {
                "splits": {"config": {"end_date": "2013-02-12", "train_days": 1, "validation_days": 1, "test_days": 1}}
            }
        },
    )
    assert not result.success
    error = str(result.failure_data_for_node("splits").error)
    assert (
        "no labelled rows in train_set [2013-02-10, 2013-02-11), validation_set [2013-02-11, 2013-02-12), "
        f"test_set [2013-02-12, 2013-02-13) of validated_features v{features}: materialize validated_features for "
        "those days, or change the split window"
    ) in error
    assert {t: world.version(t) for t in WINDOWS} == versions


def test_the_hash_strategy_is_a_config_choice_over_the_spec_s_keys():
    plan = SplitConfig(strategy="hash", end_date="2013-02-03", train_days=1, validation_days=1, test_days=1).plan()
    assert isinstance(plan, HashSplit) and plan.key_columns == tuple(SPEC.key_columns)
    assert plan.fractions == {"train": 0.7, "validation": 0.15, "test": 0.15} and plan.seed == 42
    assert plan.ranges()["train"] == (date(2013, 2, 1), date(2013, 2, 4))
    with pytest.raises(ValueError, match="hash split fractions must sum to 1, got 0.9"):
        SplitConfig(strategy="hash", end_date="2013-02-03", test_fraction=0.05).plan()
    assert SplitConfig(end_date="2013-02-03").plan().strategy == "time"
