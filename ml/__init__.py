"""Plain Python over Spark DataFrames: no Dagster imports in this package."""
