"""train_set, validation_set, test_set: a time-based split of the labelled features over a configured window."""

import json
from datetime import date

from dagster import AssetExecutionContext, AssetOut, Config, MaterializeResult, multi_asset
from pydantic import Field

from assets.common import SPEC, delta_metadata
from assets.features import validated_features
from ml.delta_io import overwrite_table, read_pinned
from ml.splits import SplitWindow, split_counts, time_splits
from orchestration.resources import LakehouseResource, SparkResource

SPLITS = ("train", "validation", "test")


class SplitConfig(Config):
    """The training window: the last train + validation + test days up to and including `end_date`."""

    end_date: str = Field(default="2013-12-31", description="last day of the test range (YYYY-MM-DD)")
    train_days: int = Field(default=120, ge=1)
    validation_days: int = Field(default=30, ge=1)
    test_days: int = Field(default=31, ge=1)

    def window(self) -> SplitWindow:
        try:
            end = date.fromisoformat(self.end_date)
        except ValueError:
            raise ValueError(f"end_date {self.end_date!r} is not a date of the form YYYY-MM-DD") from None
        return SplitWindow.ending(end, self.train_days, self.validation_days, self.test_days)


@multi_asset(
    outs={f"{name}_set": AssetOut(kinds={"spark", "delta"}, group_name="training") for name in SPLITS},
    deps=[validated_features],
    description="Time-based splits: train on the earlier days, validate on the next, test on the latest.",
)
def splits(context: AssetExecutionContext, config: SplitConfig, spark: SparkResource, lakehouse: LakehouseResource):
    session = spark.spark_session
    window = config.window()
    features, features_version = read_pinned(session, lakehouse.table_path("validated_features"))
    lineage = {"window": window.as_dict(), "validated_features_delta_version": features_version}
    empty = [f"{name}_set [{s}, {e})" for name, n in split_counts(features, window).items()
             for s, e in [window.ranges()[name]] if n == 0]
    if empty:  # checked before writing, so the previous splits stay as they were
        raise ValueError(
            f"no labelled rows in {', '.join(empty)} of validated_features v{features_version}: "
            "materialize validated_features for those days, or change the split window"
        )
    for name, frame in time_splits(features, window).items():
        table = f"{name}_set"
        commit = overwrite_table(frame, lakehouse.table_path(table), user_metadata=json.dumps(lineage))
        context.log.info(f"{table}: {commit.rows_written} rows, Delta v{commit.version}")
        start, end = window.ranges()[name]
        yield MaterializeResult(
            asset_key=table,
            metadata=delta_metadata(
                commit, lakehouse.table_name(table), frame.schema,
                window_start=start.isoformat(), window_end_exclusive=end.isoformat(),
                validated_features_delta_version=features_version, spec_fingerprint=SPEC.fingerprint(),
            ),
        )
