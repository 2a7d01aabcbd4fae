"""anvil_clnt - what an smtpd process asks the anvil(8) server

One connection per smtpd process to $queue_directory/private/anvil, shared by all its
sessions: requests are written as they come and the replies, which anvil sends in order,
are matched to them in order. The connection is opened at the first request and opened
again after it broke (a new anvil after postfix reload starts from nothing, as Postfix's).
Identities are Postfix's: "SERVICE:ADDR" with SERVICE the master.cf service name.

Diagnostics, as Postfix's attr_clnt: a request is tried twice, a second apart; each
connection that fails is "warning: connect to private/anvil: REASON", and a request that
fails twice (or once with an error other than the socket missing, refused or reset) is
"warning: problem talking to server private/anvil: REASON". The caller then has no answer
(None) and goes on without the limit, as Postfix's smtpd does.

The plain attribute protocol (read_attrs, attr_bytes) is shared with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections import deque
from typing import Any

# What Postfix's attr_clnt calls its server in its warnings.
NAME = "private/anvil"
STAT_OK = 0
STAT_FAIL = -1
# Errors attr_clnt retries without a word: the server went away or is not there yet.
_QUIET = (0, errno.EPIPE, errno.ENOENT, errno.ECONNRESET)
RETRY_DELAY = 1.0


def socket_path(cfg: Any) -> str:
    return os.path.join(cfg.path("queue_directory"), "private", "anvil")


async def read_attrs(reader: asyncio.StreamReader) -> dict[str, str] | None:
    """One block of name=value lines up to its empty line; None at the end of the stream.
    A line without "=" or a stream that ends inside a block raises ValueError."""
    attrs: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            if attrs:
                raise ValueError("premature end of input")
            return None
        text = line.rstrip(b"\n").decode("utf-8", "surrogateescape")
        if not text:
            return attrs
        name, eq, value = text.partition("=")
        if not eq:
            raise ValueError(f"missing '=' after attribute name: {text[:100]}")
        attrs[name] = value


def attr_bytes(attrs: dict[str, object]) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode("utf-8", "surrogateescape") + (
        b"\n"
    )


class AnvilClient:
    """The anvil requests of one smtpd process (Postfix's anvil_clnt)."""

    def __init__(self, cfg: Any, log: Any) -> None:
        self.path = socket_path(cfg)
        self.service = cfg.get("service_name")
        self.timeout = cfg.get_time("ipc_timeout")
        self.log = log
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[asyncio.StreamWriter] | None = None
        # One future per request written and not answered yet, oldest first.
        self._pending: deque[asyncio.Future[dict[str, str]]] = deque()
        self.closed = False

    async def connect(self, addr: str) -> tuple[int, int] | None:
        """Register a connection from addr: (simultaneous connections, connection rate)."""
        reply = await self._request("connect", addr)
        if reply is None:
            return None
        return _int(reply, "count"), _int(reply, "rate")

    async def rate(self, event: str, addr: str) -> int | None:
        """Register an event ("message", "recipient", "newtls", "auth"), or only ask
        ("newtls_status"): its rate in the current time unit."""
        reply = await self._request(event, addr)
        return None if reply is None else _int(reply, "rate")

    async def disconnect(self, addr: str) -> None:
        await self._request("disconnect", addr)

    async def close(self) -> None:
        """No more requests: those after this have no answer, at once. anvil drops the
        connections this process registered when its connection to anvil closes, so a
        stopping smtpd need not report each (nor wait for an anvil that stops too)."""
        self.closed = True
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._drop(ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET)))

    async def _request(self, request: str, addr: str) -> dict[str, str] | None:
        if self.closed:
            return None
        data = attr_bytes({"request": request, "ident": f"{self.service}:{addr}"})
        for count in (1, 2):
            try:
                reply = await self._exchange(data)
            except OSError as e:
                if count == 2 or (e.errno or 0) not in _QUIET:
                    self.log.warning(f"problem talking to server {NAME}: {_reason(e)}")
                if count == 2:
                    return None
                await asyncio.sleep(RETRY_DELAY)
                continue
            try:
                return reply if int(reply.get("status", "")) == STAT_OK else None
            except ValueError:
                return None
        return None

    async def _exchange(self, data: bytes) -> dict[str, str]:
        writer = await self._open()
        fut: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        writer.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                return await fut
        except TimeoutError:
            # The stream is out of step with its requests now: start again.
            self._drop(TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)))
            raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)) from None

    async def _open(self) -> asyncio.StreamWriter:
        if self._writer is not None:
            return self._writer
        if self._opening is not None:
            # Another session is connecting: share its connection (or its failure).
            return await asyncio.shield(self._opening)
        loop = asyncio.get_running_loop()
        self._opening = opening = loop.create_future()
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(self.path)
        except (OSError, TimeoutError) as e:
            err = e if isinstance(e, OSError) and e.errno else OSError(errno.ETIMEDOUT, "timeout")
            self.log.warning(f"connect to {NAME}: {_reason(err)}")
            opening.set_exception(err)
            opening.exception()  # retrieved: no session may be waiting on it
            raise err from None
        finally:
            self._opening = None
        self._writer = writer
        self._reader_task = loop.create_task(self._read(reader, writer))
        opening.set_result(writer)
        return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reason: OSError = ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))
        try:
            while True:
                attrs = await read_attrs(reader)
                if attrs is None or not self._pending:
                    break
                fut = self._pending.popleft()
                if not fut.done():  # its session may have gone meanwhile
                    fut.set_result(attrs)
        except OSError as e:
            reason = e
        except ValueError:
            pass
        finally:
            if self._writer is writer:
                self._drop(reason)

    def _drop(self, reason: OSError) -> None:
        """Forget the connection; every request waiting on it fails with reason."""
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if writer is not None:
            writer.close()
        pending, self._pending = self._pending, deque()
        for fut in pending:
            if not fut.done():
                fut.set_exception(reason)


def _int(reply: dict[str, str], name: str) -> int:
    try:
        return int(reply.get(name, "0"))
    except ValueError:
        return 0


def _reason(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or 0) if e.errno else str(e) or "Success"
