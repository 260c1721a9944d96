"""Drift on the real flights data: the seasons move the weather features, and the defaults see it."""

from datetime import date, timedelta

import pytest
from pyspark import StorageLevel
from pyspark.sql import functions as F

from ml.contract import enforce_contract
from ml.dataset import SourceContext
from ml.datasets.flights import SPEC
from ml.drift import DriftPolicy, build_profile, daily_counts, day_summaries, window_drift
from ml.features import raw_window, with_derived
from ml.quarantine import annotate, good_rows


@pytest.fixture(scope="module")
def year(spark, tmp_path_factory):
    source, _ = enforce_contract(SPEC.load_source(spark, SourceContext(str(tmp_path_factory.mktemp("staging")))), SPEC)
    features = good_rows(
        annotate(with_derived(raw_window(source, SPEC, date(2013, 1, 1), date(2014, 1, 1)), SPEC), SPEC), SPEC
    )
    features = features.persist(StorageLevel.MEMORY_AND_DISK)
    yield features
    features.unpersist()


def month(m: int) -> list[date]:
    first = date(2013, m, 1)
    return [first + timedelta(days=i) for i in range(31) if (first + timedelta(days=i)).month == m]


def test_july_drifts_from_a_spring_training_window_and_november_does_not(year):
    """Trained on March-April: July's heat and humidity are flagged on every day; November, whose weather is
    like spring's, on none. The flagged features are the weather ones, not the schedule."""
    spring = year.where((F.col("event_date") >= "2013-03-01") & (F.col("event_date") < "2013-05-01"))
    reference = build_profile(spring, SPEC)
    counts = daily_counts(year, reference)  # one pass for the whole year
    policy = DriftPolicy()
    summaries = day_summaries(window_drift(counts, month(7) + month(11), reference, policy), policy)
    july = [d for d in month(7) if summaries[d]["drifted"]]
    november = [d for d in month(11) if summaries[d]["drifted"]]
    assert july == month(7)
    assert november == []
    assert {"temp", "dewp"} <= set(summaries[date(2013, 7, 15)]["drifted_features"])
    assert "distance" not in summaries[date(2013, 7, 15)]["drifted_features"]
