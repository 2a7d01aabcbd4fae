"""smtpd's listener at its session cap (its share of master.cf maxproc): a client beyond the
cap waits in the listen queue and is served when a session ends, as under Postfix's
master; it is never accepted only to be disconnected before the greeting."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import uvloop
from oxipost.config import Config, load_config
from oxipost.smtpd.listener import Connection, Listener
from oxipost.smtpd.server import SmtpdServer
from oxipost.smtpd.service import build_server

from .conftest import ListLog, RecordingQueue, write_config


async def _line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 30)


async def _serving(cfg: Config, lines: list[str]) -> tuple[SmtpdServer, Listener, Any]:
    """Our smtpd on the running loop, listening on a free 127.0.0.1 port (its address)."""
    server = build_server(cfg, RecordingQueue(), ListLog(lines))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return server, await server.serve(sock), sock.getsockname()


# Services run on uvloop (oxipost.runloop), whose server accepts a burst in C before Python
# sees a connection; asyncio's own loop accepts differently: both must hold the cap.
@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_client_beyond_the_cap_waits_for_a_free_session(tmp_path, loop_factory):
    cfg = load_config(write_config(str(tmp_path), "")).for_service("smtp")
    lines: list[str] = []

    async def scenario() -> None:
        server = build_server(cfg, RecordingQueue(), ListLog(lines))
        server.max_sessions = 2
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        listener = await server.serve(sock)
        try:
            first = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            for reader, _ in first:
                assert (await _line(reader)).startswith(b"220 ")
            # The kernel completes the third handshake; smtpd does not accept it yet.
            waiting_r, waiting_w = await asyncio.open_connection("127.0.0.1", port)
            greeting = asyncio.ensure_future(_line(waiting_r))
            await asyncio.sleep(0.5)
            assert not greeting.done(), greeting.result()
            reader, writer = first[0]
            writer.write(b"QUIT\r\n")
            assert (await _line(reader)).startswith(b"221 ")
            writer.close()
            # A session ended: the waiting client is accepted and greeted, not dropped.
            assert (await greeting).startswith(b"220 ")
            waiting_w.write(b"QUIT\r\n")
            assert (await _line(waiting_r)).startswith(b"221 ")
            waiting_w.close()
            first[1][1].close()
        finally:
            listener.close()
            await server.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
    assert lines.count("connect from unknown[127.0.0.1]") == 3
    assert not any("lost connection after CONNECT" in line for line in lines), lines


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_sessions_cancelled_at_shutdown_end_quietly(tmp_path, loop_factory):
    """A session still open when smtpd stops is cancelled and its connection closed, with
    nothing for the loop's exception handler (3.11's streams logged "Exception in callback
    StreamReaderProtocol.connection_made.<locals>.callback" for each cancelled session)."""
    cfg = load_config(write_config(str(tmp_path), "")).for_service("smtp")
    lines: list[str] = []
    errors: list[dict[str, object]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        server, listener, address = await _serving(cfg, lines)
        reader, writer = await asyncio.open_connection(*address)
        assert (await _line(reader)).startswith(b"220 ")
        listener.close()
        await server.close()
        # The client sees the connection end; the streams' done-callbacks have run.
        assert await _line(reader) == b""
        writer.close()
        await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
    assert errors == []
    assert any(line.startswith("disconnect from unknown[127.0.0.1]") for line in lines), lines


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_session_that_fails_is_reported_and_its_connection_closed(loop_factory):
    """A bug in a session (an exception its handler did not expect) is not swallowed: the
    loop's exception handler hears of it, and the client sees its connection close."""
    errors: list[dict[str, object]] = []

    async def failing(conn: Connection) -> None:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        listener = Listener(sock, failing)
        listener.start()
        try:
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            assert await _line(reader) == b""
            writer.close()
        finally:
            listener.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
    assert [str(ctx.get("exception")) for ctx in errors] == ["a bug"], errors


def test_stopping_smtpd_reports_no_session_to_anvil(tmp_path) -> None:
    """The sessions a stopping smtpd cuts short are not reported one by one (anvil drops a
    process's connections when its connection goes): no request, so no warning and no
    second's wait when anvil stops at the same time, as under postfix stop."""
    cfg = load_config(write_config(str(tmp_path), "mynetworks =\n")).for_service("smtp")
    lines: list[str] = []

    async def scenario() -> float:
        server, listener, address = await _serving(cfg, lines)
        reader, writer = await asyncio.open_connection(*address)
        assert (await _line(reader)).startswith(b"220 ")  # after the failed connect
        listener.close()
        started = time.monotonic()
        await server.close()
        writer.close()
        return time.monotonic() - started

    took = asyncio.run(scenario())
    missing = "warning: connect to private/anvil: No such file or directory"
    assert lines.count(missing) == 2, lines  # the connect request's two tries only
    assert took < 1.0
    assert lines[-1] == "disconnect from unknown[127.0.0.1] commands=0/0"
