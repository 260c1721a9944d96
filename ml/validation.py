"""How a trial is scored: on the holdout validation set, by k-fold, or by expanding-window time-series folds.

Spark's `CrossValidator` assigns folds at random, which lets a model validate on days older than the ones it
trained on. `time_series` folds never do: fold i trains on every day before its validation block.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.dataset import EVENT_DATE

STRATEGIES = ("holdout", "kfold", "time_series")


@dataclass(frozen=True)
class Fold:
    name: str
    train: DataFrame
    validation: DataFrame
    description: str  # what the fold holds, for logs and MLflow


def make_folds(
    train: DataFrame, validation: DataFrame, strategy: str, folds: int, key_columns: tuple[str, ...]
) -> list[Fold]:
    """The (train, validation) pairs a trial is scored on. k-fold and time-series folds are drawn from
    train ∪ validation; the test set is never touched."""
    if strategy not in STRATEGIES:
        raise ValueError(f"validation strategy {strategy!r} is not one of {STRATEGIES}")
    if strategy == "holdout":
        return [Fold("holdout", train, validation, "train_set -> validation_set")]
    if folds < 2:
        raise ValueError(f"{strategy} validation needs at least 2 folds, got {folds}")
    data = train.unionByName(validation)
    if strategy == "kfold":
        # Deterministic fold ids from the event key: a rerun sees the same folds.
        fold_id = F.pmod(F.xxhash64(*[F.col(c) for c in key_columns]), F.lit(folds))
        return [
            Fold(f"fold{i}", data.where(fold_id != i), data.where(fold_id == i), f"key hash mod {folds} == {i}")
            for i in range(folds)
        ]
    return [
        Fold(
            f"fold{i}",
            data.where(F.col(EVENT_DATE) < F.lit(s)),
            data.where((F.col(EVENT_DATE) >= F.lit(s)) & (F.col(EVENT_DATE) < F.lit(e))),
            f"train < {s}, validate [{s}, {e})",
        )
        for i, (s, e) in enumerate(time_series_blocks(data, folds))
    ]


def time_series_blocks(data: DataFrame, folds: int) -> list[tuple[date, date]]:
    """`folds` consecutive validation blocks [start, end) after a first training block: the date range
    is cut into folds + 1 equal blocks. One aggregate pass for the date range."""
    row = data.agg(F.min(EVENT_DATE).alias("lo"), F.max(EVENT_DATE).alias("hi")).first()
    if row["lo"] is None:
        raise ValueError("cannot build time-series folds: the training data is empty")
    days = (row["hi"] - row["lo"]).days + 1
    if days < folds + 1:
        raise ValueError(f"time-series validation with {folds} folds needs at least {folds + 1} days, got {days}")
    cut = [row["lo"] + timedelta(days=round(days * i / (folds + 1))) for i in range(folds + 2)]
    return [(cut[i], cut[i + 1]) for i in range(1, folds + 1)]
