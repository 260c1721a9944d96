"""The source's schema contract, checked on the DataFrame's schema before any row is read or written."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame

from ml.dataset import MALFORMED, DatasetSpec

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
    return df, ContractReport(extra)
