"""A spec that cannot work on its source is refused by name (ml/contract.check_spec_fits, run by enforce_contract
in raw_data before any write): Spark's analysis of the spec's expressions and the features' types, no job."""

import dataclasses
from datetime import datetime

import pytest

from ml.contract import SpecError, enforce_contract
from ml.datasets.flights import SPEC
from tests.unit.test_features import _flight, _raw

T = datetime(2013, 1, 1, 15)


@pytest.fixture(scope="module")
def source(spark):
    return _raw(spark, [_flight(T, flight=1), _flight(T, flight=2)])


def refusal(source, **changes) -> str:
    with pytest.raises(SpecError) as info:
        enforce_contract(source, dataclasses.replace(SPEC, **changes))
    return str(info.value)


def test_the_flights_spec_fits_its_source(source):
    checked, _ = enforce_contract(source, SPEC)
    assert checked.columns == source.columns


def test_an_expression_naming_an_unknown_column_names_the_field_and_the_column(source):
    message = refusal(source, label_expr="CAST(arr_dela > 15 AS DOUBLE)")
    assert message.startswith("dataset flights: the spec does not fit the source: label_expr ")
    assert "'CAST(arr_dela > 15 AS DOUBLE)' names an unknown column `arr_dela`" in message
    derived = {**SPEC.derived_columns, "day_of_week": "CAST(DAYOFWEEK(event_dat) AS DOUBLE)"}
    assert "derived_columns['day_of_week'] 'CAST(DAYOFWEEK(event_dat) AS DOUBLE)' names an unknown column " in (
        refusal(source, derived_columns=derived)
    )
    assert "event_date_expr 'to_date(time_hou)' names an unknown column `time_hou`" in refusal(
        source, event_date_expr="to_date(time_hou)"
    )


def test_a_feature_column_of_the_wrong_type_or_missing_is_named(source):
    message = refusal(source, numeric_features=(*SPEC.numeric_features, "tailnum"))
    assert (
        "numeric_features: column 'tailnum' is STRING, not a number (cast it in derived_columns, or list it in "
        "categorical_features)"
    ) in message
    derived = {**SPEC.derived_columns, "distance_band": "distance / 500.0"}
    message = refusal(
        source, derived_columns=derived, categorical_features=(*SPEC.categorical_features, "distance_band")
    )
    assert "categorical_features: column 'distance_band' is DOUBLE, not a category" in message
    assert "numeric_features: column 'seats' is neither in the source nor in derived_columns" in refusal(
        source, numeric_features=(*SPEC.numeric_features, "seats")
    )
