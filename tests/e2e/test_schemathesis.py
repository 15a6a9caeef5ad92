"""Property-based API tests: schemathesis generates requests from each service's own OpenAPI
document and checks every answer against it (no 5xx, documented status, schema, content type).

Each service runs as its own process against moto, and the schemathesis CLI runs against its
live ``openapi.json`` (the CLI, because schemathesis 4's pytest plugin does not work with pytest 9).
The run is bounded (``--max-examples``, fixed seed) so it fits in ``make test``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import FAKE_CREDENTIALS, REGION
from tests.procs import ServiceProcess

HERE = Path(__file__).parent
MAX_EXAMPLES = 30


def _env(moto_url: str, tmp: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    empty = tmp / "aws-empty"
    empty.touch()
    env.update(
        FAKE_CREDENTIALS,
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_ENDPOINT_URL=moto_url,
        AWS_REGION=REGION,
        LOG_LEVEL="warning",
        BODY_IDLE_TIMEOUT="2",
    )
    return env


@pytest.fixture(scope="module")
def s3svc_url(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m s3svc`` on a fresh bucket, for the whole module."""
    tmp = tmp_path_factory.mktemp("st-s3")
    bucket = f"st-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_url, region_name=REGION, **_keys()).create_bucket(
        Bucket=bucket
    )
    svc = ServiceProcess(
        "s3svc", dict(_env(moto_url, tmp), BUCKET_NAME=bucket), tmp / "s3svc.log"
    ).start()
    try:
        yield svc.url
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def sqssvc_url(moto_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m sqssvc`` on a fresh queue, for the whole module."""
    tmp = tmp_path_factory.mktemp("st-sqs")
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name=REGION, **_keys())
    queue_url = sqs.create_queue(QueueName=f"st-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    svc = ServiceProcess(
        "sqssvc", dict(_env(moto_url, tmp), QUEUE_URL=queue_url), tmp / "sqssvc.log"
    ).start()
    try:
        yield svc.url
    finally:
        svc.stop()
        sqs.purge_queue(QueueUrl=queue_url)


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def schemathesis_run(document_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """The schemathesis CLI against a live document, bounded and reproducible; its config
    (tests/e2e/schemathesis.toml) is read from this directory."""
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            document_url,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            "1",
            "--generation-deterministic",
            *extra,
        ],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_s3svc_conforms_to_its_document(s3svc_url: str) -> None:
    """Every generated request to s3svc gets a documented, schema-valid answer and never a 5xx;
    whatever the document calls invalid is refused, whatever it calls valid is accepted."""
    done = schemathesis_run(s3svc_url + "/s3/openapi.json")
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Tested: 7" in done.stdout  # the upload page, its redirect and its files: three


def test_sqssvc_conforms_to_its_document(sqssvc_url: str) -> None:
    """The same for sqssvc. ``positive_data_acceptance`` is left out: a JSON Schema cannot state
    every SQS rule (UTF-8 bytes of body plus attributes, attribute name and number formats), so
    some schema-valid bodies are rightly refused; tests/sqssvc/test_validation.py covers those
    rules one by one."""
    done = schemathesis_run(
        sqssvc_url + "/sqs/openapi.json", "--exclude-checks", "positive_data_acceptance"
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Tested: 5" in done.stdout
