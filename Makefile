# Batchwatch. Set-up commands: `make demo` and `make test`; `make airflow` opens the web UI on the same runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# The environment (AIRFLOW_HOME=.airflow, DAG and plugin folders, PYTHONPATH, artifacts, and the warehouse:
# an SQLite file in var/ unless AIRFLOW_CONN_WAREHOUSE names a postgresql:// database) comes from bin/env,
# the file bin/airflow and bin/batchwatch source, so make and the README's commands never disagree.
$(foreach assignment,$(shell source "$(CURDIR)/bin/env" && batchwatch_env_for_make),$(eval export $(assignment)))

.PHONY: demo test airflow bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	mkdir -p $(AIRFLOW_HOME) var
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || (cat $(AIRFLOW_HOME)/db-migrate.log; exit 1)
	touch $@

# Airflow's own INFO logs would bury the demo's one line per day; warnings and errors still show.
demo: $(AIRFLOW_HOME)/.migrated
	AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING $(BIN)/python -m tools.demo

# Lint first: a finding fails the run before the slower tests start.
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# standalone starts its components as `airflow ...` subprocesses, so the venv goes first on PATH.
airflow: $(AIRFLOW_HOME)/.migrated
	PATH="$(CURDIR)/$(BIN):$$PATH" airflow standalone

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_nightly_predict.py

# The drift check against Evidently's DataDriftPreset (its own venv, .venv-evidently, made if missing).
.PHONY: bench-drift
bench-drift: $(VENV)/.installed
	BATCHWATCH_SPEC_DIRS=$(CURDIR)/bench/specs $(BIN)/python bench/bench_drift_check.py

# Our label-free performance estimate against NannyML's CBPE (its own venv, .venv-nannyml, made if missing). No database.
.PHONY: bench-performance
bench-performance: $(VENV)/.installed
	$(BIN)/python bench/bench_performance_estimate.py

# Default estimator vs the seed's, and the whole weekly retrain DAG on ~1M labelled rows (PostgreSQL).
.PHONY: bench-retrain
bench-retrain: $(VENV)/.installed
	$(BIN)/python bench/bench_weekly_retrain.py

clean:
	rm -rf var $(AIRFLOW_HOME)
