"""Deployment across hospitals: credentials, Flower's own executables (SuperLink, SuperNode, ``flwr``), audit log."""
