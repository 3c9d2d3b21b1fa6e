# One image for every role: the command picks it (api, worker, migrate, simulator).
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies in their own layer: only a change to pyproject.toml rebuilds it.
COPY pyproject.toml README.md ./
RUN mkdir service && touch service/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes qingbo-gateway
COPY service ./service
RUN pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --no-create-home --home-dir /app qgw
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic ./alembic
USER 10001
EXPOSE 8000
# For the api role; compose and Kubernetes set their own probes per role.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["qingbo-gateway"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
