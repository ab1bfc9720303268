# The README gives two commands: `make run` (set up and serve) and `make test` (the whole suite).
# Everything installs from the lock file (uv.lock) into .venv; uv itself comes from PyPI when missing.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen --no-sync
export UV_PYTHON := 3.11
.DEFAULT_GOAL := help

.PHONY: help run test check lint typecheck pytest sync migrate seed audit rotate-short-authcodes up down logs offline-images test-compose smoke bench bench-login bench-resync bench-api bench-ws bench-limits bench-deps uv lint-deploy system-deps

help:  ## list the targets and what each does
	@awk -F':.*## ' '/^[a-zA-Z][a-zA-Z0-9_-]*:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

uv:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user "uv==$(UV_VERSION)"

sync: uv  ## install the locked dependencies into .venv
	@$(UV) sync --frozen --quiet

run: sync  ## serve every service on PORT (4000) against the machine's MySQL and Redis
	@$(RUN) python devserver.py

test: check pytest  ## lint, type-check, then the whole test suite on the real MariaDB and Redis

check: lint typecheck  ## lint and type-check only

lint: sync  ## ruff check and ruff format --check
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .

typecheck: sync  ## mypy --strict on the shipped code
	@$(RUN) mypy core services devserver.py ops deploy

pytest: sync system-deps  ## the test suite only (PYTEST_ARGS=... to pass options)
	@$(RUN) pytest $(PYTEST_ARGS)

migrate: sync  ## create the database if needed and apply pending migrations
	@$(RUN) python -m ccsm_core migrate

seed: sync  ## load the dev fixture into an empty database
	@$(RUN) python -m ccsm_core seed fixtures/seed.sql

audit: sync  ## the effective configuration, secrets redacted, and how many active users have short auth codes
	@$(RUN) python -m ccsm_core config audit
	@$(RUN) python -m ccsm_core authcodes audit

rotate-short-authcodes: sync  ## new random codes for users below AUTHCODE_MIN_LENGTH (dry run; APPLY=1 [OUTPUT=file])
	@$(RUN) python -m ccsm_core authcodes rotate-short $(if $(APPLY),--apply) $(if $(OUTPUT),--output "$(OUTPUT)")

smoke: sync  ## the runbook's post-deploy checks: make smoke BASE_URL=https://... (SMOKE_USERNAME/PASSWORD/AUTHCODE in env)
	@$(RUN) python -m ops.smoke --base-url "$(or $(BASE_URL),http://127.0.0.1:4000)"

bench-login: sync  ## login throughput at BCRYPT_ROUNDS=12 vs 2 cores / one hash, and /health p99 during the flood
	@flock /tmp/ccsm-bench.lock $(RUN) python bench/login_bench.py

bench-resync: sync  ## the db-changed resync storm: N desktops x 14 bootstrap fetches after a write, cached vs uncached
	@flock /tmp/ccsm-bench.lock $(RUN) python bench/resync_storm.py

bench: bench-api bench-resync bench-login bench-ws  ## every benchmark, one after the other

bench-limits: sync  ## the review's header attacks (64 MiB header, 3,000 slowloris...) on one api process: answers, hold times, RSS
	@flock /tmp/ccsm-bench.lock $(RUN) python bench/http_limits.py $(BENCH_ARGS)

bench-api: sync bench-deps  ## every read endpoint and the desktop write pair vs the old backend (OLD_URL) or a commit (BASE_REF), cache on and off
	@flock /tmp/ccsm-bench.lock $(RUN) python bench/api_throughput.py

bench-ws: sync  ## ws-gateway: RSS per idle socket, fan-out p50/p99 at 1k and 15k, reconnect storm, vs bare websockets
	@flock /tmp/ccsm-bench.lock $(RUN) python bench/ws_fanout.py

# --- containers and AWS (compose.yaml, Dockerfile, edge/, ecs/; see ecs/README.md) -------------------------
up: sync  ## build the images and start the whole backend behind the edge on http://127.0.0.1:4000 (Docker)
	@$(RUN) python -m deploy.compose up

down: sync  ## stop and remove the compose containers, their anonymous volumes and the network (the database volume stays)
	@$(RUN) python -m deploy.compose down

logs: sync  ## follow the compose services' logs
	@$(RUN) python -m deploy.compose logs --follow --tail=200

offline-images: sync  ## where no container registry answers: stand-ins for the official images from Debian's packages, used by make up
	@$(RUN) python -m deploy.offline

test-compose: sync  ## the compose drills against real containers (installs and starts Docker when missing; see tests/compose)
	@$(RUN) pytest tests/compose $(PYTEST_ARGS)

lint-deploy: sync  ## hadolint, cfn-lint, checkov and compose config at pinned versions (also run by the tests)
	@$(RUN) python -m deploy.render --check
	@$(RUN) python -m deploy.validate

bench-deps:  ## Debian's wrk, the load generator the old backend's figures were measured with
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	  else echo "wrk is missing: run 'sudo make bench-deps'"; exit 1; fi; }

system-deps:  ## Debian's nginx for the edge-proxy tests (installed as root when missing)
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; \
	  else echo "nginx is missing: run 'sudo make system-deps' (Debian's nginx-light)"; exit 1; fi; }
