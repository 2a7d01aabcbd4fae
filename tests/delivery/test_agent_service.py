"""qmgr's channel to a privileged agent process (oxipost.delivery.service, catalogue 50):
many requests in flight on one connection, a reload that leaves some unread, an agent that
dies with requests unanswered."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from oxipost.delivery import service
from oxipost.envelope import Outcome
from oxipost.log import get_logger

from .conftest import make_config, request

USERS = 12


@pytest.fixture
def setup(tmp_path: Path, shared_tmp: Path):
    # Outside pytest's 0700 tree: the mailboxes are written as nobody.
    base = shared_tmp
    base.chmod(0o1777)
    table = "".join(f"user{i}@example.com example.com/user{i}/\n" for i in range(USERS))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "vmailbox").write_text(table)
    cfg = make_config(
        tmp_path / "c",
        main=f"virtual_mailbox_base = {base}\n"
        f"virtual_mailbox_maps = texthash:{tmp_path}/c/vmailbox\n"
        "virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n"
        f"maillog_file = {tmp_path}/maillog\n",
    )
    path = str(tmp_path / "virtual.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    with listener:
        yield cfg, base, path, listener


def _delivered(base: Path) -> dict[str, int]:
    return {
        f"user{i}": len(os.listdir(base / f"example.com/user{i}/new"))
        for i in range(USERS)
        if (base / f"example.com/user{i}/new").is_dir()
    }


def test_requests_share_a_connection_and_survive_a_reload(setup):
    cfg, base, path, listener = setup
    log = get_logger("virtual", cfg)
    reqs = [request(cfg, "virtual", "example.com", [f"user{i}@example.com"]) for i in range(USERS)]

    async def scenario() -> list[list[Outcome]]:
        # Each agent gets its own copy of the listening socket, as master's children do:
        # the one reloaded closes its copy, and the next is accepting on the same path.
        stop, drain = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(service.serve(cfg, log, listener.dup(), stop, drain))
        await asyncio.sleep(0.05)
        half = USERS // 2
        outcomes = list(await asyncio.gather(*(service.request(path, r) for r in reqs[:half])))
        # postfix reload, with more requests already on their way to the old agent: those
        # it read are delivered there, the others are sent again to its successor.
        drain.set()
        rest = asyncio.gather(*(service.request(path, r) for r in reqs[half:]))
        await first
        stop2, drain2 = asyncio.Event(), asyncio.Event()
        second = asyncio.ensure_future(service.serve(cfg, log, listener.dup(), stop2, drain2))
        outcomes += await rest
        stop2.set()
        await second
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes == [[Outcome("2.0.0", "delivered to maildir")]] * USERS
    assert _delivered(base) == {f"user{i}": 1 for i in range(USERS)}


AGENT = """
import asyncio, socket, sys
from oxipost import delivery
from oxipost.config import load_config
from oxipost.delivery import service
from oxipost.log import get_logger
cfg = load_config(sys.argv[1])
sock = socket.socket(socket.AF_UNIX, fileno=int(sys.argv[2]))
async def main():
    await service.serve(cfg, get_logger("virtual", cfg), sock, asyncio.Event(), asyncio.Event())
asyncio.run(main())
"""


def test_agent_that_dies_defers_what_it_did_not_answer(setup):
    cfg, base, path, listener = setup
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, cfg.config_dir, str(listener.fileno())],
        pass_fds=[listener.fileno()],
    )
    try:

        async def scenario() -> tuple[list[Outcome], list[Outcome]]:
            first = await service.request(
                path, request(cfg, "virtual", "example.com", ["user0@example.com"])
            )
            # Stopped, it reads nothing more; killed, it never answers.
            agent.send_signal(signal.SIGSTOP)
            pending = asyncio.ensure_future(
                service.request(path, request(cfg, "virtual", "example.com", ["user1@example.com"]))
            )
            await asyncio.sleep(0.2)
            assert not pending.done()
            agent.kill()
            return first, await asyncio.wait_for(pending, 10)

        first, lost = asyncio.run(scenario())
    finally:
        agent.kill()
        agent.wait()
    assert first == [Outcome("2.0.0", "delivered to maildir")]
    assert lost == [Outcome("4.3.0", "unknown mail transport error")]
    assert _delivered(base) == {"user0": 1}


def test_malformed_request_is_an_agent_error_and_logged(setup):
    cfg, _base, path, listener = setup
    log = get_logger("virtual", cfg)
    good = request(cfg, "virtual", "example.com", ["user2@example.com"])

    async def scenario() -> tuple[list[object], list[Outcome]]:
        stop, drain = asyncio.Event(), asyncio.Event()
        agent = asyncio.ensure_future(service.serve(cfg, log, listener.dup(), stop, drain))
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(service.msgpack.packb([1, {"id": "X"}]))
        unpacker = service.msgpack.Unpacker(raw=False)
        answer: list[object] = []
        while len(answer) < 2:
            unpacker.feed(await reader.read(4096))
            answer += unpacker
        writer.close()
        outcome = await service.request(path, good)
        stop.set()
        await agent
        return answer, outcome

    answer, outcome = asyncio.run(scenario())
    # The agent's pid first, then no outcomes: qmgr defers "4.3.0 delivery agent error".
    assert answer == [[0, os.getpid()], [1, []]]
    assert outcome == [Outcome("2.0.0", "delivered to maildir")]
    deadline = time.time() + 5
    maillog = Path(cfg.config_dir).parent / "maillog"
    while "malformed delivery request: KeyError" not in maillog.read_text():
        assert time.time() < deadline
        time.sleep(0.05)


def test_idle_agent_ends_and_the_next_takes_over(setup):
    """max_idle: an agent with no request in flight for that long ends (with the goodbye,
    as on a reload); one whose delivery outlasts max_idle is not cut; qmgr's next request
    goes to the agent started next, on a new connection."""
    cfg, base, path, listener = setup
    main_cf = (Path(cfg.config_dir) / "main.cf").read_text()
    cfg = make_config(
        Path(cfg.config_dir),
        main=main_cf,
        master_extra="slow unix - n n - - pipe user=nobody argv=/bin/sleep 1\n",
    )
    log = get_logger("virtual", cfg)
    slow = request(cfg, "slow", "slow", ["u@example.com"])
    virtual = request(cfg, "virtual", "example.com", ["user0@example.com"])

    async def scenario() -> tuple[list[Outcome], float, list[Outcome]]:
        stop = asyncio.Event()
        first = asyncio.ensure_future(
            service.serve(cfg, log, listener.dup(), stop, asyncio.Event(), 0.3)
        )
        outcome = await service.request(path, slow)
        assert not first.done()  # a delivery in flight is not idleness
        answered = time.monotonic()
        await asyncio.wait_for(first, 5)
        ended = time.monotonic() - answered
        second = asyncio.ensure_future(
            service.serve(cfg, log, listener.dup(), stop, asyncio.Event(), 0.3)
        )
        after = await service.request(path, virtual)
        stop.set()
        await second
        return outcome, ended, after

    outcome, ended, after = asyncio.run(scenario())
    assert outcome == [Outcome("2.0.0", "delivered via slow service")]
    assert 0.3 <= ended < 3
    assert after == [Outcome("2.0.0", "delivered to maildir")]
    assert _delivered(base) == {"user0": 1}


def test_connection_dropped_before_the_agent_spoke_is_tried_again(setup):
    """An agent that ends as it accepts qmgr's connection closes it before its first word
    (which it sends before reading): the request was never read, and goes again on a new
    connection instead of being deferred."""
    cfg, base, path, listener = setup
    log = get_logger("virtual", cfg)

    async def scenario() -> list[Outcome]:
        loop = asyncio.get_running_loop()
        sock = listener.dup()
        sock.setblocking(False)
        pending = asyncio.ensure_future(
            service.request(path, request(cfg, "virtual", "example.com", ["user3@example.com"]))
        )
        conn, _ = await loop.sock_accept(sock)
        conn.close()
        stop = asyncio.Event()
        agent = asyncio.ensure_future(service.serve(cfg, log, sock, stop, asyncio.Event()))
        outcome = await asyncio.wait_for(pending, 10)
        stop.set()
        await agent
        return outcome

    assert asyncio.run(scenario()) == [Outcome("2.0.0", "delivered to maildir")]
    assert _delivered(base) == {"user3": 1}
