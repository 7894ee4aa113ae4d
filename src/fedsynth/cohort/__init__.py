"""Cohorts: schema, validation, named data sets and site partitions."""

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema, infer_schema

__all__ = ["ColumnKind", "ColumnRole", "ColumnSpec", "SurvivalEndpoint", "TableSchema", "infer_schema"]
