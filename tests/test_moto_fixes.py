"""The moto race fix still fits the moto installed (tests/moto_fixes.py)."""

from __future__ import annotations

import inspect
import threading
from typing import Any, cast

from moto.sqs.models import Queue

from tests import moto_fixes


def test_the_wrapped_method_still_rebuilds_the_list_outside_the_lock() -> None:
    """If moto ever takes the lock itself (or renames it), this fails: drop the fix then."""
    source = inspect.getsource(moto_fixes._original)
    assert "self._messages = new_messages" in source
    assert "_messages_lock" not in source


def test_the_fix_holds_the_queue_lock() -> None:
    moto_fixes.apply()
    seen: list[bool] = []

    class Probe:
        _messages_lock = threading.Condition()

    def original(self: Probe, receipt_handle: str) -> None:
        seen.append(self._messages_lock._is_owned())  # type: ignore[attr-defined]

    wrapped = Queue.delete_message
    assert getattr(wrapped, "_locked", False)
    inner = wrapped.__wrapped__  # type: ignore[attr-defined]
    assert inner is moto_fixes._original
    moto_fixes._original, saved = original, moto_fixes._original  # type: ignore[assignment]
    try:
        wrapped(cast(Any, Probe()), "rh")
    finally:
        moto_fixes._original = saved
    assert seen == [True]
