"""smtpd listener - accepts connections on the socket every smtpd worker shares, no more at
a time than the worker's share of master.cf maxproc.

Postfix's master stops accepting when a service has maxproc processes busy: a client beyond
that waits in the kernel's listen queue until a process frees up (or another one takes it).
A worker here does the same: at its session cap it stops calling accept(), so the next
connection stays queued for a sibling worker or for the next free session. It never accepts
a connection only to close it (a client then sees "lost connection while reading server
greeting", and smtp-source gives up).

Between accepts the loop yields once, so that workers woken by the same readable socket
share a burst of connections instead of the first one taking them all.

Diagnostics: none; a failed accept (EMFILE and such) is retried after a short pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# After accept() fails for lack of resources (EMFILE, ENFILE, ENOBUFS), wait this long
# before the next try, as asyncio's own server does, instead of spinning on the error.
ACCEPT_RETRY_DELAY = 1.0


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
        self._slot: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # Connections between accept() and their session's start (TLS handshakes).
        self._connecting: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.sock.setblocking(False)
        self._task = asyncio.get_running_loop().create_task(self._accept_loop())

    def close(self) -> None:
        """Stop accepting (sessions in progress go on) and close this process's socket."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.max_sessions and self.active >= self.max_sessions:
                self._slot = loop.create_future()
                await self._slot
            try:
                conn, _addr = await loop.sock_accept(self.sock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError:
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            conn.setblocking(False)
            self.active += 1
            task = loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
            await asyncio.sleep(0)

    async def _connect(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self.limit)
        protocol = asyncio.StreamReaderProtocol(reader, self._serve)
        started = False
        try:
            # The protocol starts _serve in a task of its own once the transport is up
            # (after the TLS handshake in wrapper mode), as asyncio.start_server does.
            await loop.connect_accepted_socket(lambda: protocol, conn, ssl=self.ssl_context)
            started = True
        except OSError:
            pass  # a failed TLS handshake (ssl.SSLError, TimeoutError), a reset
        finally:
            if not started:
                with contextlib.suppress(OSError):
                    conn.close()
                self._release()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handler(reader, writer)
        finally:
            self._release()

    def _release(self) -> None:
        self.active -= 1
        if self._slot is not None and not self._slot.done():
            self._slot.set_result(None)
