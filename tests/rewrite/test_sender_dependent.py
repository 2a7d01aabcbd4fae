"""trivial-rewrite's sender-dependent routing: sender_dependent_relayhost_maps and
sender_dependent_default_transport_maps, beside real Postfix 3.7's trivial-rewrite asked
over its private/rewrite socket (the resolve request qmgr sends: sender and address) with
the same main.cf, and end to end through qmgr to smtp-sink."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.maps import TableError
from oxipost.rewrite.resolve import resolve

from tests.smtpd.conftest import write_config
from tests.smtpd.test_postfix_differential import running_postfix

MAIN_CF = """\
recipient_delimiter = +
relayhost = [global.relay]
relay_domains = relayed.example
sender_dependent_relayhost_maps = inline:{ joe@example.org=[10.9.9.1]:2525,
    @other.org=relay.other, dunno@other.org=DUNNO, <>=[bounce.relay], admin=[local.relay] }
sender_dependent_default_transport_maps = inline:{ @xp.org=xsmtp:[xp.relay], nh@xp.org=ysmtp,
    dn@xp.org=DUNNO, joe@example.org=zsmtp }
transport_maps = inline:{ tm.example=tsmtp:, tn.example=tsmtp:[tm.relay] }
"""

# (sender, recipient)
CASES = [
    (sender, rcpt)
    for sender in (
        "joe@example.org",
        "joe+ext@example.org",
        "a@other.org",
        "dunno@other.org",
        "",
        "a@xp.org",
        "nh@xp.org",
        "dn@xp.org",
        "x@nowhere.example",
        "admin@localhost",
        "admin@remote.example",
    )
    for rcpt in (
        "u@remote.example",
        "u@relayed.example",
        "u@localhost",
        "u@tm.example",
        "u@tn.example",
    )
]


def _ask(path: Path, sender: str, address: str) -> tuple[str, str]:
    """(transport, nexthop) from a trivial-rewrite resolve request (attr_print0 format)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(
            b"request\0resolve\0sender\0%s\0address\0%s\0\0" % (sender.encode(), address.encode())
        )
        data = b""
        # The server announces its protocol first, then answers with one attribute list.
        while data.count(b"\0\0") < 2:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    words = data.split(b"\0\0")[1].split(b"\0")
    attrs = dict(zip(words[::2], words[1::2], strict=True))
    return attrs[b"transport"].decode(), attrs[b"nexthop"].decode()


@pytest.fixture(scope="module")
def postfix_answers() -> Iterator[list[tuple[str, str]]]:
    with running_postfix(MAIN_CF) as (_port, d):
        yield [_ask(d / "spool" / "private" / "rewrite", s, r) for s, r in CASES]


@pytest.mark.postfix
@pytest.mark.slow
def test_resolve_by_sender_as_postfix(
    postfix_answers: list[tuple[str, str]], tmp_path: Path
) -> None:
    cfg = load_config(write_config(str(tmp_path), MAIN_CF))
    ours = []
    for sender, rcpt in CASES:
        r = resolve(rcpt, cfg, sender)
        ours.append((r.transport, r.nexthop))
    assert list(zip(CASES, ours, strict=True)) == list(zip(CASES, postfix_answers, strict=True))
    # What the comparison rests on, as Postfix answered.
    answers = dict(zip(CASES, postfix_answers, strict=True))
    assert answers["joe+ext@example.org", "u@remote.example"] == ("zsmtp", "[10.9.9.1]:2525")
    assert answers["", "u@relayed.example"] == ("relay", "[bounce.relay]")
    assert answers["nh@xp.org", "u@remote.example"] == ("ysmtp", "[global.relay]")
    assert answers["dunno@other.org", "u@remote.example"] == ("smtp", "[global.relay]")
    # Without a sender (smtpd's relay checks), the global settings.
    r = resolve("u@remote.example", cfg)
    assert (r.transport, r.nexthop) == ("smtp", "[global.relay]")


def test_unreadable_sender_table_fails_the_resolve(tmp_path: Path) -> None:
    cf = "sender_dependent_relayhost_maps = hash:{dir}/missing\n".replace("{dir}", str(tmp_path))
    cfg = load_config(write_config(str(tmp_path), cf))
    with pytest.raises(TableError, match="sender_dependent_relayhost_maps lookup failure"):
        resolve("u@remote.example", cfg, "s@example.org")
    # Local mail never asks the table.
    assert resolve("u@localhost", cfg, "s@example.org").transport == "local"
