"""Strategies: how sites cooperate (server flow and site handlers), one module per strategy, over Flower messages."""

import os

# Flower reads these when it is imported: no telemetry POST, no Ray warning about GPUs we do not ask for.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
