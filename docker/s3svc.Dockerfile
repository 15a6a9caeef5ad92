# s3svc: streams multipart/form-data uploads into S3.
#   docker build -f docker/s3svc.Dockerfile -t s3svc .
#   docker run -p 8080:8080 -e BUCKET_NAME=my-bucket s3svc
# Stage 1 builds wheels for the project and its locked runtime dependencies only.
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY common ./common
COPY s3svc ./s3svc
COPY sqssvc ./sqssvc
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

# Stage 2: a slim runtime with no compilers, no dev extras (moto is not installed), non-root.
FROM python:3.11.14-slim-bookworm
# The deploy workflows pass the commit SHA; /health and every log line report it.
ARG APP_VERSION=""
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_VERSION=${APP_VERSION} \
    PORT=8080
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
USER 10001
EXPOSE 8080
STOPSIGNAL SIGTERM
# No curl in the image: the health check uses the interpreter that is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "s3svc"]
