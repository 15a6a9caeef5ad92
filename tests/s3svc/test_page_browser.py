"""The upload page in a real browser: Debian's headless Chromium, driven through its chromedriver
by selenium, against ``python -m s3svc`` and moto.

Chromium encodes multipart/form-data its own way (raw UTF-8 names, a quote as ``%22``, its own
boundaries), computes each file's SHA-256 with WebCrypto and reports upload progress; these tests
check what a person sees on the page and what S3 holds afterwards. Every wait is an explicit wait
for a DOM condition. ``make test`` installs chromium and chromium-driver when it can (Makefile:
``browser``); without them these tests skip, saying why, unless ``BROWSER_PASS=required`` (CI),
which fails them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import boto3
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from s3svc.config import MIB
from tests.conftest import REGION
from tests.procs import ServiceProcess

REQUIRED_ENV = "BROWSER_PASS"
# A name that is not localhost: a page loaded from it over plain http is not a secure context,
# as for a person on another host. Chromium resolves it to 127.0.0.1 (--host-resolver-rules).
REMOTE_HOST = "upload-page.test"
# Seconds to wait for uploads to settle (a hang guard, not a speed target).
SETTLE = 120
QUOTED_NAME = 'Grüße "quoted" résumé.txt'
RIGHT_KEY = "the-right-key"

ITEMS_JS = """
return Array.from(document.querySelectorAll('#results li.item'), (li) => {
  const text = (sel) => { const n = li.querySelector(sel); return n ? n.textContent : null; };
  const bar = li.querySelector('progress');
  const link = li.querySelector('a.download');
  return {
    name: text('.name'), state: li.dataset.state, status: li.dataset.status || null,
    error: li.dataset.error || null, digest: li.dataset.digest || null,
    verified: li.dataset.verified === undefined ? null : li.dataset.verified,
    text: text('.status'), bar: bar.value, max: bar.max, key: text('.key'),
    sha256: text('.sha256'), size: text('.stored-size'), link: link ? link.href : null,
  };
});
"""
# A file dropped on the drop zone, made in the page (selenium cannot drag a file from disk).
DROP_JS = """
const dt = new DataTransfer();
dt.items.add(new File([arguments[1]], arguments[0], {type: 'text/plain'}));
document.getElementById('drop').dispatchEvent(
  new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
"""
# WebCrypto that answers a wrong SHA-256: the page then states a digest the bytes do not match.
WRONG_DIGEST_JS = """
const real = crypto.subtle.digest.bind(crypto.subtle);
crypto.subtle.digest = async (algorithm, data) => {
  const d = new Uint8Array(await real(algorithm, data));
  d[0] ^= 0xff;
  return d.buffer;
};
"""


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    absent = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if not absent:
        return None
    return (
        f"Browser test: cannot run: {' and '.join(absent)} not found on PATH (make test installs "
        "Debian's chromium and chromium-driver with apt-get when it runs as root)"
    )


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the module, each test on a page of its own."""
    reason = _missing()
    if reason is not None:
        if os.environ.get(REQUIRED_ENV) == "required":
            pytest.fail(f"{REQUIRED_ENV}=required: {reason}", pytrace=False)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root, in a container
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--no-first-run",
        "--window-size=1100,900",
        f"--host-resolver-rules=MAP {REMOTE_HOST} 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(arg)
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    service = Service(executable_path=str(shutil.which("chromedriver")), log_output=str(log))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def s3_sync(moto_url: str) -> Any:
    """A plain boto3 S3 client on moto (these tests are synchronous: selenium blocks)."""
    return boto3.client("s3", endpoint_url=moto_url, region_name=REGION)


@pytest.fixture
def page_bucket(s3_sync: Any) -> Iterator[str]:
    """A fresh bucket; emptied and removed afterwards."""
    name = f"page-{uuid.uuid4().hex[:16]}"
    s3_sync.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for obj in s3_sync.list_objects_v2(Bucket=name).get("Contents", []):
            s3_sync.delete_object(Bucket=name, Key=obj["Key"])
        s3_sync.delete_bucket(Bucket=name)


@pytest.fixture
def s3svc(
    service_env: dict[str, str], page_bucket: str, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``python -m s3svc`` on the test bucket with extra settings; stopped afterwards."""
    started: list[ServiceProcess] = []

    def start(**env: str) -> ServiceProcess:
        svc = ServiceProcess(
            "s3svc", dict(service_env, BUCKET_NAME=page_bucket, **env), tmp_path / "s3svc.log"
        )
        started.append(svc)
        return svc.start()

    try:
        yield start
    finally:
        for svc in started:
            svc.stop()


def open_page(driver: webdriver.Chrome, url: str) -> None:
    """Load the page and wait until its script is ready."""
    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.find_element(By.ID, "page").get_attribute("data-ready") == "true"
    )


def pick(driver: webdriver.Chrome, *paths: Path) -> None:
    """Choose files in the page's file input, as a person does in one dialog."""
    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))


def settled(driver: webdriver.Chrome, count: int) -> list[dict[str, Any]]:
    """The page's rows once ``count`` of them are stored or failed."""

    def done(d: webdriver.Chrome) -> list[dict[str, Any]] | Literal[False]:
        items: list[dict[str, Any]] = d.execute_script(ITEMS_JS)
        if len(items) == count and all(i["state"] in ("stored", "failed") for i in items):
            return items
        return False

    result: list[dict[str, Any]] = WebDriverWait(driver, SETTLE, poll_frequency=0.05).until(done)
    return result


def uploads_logged(svc: ServiceProcess) -> list[dict[str, Any]]:
    """The service's access lines of upload requests (POSTs: the page checks a key with a GET)."""
    lines = [json.loads(x) for x in svc.output().splitlines() if x.startswith("{")]
    return [
        x
        for x in lines
        if x.get("event") == "request" and x["method"] == "POST" and x["path"] == "/s3/upload"
    ]


def keys_in(s3: Any, bucket: str) -> list[str]:
    """Every key in ``bucket``."""
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_two_files_at_once_are_stored_verified_and_shown(
    driver: webdriver.Chrome,
    s3svc: Callable[..., ServiceProcess],
    s3_sync: Any,
    page_bucket: str,
    moto_url: str,
    tmp_path: Path,
) -> None:
    """Two files chosen together, one with a non-ASCII name holding a quote, one of 30 MiB: one
    request each, every bar at 100 %, each key and SHA-256 shown and verified, the download link
    shown, and S3 holds the very bytes (and the original name, quote included)."""
    svc = s3svc(DOWNLOAD_URL_SECONDS="600")
    small = tmp_path / QUOTED_NAME
    small.write_bytes('Grüße, "quoted" text\n'.encode() * 1000)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(30 * MIB))
    open_page(driver, f"{svc.url}/s3/")
    assert driver.find_element(By.ID, "key-row").get_attribute("hidden") is not None
    assert driver.find_elements(By.ID, "no-digest") == []

    pick(driver, small, big)
    items = settled(driver, 2)

    by_name = {i["name"]: i for i in items}
    assert set(by_name) == {QUOTED_NAME, "big.bin"}, items
    for path in (small, big):
        item = by_name[path.name]
        data = path.read_bytes()
        assert item["state"] == "stored", item
        assert (item["bar"], item["max"]) == (100, 100), item
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["verified"] == "sha-256"
        assert item["digest"] == "stated"
        assert "verified" in item["text"]
        assert item["size"].startswith(f"{len(data)} bytes")
        assert item["link"].startswith(moto_url), item
        stored = s3_sync.get_object(Bucket=page_bucket, Key=item["key"])
        assert stored["Body"].read() == data
        assert unquote(stored["Metadata"]["original-filename"]) == path.name
    assert by_name[QUOTED_NAME]["key"].endswith("/Grue_quoted_resume.txt")
    assert sorted(keys_in(s3_sync, page_bucket)) == sorted(i["key"] for i in items)
    logged = uploads_logged(svc)
    assert [(x["status"], x["files"]) for x in logged] == [(201, 1), (201, 1)]


def test_file_over_the_limit_is_not_sent_and_says_413(
    driver: webdriver.Chrome,
    s3svc: Callable[..., ServiceProcess],
    s3_sync: Any,
    page_bucket: str,
    tmp_path: Path,
) -> None:
    """A file over MAX_UPLOAD_BYTES gets the 413 message without being sent (an early 413 reaches
    a browser as a reset connection); the file chosen with it is stored."""
    svc = s3svc(MAX_UPLOAD_BYTES="1MiB")
    over = tmp_path / "over.bin"
    over.write_bytes(b"\0" * (MIB + 1))
    fits = tmp_path / "fits.txt"
    fits.write_bytes(b"fits\n")
    open_page(driver, f"{svc.url}/s3/")
    assert "1MiB" in driver.find_element(By.CSS_SELECTOR, ".lead").text

    pick(driver, over, fits)
    items = {i["name"]: i for i in settled(driver, 2)}

    refused = items["over.bin"]
    assert (refused["state"], refused["status"], refused["error"]) == (
        "failed",
        "413",
        "upload_too_large",
    )
    assert "over this service's limit of 1.00 MiB" in refused["text"]
    assert "413 upload_too_large" in refused["text"]
    assert refused["bar"] == 0
    assert items["fits.txt"]["state"] == "stored"
    assert keys_in(s3_sync, page_bucket) == [items["fits.txt"]["key"]]
    assert len(uploads_logged(svc)) == 1  # the large file was never sent


def test_wrong_api_key_shows_401_and_stores_nothing(
    driver: webdriver.Chrome,
    s3svc: Callable[..., ServiceProcess],
    s3_sync: Any,
    page_bucket: str,
    tmp_path: Path,
) -> None:
    """With API keys on the page (itself open) asks for a key: a wrong one shows the 401 message
    and stores nothing; the right one, sent as X-Api-Key, stores a dropped file."""
    digest = hashlib.sha256(RIGHT_KEY.encode()).hexdigest()
    svc = s3svc(API_KEYS_SHA256=digest)
    paper = tmp_path / "paper.txt"
    paper.write_bytes(b"paper\n")
    open_page(driver, f"{svc.url}/s3/")
    key = driver.find_element(By.ID, "api-key")
    assert key.is_displayed()
    assert driver.find_elements(By.ID, "clear-text-key") == []  # localhost is a secure context

    key.send_keys("a-wrong-key")
    pick(driver, paper)
    (item,) = settled(driver, 1)

    assert (item["state"], item["status"], item["error"]) == ("failed", "401", "unauthorized")
    assert "The API key was refused (401 unauthorized)" in item["text"]
    assert "missing or invalid API key" in item["text"]  # the service's own message
    assert keys_in(s3_sync, page_bucket) == []
    assert uploads_logged(svc) == []  # the key was checked before any file was sent

    key.clear()
    key.send_keys(RIGHT_KEY)
    driver.execute_script(DROP_JS, "dropped.txt", "dropped\n")
    dropped = settled(driver, 2)[1]
    assert (dropped["name"], dropped["state"], dropped["verified"]) == (
        "dropped.txt",
        "stored",
        "sha-256",
    )
    body = s3_sync.get_object(Bucket=page_bucket, Key=dropped["key"])["Body"].read()
    assert body == b"dropped\n"


def test_415_and_digest_mismatch_are_readable(
    driver: webdriver.Chrome,
    s3svc: Callable[..., ServiceProcess],
    s3_sync: Any,
    page_bucket: str,
    tmp_path: Path,
) -> None:
    """A type the service refuses shows the 415 message; bytes that do not match the digest the
    page stated (a WebCrypto made to lie) show the digest-mismatch message. Nothing is stored."""
    svc = s3svc(ALLOWED_CONTENT_TYPES="image/*")
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"not an image\n")
    pixel = tmp_path / "pixel.png"
    pixel.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    open_page(driver, f"{svc.url}/s3/")
    driver.execute_script(WRONG_DIGEST_JS)

    pick(driver, notes, pixel)
    items = {i["name"]: i for i in settled(driver, 2)}

    refused = items["notes.txt"]
    assert (refused["status"], refused["error"]) == ("415", "content_type_not_allowed")
    assert "not accepted here (415 content_type_not_allowed)" in refused["text"]
    assert "'text/plain' is not allowed" in refused["text"]
    mismatch = items["pixel.png"]
    assert (mismatch["status"], mismatch["error"]) == ("400", "digest_mismatch")
    assert "differ from this file's SHA-256 computed here" in mismatch["text"]
    assert "nothing was stored" in mismatch["text"]
    assert keys_in(s3_sync, page_bucket) == []


def test_plain_http_from_another_host_uploads_without_a_digest(
    driver: webdriver.Chrome,
    s3svc: Callable[..., ServiceProcess],
    s3_sync: Any,
    page_bucket: str,
    tmp_path: Path,
) -> None:
    """Loaded over plain http from a name other than localhost the page has no WebCrypto: it
    says so, warns that the API key travels in clear text, and still uploads (unverified)."""
    digest = hashlib.sha256(RIGHT_KEY.encode()).hexdigest()
    svc = s3svc(API_KEYS_SHA256=digest)
    paper = tmp_path / "remote.txt"
    paper.write_bytes(b"from afar\n")
    open_page(driver, f"http://{REMOTE_HOST}:{svc.port}/s3/")
    assert driver.execute_script("return window.isSecureContext") is False
    assert "without a stated SHA-256" in driver.find_element(By.ID, "no-digest").text
    assert "clear text" in driver.find_element(By.ID, "clear-text-key").text

    driver.find_element(By.ID, "api-key").send_keys(RIGHT_KEY)
    pick(driver, paper)
    (item,) = settled(driver, 1)

    assert (item["state"], item["digest"], item["verified"]) == ("stored", "none", "")
    assert "no SHA-256 stated" in item["text"]
    assert item["sha256"] == hashlib.sha256(b"from afar\n").hexdigest()
    assert (item["bar"], item["max"]) == (100, 100)
    body = s3_sync.get_object(Bucket=page_bucket, Key=item["key"])["Body"].read()
    assert body == b"from afar\n"
