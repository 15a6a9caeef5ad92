"""Running a service: ``serve()`` listens until SIGTERM/SIGINT, then drains and shuts down.

The shutdown inserts one step before aiohttp's own (``AppRunner.cleanup``: stop sites,
``on_shutdown``, wait for handlers, cleanup contexts): the in-flight requests drain first, while
their bodies still flow (see ``_serve``).

Connections are ``common.connection.Connection``s, served by :class:`ServiceSite`; tests start
the app through the same :func:`make_runner` and :func:`listen`.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.appkeys import IN_FLIGHT, SHUTTING_DOWN
from common.config import CommonSettings
from common.connection import Connection, announce_requests
from common.logging import LogShipping, get_logger

log = get_logger("common.server")

# After the grace period, how long aiohttp waits for a handler it has cancelled (e.g. an upload
# aborting its multipart upload) before closing the app's clients.
CANCEL_WAIT = 2.0


class InFlight:
    """Counts requests being handled, so shutdown can wait until none is left."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """A request started."""
        self.count += 1
        self._idle.clear()

    def exit(self) -> None:
        """A request finished."""
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float, force: asyncio.Event | None = None) -> bool:
        """True when every request finished within ``timeout`` (or until ``force`` is set)."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if force is not None:
            waits.append(asyncio.ensure_future(force.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._idle.is_set()


class PortInUse(Exception):
    """The listening port is taken by another process."""


# Arguments of every connection's request handler: aiohttp's own access log is off (the
# context middleware and the connection write ours). A connection's body stream stops reading
# the socket past twice ``read_bufsize``: at aiohttp's 256 KiB, each upload waiting for memory
# held ~1 MiB beyond the budget (1.42-1.48 times the budget for 30 uploads on 64 MiB); at
# 64 KiB, 1.27-1.32, for no measurable CPU (bench/RESULTS.md, "s3svc upload memory").
# Request bodies are never inflated: a compressed one is refused 415 unread (the error
# middleware). With aiohttp's decoder on, ``br`` or ``zstd`` without their modules was refused
# 400 before any middleware, and the rest of a refused gzip body was inflated while the
# connection lingered, an undecodable one logged as an unhandled exception.
HANDLER_ARGS: dict[str, Any] = {
    "access_log": None,
    "read_bufsize": 64 * 1024,
    "auto_decompress": False,
}


class ServiceSite(web.BaseSite):
    """A TCP site whose connections are :class:`Connection`s.

    aiohttp's ``TCPSite`` listens with the runner's ``web.Server`` as the protocol factory, which
    always builds a plain ``RequestHandler``; this site builds ours, registered with that same
    server, so the runner's cleanup closes and waits for them like any other.
    """

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, header_timeout: float
    ) -> None:
        super().__init__(runner)
        self.app_runner = runner
        self.host = host
        self.requested_port = port
        self.header_timeout = header_timeout
        self.listener: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port once listening (``requested_port`` may be 0), else the requested one."""
        if self.listener is not None and self.listener.sockets:
            port: int = self.listener.sockets[0].getsockname()[1]
            return port
        return self.requested_port

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self.app_runner.server
        assert server is not None, "runner.setup() comes first"
        announce_requests(server)
        app, header_timeout = self.app_runner.app, self.header_timeout
        loop = asyncio.get_running_loop()

        def connection() -> Connection:
            return Connection(
                server, app=app, header_timeout=header_timeout, loop=loop, **HANDLER_ARGS
            )

        self.listener = await loop.create_server(connection, self.host, self.requested_port)

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await super().stop()


def make_runner(app: web.Application) -> web.AppRunner:
    """The app's runner, as production runs it (call ``setup()`` next)."""
    return web.AppRunner(app, handle_signals=False, shutdown_timeout=CANCEL_WAIT, **HANDLER_ARGS)


async def listen(runner: web.AppRunner, settings: CommonSettings) -> ServiceSite:
    """Start listening on ``settings.host``/``settings.port`` (0: any free port)."""
    site = ServiceSite(
        runner, settings.host, settings.port, header_timeout=settings.request_headers_timeout
    )
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse from exc
        raise
    return site


async def _serve(app: web.Application, settings: CommonSettings, logs: LogShipping | None) -> None:
    runner = make_runner(app)
    await runner.setup()
    try:
        site = await listen(runner, settings)
        log.info("listening", host=settings.host, port=site.port, base_path=settings.base_path)
        stop, force = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            # A second SIGINT/SIGTERM skips the rest of the grace period.
            (force if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await stop.wait()
        in_flight = app[IN_FLIGHT]
        log.info("shutdown_started", in_flight=in_flight.count, grace_s=settings.shutdown_grace)
        app[SHUTTING_DOWN].set()
        await site.stop()
        # aiohttp's own shutdown marks connections closing and from then on drops request bytes
        # still arriving (aio-libs/aiohttp#2298), so a streaming upload could never finish inside
        # its grace period. Drain here first, while bodies still flow.
        if await in_flight.wait_idle(settings.shutdown_grace, force):
            log.info("drained")
        else:
            log.warning("grace_expired", in_flight=in_flight.count)
    finally:
        # Closes connections, cancels what is left, then on_shutdown and the cleanup contexts.
        await runner.cleanup()
        log.info("stopped")
        # Last of all, so the shutdown's own lines reach CloudWatch too.
        if logs is not None:
            await logs.close()


def serve(app: web.Application, settings: CommonSettings, logs: LogShipping | None = None) -> None:
    """Run the app until SIGTERM/SIGINT, then shut down gracefully.

    On the signal: stop listening, refuse new requests on kept-alive connections (503
    ``shutting_down``), let in-flight requests finish for up to ``shutdown_grace`` seconds, then
    cancel what is left and run the cleanup contexts (flush, close clients). Exits 1 with a clear
    message when the port is taken.
    """
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop_factory = asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(app, settings, logs))
    except PortInUse:
        log.error("port_in_use", port=settings.port)
        print(
            f"{settings.service}: port {settings.port} on {settings.host} is already in use; "
            "stop the other process or set PORT to a free port",
            file=sys.stderr,
        )
        sys.exit(1)
