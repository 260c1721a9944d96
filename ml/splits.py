"""Time-based train / validation / test splits: train on the earlier window, test on the latest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE, LABEL


@dataclass(frozen=True)
class SplitSizes:
    """How many days each split covers, by default (the Dagster config and `make run` take these)."""

    train_days: int = 120
    validation_days: int = 30
    test_days: int = 31


@dataclass(frozen=True)
class SplitWindow:
    """Three consecutive date ranges, each [start, end), ending the day after `end_date`."""

    train_start: date
    validation_start: date
    test_start: date
    end: date  # exclusive

    @classmethod
    def ending(cls, end_date: date, train_days: int, validation_days: int, test_days: int) -> SplitWindow:
        """The last train+validation+test days up to and including `end_date`."""
        for name, days in (("train_days", train_days), ("validation_days", validation_days), ("test_days", test_days)):
            if days < 1:
                raise ValueError(f"{name} must be at least 1, got {days}")
        end = end_date + timedelta(days=1)
        test_start = end - timedelta(days=test_days)
        validation_start = test_start - timedelta(days=validation_days)
        return cls(validation_start - timedelta(days=train_days), validation_start, test_start, end)

    def ranges(self) -> dict[str, tuple[date, date]]:
        return {
            "train": (self.train_start, self.validation_start),
            "validation": (self.validation_start, self.test_start),
            "test": (self.test_start, self.end),
        }

    def as_dict(self) -> dict[str, str]:
        return {
            f"{k}_{edge}": v.isoformat()
            for k, (s, e) in self.ranges().items()
            for edge, v in (("start", s), ("end", e))
        }


def time_splits(features: DataFrame, window: SplitWindow) -> dict[str, DataFrame]:
    """The labelled rows of each range. Rows whose label is not known yet are left out of every split."""
    labelled = features.where(F.col(LABEL).isNotNull())
    return {
        name: labelled.where((F.col(EVENT_DATE) >= F.lit(start)) & (F.col(EVENT_DATE) < F.lit(end)))
        for name, (start, end) in window.ranges().items()
    }


def split_counts(features: DataFrame, window: SplitWindow) -> dict[str, int]:
    """Labelled rows per split, in one pass: checked before anything is written."""
    labelled = features.where(F.col(LABEL).isNotNull())
    exprs = [
        F.sum(((F.col(EVENT_DATE) >= F.lit(s)) & (F.col(EVENT_DATE) < F.lit(e))).cast("long")).alias(name)
        for name, (s, e) in window.ranges().items()
    ]
    row = labelled.agg(*exprs).first()
    return {name: int(row[name] or 0) for name in window.ranges()}
