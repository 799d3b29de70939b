# syntax=docker/dockerfile:1
# The one image every thinkpipe component runs in: the pinned dependencies of requirements.lock, the
# thinkpipe package, a non-root user. Build it with `make image` (image/build.sh: buildah, no daemon,
# no registry; the base made from Debian packages with debootstrap). With a registry at hand:
#   image/build.sh --wheels-only && docker build -t ghcr.io/thinkpipe/thinkpipe:0.1.0 .
#
# The dependencies are installed from a wheelhouse, image/wheels/ (one wheel per pin of
# requirements.lock, written on the build host by image/build.sh), mounted for the one RUN that
# installs them: the build reaches no package index, and the wheels never become a layer.
# BASE_IMAGE must provide `python3.11` (with venv/ensurepip) and `useradd` on glibc >= 2.28.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/thinkpipe/thinkpipe
ARG LOCK_SHA256=unknown
LABEL org.opencontainers.image.title="thinkpipe" \
      org.opencontainers.image.description="GLM-4.1V-Thinking training pipeline: the image of every Kubeflow component" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.thinkpipe.requirements-lock.sha256="${LOCK_SHA256}"

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/thinkpipe \
    HF_HOME=/home/thinkpipe/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    GIT_PYTHON_REFRESH=quiet

# One RUN for the whole install: one layer (buildah's vfs driver copies every layer in full). The
# package is installed editable, like `make venv`, so model_src finds its profiles in
# /opt/thinkpipe/configs (model_src/config/loader.py looks beside the package).
COPY requirements.lock pyproject.toml README.md /opt/thinkpipe/
COPY model_src /opt/thinkpipe/model_src
COPY components /opt/thinkpipe/components
COPY pipelines /opt/thinkpipe/pipelines
COPY configs /opt/thinkpipe/configs
RUN --mount=type=bind,source=image/wheels,target=/wheels \
    set -eux; \
    python3.11 -m venv /opt/venv; \
    pip install --no-index --find-links=/wheels --no-deps -r /opt/thinkpipe/requirements.lock; \
    pip install --no-index --no-deps --no-build-isolation -e /opt/thinkpipe; \
    pip check; \
    python -m compileall -q /opt/thinkpipe/model_src /opt/thinkpipe/components /opt/thinkpipe/pipelines; \
    useradd --uid 1000 --user-group --create-home --home-dir /home/thinkpipe --shell /bin/bash thinkpipe; \
    install -d -o 1000 -g 1000 /workspace /home/thinkpipe/.cache; \
    rm -rf /opt/thinkpipe/build /root/.cache /tmp/*

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000
WORKDIR /workspace
CMD ["thinkpipe", "--help"]
