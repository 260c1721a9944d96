"""The source's schema contract, checked on the DataFrame's schema before any row is read or written."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from ml.dataset import MALFORMED, DatasetSpec
from ml.features import with_event_date

log = logging.getLogger(__name__)


class SchemaContractError(ValueError):
    """The source does not have the columns, or the types, the dataset spec declares."""


@dataclass(frozen=True)
class ContractReport:
    ignored_columns: tuple[str, ...]


def enforce_contract(df: DataFrame, spec: DatasetSpec) -> tuple[DataFrame, ContractReport]:
    """Check the source's columns and types against `spec.raw_schema`; drop (or refuse) extra columns.

    Every problem is listed in one error, each naming the column and what was expected, so that a
    broken source never surfaces as Delta's schema-enforcement stack trace.
    """
    if not spec.raw_schema:
        check_spec_fits(df, spec)
        return df, ContractReport(())
    actual = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    problems = []
    for column, expected in spec.raw_schema.items():
        if column not in actual:
            problems.append(f"column '{column}' is missing (expected {expected.upper()})")
        elif actual[column] != expected:
            problems.append(f"column '{column}' is {actual[column].upper()}, expected {expected.upper()}")
    extra = tuple(c for c in actual if c not in spec.raw_schema and c != MALFORMED)
    if extra and spec.extra_columns == "error":
        problems.append(f"unexpected columns {list(extra)} (the spec refuses extra columns)")
    if problems:
        raise SchemaContractError(f"dataset {spec.name}: the source breaks its schema contract: " + "; ".join(problems))
    if extra:
        log.warning("dataset %s: ignoring extra source columns %s", spec.name, list(extra))
        df = df.drop(*extra)
    check_spec_fits(df, spec)
    return df, ContractReport(extra)


class SpecError(SchemaContractError):
    """The dataset spec cannot work on this source: an expression names a column it does not have, or a feature
    column has a type the pipeline cannot use. Each problem names the spec field and the column."""


def _unresolved(exc: AnalysisException) -> str:
    params = exc.getMessageParameters() or {}
    if "objectName" in params:
        suggestion = params.get("proposal")
        return f"names an unknown column {params['objectName']}" + (
            f" (the source has {suggestion})" if suggestion else ""
        )
    return "does not resolve: " + str(exc).splitlines()[0]


def check_spec_fits(df: DataFrame, spec: DatasetSpec) -> None:
    """Resolve the spec's expressions and check its features' types against the source's schema: Spark's
    analysis only, no job runs. Raises SpecError, before anything is written."""
    problems = []

    def resolves(frame: DataFrame, field: str, expr: str) -> bool:
        try:
            _ = frame.select(F.expr(expr).alias("__check")).schema  # analysis: resolves the columns, reads nothing
            return True
        except AnalysisException as exc:
            problems.append(f"{field} {expr!r} {_unresolved(exc)}")
            return False

    if spec.event_date_expr and not resolves(df, "event_date_expr", spec.event_date_expr):
        raise SpecError(f"dataset {spec.name}: the spec does not fit the source: " + "; ".join(problems))
    df = with_event_date(df, spec)  # derived columns may use the partition date
    derived_ok = all([resolves(df, f"derived_columns[{name!r}]", e) for name, e in spec.derived_columns.items()])
    if derived_ok:
        derived = df.withColumns({name: F.expr(e) for name, e in spec.derived_columns.items()})
        resolves(derived, "label_expr", spec.label_expr)
        types = {f.name: f.dataType for f in derived.schema.fields}
        for field, columns in (
            ("numeric_features", spec.numeric_features),
            ("categorical_features", spec.categorical_features),
        ):
            for column in columns:
                if column not in types:
                    problems.append(f"{field}: column {column!r} is neither in the source nor in derived_columns")
                elif field == "numeric_features" and not isinstance(types[column], NumericType):
                    problems.append(
                        f"numeric_features: column {column!r} is {types[column].simpleString().upper()}, not a number "
                        "(cast it in derived_columns, or list it in categorical_features)"
                    )
                elif field == "categorical_features" and types[column].simpleString() not in (
                    "string",
                    "int",
                    "bigint",
                    "smallint",
                    "tinyint",
                    "boolean",
                    "date",
                ):
                    problems.append(
                        f"categorical_features: column {column!r} is {types[column].simpleString().upper()}, "
                        "not a category (a STRING, an integer code, a BOOLEAN or a DATE)"
                    )
    if problems:
        raise SpecError(f"dataset {spec.name}: the spec does not fit the source: " + "; ".join(problems))
