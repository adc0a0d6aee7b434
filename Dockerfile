# A custom SDK container for Dataflow workers, with webtext and its dependencies installed (docs/dataflow.md):
#   python -m pip wheel --no-deps -w dist .
#   docker build --build-arg BEAM_VERSION=<the launcher's Beam> --build-arg PYTHON_VERSION=<its Python> -t IMAGE .
# then run a stage with --sdk_container_image IMAGE. Beam and Python must match the launcher's.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}
ARG BEAM_VERSION

COPY dist/webtext-*.whl /tmp/wheels/
# the image's own Beam stays as it is; torch (the train extra) is not installed: workers run the data stages only
RUN pip install --no-cache-dir /tmp/wheels/webtext-*.whl "apache-beam[gcp]==${BEAM_VERSION}" && rm -rf /tmp/wheels
