"""Train / validation / test splits of the labelled features over a window of days, by one of two strategies:

- `time` (SplitWindow): train on the earlier days, validate on the next, test on the latest;
- `hash` (HashSplit): every labelled row of the window's days is assigned by a hash of its key columns and a
  seed, so a rerun, or a row added later, never moves an existing row to another split. Changing the fractions
  or the seed does move rows: both are recorded with the splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
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

    strategy = "time"

    def conditions(self) -> dict[str, Column]:
        """Each split's rows, as a predicate on the partition column (so Spark prunes the other days)."""
        return {name: _between(start, end) for name, (start, end) in self.ranges().items()}

    def ranges(self) -> dict[str, tuple[date, date]]:
        return {
            "train": (self.train_start, self.validation_start),
            "validation": (self.validation_start, self.test_start),
            "test": (self.test_start, self.end),
        }

    def as_dict(self) -> dict[str, str]:
        return {
            **{
                f"{k}_{edge}": v.isoformat()
                for k, (s, e) in self.ranges().items()
                for edge, v in (("start", s), ("end", e))
            },
            "strategy": self.strategy,
        }


HASH_BUCKETS = 1_000_000


@dataclass(frozen=True)
class HashSplit:
    """The labelled rows of `window`'s days (train start to end), each in the split that a hash of its key and
    `seed` picks, with the given fractions."""

    window: SplitWindow
    key_columns: tuple[str, ...]
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "validation": 0.15, "test": 0.15})
    seed: int = 42
    strategy = "hash"

    def __post_init__(self):
        if set(self.fractions) != {"train", "validation", "test"}:
            raise ValueError(f"hash split fractions need train, validation and test, got {sorted(self.fractions)}")
        bad = {k: v for k, v in self.fractions.items() if not 0 < v < 1}
        if bad:
            raise ValueError(f"hash split fractions must each be between 0 and 1, got {bad}")
        if abs(sum(self.fractions.values()) - 1) > 1e-9:
            raise ValueError(f"hash split fractions must sum to 1, got {sum(self.fractions.values()):.6g}")
        if not self.key_columns:
            raise ValueError("a hash split needs the spec's key columns")

    def bucket(self) -> Column:
        """A row's place in [0, 1): its key columns (as text, so a type change keeps it) hashed with the seed."""
        keys = [F.col(k).cast("string") for k in self.key_columns]
        return F.pmod(F.xxhash64(F.lit(self.seed), *keys), F.lit(HASH_BUCKETS)) / F.lit(float(HASH_BUCKETS))

    def conditions(self) -> dict[str, Column]:
        u, train, validation = self.bucket(), self.fractions["train"], self.fractions["validation"]
        inside = _between(self.window.train_start, self.window.end)
        return {
            "train": inside & (u < train),
            "validation": inside & (u >= train) & (u < train + validation),
            "test": inside & (u >= train + validation),
        }

    def ranges(self) -> dict[str, tuple[date, date]]:
        """Every split draws from the whole window."""
        span = (self.window.train_start, self.window.end)
        return dict.fromkeys(("train", "validation", "test"), span)

    def as_dict(self) -> dict:
        return {
            **{
                f"{k}_{edge}": v.isoformat()
                for k, (s, e) in self.ranges().items()
                for edge, v in (("start", s), ("end", e))
            },
            "strategy": self.strategy,
            "fractions": dict(self.fractions),
            "seed": self.seed,
            "key_columns": list(self.key_columns),
        }


def _between(start: date, end: date) -> Column:
    return (F.col(EVENT_DATE) >= F.lit(start)) & (F.col(EVENT_DATE) < F.lit(end))


SplitPlan = SplitWindow | HashSplit


def time_splits(features: DataFrame, plan: SplitPlan) -> dict[str, DataFrame]:
    """The labelled rows of each split. Rows whose label is not known yet are left out of every split."""
    labelled = features.where(F.col(LABEL).isNotNull())
    return {name: labelled.where(condition) for name, condition in plan.conditions().items()}


split_frames = time_splits  # the name for a plan of either strategy


def split_counts(features: DataFrame, plan: SplitPlan) -> dict[str, int]:
    """Labelled rows per split, in one pass: checked before anything is written."""
    return split_summary(features, plan)[0]


def split_summary(features: DataFrame, plan: SplitPlan) -> tuple[dict[str, int], tuple[float | None, float | None]]:
    """Labelled rows per split, and the least and greatest label of the train split: one pass."""
    labelled = features.where(F.col(LABEL).isNotNull())
    conditions = plan.conditions()
    exprs = [F.sum(condition.cast("long")).alias(name) for name, condition in conditions.items()]
    train_label = F.when(conditions["train"], F.col(LABEL))
    row = labelled.agg(*exprs, F.min(train_label).alias("__low"), F.max(train_label).alias("__high")).first()
    return {name: int(row[name] or 0) for name in conditions}, (row["__low"], row["__high"])


def constant_label(label_range: tuple[float | None, float | None]) -> float | None:
    """The train split's one label value, when it has only one: nothing to learn from."""
    low, high = label_range
    return low if low is not None and low == high else None
