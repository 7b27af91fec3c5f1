# The engine's image: one image, every worker (`trade-engine matcher run`,
# `trade-engine validation run`, ...) chosen by the command.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN apt-get update -q && apt-get install -y -q --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
COPY trade_engine ./trade_engine
RUN pip wheel --no-cache-dir -c constraints.txt -w /wheels .

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 engine
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir -c /tmp/constraints.txt /wheels/*.whl && rm -rf /wheels
USER engine
WORKDIR /home/engine
ENV TE_STATE_DIR=/home/engine/state
VOLUME ["/home/engine/state"]
# Metrics and /health: 9464-9471 (one port per worker), the gateway on 8080, the
# wallet service on 8081.
EXPOSE 9464-9471 8080 8081
# Liveness of whichever worker the container runs: its /health/live, on the port its
# command line gives (--metrics-port, --serve or --port, as docker-compose.yml runs
# each service), TE_HEALTH_PORT to override (trade_engine/healthcheck.py). Compose
# replaces it per service with the stricter /health/ready.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "trade_engine.healthcheck"]
ENTRYPOINT ["trade-engine"]
CMD ["--help"]
