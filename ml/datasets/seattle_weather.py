"""Seattle's daily weather, 2012-2015 (the `vega_datasets` package's `seattle-weather.csv`, public-domain NOAA data):
1,461 days, one row a day. A daily regression: the day's highest temperature from its precipitation, wind, weather
type and the season.

One row a day makes every partition tiny: a single broken row is 100% of its day, which is what the quarantine's
`quarantine_allowance` is for (README, "the quality gate"). A source location (a folder holding
`seattle-weather.csv`) replaces the packaged file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ml.dataset import DatasetSpec, SourceContext

FILE = "seattle-weather.csv"
SCHEMA = "date STRING, precipitation DOUBLE, temp_max DOUBLE, temp_min DOUBLE, wind DOUBLE, weather STRING"


def package_file() -> Path:
    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the vega_datasets package is not installed (a project dependency: run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "_data" / FILE


def load_seattle_weather(spark: SparkSession, ctx: SourceContext) -> DataFrame:
    path = Path(ctx.location) / FILE if ctx.location else package_file()
    if not path.exists():
        raise FileNotFoundError(f"no {FILE} at {path}")
    raw = spark.read.options(header="true", mode="PERMISSIVE").schema(SCHEMA).csv(str(path))
    return raw.withColumn("date", F.to_timestamp("date", "yyyy/MM/dd"))  # midnight UTC: the day itself


SPEC = DatasetSpec(
    name="seattle_weather",
    load_source=load_seattle_weather,
    source_description="vega_datasets seattle-weather.csv (NOAA, Seattle, 2012-2015, one row a day)",
    event_time="date",
    key_columns=("event_date",),
    label_expr="temp_max",
    task="regression",
    numeric_features=("precipitation", "wind", "season_sin", "season_cos"),
    categorical_features=("weather",),
    leaky_columns=("temp_max", "temp_min"),  # measured on the day: the label itself, and its twin
    derived_columns={
        "season_sin": "SIN(2 * PI() * DAYOFYEAR(event_date) / 365.25)",
        "season_cos": "COS(2 * PI() * DAYOFYEAR(event_date) / 365.25)",
    },
    start_date="2012-01-01",
    end_date="2016-01-01",
    model_name="daily_max_temperature",
    primary_metric="rmse",
    raw_schema={
        "date": "timestamp",
        "precipitation": "double",
        "temp_max": "double",
        "temp_min": "double",
        "wind": "double",
        "weather": "string",
    },
    required_columns=("temp_max",),  # a day without its label is no day to learn from, and none lacks it
    value_ranges={"precipitation": (0.0, None), "wind": (0.0, None)},
    rows_per_day=(1, 1),
)
