# Two images from one file (docker-compose.yml builds both):
#
#   api     `tuner serve`, `tuner db upgrade`, `tuner token ...`: no TensorFlow, which the API
#           server and the study manager never import; the `analysis` extra (scikit-learn),
#           for the fANOVA and mean-decrease-impurity importances the API computes.
#   worker  `tuner worker`: the same install plus the `tf` extra (tensorflow-cpu and
#           tensorflow-estimator 2.15), the bundled trainers in examples/ and their registry.
#           It can also serve the API alone (`tuner serve --slots N`), importances included.
#
#   docker build --target api -t estimator-tuner-api .
#   docker build --target worker -t estimator-tuner-worker .
#
# Both run as the unprivileged user `tuner` (uid and gid 10001) in /var/lib/tuner, which holds
# the work dir (TUNER_WORK_DIR) and, without an object store, the SQLite file and the artifacts.
# scripts/check-deploy.sh replays the install steps below in a fresh virtualenv, without an
# engine: keep RUN steps to `pip ...` and `python ...` with paths relative to WORKDIR, or teach
# tests/deploy_checks.py the new kind of step.

# A patch release on a named Debian release: rebuilding does not change Python or Debian under
# the tuner. Pin a digest with --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A fixed uid, so that volumes and host directories can be prepared for it (chown 10001:10001).
# A named volume mounted on one of these dirs starts with its owner and mode.
RUN groupadd --system --gid 10001 tuner \
 && useradd --system --uid 10001 --gid tuner --home-dir /var/lib/tuner --no-create-home \
        --shell /usr/sbin/nologin tuner \
 && install -d -o tuner -g tuner -m 0750 /var/lib/tuner /var/lib/tuner/work /var/lib/tuner/artifacts
WORKDIR /opt/estimator-tuner/src
# The dependencies and the `analysis` extra, from pyproject.toml alone: this layer is rebuilt
# only when they change, not at every change of the code. The `pip install '.[analysis]'` of
# each target installs the same set.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies']['analysis'], sep='\n')" > requirements-base.txt \
 && pip install --no-cache-dir -r requirements-base.txt \
 && rm requirements-base.txt
ENV TUNER_DATABASE_URL=sqlite:////var/lib/tuner/tuner.db \
    TUNER_ARTIFACT_ROOT=/var/lib/tuner/artifacts \
    TUNER_WORK_DIR=/var/lib/tuner/work \
    TUNER_TRAINERS_FILE=/opt/estimator-tuner/trainers/trainers.yaml

FROM base AS api
COPY README.md ./
COPY migrations ./migrations
COPY api ./api
COPY tuner ./tuner
# The Alembic scripts (migrations/) are installed beside the `tuner` package.
RUN pip install --no-cache-dir '.[analysis]'
# The API checks that a submitted spec names a registered trainer: it reads the same registry
# as the workers (mount your own over it, on both).
COPY trainers.yaml /opt/estimator-tuner/trainers/
USER 10001:10001
WORKDIR /var/lib/tuner
EXPOSE 8000
CMD ["tuner", "serve", "--host", "0.0.0.0", "--port", "8000", "--slots", "0"]

FROM base AS worker
# TensorFlow before the code, for the same reason as the dependencies above.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['tf'], sep='\n')" > requirements-tf.txt \
 && pip install --no-cache-dir -r requirements-tf.txt \
 && rm requirements-tf.txt
COPY README.md ./
COPY migrations ./migrations
COPY api ./api
COPY tuner ./tuner
RUN pip install --no-cache-dir '.[analysis,tf]'
# The bundled trainers: a registry entry's working dir is its file's dir, so `python -m
# examples.house_prices.task` runs from /opt/estimator-tuner/trainers.
COPY examples /opt/estimator-tuner/trainers/examples
COPY trainers.yaml /opt/estimator-tuner/trainers/
USER 10001:10001
WORKDIR /var/lib/tuner
CMD ["tuner", "worker", "--slots", "2"]
