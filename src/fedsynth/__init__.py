"""fedsynth: federated synthetic patient cohorts that are faithful, clinically useful and private."""

__version__ = "0.1.0"
