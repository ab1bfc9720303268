# One image per service from this file (compose.yaml and the README pass the build args):
#   docker build --build-arg SERVICE_PACKAGE=ccsm-auth --build-arg SERVICE_MODULE=ccsm_auth \
#                --build-arg SERVICE_PORT=4001 -t ccsm-auth:<git sha> .
# The ports and module names come from core/ccsm_core/routing.py (SERVICE_PORTS); tests/deploy checks them.
# No `# syntax=` line: it makes BuildKit fetch its frontend from a registry; the built-in one has RUN --mount.

# The base images are build args (compose.yaml passes them; `make offline-images` builds stand-ins where no
# registry answers). Python's minor version is the one the tests run on (pyproject.toml requires-python;
# tests/deploy checks it); the minor tag picks up CPython and Debian security fixes at each rebuild. uv is at
# the version the Makefile installs (UV_VERSION).
# checkov:skip=CKV_DOCKER_7: it reads `FROM ${ARG}` as an untagged image; the defaults below carry explicit
# version tags (never `latest`), which tests/deploy pins, and a stand-in's tag is its own version.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- build: the dependencies from the lock file in their own layer, then the workspace packages -------------
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE_PACKAGE=ccsm-api
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Only what decides the dependency set: this layer is rebuilt when the lock changes, not when the code does.
COPY pyproject.toml uv.lock ./
COPY core/pyproject.toml core/
COPY services/auth/pyproject.toml services/auth/
COPY services/api/pyproject.toml services/api/
COPY services/ws-gateway/pyproject.toml services/ws-gateway/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "${SERVICE_PACKAGE}"
COPY core core
COPY services services
# The workspace packages as real (non-editable) installs: the runtime stage needs the venv only.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${SERVICE_PACKAGE}"

# --- runtime: the same slim base, the venv, no uv and no build tools ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE_MODULE=ccsm_api
ARG SERVICE_PORT=4003
RUN groupadd --system --gid 10001 ccsm \
    && useradd --system --no-log-init --uid 10001 --gid ccsm --no-create-home --shell /usr/sbin/nologin ccsm
COPY --from=build /app/.venv /app/.venv
COPY deploy/healthcheck.py /app/healthcheck.py
# NODE_ENV=remote fails closed (auth required, strong JWT_SECRET); compose and ECS set the rest of the contract.
# uvicorn's settings (one worker, keep-alive 75 s above the ALB's 60 s idle timeout, graceful timeout from
# SHUTDOWN_FORCE_MS below the ECS stopTimeout, no proxy headers: X-Forwarded-For is honoured from
# TRUSTED_PROXIES only) live in core/ccsm_core/server.py, so every way of starting a service gets them.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CCSM_MODULE=${SERVICE_MODULE} \
    NODE_ENV=remote \
    HOST=0.0.0.0 \
    PORT=${SERVICE_PORT}
WORKDIR /app
USER 10001:10001
EXPOSE ${SERVICE_PORT}
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["python", "/app/healthcheck.py"]
# exec: python is PID 1 and receives SIGTERM itself (the drain in server.py).
CMD ["/bin/sh", "-c", "exec python -m \"$CCSM_MODULE\""]
