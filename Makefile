# contactgate developer tasks (GNU make). `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.SUFFIXES:
MAKEFLAGS += --no-builtin-rules

PYTHON      ?= python3
VENV        ?= .venv
CONFIG      ?= config.yaml
PYTEST_ARGS ?=
# Test processes (pytest-xdist): the tests mostly wait on sockets and servers, so 3 keep 2 cores
# busy. TEST_WORKERS=0 runs them in this one process (easier to debug).
TEST_WORKERS ?= 3
BENCH_ARGS  ?=
ARGS        ?=
# The SQLite file the shipped config uses (store.url sqlite:///data/contactgate.db, next to it).
DEMO_DB     := $(dir $(CONFIG))data/contactgate.db

VENV_PY     := $(VENV)/bin/python
PIP_INSTALL := $(VENV_PY) -m pip install --quiet --disable-pip-version-check
# Stamps: reinstall only when pyproject.toml changes (or the venv is new).
RUN_STAMP   := $(VENV)/.installed-run
DEV_STAMP   := $(VENV)/.installed-dev

.PHONY: help run test bench check-config simulate reset services services-stop clean

help:
	@echo 'make run            serve $(CONFIG) (embedded SQLite store; see the config for the address)'
	@echo 'make test           start/find PostgreSQL, Redis and Dovecot, install chromium if missing, then run pytest (PYTEST_ARGS=...)'
	@echo 'make bench          run the benchmarks (python -m bench; BENCH_ARGS=...)'
	@echo 'make check-config   validate $(CONFIG) (CONFIG=path to pick another file)'
	@echo "make simulate       which rule and queue would take a contact: ARGS='--email someone@vip.example --text agent'"
	@echo 'make reset          delete the demo database $(DEMO_DB) (stop make run first): start with no conversations'
	@echo 'make services       only make sure the test services run and write .services/env'
	@echo 'make services-stop  stop the throwaway test servers that make test started, if any'
	@echo 'make clean          stop those servers; remove .venv, .services, caches and the demo database'

$(VENV)/pyvenv.cfg:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml $(VENV)/pyvenv.cfg
	$(PIP_INSTALL) -e '.[fast,demo]'
	@touch $@

$(DEV_STAMP): pyproject.toml $(VENV)/pyvenv.cfg
	$(PIP_INSTALL) -e '.[dev,fast,demo]'
	@touch $@

run: $(RUN_STAMP)
	exec $(VENV)/bin/contactgate serve --config '$(CONFIG)'

check-config: $(RUN_STAMP)
	$(VENV)/bin/contactgate check-config '$(CONFIG)'

simulate: $(RUN_STAMP)
	$(VENV)/bin/contactgate simulate '$(CONFIG)' $(ARGS)

# Only the demo's SQLite file (and its WAL and shared-memory files); a store elsewhere
# (CONTACTGATE_STORE_URL) is not touched. Nothing is stopped: a running gateway keeps the file open.
reset:
	rm -f '$(DEMO_DB)' '$(DEMO_DB)-wal' '$(DEMO_DB)-shm'
	@echo 'removed the demo database $(DEMO_DB): the next make run starts with no conversations'

# ensure-services.sh writes .services/env; pytest's exit code is the recipe's exit code.
test: $(DEV_STAMP)
	bash scripts/ensure-services.sh
	bash scripts/ensure-browser.sh
	. .services/env && $(VENV_PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

ifeq ($(wildcard bench/__main__.py),)
bench:
	@echo 'make bench: there is no benchmark suite yet (bench/__main__.py is missing), so nothing was run.' >&2
	@exit 1
else
bench: $(DEV_STAMP)
	$(VENV_PY) -m bench $(BENCH_ARGS)
endif

services:
	bash scripts/ensure-services.sh

services-stop:
	bash scripts/ensure-services.sh stop

# Throwaway servers are stopped before their data under .services is deleted.
clean: reset
	bash scripts/ensure-services.sh purge
	rm -rf $(VENV) .services .pytest_cache .hypothesis build dist *.egg-info
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
