from datetime import date

import pytest

from ml.dataset import EVENT_DATE, LABEL
from ml.splits import HashSplit, SplitWindow, constant_label, split_counts, split_frames, split_summary, time_splits


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


# ---- the hash strategy ----------------------------------------------------------------------------------------


def keyed_rows(spark, ids, day=date(2013, 1, 5), label=1.0):
    return spark.createDataFrame(
        [(i, f"k{i % 7}", day, label) for i in ids], f"id INT, code STRING, {EVENT_DATE} DATE, {LABEL} DOUBLE"
    )


def split_of_each_row(frames) -> dict[tuple, str]:
    return {(r.id, r.code): name for name, f in frames.items() for r in f.select("id", "code").collect()}


def test_hash_split_assigns_every_labelled_row_of_the_window_once_by_the_fractions(spark):
    window = SplitWindow.ending(date(2013, 1, 10), 5, 2, 3)
    plan = HashSplit(window, ("id", "code"), {"train": 0.6, "validation": 0.2, "test": 0.2}, seed=1)
    inside = keyed_rows(spark, range(5000))
    unlabelled = keyed_rows(spark, range(5000, 5010), label=None)
    outside = keyed_rows(spark, range(6000, 6010), day=date(2013, 1, 11))  # the day after the window
    frames = split_frames(inside.unionByName(unlabelled).unionByName(outside), plan)
    assigned = split_of_each_row(frames)
    assert sum(f.count() for f in frames.values()) == len(assigned) == 5000  # disjoint, and nothing else
    assert set(assigned) == {(i, f"k{i % 7}") for i in range(5000)}
    shares = {name: sum(1 for s in assigned.values() if s == name) / 5000 for name in ("train", "validation", "test")}
    assert shares == pytest.approx({"train": 0.6, "validation": 0.2, "test": 0.2}, abs=0.025)
    assert split_counts(inside.unionByName(unlabelled).unionByName(outside), plan) == {
        name: round(share * 5000) for name, share in shares.items()
    }
    assert plan.as_dict()["strategy"] == "hash" and plan.as_dict()["seed"] == 1
    assert plan.ranges()["test"] == (date(2013, 1, 1), date(2013, 1, 11))  # every split draws from the window


def test_hash_split_never_moves_a_row_when_rows_are_added_or_the_split_is_rerun(spark):
    plan = HashSplit(SplitWindow.ending(date(2013, 1, 10), 5, 2, 3), ("id", "code"))
    before = split_of_each_row(split_frames(keyed_rows(spark, range(2000)), plan))
    after = split_of_each_row(split_frames(keyed_rows(spark, range(3000)).repartition(3), plan))
    assert {k: after[k] for k in before} == before  # 1000 new rows, other partitions: the old rows stay put
    other_seed = split_of_each_row(
        split_frames(keyed_rows(spark, range(2000)), HashSplit(plan.window, ("id", "code"), seed=7))
    )
    assert sum(1 for k in before if other_seed[k] != before[k]) > 500  # the seed, not the data, moves rows


def test_hash_split_refuses_fractions_that_do_not_make_one_whole():
    window = SplitWindow.ending(date(2013, 1, 10), 5, 2, 3)
    with pytest.raises(ValueError, match="hash split fractions must sum to 1, got 1.1"):
        HashSplit(window, ("id",), {"train": 0.7, "validation": 0.2, "test": 0.2})
    with pytest.raises(ValueError, match=r"need train, validation and test, got \['test', 'train'\]"):
        HashSplit(window, ("id",), {"train": 0.7, "test": 0.3})
    with pytest.raises(ValueError, match="a hash split needs the spec's key columns"):
        HashSplit(window, ())


def test_a_train_split_with_one_label_value_is_found_in_the_counting_pass(spark):
    rows = [(date(2013, 1, d), 0.0) for d in range(1, 6)] + [(date(2013, 1, d), float(d % 2)) for d in range(6, 11)]
    df = spark.createDataFrame(rows, f"{EVENT_DATE} DATE, {LABEL} DOUBLE")
    counts, label_range = split_summary(df, SplitWindow.ending(date(2013, 1, 10), 5, 2, 3))
    assert counts == {"train": 5, "validation": 2, "test": 3} and label_range == (0.0, 0.0)
    assert constant_label(label_range) == 0.0  # every train day is on time: nothing to learn
    _, varied = split_summary(df, SplitWindow.ending(date(2013, 1, 10), 2, 1, 1))  # train = Jan 7-8
    assert varied == (0.0, 1.0) and constant_label(varied) is None
    assert constant_label((None, None)) is None  # no train rows: the empty-split error says so instead
