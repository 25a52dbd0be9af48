# The VRS-HQ Label Studio ML backend (`vrshq serve`) and its GPU worker (`vrshq worker`).
#
# The environment is built by scripts/setup.sh itself, the script .ci/run uses, so the image has
# exactly the pinned set CI tests: torch 2.14.1 + torchvision 0.29.1, sam2 1.1.0 built with
# SAM2_BUILD_CUDA=0 --no-build-isolation, then `pip install -e .[test,postgres]` (pyproject.toml's pins).
# The torch wheel from PyPI is a CUDA build on x86_64 (the CUDA runtime comes as nvidia-* wheels),
# so this slim base runs on a GPU under the NVIDIA container runtime (docker-compose.yml's worker
# reserves one); decord and av wheels carry their own ffmpeg, and OpenCV is the headless build.
#
#   docker build -t vrshq-backend:0.1.0 .
#   docker run --gpus all -p 9090:9090 -v /path/to/models:/models:ro -e VRSHQ_MODEL=/models \
#       -e LABEL_STUDIO_URL=http://label-studio:8080 -e LABEL_STUDIO_API_KEY=... vrshq-backend:0.1.0
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHON=python3.11

WORKDIR /app
COPY . /app
# The same script as .ci/run: creates /app/.venv and installs the pinned set into it.
RUN bash scripts/setup.sh

# A non-root user with the uid Label Studio's image runs as (1001), so both containers can read
# and write the shared media volume (keyframe images are written beside local-file videos).
RUN groupadd --gid 1001 vrshq \
    && useradd --uid 1001 --gid 1001 --create-home --home-dir /home/vrshq vrshq \
    && mkdir -p /data/backend /media /models \
    && chown vrshq:vrshq /data/backend /media
USER vrshq

ENV PATH=/app/.venv/bin:$PATH \
    PORT=9090 \
    MODEL_DIR=/data/backend \
    LOCAL_FILES_DOCUMENT_ROOT=/media
EXPOSE 9090
# One gunicorn worker per GPU (`--workers`), threads for concurrency (`--threads`, default 8).
CMD ["vrshq", "serve", "--host", "0.0.0.0", "--port", "9090"]
