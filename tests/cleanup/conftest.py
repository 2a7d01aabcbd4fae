"""Fixtures: a configuration directory with its tables, and cleanup called on a message."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from oxipost.cleanup.message import cleanup_message
from oxipost.cleanup.state import Cleaned
from oxipost.config import Config, load_config
from oxipost.envelope import Envelope, Recipient

BASE_MAIN_CF = """\
compatibility_level = 3.6
myhostname = mx.example.test
mydomain = example.test
myorigin = $mydomain
mydestination = localhost, $myhostname, $mydomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
recipient_delimiter = +
"""

RECEIVED = (
    "Received: from client.example (client.example [192.0.2.7])\r\n"
    "\tby mx.example.test (Postfix) with ESMTP; Wed, 25 Nov 2026 12:00:00 +0000\r\n"
)


def make_config(tmp: Path, main_cf: str, tables: dict[str, str] | None = None) -> Config:
    """main.cf (BASE_MAIN_CF plus `main_cf`, with {dir} the directory) and table files."""
    for name, text in (tables or {}).items():
        (tmp / name).write_text(textwrap.dedent(text))
    body = BASE_MAIN_CF + textwrap.dedent(main_cf).replace("{dir}", str(tmp))
    (tmp / "main.cf").write_text(body)
    (tmp / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    return load_config(str(tmp)).for_service("smtp")


def envelope(sender: str, *rcpts: str, client: str = "192.0.2.7") -> Envelope:
    return Envelope(
        sender=sender,
        recipients=[Recipient(r, original=r) for r in rcpts],
        arrival_time=1_700_000_000.0,
        client_name="client.example",
        client_addr=client,
        helo_name="client.example",
        protocol="ESMTP",
    )


Run = Callable[..., Cleaned]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """run(main_cf, tables, env, content) -> Cleaned."""

    def go(
        main_cf: str,
        tables: dict[str, str] | None,
        env: Envelope,
        content: bytes = b"Subject: hi\r\n\r\nbody\r\n",
        received: str = RECEIVED,
        internal: bool = False,
    ) -> Cleaned:
        cfg = make_config(tmp_path, main_cf, tables)
        return cleanup_message(env, content, received, cfg, internal=internal)

    return go


def headers_of(content: bytes) -> list[str]:
    head = content.split(b"\r\n\r\n", 1)[0].decode()
    out: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and out:
            out[-1] += "\n" + line
        else:
            out.append(line)
    return out


def header(content: bytes, name: str) -> list[str]:
    prefix = name.lower() + ":"
    return [h for h in headers_of(content) if h.lower().startswith(prefix)]


# A real smtpd on a loopback port, shared with the smtpd tests.
from tests.smtpd.conftest import start_smtpd  # noqa: E402, F401
