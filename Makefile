# One entry point for a newcomer. `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DO_NOT_TRACK := 1

.PHONY: install system-deps demo test soak lint format bench bench-smoke dev clean

# requirements.lock pins the resolved versions (tools/dep_audit.py writes it and audits it), so
# every machine and CI install exactly what was audited.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools  # the venv's bundled setuptools has a known CVE
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c requirements.lock
	touch $(STAMP)

install: $(STAMP) system-deps

# Headless Chromium renders the HTML report in its test. Installed only when missing and
# only as root (apt); otherwise say how, and the report test will name what is missing.
system-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium; \
	else \
		echo "note: chromium not found; install it (apt-get install chromium) for the report test"; \
	fi

demo: install ## Generate data, run every stage on the embedded PostgreSQL, print a summary
	$(BIN)/hub demo

test: install ## The whole test suite (real PostgreSQL, real TLS peers on loopback)
	$(BIN)/python -m pytest

soak: install ## Long reliability runs: 20+ random kills, a 100k-contact sync under faults
	$(BIN)/python -m pytest -m soak

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
