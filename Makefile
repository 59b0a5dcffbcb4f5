# Newcomer commands (set-up included, idempotent):
#   make demo   set up and run the whole study on the embedded default
#   make test   set up and run the test suite
#   make foundation   build the tiny foundation's weights into foundations/tiny once (~90 min);
#                     `make demo` starts from them from then on
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tinyvr-installed

.PHONY: setup demo foundation test test-all bench clean

# torch first, pinned to the local CPU wheel: a bare `torch` requirement would pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/tinyvr demo

foundation: setup
	$(BIN)/tinyvr foundation --config configs/tiny/foundation.yaml --out foundations/tiny

test: setup
	$(BIN)/python -m pytest

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

bench: setup
	$(BIN)/python -m pip install -q -e ".[dev,bench]"
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf runs/bench .pytest_cache
