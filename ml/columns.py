"""The columns of the tables the spec shapes, known before any row is read: their types and where each comes from.

Derived from the dataset spec alone (no Spark session), for the Dagster UI: the column schema of an asset at
definition, and the column lineage of each materialization (`dagster/column_lineage`). tests/assets check both
against what the writes actually committed.
"""

from __future__ import annotations

import re

from ml.dataset import EVENT_DATE, LABEL, DatasetSpec
from ml.features import feature_columns

PREDICTION = "prediction"
PROBABILITY = "probability"
MODEL_COLUMNS = ("model_name", "model_version", "model_run_id")  # the model's lineage on every prediction row
SCORED_AT = "scored_at"
FEATURES_VERSION = "features_delta_version"  # incremental_predictions: the feature table's commit a row was scored from
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def feature_table_columns(spec: DatasetSpec) -> list[tuple[str, str]]:
    """(name, Spark type) of validated_features (and of the split tables, which keep its columns)."""

    def type_of(column: str) -> str:
        if column in spec.numeric_features or column == LABEL:
            return "double"
        if column in spec.categorical_features:
            return "string"
        if column == EVENT_DATE:
            return "date"
        return spec.raw_schema.get(column, "string")

    return [(c, type_of(c)) for c in feature_columns(spec)]


def prediction_table_columns(spec: DatasetSpec) -> list[tuple[str, str]]:
    """(name, Spark type) of batch_predictions: keys, event date, prediction [, probability], the model, scored_at."""
    features = dict(feature_table_columns(spec))
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    columns = [*((k, features[k]) for k in keys), (EVENT_DATE, "date"), (PREDICTION, "double")]
    if spec.task == "classification":
        columns.append((PROBABILITY, "double"))
    return [*columns, *((c, "string") for c in MODEL_COLUMNS), (SCORED_AT, "timestamp")]


def incremental_table_columns(spec: DatasetSpec) -> list[tuple[str, str]]:
    """(name, Spark type) of incremental_predictions: batch_predictions' columns and the feature version scored."""
    return [*prediction_table_columns(spec), (FEATURES_VERSION, "bigint")]


def raw_inputs(spec: DatasetSpec, expression: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """The raw_data columns an expression over raw (and derived) columns reads, in order, each once."""
    raw = {*spec.raw_schema, EVENT_DATE}
    found: list[str] = []
    for name in _IDENTIFIER.findall(expression):
        if name in spec.derived_columns and name not in seen:
            found += raw_inputs(spec, spec.derived_columns[name], seen | {name})
        elif name in raw:
            found.append(name)
    return list(dict.fromkeys(found))


def feature_column_lineage(spec: DatasetSpec, upstream: str) -> dict[str, list[tuple[str, str]]]:
    """validated_features column -> the (upstream table, column) it is computed from."""
    lineage = {}
    for column, _ in feature_table_columns(spec):
        if column == LABEL:
            inputs = raw_inputs(spec, spec.label_expr)
        elif column in spec.derived_columns:
            inputs = raw_inputs(spec, spec.derived_columns[column])
        else:
            inputs = [column]
        lineage[column] = [(upstream, c) for c in inputs]
    return lineage


def prediction_column_lineage(spec: DatasetSpec, upstream: str) -> dict[str, list[tuple[str, str]]]:
    """batch_predictions column -> the (features table, column) it comes from: keys and date as they are, the
    prediction (and probability) from every feature the model reads. The model's columns and scored_at come from no
    column."""
    keys = [k for k in spec.key_columns if k != EVENT_DATE]
    lineage = {k: [(upstream, k)] for k in (*keys, EVENT_DATE)}
    outputs = [PREDICTION, *([PROBABILITY] if spec.task == "classification" else [])]
    lineage.update({out: [(upstream, f) for f in spec.features] for out in outputs})
    return lineage
