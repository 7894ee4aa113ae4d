"""Cohorts: schema, inference, validation, named data sets and site partitions."""

from fedsynth.cohort.inference import infer_schema
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema

__all__ = ["ColumnKind", "ColumnRole", "ColumnSpec", "SurvivalEndpoint", "TableSchema", "infer_schema"]
