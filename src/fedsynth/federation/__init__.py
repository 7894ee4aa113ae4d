"""Flower wiring: the ClientApp (one site per node), the ServerApp (runs a strategy) and the simulation entry point."""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
