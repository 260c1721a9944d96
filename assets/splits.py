"""train_set, validation_set, test_set: the labelled features of a configured window of days, split by time
(the default) or by a seeded hash of the key (ml/splits.py)."""

from datetime import date, timedelta
from typing import Literal

from dagster import AssetExecutionContext, AssetOut, Config, Output, multi_asset
from pydantic import Field

import ml.splits
from assets import contracts as c
from assets.common import SPEC, code_version, ownership
from assets.contracts import SPLIT_TABLES, SPLITS
from assets.features import validated_features
from ml.columns import feature_table_columns
from ml.splits import HashSplit, SplitPlan, SplitSizes, SplitWindow, constant_label, split_frames, split_summary
from orchestration.lakehouse import LakehouseResource, declared_schema

__all__ = ["SPLITS", "SPLIT_TABLES", "SplitConfig", "splits"]


class SplitConfig(Config):
    """The training window: the last train + validation + test days up to and including `end_date`."""

    end_date: str | None = Field(
        default=None, description=("last day of the test range (YYYY-MM-DD); empty: the dataset spec's last day")
    )
    train_days: int = Field(default=SplitSizes.train_days, ge=1)
    validation_days: int = Field(default=SplitSizes.validation_days, ge=1)
    test_days: int = Field(default=SplitSizes.test_days, ge=1)

    strategy: Literal["time", "hash"] = Field(
        default=SPEC.default_split_strategy,
        description=(
            "time: train on the earlier days, validate on the next, test on the latest. hash: every labelled row of "
            "the window's days (train_days + validation_days + test_days) goes to the split that a hash of its key "
            "and `seed` picks, by the fractions below; a rerun or a new row never moves a row to another split"
        ),
    )
    train_fraction: float = Field(default=0.7, gt=0, lt=1, description="hash strategy only")
    validation_fraction: float = Field(default=0.15, gt=0, lt=1, description="hash strategy only")
    test_fraction: float = Field(default=0.15, gt=0, lt=1, description="hash strategy only")
    seed: int = Field(default=42, description="hash strategy only: another seed, another assignment")

    def window(self) -> SplitWindow:
        return SplitWindow.ending(self.last_day(), self.train_days, self.validation_days, self.test_days)

    def plan(self) -> SplitPlan:
        if self.strategy == "time" and SPEC.is_snapshot:
            raise ValueError(f"dataset {SPEC.name} is a snapshot (no event_time): its splits take strategy hash")
        if self.strategy == "time":
            return self.window()
        fractions = {"train": self.train_fraction, "validation": self.validation_fraction, "test": self.test_fraction}
        return HashSplit(self.window(), tuple(SPEC.key_columns), fractions, self.seed)

    def last_day(self) -> date:
        if self.end_date is None:
            if SPEC.last_partition_end is None:
                raise ValueError(f"dataset {SPEC.name} has no end date: give the split's end_date (YYYY-MM-DD)")
            return date.fromisoformat(SPEC.last_partition_end) - timedelta(days=1)
        try:
            return date.fromisoformat(self.end_date)
        except ValueError:
            raise ValueError(f"end_date {self.end_date!r} is not a date of the form YYYY-MM-DD") from None


@multi_asset(
    outs={
        table: AssetOut(
            kinds={"spark", "delta"},
            group_name="training",
            code_version=code_version(ml.splits),
            metadata=declared_schema(feature_table_columns(SPEC)),
            **ownership("training"),
        )
        for table in SPLIT_TABLES
    },
    deps=[validated_features],
    description=(
        "Splits of the labelled features of a window of days: by time (train on the earlier days, validate on the "
        "next, test on the latest), or by a seeded hash of the key (config `strategy: hash`)."
    ),
)
def splits(context: AssetExecutionContext, config: SplitConfig, lakehouse: LakehouseResource):
    plan = config.plan()
    features = lakehouse.read("validated_features")
    counts, label_range = split_summary(features.frame, plan)
    empty = [f"{name}_set [{s}, {e})" for name, n in counts.items() for s, e in [plan.ranges()[name]] if n == 0]
    if empty:  # checked before writing, so the previous splits stay as they were
        raise ValueError(
            f"no labelled rows in {', '.join(empty)} of validated_features v{features.version}: "
            "materialize validated_features for those days, or change the split window"
        )
    constant = constant_label(label_range)
    if constant is not None:
        train_start, train_end = plan.ranges()["train"]
        raise ValueError(
            f"dataset {SPEC.name}: label_expr {SPEC.label_expr!r} is {constant} on every one of the "
            f"{counts['train']} labelled rows of train_set [{train_start}, {train_end}) of validated_features "
            f"v{features.version}: there is nothing to learn; check label_expr, or widen the split window"
        )
    recorded = plan.as_dict()
    for name, frame in split_frames(features.frame, plan).items():
        table = f"{name}_set"
        commit = lakehouse.overwrite(
            frame, table, run_id=context.run.run_id, **{c.COMMIT_WINDOW: recorded}, **features.lineage
        )
        context.log.info(f"{table}: {commit.rows_written} rows, Delta v{commit.version}")
        start, end = plan.ranges()[name]
        # The value is the Delta version written: training reads that version, whatever the table holds later.
        yield Output(
            commit.version,
            output_name=table,
            metadata=lakehouse.metadata(
                commit,
                table,
                frame.schema,
                window_start=start.isoformat(),
                window_end_exclusive=end.isoformat(),
                **{c.SPLIT_STRATEGY: plan.strategy},
                **(
                    {"split_fractions": recorded["fractions"], "split_seed": plan.seed}
                    if plan.strategy == "hash"
                    else {}
                ),
                spec_fingerprint=SPEC.fingerprint(),
                **features.lineage,
            ),
        )
