# Two commands set everything up from nothing: `make demo` (main job: the default
# benchmark on the built-in dataset) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real datasets for tests and benchmarks live next to the repository.
export MMROBUST_DATA_PATH ?= $(abspath ../shared/data)

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $@

demo: setup
	$(BIN)/mmrobust data build ml100k-meta
	$(BIN)/mmrobust benchmark

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_training.py

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .cache .pytest_cache runs
