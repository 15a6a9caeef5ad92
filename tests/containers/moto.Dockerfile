# moto's server for docker/compose.yaml, built locally where no registry can be pulled from
# (tests/containers): the same server as the motoserver/moto image, from the same base as the
# services. The version is constraints.txt's, passed as MOTO_VERSION.
#   docker build -f tests/containers/moto.Dockerfile --build-arg MOTO_VERSION=5.2.5 \
#     -t motoserver/moto:5.2.5 tests/containers
FROM python:3.11.14-slim-bookworm
ARG MOTO_VERSION
RUN pip install --no-cache-dir "moto[server]==${MOTO_VERSION}"
EXPOSE 5000
# As motoserver/moto: listen on every address, port 5000 (or MOTO_PORT).
ENTRYPOINT ["moto_server", "-H", "0.0.0.0"]
