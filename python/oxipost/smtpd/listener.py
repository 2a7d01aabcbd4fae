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

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _SessionProtocol(asyncio.StreamReaderProtocol):
    """A session counts from its connection (after the TLS handshake in wrapper mode: a
    failed handshake never made one) until its handler returns."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(asyncio.StreamReader(limit=listener.limit), listener._serve)
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._listener._opened()
        super().connection_made(transport)


class Listener:
    """Serves `handler(reader, writer)` for each connection accepted on `sock`."""

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
                lambda: _SessionProtocol(self), sock=sock, ssl=self.ssl_context
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handler(reader, writer)
        except asyncio.CancelledError:
            # Ended by shutdown (SmtpdServer.close, the loop's end): this ends as a task that
            # returned, since 3.11's streams ask a cancelled client_connected_cb task for its
            # exception and log "Exception in callback ..." with the CancelledError.
            writer.close()
        finally:
            self.active -= 1
            if not self._full():
                with contextlib.suppress(RuntimeError):  # the loop is shutting down
                    self._resume()
