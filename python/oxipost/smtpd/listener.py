"""smtpd listener - accepts connections on the socket every smtpd worker shares, no more at
a time than the worker's share of master.cf maxproc.

Postfix's master stops accepting when a service has maxproc processes busy: a client beyond
that waits in the kernel's listen queue until a process frees up (or another one takes it).
A worker here does the same: at its session cap it stops listening, so the next connection
stays queued for a sibling worker or for the next free session. It never accepts a
connection only to close it (a client then sees "lost connection while reading server
greeting", and smtp-source gives up).

Accepting is the event loop's own server (uvloop's accepts in C: a Python accept loop cost
~30 µs more CPU per connection). Its server cannot pause, so a pause closes it and a resume
starts another on a fresh duplicate of the listening socket; the socket itself, and the
connections queued on it, live on.

Diagnostics: none of its own; the loop reports failed accepts (EMFILE and such) and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

Handler = Callable[["Connection"], Awaitable[None]]


class Connection(asyncio.Protocol):
    """One client's connection, as the session reads and writes it. What arrives is
    appended to `buf`, which the session consumes in place; `more()` waits for the next
    bytes. A session is counted from its connection (after the TLS handshake in wrapper
    mode: a failed handshake never made one) until its handler returns.

    DESIGN: asyncio's streams cost about 130,000 instructions a message more than this
    (the bench's message is 7 replies and 8 reads): StreamReader's own buffer copied into
    the session's, a future and a wake-up per read, StreamWriter's checks per write."""

    def __init__(self, listener: Listener | None = None) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        # Where replies go: the connection itself, or another transport (sendmail -bs
        # reads stdin and writes stdout).
        self.out: asyncio.WriteTransport | None = None
        # Kept: Python 3.11's get_running_loop() makes a getpid() system call each time,
        # and a session asked for it for every read (~20 calls a message in all).
        self.loop = asyncio.get_running_loop()
        # The task that serves this connection (the session's own).
        self.task: asyncio.Task[None] | None = None
        self._listener = listener
        self._limit = 2 * (listener.limit if listener is not None else 65536)
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._closed = False
        self._error: Exception | None = None
        self._reading_paused = False
        self._writing_paused = False

    # From the transport ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are asyncio.Transport in all but their class.
        self.transport = cast(asyncio.Transport, transport)
        if self._listener is None:
            return  # the caller serves it
        self.out = self.transport
        self._listener._opened()
        self.task = self.loop.create_task(self._listener._serve(self))
        self.task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        # A handler that failed is reported and leaves no connection behind, as asyncio's
        # streams do it.
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.loop.call_exception_handler(
                {"message": "Unhandled exception in an smtpd session", "exception": exc}
            )
            if self.transport is not None:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        # Flow control: a client that sends faster than the session consumes is paused
        # (as StreamReader at twice its limit) until the session wants more.
        if len(self.buf) > self._limit and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the write side of a half-closed plain connection for the last replies (an
        # SSL transport cannot keep it, and says so if asked).
        return self.transport is not None and self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.input_lost(exc)
        self.output_lost(exc)

    def input_lost(self, exc: Exception | None) -> None:
        """Nothing more will arrive (and what ended it, if something did)."""
        self._eof = True
        self._error = exc
        self._wake()

    def output_lost(self, exc: Exception | None) -> None:
        """Nothing more can be sent."""
        self._closed = True
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionResetError("Connection lost"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # For the session -------------------------------------------------------------------

    async def more(self) -> bool:
        """Wait for bytes after those in `buf`: False at the end of the stream; the error
        that ended the connection, if one did (with what was left unread dropped)."""
        if self._error is not None:
            raise self._error
        if self._eof:
            return False
        if self._reading_paused:
            self._reading_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        size = len(self.buf)
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error
        return len(self.buf) > size or not self._eof

    def write(self, data: bytes) -> None:
        assert self.out is not None
        self.out.write(data)

    async def drain(self) -> None:
        """Wait while the transport's buffer is over its high-water mark."""
        if self._closed:
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        self._drain_waiter = self.loop.create_future()
        await self._drain_waiter

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.transport.get_extra_info(name, default) if self.transport else default

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """The server's side of a TLS handshake on this connection. Whatever the client
        sent in plaintext before it is dropped here, in the step that hands the transport
        to TLS (CVE-2011-0411): nothing can arrive in between."""
        assert self.transport is not None
        self.buf.clear()
        tls = await self.loop.start_tls(self.transport, self, context, server_side=True)
        if tls is None:
            raise ConnectionResetError("Connection lost")
        self.transport = self.out = tls

    def close(self) -> None:
        for transport in (self.transport, self.out):
            if transport is not None:
                transport.close()


class Listener:
    """Serves `handler(connection)` for each connection accepted on `sock`."""

    def __init__(
        self,
        sock: socket.socket,
        handler: Handler,
        max_sessions: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        limit: int = 65536,
    ) -> None:
        self.sock = sock
        self.handler = handler
        self.max_sessions = max_sessions
        self.ssl_context = ssl_context
        self.limit = limit
        self.active = 0
        self._server: asyncio.AbstractServer | None = None
        self._starting: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self.sock.setblocking(False)
        self._resume()

    def close(self) -> None:
        """Stop accepting (sessions in progress go on) and close this process's socket."""
        self._closed = True
        if self._starting is not None:
            self._starting.cancel()
            self._starting = None
        self._pause()
        self.sock.close()

    def _full(self) -> bool:
        return bool(self.max_sessions) and self.active >= self.max_sessions

    def _resume(self) -> None:
        if self._closed or self._server is not None or self._starting is not None:
            return
        self._starting = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        # The server closes the socket it was given when it closes: give it a duplicate.
        sock = self.sock.dup()
        try:
            server = await loop.create_server(
                lambda: Connection(self), sock=sock, ssl=self.ssl_context
            )
        except BaseException:
            sock.close()
            raise
        finally:
            self._starting = None
        self._server = server
        if self._closed or self._full():
            self._pause()  # closed, or filled up by the previous server's last accepts

    def _pause(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _opened(self) -> None:
        self.active += 1
        if self._full():
            self._pause()

    async def _serve(self, conn: Connection) -> None:
        try:
            await self.handler(conn)
        except asyncio.CancelledError:
            # Ended by shutdown (SmtpdServer.close, the loop's end): this ends as a task that
            # returned, with nothing for the loop's exception handler.
            conn.close()
        finally:
            self.active -= 1
            if not self._full():
                with contextlib.suppress(RuntimeError):  # the loop is shutting down
                    self._resume()
