# syntax=docker/dockerfile:1
# paysys: ONE image for every service; the command chooses which one runs:
#   docker run --env-file prod.env -p 3000:8000 paysys:local paysys serve gateway --host 0.0.0.0
#   docker run --env-file prod.env paysys:local paysys db deploy        # migrations (one-shot)
# Build: docker build -t paysys:local .   (docs/operations.md). No secret is baked in: every
# setting comes from the environment at run time, and ENV=production (the default here) refuses
# to start on development or short secrets.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: dependencies + package
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1
RUN python -m pip install "uv==${UV_VERSION}" \
 && python -m venv /opt/venv
WORKDIR /src
# Dependencies first (the pinned, hashed lock): this layer is reused until the lock changes.
COPY requirements.lock ./
RUN uv pip sync --python /opt/venv/bin/python --require-hashes requirements.lock
# Then the project itself (not editable: the runtime stage has no source tree).
COPY pyproject.toml README.md ./
COPY src ./src
RUN uv pip install --python /opt/venv/bin/python --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------- runtime: slim, non-root
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="paysys" \
      org.opencontainers.image.description="paysys payments platform: gateway, auth, payments, admin, profile"
RUN groupadd --system --gid 10001 paysys \
 && useradd --system --uid 10001 --gid paysys --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin paysys \
 && mkdir -p /app \
 && chown paysys:paysys /app
COPY --from=build /opt/venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENV=production \
    HOST=0.0.0.0 \
    PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# Liveness only (no I/O): the process answers. Readiness (/health/ready) is for orchestrators.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["paysys", "serve", "gateway", "--host", "0.0.0.0"]
