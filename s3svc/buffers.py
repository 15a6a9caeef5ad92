"""Part buffers allocated whole once and reused, so the allocator is not asked again per part.

A part buffer grown by writes is reallocated in ~12 % steps, and freed part buffers raise
glibc's dynamic mmap threshold, after which later ones come from the heap and leave holes
that differently timed buffers do not fit: the process then held ~1.3 times the memory the
budget granted (``bench/RESULTS.md``, "s3svc upload memory"). A buffer from this pool is
sized once, written in place, and handed back when its part is sent, so the memory stays
the budget's, and each part skips the page faults of fresh memory.

A buffer is handed back only when nothing can still read it (its send ended without being
cancelled, or its file was committed); any other buffer is simply dropped.
"""

from __future__ import annotations

import io


class BufferPool:
    """``io.BytesIO`` buffers of ``size`` bytes; at most ``keep`` are kept for reuse."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[io.BytesIO] = []

    def take(self) -> io.BytesIO:
        """An empty buffer whose allocation already holds ``size`` bytes."""
        buf = self._free.pop() if self._free else self._sized(io.BytesIO())
        buf.seek(0)
        return buf

    def give(self, buf: io.BytesIO) -> None:
        """Keep ``buf`` for reuse (it must have come from :meth:`take`)."""
        if len(self._free) < self.keep:
            self._free.append(self._sized(buf))

    @property
    def kept(self) -> int:
        """How many buffers wait for reuse."""
        return len(self._free)

    def _sized(self, buf: io.BytesIO) -> io.BytesIO:
        # Writing the last byte makes BytesIO allocate the whole size at once (and grows
        # back a buffer that a truncate to under half a part shrank). Later writes from
        # position 0 overwrite in place; the writer truncates to what it wrote.
        buf.seek(self.size - 1)
        buf.write(b"\0")
        return buf
