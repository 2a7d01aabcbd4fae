"""in_flow_delay (oxipost.flow): qmgr's token production as Postfix's qmgr_loop does it,
smtpd taking one token per message (waiting at most in_flow_delay), and the pipe master
hands to every service, all on real pipes, real sessions and real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from oxipost.config import Config, load_config
from oxipost.flow import FlowGate, FlowPipe, FlowProducer
from oxipost.smtpd.service import build_server

from tests.conftest import REPO, run_ours
from tests.smtpd.conftest import ListLog, RecordingQueue, write_config


@pytest.fixture
def pipe() -> Iterator[FlowPipe]:
    p = FlowPipe.create()
    yield p
    p.close()


def config(tmp_path: Path, main: str) -> Config:
    (tmp_path / "main.cf").write_text(main)
    (tmp_path / "master.cf").write_text("")
    return load_config(str(tmp_path))


def test_pipe_tokens(pipe):
    assert pipe.count() == 0
    assert pipe.get(1) == 0
    assert pipe.put(5) == 5
    assert pipe.count() == 5
    assert pipe.get(2) == 2
    assert pipe.count() == 3
    assert FlowPipe.from_arg(pipe.arg).fds == pipe.fds


def test_producer_tops_up_to_the_process_limit_when_no_incoming_mail_waits(tmp_path, pipe):
    producer = FlowProducer(pipe, config(tmp_path, "default_process_limit = 5\n"))
    producer.refill(0, incoming_waiting=False)
    assert pipe.count() == 5
    producer.refill(3, incoming_waiting=False)
    assert pipe.count() == 5
    # Never more than the limit piles up: the surplus is taken back.
    pipe.put(4)
    producer.refill(0, incoming_waiting=False)
    assert pipe.count() == 5


def test_producer_gives_a_token_per_message_fed_while_the_active_queue_is_full(tmp_path, pipe):
    producer = FlowProducer(pipe, config(tmp_path, "default_process_limit = 5\n"))
    producer.refill(0, incoming_waiting=True)
    assert pipe.count() == 0
    producer.refill(2, incoming_waiting=True)
    assert pipe.count() == 2
    producer.refill(10, incoming_waiting=True)
    assert pipe.count() == 5


def test_in_flow_delay_zero_turns_it_off(tmp_path, pipe):
    cfg = config(tmp_path, "in_flow_delay = 0\n")
    FlowProducer(pipe, cfg).refill(0, incoming_waiting=False)
    assert pipe.count() == 0

    async def take() -> None:
        await asyncio.wait_for(FlowGate(pipe, cfg).take(), 30)

    asyncio.run(take())
    pipe.put(1)
    asyncio.run(take())
    assert pipe.count() == 1


def test_gate_takes_a_token_and_waits_for_the_next(tmp_path, pipe):
    gate = FlowGate(pipe, config(tmp_path, "in_flow_delay = 60s\n"))

    async def scenario() -> None:
        pipe.put(1)
        await asyncio.wait_for(gate.take(), 30)
        assert pipe.count() == 0
        first = asyncio.ensure_future(gate.take())
        second = asyncio.ensure_future(gate.take())
        await asyncio.sleep(0.3)
        assert not first.done() and not second.done()
        pipe.put(1)
        await asyncio.wait_for(first, 30)
        assert not second.done()
        pipe.put(1)
        await asyncio.wait_for(second, 30)
        assert pipe.count() == 0

    asyncio.run(scenario())


def test_gate_goes_on_without_a_token_after_in_flow_delay(tmp_path, pipe):
    gate = FlowGate(pipe, config(tmp_path, "in_flow_delay = 1s\n"))

    async def scenario() -> float:
        began = time.monotonic()
        await asyncio.wait_for(gate.take(), 30)
        return time.monotonic() - began

    assert asyncio.run(scenario()) >= 1.0
    # A token put later is left for the next message.
    pipe.put(1)
    asyncio.run(scenario())
    assert pipe.count() == 0


async def _reply(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 30)


@contextlib.asynccontextmanager
async def _session(
    cfg: Config, queue: RecordingQueue, pipe: FlowPipe
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A session with our smtpd taking its tokens from pipe, past the greeting."""
    server = build_server(cfg, queue, ListLog([]))
    server.flow = FlowGate(pipe, cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    listener = await server.serve(sock)
    try:
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        assert (await _reply(reader)).startswith(b"220 ")
        yield reader, writer
        writer.close()
    finally:
        listener.close()
        for task in list(server.sessions):
            task.cancel()
        await asyncio.gather(*server.sessions, return_exceptions=True)


@pytest.mark.parametrize("delay_open", ["yes", "no"])
def test_smtpd_takes_one_token_per_message(tmp_path, pipe, delay_open):
    """Where Postfix's cleanup takes its token: at the first accepted RCPT (MAIL when
    smtpd_delay_open_until_valid_rcpt = no); the reply waits for it, later RCPTs do not."""
    main = f"in_flow_delay = 60s\nsmtpd_delay_open_until_valid_rcpt = {delay_open}\n"
    cfg = load_config(write_config(str(tmp_path), main)).for_service("smtp")
    queue = RecordingQueue()

    async def scenario() -> None:
        async with _session(cfg, queue, pipe) as (reader, writer):
            writer.write(b"HELO client.example\r\n")
            assert (await _reply(reader)).startswith(b"250 ")
            for n in range(2):
                writer.write(b"MAIL FROM:<a@example.test>\r\n")
                gated = b"MAIL" if delay_open == "no" else b"RCPT"
                if gated == b"RCPT":
                    assert (await _reply(reader)).startswith(b"250 ")
                    writer.write(b"RCPT TO:<u@localhost>\r\n")
                waiting = asyncio.ensure_future(_reply(reader))
                await asyncio.sleep(0.3)
                assert not waiting.done(), (n, waiting.result())
                pipe.put(1)
                assert (await waiting).startswith(b"250 ")
                if gated == b"MAIL":
                    writer.write(b"RCPT TO:<u@localhost>\r\n")
                    assert (await _reply(reader)).startswith(b"250 ")
                writer.write(b"RCPT TO:<v@localhost>\r\n")
                assert (await _reply(reader)).startswith(b"250 ")
                writer.write(b"DATA\r\n")
                assert (await _reply(reader)).startswith(b"354 ")
                writer.write(b"Subject: t\r\n\r\nhello\r\n.\r\n")
                assert (await _reply(reader)).startswith(b"250 ")
            writer.write(b"QUIT\r\n")
            assert (await _reply(reader)).startswith(b"221 ")

    asyncio.run(scenario())
    assert len(queue.messages) == 2
    assert pipe.count() == 0


def _qmgr_flow_count(conf: Path) -> int | None:
    """Tokens in the pipe master's qmgr child inherited (through /proc), None before it
    runs."""
    status = run_ours("postfix", "-c", str(conf), "status", terminal=True)
    if status.returncode != 0:
        return None
    master = status.stderr.strip().rsplit(" ", 1)[1]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] != master or "qmgr/unix" not in argv:
            continue
        r, _w = FlowPipe.from_arg(argv[argv.index("--flow-fds") + 1]).fds
        fd = os.open(f"/proc/{entry}/fd/{r}", os.O_RDONLY | os.O_NONBLOCK)
        try:
            return FlowPipe(fd, -1).count()
        finally:
            os.close(fd)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("delay", ["1s", "0"])
def test_qmgr_under_master_fills_the_pipe_every_service_inherits(shared_tmp, delay):
    # Not tmp_path (mode 700): qmgr drops to mail_owner.
    d = shared_tmp
    conf = d / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"queue_directory = {d}/spool\ndata_directory = {d}/lib\nmaillog_file = {d}/maillog\n"
        f"maillog_file_prefixes = {d}\ndefault_process_limit = 7\nin_flow_delay = {delay}\n"
    )
    master_cf = (REPO / "conf" / "master.cf").read_text()
    (conf / "master.cf").write_text(
        "".join(line for line in master_cf.splitlines(True) if line.startswith(("qmgr", "#")))
    )
    started = run_ours("postfix", "-c", str(conf), "start")
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 30
        if delay == "0":
            # qmgr has answered a flush request: it has run its loop, and put no token.
            while run_ours("postqueue", "-c", str(conf), "-f").returncode != 0:
                assert time.monotonic() < deadline, "qmgr never answered"
                time.sleep(0.1)
            assert _qmgr_flow_count(conf) == 0
        else:
            while (count := _qmgr_flow_count(conf)) != 7:
                assert time.monotonic() < deadline, f"{count} tokens in the pipe"
                time.sleep(0.1)
    finally:
        run_ours("postfix", "-c", str(conf), "stop")


def test_pickup_takes_a_token_per_message_and_gives_back_a_held_ones(tmp_path, pipe):
    """Postfix's cleanup takes a token for every message, pickup's too, and puts back the
    token of one it sends to the hold queue; without a token it sleeps in_flow_delay."""
    from oxipost.pickup.service import pickup_once
    from oxipost.qmgr.queue import Queue, QueueState

    from tests.cleanup.test_pickup_cleanup import _setup
    from tests.delivery.test_submission import _cmd, _Log, _maildrop

    (tmp_path / "header_checks").write_text("/^Subject: held/ HOLD\n")
    conf = _setup(
        tmp_path, f"in_flow_delay = 1s\nheader_checks = regexp:{tmp_path}/header_checks\n"
    )

    def submit(subject: str) -> None:
        r = _cmd(
            "sendmail",
            conf,
            "-f",
            "joe",
            "bob@example.com",
            stdin=f"Subject: {subject}\n\nx\n".encode(),
        )
        assert r.returncode == 0, r.stderr

    def pickup() -> float:
        cfg = load_config(str(conf))
        queue = Queue.open(cfg, writer="pickup")
        started = time.monotonic()
        try:
            pickup_once(cfg, queue, _Log(), FlowGate(pipe, cfg))
        finally:
            queue.close()
        return time.monotonic() - started

    for subject in ("one", "held", "two"):
        submit(subject)
    pipe.put(3)
    assert pickup() < 1.0
    assert _maildrop(tmp_path) == []
    assert pipe.count() == 1  # three taken, the held message's given back
    state = QueueState(load_config(str(conf)))
    assert sorted("hold" in state.load(q)[0].attrs for q in state.messages) == [False, False, True]
    pipe.get(1)
    submit("three")
    assert pickup() >= 1.0
    assert _maildrop(tmp_path) == []


def test_smtpd_gives_back_the_token_of_held_mail(tmp_path, pipe):
    """A HOLD from an access table: the message goes to the hold queue, not to qmgr, so
    smtpd puts back the token it took at RCPT."""
    main = (
        "in_flow_delay = 60s\n"
        "smtpd_recipient_restrictions = check_recipient_access inline:{h@localhost=HOLD}\n"
    )
    cfg = load_config(write_config(str(tmp_path), main)).for_service("smtp")
    queue = RecordingQueue()

    async def scenario() -> None:
        async with _session(cfg, queue, pipe) as (reader, writer):
            for line, code in (
                (b"HELO client.example", b"250 "),
                (b"MAIL FROM:<a@example.test>", b"250 "),
                (b"RCPT TO:<h@localhost>", b"250 "),
                (b"DATA", b"354 "),
                (b"Subject: t\r\n\r\nhello\r\n.", b"250 "),
                (b"QUIT", b"221 "),
            ):
                writer.write(line + b"\r\n")
                assert (await _reply(reader)).startswith(code), line

    pipe.put(1)
    asyncio.run(scenario())
    ((env, _content),) = queue.messages
    assert "hold" in env.attrs
    assert pipe.count() == 1


def test_qmgr_pays_no_token_for_held_mail(tmp_path):
    """qmgr puts a token back for each message it moves from the incoming queue into the
    active queue while incoming mail waits; held mail it moves to the hold queue is not
    one (its receiver gave the token back)."""
    from oxipost.envelope import Envelope, Recipient
    from oxipost.log import get_logger
    from oxipost.qmgr.queue import Queue, QueueState
    from oxipost.qmgr.service import Qmgr

    from tests.qmgr.test_service import MESSAGE, make_conf

    cfg = make_conf(tmp_path, "default_transport = discard\n")
    q = Queue.open(cfg, writer="test")
    try:
        held = Envelope("a@example.org", [Recipient("x@example.net")], time.time())
        held.attrs["hold"] = "header_checks"
        held_id = q.enqueue_sync(held, MESSAGE)
        plain = q.enqueue_sync(
            Envelope("a@example.org", [Recipient("y@example.net")], time.time()), MESSAGE
        )
    finally:
        q.close()
    state = QueueState(cfg, lock=True)
    try:
        qmgr = Qmgr(cfg, get_logger("qmgr", cfg), state)
        assert qmgr.scan(time.time(), full=True) == 1
        assert state.messages[held_id].state == "hold"
        assert state.messages[plain].state == "active"
    finally:
        state.close()
