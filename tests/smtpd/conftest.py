"""Fixtures: a real smtpd on a free 127.0.0.1 port, run on its own event loop thread.

The queue behind it records what was acknowledged; smtpd is the thing under test here, and
a message counts as queued only once `enqueue` returned (the spool's own tests cover the
spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from oxipost.anvil.service import AnvilServer
from oxipost.config import load_config
from oxipost.envelope import Envelope
from oxipost.maps import allow_surrogates, set_warning_sink
from oxipost.smtpd.sasl import hash_password
from oxipost.smtpd.service import build_server

from tests.conftest import main_cf_with

MASTER_CF = "smtp inet n - n - - smtpd\n"
# For a real Postfix run without qmgr: no qmgr, no in_flow_delay tokens (mail_flow.c), so
# its cleanup would wait in_flow_delay (1s) before taking each message.
NO_FLOW_DELAY = "in_flow_delay = 0s\n"


class RecordingQueue:
    """Accepts messages like the spool's Queue and keeps them for inspection."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []
        self.fail = False
        self.space = True
        self._ids = itertools.count(0x1A2B3C4D5E)

    def new_id(self) -> str:
        return f"{next(self._ids):X}"

    async def enqueue(self, envelope: Envelope, content: bytes, qid: str = "") -> str:
        if self.fail:
            raise OSError("simulated write error")
        await asyncio.sleep(0)
        self.messages.append((envelope, content))
        return qid or self.new_id()

    def free_space_ok(self, size: int) -> bool:
        return self.space


@dataclass
class Running:
    host: str
    port: int
    queue: Any
    config_dir: str
    log: list[str] = field(default_factory=list)


class ListLog:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str) -> None:
        self.lines.append("warning: " + text)

    def error(self, text: str) -> None:
        self.lines.append("error: " + text)

    def for_program(self, _service: str) -> ListLog:
        return self


def write_config(tmp: str, main_cf: str) -> str:
    base = textwrap.dedent(
        """\
        compatibility_level = 3.6
        myhostname = mx.example.test
        mydomain = example.test
        mydestination = localhost, $myhostname
        inet_interfaces = 127.0.0.1
        inet_protocols = ipv4
        mynetworks = 127.0.0.1/32
        smtpd_peername_lookup = no
        local_recipient_maps =
        queue_directory = {tmp}/spool
        """
    ).format(tmp=tmp)
    # A parameter set twice makes every Postfix process warn "overriding earlier entry" as
    # it starts, postlogd too: into its own socket, which with 10 datagrams already queued
    # (max_dgram_qlen) blocks it for good and with it all of that Postfix's logging.
    with open(os.path.join(tmp, "main.cf"), "w") as f:
        f.write(main_cf_with(base, textwrap.dedent(main_cf)))
    with open(os.path.join(tmp, "master.cf"), "w") as f:
        f.write(MASTER_CF)
    return tmp


@contextlib.contextmanager
def running_smtpd(
    tmp: str,
    main_cf: str = "",
    real_queue: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    daemon_tables: bool = False,
) -> Iterator[Running]:
    """Our smtpd on a free 127.0.0.1 port with this main.cf (after write_config's base), on
    an event loop of its own in a thread, until the block ends; an anvil(8) server on the
    same loop counts its clients, on private/anvil as under master. With `daemon_tables`,
    tables warn into its log and one that does not open is a surrogate, as in the process
    master starts (oxipost.master.child)."""
    config_dir = write_config(tmp, main_cf)
    cfg = load_config(config_dir).for_service("smtp")
    queue: Any = RecordingQueue()
    if real_queue:
        from oxipost.qmgr.queue import Queue

        queue = Queue.open(cfg, writer="smtpd")
    lines: list[str] = []
    with contextlib.ExitStack() as sinks:
        if daemon_tables:
            sinks.callback(set_warning_sink, set_warning_sink(ListLog(lines).warning))
            sinks.callback(allow_surrogates, allow_surrogates(ListLog(lines).error))
        yield from _serving(cfg, queue, lines, config_dir, loop_factory)


def _serving(
    cfg: Any,
    queue: Any,
    lines: list[str],
    config_dir: str,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> Iterator[Running]:
    server = build_server(cfg, queue, ListLog(lines))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    loop = loop_factory()
    ready = threading.Event()
    holder: dict[str, Any] = {"anvil_dir": tempfile.mkdtemp(prefix="oxipost-anvil-")}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            # A socket path of its own: tmp's may be too long for AF_UNIX.
            path = os.path.join(holder["anvil_dir"], "anvil")
            if server.anvil is not None:
                server.anvil.path = path
            anvil = AnvilServer(cfg, ListLog(lines))
            holder["anvil"] = anvil
            holder["anvil_server"] = await asyncio.start_unix_server(anvil.client, path)
            holder["listener"] = await server.serve(sock)
            ready.set()

        loop.run_until_complete(boot())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)

    async def stop() -> None:
        holder["listener"].close()
        await server.close()
        holder["anvil_server"].close()
        await holder["anvil"].close()
        shutil.rmtree(holder["anvil_dir"], ignore_errors=True)
        if hasattr(server.queue, "close"):
            server.queue.close()

    try:
        yield Running("127.0.0.1", port, queue, config_dir, lines)
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def start_smtpd(tmp_path: Any) -> Iterator[Callable[..., Running]]:
    with contextlib.ExitStack() as servers:

        def start(
            main_cf: str = "", real_queue: bool = False, daemon_tables: bool = False
        ) -> Running:
            server = running_smtpd(str(tmp_path), main_cf, real_queue, daemon_tables=daemon_tables)
            return servers.enter_context(server)

        yield start
        while _OPEN:
            _OPEN.pop().close()


class Raw:
    """A raw SMTP client socket: send bytes exactly, read replies line by line."""

    def __init__(self, host: str, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        _OPEN.append(self)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        """One complete (possibly multi-line) reply, lines joined with newlines."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    def cmd(self, text: str) -> str:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        try:
            return self.file.readline() == b""
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


_OPEN: list[Raw] = []


@pytest.fixture(autouse=True)
def _close_raw_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
def dovecot(shared_tmp: Path) -> Iterator[tuple[str, Path]]:
    """A real Dovecot auth server (Debian's dovecot-core) with users carol (PLAIN
    letmein) and dave (pw); yields (its auth socket for smtpd_sasl_path, its log)."""
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    assert os.path.exists(binary), "dovecot-core is required (scripts/install-debian-deps.sh)"
    # Dovecot's auth process runs as the dovecot user: pytest's 0700 tmp tree is closed to it.
    d = shared_tmp
    users = d / "users"
    users.write_text(f"carol:{{PLAIN}}letmein\ndave:{hash_password('pw', 'SSHA256')}\n")
    socket_path = d / "auth-client"
    log = d / "dovecot.log"
    conf = d / "dovecot.conf"
    conf.write_text(
        f"""base_dir = {d}/run
state_dir = {d}/state
log_path = {log}
info_log_path = {log}
protocols = none
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_debug = yes
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {socket_path} {{
    mode = 0666
  }}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            proc.kill()
            raise AssertionError(
                f"dovecot did not start: {err}\n{log.read_text() if log.exists() else ''}"
            )
        time.sleep(0.1)
    try:
        yield str(socket_path), log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
