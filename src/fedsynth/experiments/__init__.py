"""Experiments: YAML config, one run into a run directory, grids of runs."""
