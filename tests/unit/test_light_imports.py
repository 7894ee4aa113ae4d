"""`import fedsynth` and the CLI stay light: no torch, pgmpy, flwr or scikit-learn at import time."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_and_cli_loads_no_heavy_library():
    # Run in a fresh interpreter so other tests' imports do not count
    code = (
        "import sys, fedsynth, fedsynth.cli, fedsynth.cohort, fedsynth.generators, fedsynth.experiments.config;"
        "print(','.join(m for m in ('torch','pgmpy','flwr','sklearn','lifelines','ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
