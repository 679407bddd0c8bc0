# llm-token-exporter: the OTLP/HTTP service (`llm-token-exporter serve`).
#
#   docker build -t llm-token-exporter .
#   docker run -p 127.0.0.1:4318:4318 -v llm-token-exporter-data:/data llm-token-exporter
#
# Configure it with flags after the image name (they replace CMD) or with environment
# variables LLM_TOKEN_EXPORTER_<KEY> (see exporter/data/example-config.yaml), e.g.
# LLM_TOKEN_EXPORTER_DIRECTORY=https://... and LLM_TOKEN_EXPORTER_AUTH_TOKEN.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The project only (no test extras); .dockerignore keeps everything else out of the context.
WORKDIR /build
COPY pyproject.toml README.md LICENSE ./
COPY otel_processor ./otel_processor
COPY exporter ./exporter
RUN pip install . && rm -rf /build

# The durable state (SQLite ledger and open traces) lives in /data, owned by a non-root user.
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home exporter \
    && mkdir /data && chown exporter:exporter /data
USER 10001:10001
WORKDIR /data
VOLUME /data

EXPOSE 4318

# Liveness on the one port; adjust if --listen moves it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=4)"]

ENTRYPOINT ["llm-token-exporter"]
CMD ["serve", "--listen", "0.0.0.0:4318", "--state-dir", "/data"]
