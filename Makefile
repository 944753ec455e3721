# antigv: `make help` lists every target.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml
ANTIGV := $(BIN)/antigv --config $(CONFIG)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install constraints run serve test test-fast lint format migrate db-start db-stop db-status clean \
        postgres user-create users quota-recover refresh-tokens db-backup db-restore logs \
        install-service uninstall-service bench claude-code browser

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml deploy/constraints.txt | $(BIN)/activate
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c deploy/constraints.txt -e '.[test,speed]'
	@touch $@

install: $(VENV)/.installed ## create .venv with the project and its test tools

constraints: ## re-pin deploy/constraints.txt to the newest versions pyproject.toml allows
	rm -rf .venv-pin && $(PYTHON) -m venv .venv-pin
	.venv-pin/bin/pip install --quiet -e '.[test,speed]'
	{ sed -n '1,2p' deploy/constraints.txt; .venv-pin/bin/pip freeze --exclude-editable; } > deploy/constraints.txt.new
	mv deploy/constraints.txt.new deploy/constraints.txt
	rm -rf .venv-pin

$(CONFIG): | $(VENV)/.installed
	$(BIN)/antigv init-config $(CONFIG)

postgres: ## install PostgreSQL's server (as root, with apt) when it is missing
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing PostgreSQL server (apt-get install postgresql)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "PostgreSQL server not found: install it with 'apt-get install postgresql'"; exit 1; fi

run: install postgres $(CONFIG) ## install, config, embedded database, migrations, serve on :8045
	@# An older config.toml without a token encryption key gets one (tokens are never kept in clear).
	$(ANTIGV) init-config --add-token-key
	$(ANTIGV) serve

serve: install $(CONFIG) ## serve with the existing config (migrations first)
	$(ANTIGV) serve

claude-code: ## install the pinned Claude Code CLI into .venv/claude-code (its end-to-end tests)
	deploy/install-claude-code.sh

browser: install ## install Debian's chromium (apt, as root) and Playwright for the console's browser tests
	deploy/install-browser.sh

test: install postgres ## run the test suite against a throwaway PostgreSQL (and the real Claude Code CLI)
	@# Without Node.js or npm the Claude Code tests skip, unless ANTIGV_REQUIRE_CLAUDE_CODE=1 (CI).
	-@deploy/install-claude-code.sh
	@# Without chromium (apt-get install chromium) the browser tests skip, unless ANTIGV_REQUIRE_BROWSER=1 (CI).
	-@deploy/install-browser.sh
	@# A test stuck for good ends the run; tests/hang_guard.py leaves its stacks here.
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) || { status=$$?; cat var/test-hang.log 2>/dev/null; exit $$status; }

test-fast: install postgres ## the suite without the slow end-to-end and ops tests
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install ## ruff check and format check, mypy (strict on core, gateway, store)
	$(BIN)/ruff check antigv tests bench
	$(BIN)/ruff format --check antigv tests bench
	$(BIN)/mypy antigv/core antigv/gateway antigv/store

format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix antigv tests bench
	$(BIN)/ruff format antigv tests bench

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

# --- operations: thin calls of the CLI ------------------------------------

user-create: install $(CONFIG) ## create a user: make user-create NAME=alice [PREFER_SHARED=1]
	@test -n "$(NAME)" || { echo "usage: make user-create NAME=..."; exit 2; }
	$(ANTIGV) user create --name "$(NAME)" $(if $(PREFER_SHARED),--prefer-shared)

users: install $(CONFIG) ## list users
	$(ANTIGV) user list

quota-recover: install $(CONFIG) ## run shared-pool recovery once
	$(ANTIGV) recover-quotas

refresh-tokens: install $(CONFIG) ## refresh access tokens that expire soon, once
	$(ANTIGV) refresh-tokens

db-backup: install $(CONFIG) ## dump the database: make db-backup FILE=antigv.dump
	@test -n "$(FILE)" || { echo "usage: make db-backup FILE=..."; exit 2; }
	$(ANTIGV) db backup "$(FILE)"

db-restore: install $(CONFIG) ## restore a dump (replaces data): make db-restore FILE=antigv.dump
	@test -n "$(FILE)" || { echo "usage: make db-restore FILE=..."; exit 2; }
	$(ANTIGV) db restore "$(FILE)"

logs: ## follow the service logs (systemd journal)
	journalctl -f -o cat -u antigv -u 'antigv@*'

SERVICE_PREFIX ?= /opt/antigv
install-service: ## as root: venv in /opt/antigv, config in /etc/antigv, systemd units
	@test "$$(id -u)" = 0 || { echo "install-service needs root"; exit 1; }
	$(PYTHON) -m venv $(SERVICE_PREFIX)
	$(SERVICE_PREFIX)/bin/pip install --quiet --upgrade pip
	$(SERVICE_PREFIX)/bin/pip install --quiet -c deploy/constraints.txt '.[speed]'
	id -u antigv >/dev/null 2>&1 || useradd --system --home-dir /var/lib/antigv --shell /usr/sbin/nologin antigv
	install -d -o root -g antigv -m 0750 /etc/antigv
	test -f /etc/antigv/config.toml || { $(SERVICE_PREFIX)/bin/antigv init-config /etc/antigv/config.toml && \
		chgrp antigv /etc/antigv/config.toml && chmod 0640 /etc/antigv/config.toml; }
	@# Relative paths are taken from the config's directory: the embedded cluster stays in the
	@# state directory (where it was before), not in /etc. Tokens are never kept in clear.
	sed -i 's|^embedded_dir = "var/pg"$$|embedded_dir = "/var/lib/antigv/var/pg"|' /etc/antigv/config.toml
	$(SERVICE_PREFIX)/bin/antigv init-config --add-token-key /etc/antigv/config.toml
	install -m 0644 deploy/antigv.service deploy/antigv@.service /etc/systemd/system/
	systemctl daemon-reload
	@echo "installed: systemctl enable --now antigv   (or antigv@8045 antigv@8046 ...)"

BENCH_ARGS ?=
bench: install postgres ## gateway vs direct vs a null proxy: overhead, throughput, tail, memory -> BENCHMARKS.md (~6 min)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

uninstall-service: ## as root: stop and remove the units (keeps /etc/antigv and /var/lib/antigv)
	@test "$$(id -u)" = 0 || { echo "uninstall-service needs root"; exit 1; }
	-systemctl disable --now antigv 'antigv@*' 2>/dev/null
	rm -f /etc/systemd/system/antigv.service /etc/systemd/system/antigv@.service
	systemctl daemon-reload
	rm -rf $(SERVICE_PREFIX)
