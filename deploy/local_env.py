"""The identity and the resource names every local tool (devstack, emulator, peek) uses.

moto accepts any credentials, so the local tools use fixed fake ones and never a real profile:
a developer's AWS profile must not sign calls to the emulator, and a machine with no AWS
credentials at all (no ``AWS_*`` variables, no ``~/.aws``, an empty ``HOME``) must work the same.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

REGION = "us-east-1"
LOG_GROUP = "/local/services"
# The environment compose_init.create_all reads: the same names as docker/compose.yaml's init.
RESOURCES = {
    "BUCKET_NAME": "uploads-local",
    "QUEUE_NAME": "messages-local",
    "DLQ_NAME": "messages-local-dlq",
    "FIFO_QUEUE_NAME": "messages-local.fifo",
    "LOG_GROUPS": LOG_GROUP,
}
DEFAULT_MOTO_PORT = 5000
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    # No profile files and no instance metadata: nothing on the machine can add or change a value.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# The emulator and the services are on loopback: never through a proxy the shell may name.
LOOPBACK = "127.0.0.1,localhost"


def isolate(environ: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Drop every ``AWS_*`` variable of ``environ`` and put the fake identity in; returns it.

    Called on the tool's own ``os.environ`` before any boto3 client exists, so the tool and the
    processes it starts sign with the same fake credentials.
    """
    for name in [n for n in environ if n.startswith("AWS_")]:
        del environ[name]
    environ.update(FAKE_AWS)
    for name in ("NO_PROXY", "no_proxy"):
        environ[name] = ",".join(filter(None, (environ.get(name), LOOPBACK)))
    return environ
