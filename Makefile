# One entry point for a newcomer. `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DO_NOT_TRACK := 1

.PHONY: install demo test lint format bench bench-smoke dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install ## Generate data, run every stage on the embedded PostgreSQL, print a summary
	$(BIN)/hub demo

test: install ## The whole test suite (real PostgreSQL, real TLS peers on loopback)
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

dev: install ## The Dagster UI on http://127.0.0.1:3000
	mkdir -p .hub/dagster && DAGSTER_HOME=$(abspath .hub/dagster) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install ## Benchmarks (not in CI); writes BENCHMARKS.md
	$(BIN)/python -m bench.run

bench-smoke: install
	$(BIN)/python -m bench.run --smoke

clean:
	rm -rf .hub dbt_project/target dbt_project/logs
