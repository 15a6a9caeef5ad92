"""Settings parsed once from the environment: typed, validated, every error reported together.

Each service has one frozen dataclass (``S3Settings``, ``SqsSettings``) that embeds the
``CommonSettings`` below. Code receives settings objects; only this module's callers at process
start read ``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from importlib import metadata
from types import SimpleNamespace
from typing import TypeVar

T = TypeVar("T")

# Environment variable names shared by both services.
ENV_HOST = "HOST"
ENV_PORT = "PORT"
ENV_BASE_PATH = "BASE_PATH"
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
ENV_AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
ENV_AWS_RETRY_MODE = "AWS_RETRY_MODE"
ENV_AWS_MAX_ATTEMPTS = "AWS_MAX_ATTEMPTS"
ENV_AWS_CONNECT_TIMEOUT = "AWS_CONNECT_TIMEOUT"
ENV_AWS_READ_TIMEOUT = "AWS_READ_TIMEOUT"
ENV_AWS_MAX_POOL = "AWS_MAX_POOL_CONNECTIONS"
ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_LOG_FORMAT = "LOG_FORMAT"
ENV_STDOUT_LOG_LEVEL = "STDOUT_LOG_LEVEL"
ENV_SHUTDOWN_GRACE = "SHUTDOWN_GRACE_SECONDS"
ENV_APP_VERSION = "APP_VERSION"
ENV_CW_GROUP = "CLOUDWATCH_LOG_GROUP"
ENV_CW_CREATE = "CLOUDWATCH_CREATE_GROUP"
ENV_CW_STREAM = "CLOUDWATCH_LOG_STREAM"
ENV_CW_INTERVAL = "CLOUDWATCH_SEND_INTERVAL"
ENV_CW_MAX_QUEUE = "CLOUDWATCH_MAX_QUEUE"
ENV_ECS_METADATA = "ECS_CONTAINER_METADATA_URI_V4"
ENV_METRICS = "METRICS_ENABLED"
ENV_BREAKER_THRESHOLD = "BREAKER_THRESHOLD"
ENV_BREAKER_RESET = "BREAKER_RESET_SECONDS"
ENV_API_KEYS = "API_KEYS_SHA256"
ENV_BODY_TIMEOUT = "BODY_IDLE_TIMEOUT"
ENV_HEADERS_TIMEOUT = "REQUEST_HEADERS_TIMEOUT"
ENV_BODY_MIN_RATE = "BODY_MIN_RATE"
ENV_BODY_RATE_GRACE = "BODY_RATE_GRACE"
ENV_METRICS_NAMESPACE = "METRICS_NAMESPACE"

_BASE_PATH_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+\Z")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_ENDPOINT_RE = re.compile(r"^https?://[A-Za-z0-9._\[\]:-]+(:\d{1,5})?/?\Z")


class ConfigError(Exception):
    """One or more environment variables are missing or invalid; ``errors`` lists each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {e}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Documented:
    """One environment variable as ``--help`` shows it."""

    name: str
    default: str
    expected: str
    meaning: str


def human_size(n: int) -> str:
    """A byte count as the size syntax reads it back (``8MiB``, ``1KiB``, ``1000``)."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


class EnvReader:
    """Reads typed values from an environment mapping, collecting errors instead of raising.

    Call :meth:`check` after reading everything: it raises one :class:`ConfigError` naming every
    bad variable, so an operator fixes the task definition in one go rather than one per restart.
    Every read names its meaning too, and :attr:`documented` keeps them in reading order: the
    services' ``--help`` is the list a read of an empty environment leaves behind, so the help
    cannot drift from the parser.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = environ
        self.errors: list[str] = []
        self.documented: list[Documented] = []

    def describe(self, name: str, default: str, expected: str, meaning: str) -> None:
        """Record a variable for ``--help`` (the typed readers below do it themselves)."""
        if all(d.name != name for d in self.documented):
            self.documented.append(Documented(name, default, expected, meaning))

    def raw(self, name: str) -> str | None:
        """The stripped value, or None when unset or blank (records nothing: use a typed read)."""
        value = self._env.get(name, "").strip()
        return value or None

    def _parse(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        expected: str,
        meaning: str,
        shown: str | None = None,
    ) -> T:
        self.describe(name, str(default) if shown is None else shown, expected, meaning)
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            self.errors.append(f"{name}={value!r} is not valid: expected {expected}")
            return default

    def text(self, name: str, default: str, *, doc: str, expected: str = "text") -> str:
        """A string value (``expected`` says what the caller will check it against)."""
        self.describe(name, default or "(empty)", expected, doc)
        return self.raw(name) or default

    def optional(self, name: str, *, doc: str, expected: str = "text") -> str | None:
        """A string that may be absent (``expected`` as for :meth:`text`)."""
        self.describe(name, "(unset)", expected, doc)
        return self.raw(name)

    def integer(self, name: str, default: int, *, lo: int, hi: int, doc: str) -> int:
        """An integer within [lo, hi]."""

        def parse(v: str) -> int:
            n = int(v)
            if not lo <= n <= hi:
                raise ValueError
            return n

        return self._parse(name, default, parse, f"an integer from {lo} to {hi}", doc)

    def number(self, name: str, default: float, *, lo: float, hi: float, doc: str) -> float:
        """A number within [lo, hi]."""

        def parse(v: str) -> float:
            n = float(v)
            if not lo <= n <= hi:
                raise ValueError
            return n

        return self._parse(
            name, default, parse, f"a number from {lo:g} to {hi:g}", doc, f"{default:g}"
        )

    def flag(self, name: str, default: bool, *, doc: str) -> bool:
        """true/false, 1/0, yes/no, on/off."""

        def parse(v: str) -> bool:
            low = v.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError

        return self._parse(name, default, parse, "true or false", doc, str(default).lower())

    def choice(self, name: str, default: str, choices: tuple[str, ...], *, doc: str) -> str:
        """One of a fixed set of lower-case words."""

        def parse(v: str) -> str:
            if v.lower() not in choices:
                raise ValueError
            return v.lower()

        return self._parse(name, default, parse, "one of " + ", ".join(choices), doc)

    def size(self, name: str, default: int, *, lo: int, hi: int, doc: str) -> int:
        """A byte count: plain digits or with a KiB/MiB/GiB/TiB suffix (``8MiB``)."""
        units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}

        def parse(v: str) -> int:
            m = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", v)
            if not m or m.group(2).lower() not in units:
                raise ValueError
            n = int(m.group(1)) * units[m.group(2).lower()]
            if not lo <= n <= hi:
                raise ValueError
            return n

        expected = (
            f"a byte count from {human_size(lo)} to {human_size(hi)} (suffix KiB, MiB, GiB, TiB)"
        )
        return self._parse(name, default, parse, expected, doc, human_size(default))

    def check(self) -> None:
        """Raise one ConfigError listing every problem seen so far."""
        if self.errors:
            raise ConfigError(self.errors)


def defaults(cls: type) -> SimpleNamespace:
    """The defaults a settings dataclass declares, by field name: each setting's default is
    written once, on its field, and the readers below take it from there."""
    return SimpleNamespace(**{f.name: f.default for f in fields(cls) if f.default is not MISSING})


def _package_version() -> str:
    try:
        return metadata.version("aws-upload-messaging")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """How the service talks to AWS (or to the emulator when ``endpoint_url`` is set)."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 3
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    max_pool_connections: int = 50
    breaker_threshold: int = 5
    breaker_reset_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class CloudWatchSettings:
    """Where and how watchtower ships log lines to CloudWatch Logs."""

    log_group: str
    create_group: bool = False
    stream_name: str | None = None  # None: derived from the ECS task id or host and pid
    send_interval: float = 2.0
    max_queue: int = 10_000
    ecs_metadata_uri: str | None = None


@dataclass(frozen=True, slots=True)
class CommonSettings:
    """Settings every service has: where it listens, how it logs, how it stops, how it reaches AWS."""

    service: str
    version: str
    host: str
    port: int
    base_path: str
    log_level: str
    log_format: str
    shutdown_grace: float
    aws: AwsSettings
    cloudwatch: CloudWatchSettings | None = None
    metrics: bool = True
    metrics_namespace: str = "UploadMessaging"
    # Seconds a request's headers may take to arrive in full before the connection is closed
    # (Kestrel's RequestHeadersTimeout); common/connection.py says when the time starts.
    request_headers_timeout: float = 30.0
    # Seconds a request body may go without a byte before the request is given up.
    body_idle_timeout: float = 30.0
    # The slowest average a request body may arrive at (bytes/s, 0: no minimum), counted only
    # while the service waits for body data, once ``body_rate_grace`` seconds of waiting passed
    # (Kestrel's MinRequestBodyDataRate: 240 B/s after 5 s).
    body_min_rate: int = 240
    body_rate_grace: float = 5.0
    # SHA-256 hex digests of accepted API keys; empty means no key is required.
    api_keys_sha256: tuple[str, ...] = ()
    # The lowest level stdout prints; None: log_level (every line).
    stdout_log_level: str | None = None

    def __repr__(self) -> str:
        # Digests are not keys, but there is no reason to print them either.
        shown = f"<{len(self.api_keys_sha256)} api key digests>"
        return f"CommonSettings(service={self.service!r}, port={self.port}, api_keys={shown})"


def read_endpoint(env: EnvReader, name: str, *, doc: str) -> str | None:
    """An optional ``http(s)://host[:port]`` endpoint URL; errors accumulate on ``env``."""
    env.describe(name, "(unset)", "http(s)://host[:port]", doc)
    endpoint = env.raw(name)
    if endpoint is not None and not _ENDPOINT_RE.match(endpoint):
        env.errors.append(f"{name}={endpoint!r} is not valid: expected http(s)://host[:port]")
    return endpoint


def read_aws(env: EnvReader) -> AwsSettings:
    """Read how to reach AWS; errors accumulate on ``env``."""
    aws_d = defaults(AwsSettings)
    env.describe(
        ENV_AWS_REGION,
        aws_d.region,
        "a region name",
        f"AWS region (else {ENV_AWS_DEFAULT_REGION}, else us-east-1)",
    )
    env.describe(
        ENV_AWS_DEFAULT_REGION, "(unset)", "a region name", f"read when {ENV_AWS_REGION} is unset"
    )
    region = env.raw(ENV_AWS_REGION) or env.raw(ENV_AWS_DEFAULT_REGION) or aws_d.region
    endpoint = read_endpoint(
        env,
        ENV_AWS_ENDPOINT_URL,
        doc="botocore's own: send every AWS call there (moto, LocalStack)",
    )
    return AwsSettings(
        region=region,
        endpoint_url=endpoint,
        retry_mode=env.choice(
            ENV_AWS_RETRY_MODE,
            aws_d.retry_mode,
            ("standard", "adaptive"),
            doc="botocore retry mode",
        ),
        max_attempts=env.integer(
            ENV_AWS_MAX_ATTEMPTS,
            aws_d.max_attempts,
            lo=1,
            hi=10,
            doc="attempts per AWS call, the first included",
        ),
        connect_timeout=env.number(
            ENV_AWS_CONNECT_TIMEOUT,
            aws_d.connect_timeout,
            lo=0.1,
            hi=60.0,
            doc="seconds to connect to AWS",
        ),
        read_timeout=env.number(
            ENV_AWS_READ_TIMEOUT,
            aws_d.read_timeout,
            lo=0.1,
            hi=900.0,
            doc="seconds to wait for AWS's answer",
        ),
        max_pool_connections=env.integer(
            ENV_AWS_MAX_POOL,
            aws_d.max_pool_connections,
            lo=1,
            hi=1000,
            doc="connections kept open to AWS",
        ),
        breaker_threshold=env.integer(
            ENV_BREAKER_THRESHOLD,
            aws_d.breaker_threshold,
            lo=0,
            hi=1000,
            doc="consecutive AWS failures that open the circuit (fail fast with 503); 0 = never",
        ),
        breaker_reset_seconds=env.number(
            ENV_BREAKER_RESET,
            aws_d.breaker_reset_seconds,
            lo=0.1,
            hi=600.0,
            doc="seconds the circuit stays open",
        ),
    )


def read_common(
    env: EnvReader, *, service: str, default_port: int, default_base: str
) -> CommonSettings:
    """Read the shared settings; errors accumulate on ``env``."""
    common_d, cw_d = defaults(CommonSettings), defaults(CloudWatchSettings)
    base_path = env.text(
        ENV_BASE_PATH,
        default_base,
        doc="path prefix of every route (the ALB routes it here)",
        expected="a path like /s3 (letters, digits, . _ ~ -)",
    ).rstrip("/")
    if not _BASE_PATH_RE.match(base_path):
        env.errors.append(
            f"{ENV_BASE_PATH}={base_path!r} is not valid: expected a path like /s3 "
            "(letters, digits, . _ ~ -)"
        )
        base_path = default_base
    # Every CloudWatch variable is read (and so documented) whether or not shipping is on.
    log_group = env.optional(ENV_CW_GROUP, doc="ship log lines to this CloudWatch log group")
    create_group = env.flag(
        ENV_CW_CREATE,
        cw_d.create_group,
        doc="create the log group if missing (local only; needs permission)",
    )
    stream_name = env.optional(
        ENV_CW_STREAM, doc="log stream name (default: the ECS task id, else host and pid)"
    )
    send_interval = env.number(
        ENV_CW_INTERVAL,
        cw_d.send_interval,
        lo=0.1,
        hi=5.0,
        doc="seconds between CloudWatch batches",
    )
    max_queue = env.integer(
        ENV_CW_MAX_QUEUE,
        cw_d.max_queue,
        lo=10,
        hi=1_000_000,
        doc="lines held while CloudWatch is unreachable; beyond it lines are dropped and counted",
    )
    metadata_uri = env.optional(ENV_ECS_METADATA, doc="set by ECS; names the log stream")
    cloudwatch = None
    if log_group is not None:
        cloudwatch = CloudWatchSettings(
            log_group=log_group,
            create_group=create_group,
            stream_name=stream_name,
            send_interval=send_interval,
            max_queue=max_queue,
            ecs_metadata_uri=metadata_uri,
        )
    digests = tuple(
        d.strip().lower()
        for d in (
            env.optional(
                ENV_API_KEYS,
                doc="comma-separated SHA-256 hex digests of accepted API keys (sent as "
                "X-API-Key or Authorization: Bearer); unset = no key needed",
                expected="64 hex digits each",
            )
            or ""
        ).split(",")
        if d.strip()
    )
    bad = [d[:8] + "..." for d in digests if not re.fullmatch(r"[0-9a-f]{64}", d)]
    if bad:
        env.errors.append(
            f"{ENV_API_KEYS} holds {len(bad)} value(s) that are not SHA-256 hex digests "
            f"({', '.join(bad)}): put sha256(key) there, never the key itself"
        )
    log_level = env.choice(ENV_LOG_LEVEL, "info", _LOG_LEVELS, doc="lowest level logged")
    stdout_doc = (
        f"lowest level stdout prints; with CloudWatch shipping every line, warning keeps one "
        f"ingestion path (the stack sets it); needs {ENV_CW_GROUP} if above {ENV_LOG_LEVEL}"
    )
    env.describe(
        ENV_STDOUT_LOG_LEVEL, ENV_LOG_LEVEL, "one of " + ", ".join(_LOG_LEVELS), stdout_doc
    )
    stdout_log_level = env.choice(
        ENV_STDOUT_LOG_LEVEL,
        log_level,
        _LOG_LEVELS,
        doc=stdout_doc,
    )
    if log_group is None and _LOG_LEVELS.index(stdout_log_level) > _LOG_LEVELS.index(log_level):
        env.errors.append(
            f"{ENV_STDOUT_LOG_LEVEL}={stdout_log_level} hides {ENV_LOG_LEVEL}={log_level} lines "
            f"and nothing else receives them: set {ENV_CW_GROUP}, or raise {ENV_LOG_LEVEL}"
        )
    return CommonSettings(
        service=service,
        version=env.text(ENV_APP_VERSION, _package_version(), doc="version reported by /health"),
        host=env.text(ENV_HOST, "0.0.0.0", doc="address to listen on"),
        port=env.integer(ENV_PORT, default_port, lo=1, hi=65535, doc="port to listen on"),
        base_path=base_path,
        log_level=log_level,
        stdout_log_level=stdout_log_level,
        log_format=env.choice(
            ENV_LOG_FORMAT,
            "json",
            ("json", "console"),
            doc="stdout lines: json (one object a line) or console (for people)",
        ),
        shutdown_grace=env.number(
            ENV_SHUTDOWN_GRACE,
            20.0,
            lo=0.0,
            hi=3600.0,
            doc="seconds in-flight requests get to finish after SIGTERM",
        ),
        aws=read_aws(env),
        cloudwatch=cloudwatch,
        metrics=env.flag(ENV_METRICS, common_d.metrics, doc="EMF metrics on the access line"),
        metrics_namespace=env.text(
            ENV_METRICS_NAMESPACE, common_d.metrics_namespace, doc="CloudWatch metrics namespace"
        ),
        api_keys_sha256=digests,
        request_headers_timeout=env.number(
            ENV_HEADERS_TIMEOUT,
            common_d.request_headers_timeout,
            lo=0.1,
            hi=3600.0,
            doc="seconds a request's headers may take to arrive in full (from the connection's "
            "opening or the request's first byte) before the connection is closed, with 408 "
            "once a byte of them came",
        ),
        body_idle_timeout=env.number(
            ENV_BODY_TIMEOUT,
            common_d.body_idle_timeout,
            lo=0.1,
            hi=3600.0,
            doc="seconds a request body may go without a byte before the request is given up",
        ),
        body_min_rate=env.integer(
            ENV_BODY_MIN_RATE,
            common_d.body_min_rate,
            lo=0,
            hi=1024**3,
            doc="slowest average rate (bytes/s) a request body may arrive at once the grace "
            "period passed; slower bodies are cut off with 408 (0: no minimum)",
        ),
        body_rate_grace=env.number(
            ENV_BODY_RATE_GRACE,
            common_d.body_rate_grace,
            lo=0.0,
            hi=3600.0,
            doc=f"seconds of waiting for body data before {ENV_BODY_MIN_RATE} applies",
        ),
    )


def parse_env(read: Callable[[EnvReader], T], environ: Mapping[str, str]) -> T:
    """Run a settings reader over ``environ``; raise one ConfigError listing every problem."""
    env = EnvReader(environ)
    settings = read(env)
    env.check()
    return settings


def settings_help(read: Callable[[EnvReader], object]) -> str:
    """Every variable ``read`` consults, with its default, accepted values and meaning."""
    env = EnvReader({})
    read(env)
    width = max(len(d.name) for d in env.documented)
    lines = []
    for d in env.documented:
        lines.append(f"  {d.name:<{width}}  {d.meaning}")
        lines.append(f"  {'':<{width}}  default {d.default}; {d.expected}")
    return "\n".join(lines)


def load_or_exit(from_env: Callable[[Mapping[str, str]], T], environ: Mapping[str, str]) -> T:
    """Parse settings at process start; on error print every problem and exit with status 2."""
    import sys

    try:
        return from_env(environ)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None
