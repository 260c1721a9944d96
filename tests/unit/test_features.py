import dataclasses
from datetime import date, datetime

from ml.dataset import EVENT_DATE, LABEL
from ml.datasets.flights import SPEC
from ml.features import build_features, feature_columns, raw_window, with_event_date


def _raw(spark, rows):
    from ml.datasets.flights import FLIGHTS_SCHEMA, WEATHER_COLUMNS

    schema = FLIGHTS_SCHEMA + ", " + ", ".join(f"{c} DOUBLE" for c in WEATHER_COLUMNS)
    return spark.createDataFrame(rows, schema)


def _flight(time_hour, arr_delay=20.0, carrier="UA", flight=1, origin="EWR"):
    return (
        time_hour.year,
        time_hour.month,
        time_hour.day,
        517,
        515,
        2.0,
        830,
        819,
        arr_delay,
        carrier,
        flight,
        "N1",
        origin,
        "IAH",
        227.0,
        1400.0,
        5,
        15,
        time_hour,
        *[1.0] * 9,
    )


def test_event_date_is_the_local_date(spark):
    df = spark.createDataFrame([(datetime(2013, 1, 2, 3, 0),), (datetime(2013, 1, 2, 6, 0),)], "time_hour TIMESTAMP")
    by_time = dataclasses.replace(SPEC, event_date_expr=None)  # the date from the event time alone
    dates = [r[EVENT_DATE] for r in with_event_date(df, by_time).orderBy("time_hour").collect()]
    # 03:00 UTC is 22:00 the day before in New York; 06:00 UTC is 01:00 the same day.
    assert dates == [date(2013, 1, 1), date(2013, 1, 2)]


def test_flights_take_the_date_from_year_month_day(spark):
    df = spark.createDataFrame(
        [(2013, 1, 1, datetime(2013, 1, 2, 3, 0))], "year INT, month INT, day INT, time_hour TIMESTAMP"
    )
    assert with_event_date(df, SPEC).first()[EVENT_DATE] == date(2013, 1, 1)


def test_raw_window_keeps_only_the_window(spark):
    raw = _raw(
        spark,
        [
            _flight(datetime(2013, 1, 1, 10)),
            _flight(datetime(2013, 1, 2, 10), flight=2),
            _flight(datetime(2013, 1, 3, 10), flight=3),
        ],
    )
    kept = raw_window(raw, SPEC, date(2013, 1, 2), date(2013, 1, 3))
    assert [r["flight"] for r in kept.collect()] == [2]


def test_features_are_typed_keyed_and_labelled(spark):
    raw = _raw(
        spark,
        [
            _flight(datetime(2013, 1, 1, 10), arr_delay=20.0),
            _flight(datetime(2013, 1, 1, 11), arr_delay=5.0, flight=2),
            _flight(datetime(2013, 1, 1, 12), arr_delay=None, flight=3),
        ],
    )
    features = build_features(with_event_date(raw, SPEC), SPEC)
    assert features.columns == feature_columns(SPEC)
    assert features.columns.count("carrier") == 1  # a key that is also a feature is selected once
    assert "arr_delay" not in features.columns and "dep_delay" not in features.columns
    types = dict(features.dtypes)
    assert all(types[c] == "double" for c in SPEC.numeric_features)
    assert all(types[c] == "string" for c in SPEC.categorical_features)
    rows = {r["flight"]: r for r in features.collect()}
    assert [rows[1][LABEL], rows[2][LABEL], rows[3][LABEL]] == [1.0, 0.0, None]
    assert rows[1]["sched_dep_minute_of_day"] == 5 * 60 + 15
    assert rows[1]["day_of_week"] == 3.0  # 2013-01-01 was a Tuesday: Spark's dayofweek gives 3
