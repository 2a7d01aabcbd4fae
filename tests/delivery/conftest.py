"""Fixtures for the delivery agents: a config dir with a master.cf and requests to run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from oxipost.config import Config, load_config
from oxipost.delivery import DeliveryRequest, deliver, smtp
from oxipost.envelope import Envelope, Outcome, Recipient

MASTER_CF = """\
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
"""

MESSAGE = b"From: a@example.org\r\nTo: b@example.com\r\nSubject: test\r\n\r\nhello\r\n"


def make_config(path: Path, main: str = "", master_extra: str = "") -> Config:
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.cf").write_text(main)
    (path / "master.cf").write_text(MASTER_CF + master_extra)
    return load_config(str(path))


def request(
    cfg: Config,
    transport: str,
    nexthop: str,
    rcpts: list[str],
    sender: str = "a@example.org",
    content: bytes = MESSAGE,
    **env: object,
) -> DeliveryRequest:
    envelope = Envelope(
        sender=sender,
        recipients=[Recipient(r) for r in rcpts],
        arrival_time=time.time(),
        **env,  # type: ignore[arg-type]
    )
    return DeliveryRequest(
        "4ABCDE1234", transport, nexthop, envelope, envelope.recipients, content, cfg
    )


def read_env(path: Path) -> dict[str, str]:
    """The variables a command's `env > path` wrote."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def run(req: DeliveryRequest) -> list[Outcome]:
    async def once() -> list[Outcome]:
        try:
            return await deliver(req)
        finally:
            await smtp.close_cached()

    return asyncio.run(once())


@pytest.fixture
def system_user() -> Iterator[pwd.struct_passwd]:
    """A real system user with a home directory and a group of its own (useradd; we are
    root), removed after."""
    if os.geteuid() != 0:
        pytest.fail("this test creates a system user: run the tests as root")
    from tests.conftest import shared_dir

    name = f"oxiusr{os.getpid() % 100000}"
    with shared_dir("oxipost-user-") as home:
        r = subprocess.run(
            ["useradd", "-M", "-U", "-d", str(home / name), "-s", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        try:
            pw = pwd.getpwnam(name)
            (home / name).mkdir(mode=0o755)
            os.chown(home / name, pw.pw_uid, pw.pw_gid)
            yield pw
        finally:
            subprocess.run(["userdel", name], capture_output=True, timeout=60)


@contextlib.contextmanager
def dumping_sink(*flags: str) -> Iterator[tuple[int, Path]]:
    """Debian's smtp-sink on a free port with these flags (-L: LMTP), dumping each
    transaction (-d: X-Client-Addr, X-Mail-Args, X-Rcpt-Args, then the message) to a file
    in a directory of its own; yields (port, directory)."""
    from tests.conftest import free_port, shared_dir, smtp_sink

    port = free_port()
    # smtp-sink writes as nobody.
    with shared_dir("oxipost-sink-", 0o777) as dump, smtp_sink(port, *flags, "-d", f"{dump}/%M%S."):
        yield port, dump


def postfix_relay(
    sink: int, main: str, send: Callable[[smtplib.SMTP], object]
) -> tuple[str, str, str]:
    """Real Postfix relaying to [127.0.0.1]:sink with this main.cf: send(client) submits
    one message to it over SMTP; → its maillog once its smtp logged the message's status,
    the status's DSN code and its text."""
    from tests.smtpd.test_postfix_differential import running_postfix

    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    relay_cf = f"mydestination =\nrelayhost = [127.0.0.1]:{sink}\n" + main + log_cf
    with running_postfix(relay_cf) as (port, d):
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            send(client)
        deadline = time.monotonic() + 30
        while not (
            m := re.search(r"dsn=([\d.]+), status=\w+ \((.*)\)", (d / "maillog").read_text())
        ):
            assert time.monotonic() < deadline, (d / "maillog").read_text()
            time.sleep(0.1)
        return (d / "maillog").read_text(), m.group(1), m.group(2)
