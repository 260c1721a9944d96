"""Thin Dagster assets: read inputs, call `ml/`, write outputs, record lineage metadata."""
