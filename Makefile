# The two commands of the README:
#   make demo   the main job end to end on the bundled real data (installs everything first)
#   make test   lint + the whole test suite (what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip prints one warning per package for unreachable local mirrors on some machines; keep the output readable.
PIP_QUIET := 2>&1 | { grep -v "^WARNING: Location" || true; }
# Test processes: the suite waits on subprocesses, JVM starts and servers much of the time, so two share two cores
# well. Each test file stays in one process (--dist loadfile): its module fixtures (the e2e nights) are built once.
TEST_WORKERS ?= 2
# One OpenMP/BLAS thread per test process (torch, OpenBLAS, LightGBM's predictions): with the two workers on two
# cores, each library's default of one thread per core oversubscribes the machine and OpenMP's spinning threads
# crowd each other out. Two smoke trainings side by side took 98-100 s each with the defaults, 43-45 s with one
# thread (alone: 35 s and 42 s). docs/decisions.md, 48.
TEST_THREADS ?= 1

.PHONY: demo test install lint clean check-java check-services

$(STAMP): requirements/requirements.lock.txt requirements/dev.txt requirements/connectors.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]} at {sys.executable}"'
	@echo "== installing the locked stack into $(VENV) (about 2 minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/pip install -q --upgrade pip $(PIP_QUIET)
	set -o pipefail; $(BIN)/pip install -q -r requirements/requirements.lock.txt -r requirements/dev.txt \
		-r requirements/connectors.txt $(PIP_QUIET)
	set -o pipefail; $(BIN)/pip install -q --no-deps -e . $(PIP_QUIET)
	$(BIN)/python -c "import airflow, pyspark, dbt, feast, great_expectations, torch, lightgbm, nightrec"
	@echo "== dbt parse (the manifest Cosmos renders the dbt task group from)"
	$(BIN)/python -c "from nightrec.dbt_runner import ensure_manifest; ensure_manifest()"
	@touch $@

install: $(STAMP)

check-java:
	@command -v java >/dev/null || { echo "Java 17 is required for Spark (apt-get install openjdk-17-jre-headless)"; exit 1; }

check-services:
	@command -v redis-server >/dev/null || { echo "The tests start a Redis server for Feast (apt-get install redis-server)"; exit 1; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "The tests start a PostgreSQL server for Feast's registry (apt-get install postgresql)"; exit 1; }

demo: install check-java
	$(BIN)/nightrec demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

test: install check-java check-services lint
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf warehouse .airflow .pytest_cache .ruff_cache
