"""Settings come from env once, typed and validated, with every error reported together."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.config import ConfigError
from s3svc.config import GIB, MIB, S3Settings
from tests.procs import ROOT


def test_defaults_without_aws_settings_are_local_safe() -> None:
    """An empty environment starts in local-safe mode with documented defaults."""
    s = S3Settings.from_env({})
    assert s.bucket is None
    assert s.common.port == 8080
    assert s.common.base_path == "/s3"
    assert s.part_size == 8 * MIB
    assert s.max_upload_bytes == 5 * GIB
    assert s.common.aws.endpoint_url is None
    assert s.common.aws.retry_mode == "standard"


def test_values_are_parsed() -> None:
    """Sizes accept suffixes; prefixes gain a trailing slash; lists are split."""
    s = S3Settings.from_env(
        {
            "BUCKET_NAME": "b",
            "PART_SIZE": "16MiB",
            "KEY_PREFIX": "in/coming",
            "ALLOWED_CONTENT_TYPES": "image/*, application/pdf",
            "BASE_PATH": "/files/",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_REGION": "eu-west-1",
            "S3_SSE": "aws:kms",
            "S3_SSE_KMS_KEY_ID": "alias/uploads",
        }
    )
    assert s.part_size == 16 * MIB
    assert s.key_prefix == "in/coming/"
    assert s.allowed_content_types == ("image/*", "application/pdf")
    assert s.common.base_path == "/files"
    assert s.common.aws.region == "eu-west-1"
    assert s.sse == "aws:kms"


def test_request_headers_timeout() -> None:
    """REQUEST_HEADERS_TIMEOUT: 30 s unless set (Kestrel's RequestHeadersTimeout); 0 is refused."""
    assert S3Settings.from_env({}).common.request_headers_timeout == 30.0
    given = S3Settings.from_env({"REQUEST_HEADERS_TIMEOUT": "2.5"})
    assert given.common.request_headers_timeout == 2.5
    with pytest.raises(ConfigError, match="REQUEST_HEADERS_TIMEOUT"):
        S3Settings.from_env({"REQUEST_HEADERS_TIMEOUT": "0"})


def test_every_error_is_reported_at_once() -> None:
    """Three bad variables give one error naming all three."""
    with pytest.raises(ConfigError) as info:
        S3Settings.from_env({"PORT": "http", "PART_SIZE": "1MiB", "LOG_LEVEL": "loud"})
    names = " ".join(info.value.errors)
    assert "PORT" in names
    assert "PART_SIZE" in names
    assert "LOG_LEVEL" in names
    assert len(info.value.errors) == 3


def test_budget_smaller_than_part_is_rejected() -> None:
    """A memory budget that cannot hold one part could never make progress."""
    with pytest.raises(ConfigError, match="UPLOAD_MEMORY_BUDGET"):
        S3Settings.from_env({"PART_SIZE": "64MiB", "UPLOAD_MEMORY_BUDGET": "32MiB"})


def test_budget_that_cannot_hold_a_part_of_the_largest_upload_is_rejected() -> None:
    """5 TiB in 10,000 parts needs 525 MiB parts: a 256 MiB budget could never reserve one
    (each chunked upload would end in a 500)."""
    with pytest.raises(ConfigError, match="cannot hold two parts"):
        S3Settings.from_env({"MAX_UPLOAD_BYTES": "5TiB", "UPLOAD_MEMORY_BUDGET": "256MiB"})
    assert S3Settings.from_env({"MAX_UPLOAD_BYTES": "5TiB", "UPLOAD_MEMORY_BUDGET": "1GiB"})


def test_process_exits_2_listing_all_errors() -> None:
    """``python -m s3svc`` with bad settings exits 2 and prints each problem."""
    proc = subprocess.run(
        [sys.executable, "-m", "s3svc"],
        cwd=ROOT,
        env={"PORT": "0x", "MAX_FILES": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "PORT='0x'" in proc.stderr
    assert "MAX_FILES='0'" in proc.stderr
