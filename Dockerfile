# syntax=docker/dockerfile:1
# The Segue operator image: `python -m segue`, as non-root user 65532.
#   docker build -t ghcr.io/segue-dev/segue:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/segue \
 && /opt/segue/bin/pip install /wheels/*.whl

FROM python:3.11-slim
ENV PATH=/opt/segue/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/segue /opt/segue
USER 65532:65532
# 8080: liveness (/healthz); 8081: metrics (/metrics)
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "segue"]
