# One image for every place in a deployment: the coordinator runs `fedsynth server start`, each hospital
# `fedsynth site start`. Credentials, data and schema are mounted at run time, never baked into the image.
#   docker build -t fedsynth .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FLWR_TELEMETRY_ENABLED=0 FLWR_HOME=/var/lib/fedsynth/flwr

WORKDIR /opt/fedsynth
# torch first, pinned and CPU-only (an unpinned torch pulls several GB of CUDA builds)
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY src ./src
COPY configs ./configs
RUN pip install . && useradd --create-home --uid 10001 fedsynth && mkdir -p /var/lib/fedsynth \
    && chown fedsynth /var/lib/fedsynth
USER fedsynth
WORKDIR /var/lib/fedsynth
ENTRYPOINT ["fedsynth"]
CMD ["--help"]
