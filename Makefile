# Two entry points: `make demo` (the main job on the default cohort) and `make test` (the test suite).
# Both create .venv and install what they need; re-running them installs nothing new.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Where the real cohorts live: $FEDSYNTH_DATA_DIR if set, else ../shared/data beside this checkout.
FEDSYNTH_DATA_DIR ?= $(abspath ../shared/data)
export FEDSYNTH_DATA_DIR
export FLWR_TELEMETRY_ENABLED := 0

.PHONY: demo test venv lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "fedsynth needs Python 3.11, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: its CPU wheel is on local disk; an unpinned torch pulls several GB of CUDA builds.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedsynth run configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
