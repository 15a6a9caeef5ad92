"""moto, with the one race that loses SQS messages under load fixed; ``python -m
tests.moto_fixes -H host -p port`` runs moto's server with it.

moto's ``Queue.delete_message`` rebuilds the queue's message list without the lock that
``add_message`` appends under: a message sent while another is deleted can vanish (seen as
acknowledged messages missing from the queue in the soak test, two from one batch). Real SQS
has no such race, so the tests hold moto's own lock around the rebuild. Checked against moto
5.2; ``tests/test_moto_fixes.py`` fails once moto changes the method this wraps.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from moto.sqs.models import Queue

_original = Queue.delete_message


def apply() -> None:
    """Make ``Queue.delete_message`` hold the queue's message lock (idempotent)."""
    if getattr(Queue.delete_message, "_locked", False):
        return

    @functools.wraps(_original)
    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            _original(self, receipt_handle)

    delete_message._locked = True  # type: ignore[attr-defined]
    Queue.delete_message = delete_message  # type: ignore[method-assign]


if __name__ == "__main__":
    apply()
    from moto.server import main

    main(sys.argv[1:])
