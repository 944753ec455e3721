# antigv: `make help` lists every target.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml
ANTIGV := $(BIN)/antigv --config $(CONFIG)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run serve test lint format migrate db-start db-stop db-status clean \
        postgres user-create users quota-recover refresh-tokens db-backup db-restore logs \
        install-service uninstall-service bench

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,speed]'
	@touch $@

install: $(VENV)/.installed ## create .venv with the project and its test tools

$(CONFIG): | $(VENV)/.installed
	$(BIN)/antigv init-config $(CONFIG)

postgres: ## install PostgreSQL's server (as root, with apt) when it is missing
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing PostgreSQL server (apt-get install postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL server not found: install it with 'apt-get install postgresql'"; exit 1; fi

run: install postgres $(CONFIG) ## install, config, embedded database, migrations, serve on :8045
	$(ANTIGV) serve

serve: install $(CONFIG) ## serve with the existing config (migrations first)
	$(ANTIGV) serve

test: install postgres ## run the test suite against a throwaway PostgreSQL
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install ## ruff check and format check
	$(BIN)/ruff check antigv tests
	$(BIN)/ruff format --check antigv tests

format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix antigv tests
	$(BIN)/ruff format antigv tests

migrate: install $(CONFIG) ## apply pending migrations
	$(ANTIGV) migrate

db-start: install postgres $(CONFIG) ## start the embedded PostgreSQL (var/pg)
	$(ANTIGV) db start

db-stop: install $(CONFIG) ## stop the embedded PostgreSQL
	$(ANTIGV) db stop

db-status: install $(CONFIG) ## is the embedded PostgreSQL running?
	$(ANTIGV) db status

clean: ## remove the virtualenv and caches (keeps var/ and config.toml)
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
