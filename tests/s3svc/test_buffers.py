"""The pool of part buffers: sized once, handed out empty, kept up to a bound."""

from __future__ import annotations

from s3svc.buffers import BufferPool


def test_a_buffer_is_handed_out_at_its_start_and_holds_a_whole_part() -> None:
    pool = BufferPool(1000, keep=2)
    buf = pool.take()
    assert buf.tell() == 0
    assert len(buf.getbuffer()) == 1000  # allocated whole, not grown by later writes
    buf.write(b"abc")
    buf.truncate(3)
    assert buf.getvalue() == b"abc"


def test_a_buffer_given_back_is_reused_whole_even_after_a_short_truncate() -> None:
    pool = BufferPool(1000, keep=2)
    buf = pool.take()
    buf.write(b"x" * 10)
    buf.truncate(10)  # under half a part: BytesIO shrinks its allocation
    pool.give(buf)
    again = pool.take()
    assert again is buf
    assert again.tell() == 0
    assert len(again.getbuffer()) == 1000


def test_the_pool_keeps_at_most_keep_buffers() -> None:
    pool = BufferPool(100, keep=2)
    bufs = [pool.take() for _ in range(3)]
    for b in bufs:
        pool.give(b)
    assert pool.kept == 2
    assert {id(pool.take()), id(pool.take())} <= {id(b) for b in bufs}
    assert pool.kept == 0
