# The README gives two commands: `make run` (set up and serve) and `make test` (the whole suite).
# Everything installs from the lock file (uv.lock) into .venv; uv itself comes from PyPI when missing.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen --no-sync
export UV_PYTHON := 3.11

.PHONY: run test check lint typecheck pytest sync migrate seed audit up down logs smoke bench uv

uv:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)"

sync: uv
	@$(UV) sync --frozen --quiet

run: sync  ## serve every service on PORT (4000) against the machine's MySQL and Redis
	@$(RUN) python devserver.py

test: check pytest  ## lint, type-check, then the whole test suite on the real MariaDB and Redis

check: lint typecheck

lint: sync
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .

typecheck: sync
	@$(RUN) mypy core services devserver.py ops

pytest: sync
	@$(RUN) pytest $(PYTEST_ARGS)

migrate: sync  ## create the database if needed and apply pending migrations
	@$(RUN) python -m ccsm_core migrate

seed: sync  ## load the dev fixture into an empty database
	@$(RUN) python -m ccsm_core seed fixtures/seed.sql

audit: sync  ## the effective configuration, secrets redacted
	@$(RUN) python -m ccsm_core config audit

smoke: sync  ## the runbook's post-deploy checks: make smoke BASE_URL=https://... (SMOKE_USERNAME/PASSWORD/AUTHCODE in env)
	@$(RUN) python -m ops.smoke --base-url "$(or $(BASE_URL),http://127.0.0.1:4000)"
