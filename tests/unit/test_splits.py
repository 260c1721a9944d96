from datetime import date

import pytest

from ml.dataset import EVENT_DATE, LABEL
from ml.splits import SplitWindow, split_counts, time_splits


def test_window_ends_on_end_date_inclusive():
    w = SplitWindow.ending(date(2013, 1, 10), train_days=5, validation_days=2, test_days=3)
    assert w.ranges() == {
        "train": (date(2013, 1, 1), date(2013, 1, 6)),
        "validation": (date(2013, 1, 6), date(2013, 1, 8)),
        "test": (date(2013, 1, 8), date(2013, 1, 11)),
    }


def test_window_rejects_empty_ranges():
    with pytest.raises(ValueError, match="validation_days must be at least 1, got 0"):
        SplitWindow.ending(date(2013, 1, 10), 5, 0, 3)


def test_splits_are_disjoint_in_time_and_drop_unlabelled_rows(spark):
    rows = [(date(2013, 1, d), 1.0 if d % 2 else 0.0) for d in range(1, 11)] + [(date(2013, 1, 9), None)]
    df = spark.createDataFrame(rows, f"{EVENT_DATE} DATE, {LABEL} DOUBLE")
    w = SplitWindow.ending(date(2013, 1, 10), 5, 2, 3)
    splits = time_splits(df, w)
    days = {k: sorted(r[EVENT_DATE].day for r in v.collect()) for k, v in splits.items()}
    assert days == {"train": [1, 2, 3, 4, 5], "validation": [6, 7], "test": [8, 9, 10]}
    assert split_counts(df, w) == {"train": 5, "validation": 2, "test": 3}
