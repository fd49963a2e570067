# One image for the four services and the `dunwell` command. A service starts as
# `python -m services.<name>.main` (deploy/k8s sets that as each container's command); the
# entrypoint is the CLI, e.g. `audit verify-store` for the nightly verification.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY dunwell ./dunwell
COPY shared ./shared
COPY services ./services
# The project's wheel and the wheels of its pinned dependencies, nothing else.
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    DUNWELL_VAR_DIR=/var/lib/dunwell
RUN groupadd --system --gid 10001 dunwell \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin dunwell \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/dunwell
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels dunwell
WORKDIR /var/lib/dunwell
USER 10001:10001
EXPOSE 8001 8002 8003 8004
ENTRYPOINT ["dunwell"]
CMD ["--help"]
