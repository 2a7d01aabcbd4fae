"""sendmail -bs: one SMTP session on stdin and stdout, with oxipost's smtpd in stand-alone
mode, as Postfix's sendmail runs its smtpd for it. A module of its own so that sendmail's
other modes, a process per message for many callers, never import asyncio and smtpd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
import typing

from oxipost.config import Config
from oxipost.smtpd.listener import Connection


class SmtpdRefused(Exception):
    """smtpd refuses its configuration; the text is what sendmail says, as Postfix's."""


def run(cfg: Config) -> int:
    """The session, to its end; the exit status. SmtpdRefused as above."""
    return asyncio.run(_smtp_on_stdio(cfg))


class _StdioConnection(Connection):
    """stdin and stdout as the connection of a client on the local host, as Postfix's
    smtpd in stand-alone mode takes a non-socket client to be localhost[127.0.0.1]."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 0) if name == "peername" else default

    def connection_lost(self, exc: Exception | None) -> None:
        # stdin's end: the client said all it will; replies still go to stdout.
        self.input_lost(exc)


class _Stdout(asyncio.Protocol):
    """stdout's side of a _StdioConnection: its flow control and its end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = conn.loop.create_future()

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.output_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


def _pipe_end(fd: int, mode: str) -> typing.IO[bytes]:
    """fd itself when asyncio can watch it (pipe, socket, tty); else a pipe that a thread
    copies to or from it (a regular file given as stdin or stdout)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return os.fdopen(os.dup(fd), mode + "b", buffering=0)
    rfd, wfd = os.pipe()

    def copy(src: int, dst: int) -> None:
        try:
            while chunk := os.read(src, 65536):
                os.write(dst, chunk)
        finally:
            os.close(src if src not in (fd,) else dst)

    if mode == "r":
        threading.Thread(target=copy, args=(fd, wfd), daemon=True).start()
        return os.fdopen(rfd, "rb", buffering=0)
    threading.Thread(target=copy, args=(rfd, fd), daemon=True).start()
    return os.fdopen(wfd, "wb", buffering=0)


async def _smtp_on_stdio(cfg: Config) -> int:
    """sendmail -bs: one SMTP session on stdin/stdout with oxipost's smtpd, straight into
    the queue (Postfix runs smtpd in stand-alone mode for this)."""
    from oxipost.qmgr.queue import Queue
    from oxipost.smtpd.server import Session
    from oxipost.smtpd.service import build_server

    # A local user piping a whole dialogue is not a smuggling client: no sync check.
    cfg = Config(
        cfg.config_dir,
        cfg.settings,
        cfg.services,
        {**cfg.overrides, "smtpd_forbid_unauth_pipelining": "no"},
    )
    loop = asyncio.get_running_loop()
    conn = _StdioConnection()
    await loop.connect_read_pipe(lambda: conn, _pipe_end(sys.stdin.fileno(), "r"))
    stdout = _Stdout(conn)
    conn.out, _ = await loop.connect_write_pipe(lambda: stdout, _pipe_end(sys.stdout.fileno(), "w"))
    queue = Queue.open(cfg, writer=f"sendmail-{os.getpid()}")
    try:
        try:
            server = build_server(cfg, queue)
        except Exception as e:  # smtpd refuses its configuration: say so, as Postfix's would
            raise SmtpdRefused(str(e)) from None
        server.anvil = None  # a stand-alone session is never counted, as Postfix's
        await Session(server, conn).run()
        # The session closed stdout: its last replies are out when the pipe says so.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdout.closed, 30)
    finally:
        queue.close()
    return 0
