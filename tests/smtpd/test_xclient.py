"""XCLIENT and XFORWARD (XCLIENT_README, XFORWARD_README) on our smtpd: the golden
dialogues of dialogues/xclient/ (recorded from Postfix 3.7, which test_postfix_differential
plays against it too) and what the commands leave in the queued message."""

from __future__ import annotations

import time

import pytest

from tests.smtpd.conftest import Raw
from tests.smtpd.test_protocol import DIALOGUES, GOLDEN_MAIN_CF, run_dialogue

XCLIENT_DIALOGUES = DIALOGUES / "xclient"
XCLIENT_MAIN_CF = (
    GOLDEN_MAIN_CF
    + "smtpd_authorized_xclient_hosts = 127.0.0.0/8\n"
    + "smtpd_authorized_xforward_hosts = 127.0.0.0/8\n"
)


def xclient_scripts() -> list[str]:
    return sorted(p.name for p in XCLIENT_DIALOGUES.glob("*.smtp"))


@pytest.mark.parametrize("script", xclient_scripts())
def test_xclient_golden_dialogue(start_smtpd, script: str) -> None:
    srv = start_smtpd(XCLIENT_MAIN_CF)
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    run_dialogue(raw, XCLIENT_DIALOGUES / script)
    raw.close()


def _send(raw: Raw, commands: list[str]) -> list[str]:
    return [raw.cmd(c) for c in commands]


def test_xclient_identity_is_the_messages(start_smtpd) -> None:
    """After XCLIENT the message is the new client's: its name, address, port, HELO,
    protocol and LOGIN (sasl_method XCLIENT) in the envelope and the Received: header."""
    srv = start_smtpd(XCLIENT_MAIN_CF)
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    replies = _send(
        raw,
        [
            "XCLIENT NAME=spike.example ADDR=127.0.0.9 PORT=4321 HELO=h+20x PROTO=ESMTP"
            " LOGIN=joe+40x",
            "MAIL FROM:<a@example.org>",
            "RCPT TO:<postmaster@localhost>",
            "DATA",
            "Subject: x\r\n\r\nbody\r\n.",
            "QUIT",
        ],
    )
    raw.close()
    assert replies[0] == "220 mx.example.test ESMTP oxipost"
    assert replies[4].startswith("250 2.0.0 Ok: queued as ")
    ((env, content),) = srv.queue.messages
    assert (env.client_name, env.client_addr, env.client_port) == (
        "spike.example",
        "127.0.0.9",
        4321,
    )
    # XCLIENT's PROTO as the queue file keeps it; the Received: header adds LOGIN's A.
    assert (env.helo_name, env.protocol) == ("h?x", "ESMTP")
    assert b" with ESMTPA id " in content
    assert (env.sasl_method, env.sasl_username) == ("XCLIENT", "joe@x")
    assert content.startswith(b"Received: from h?x (spike.example [127.0.0.9])\r\n")
    assert "client=spike.example[127.0.0.9], sasl_method=XCLIENT, sasl_username=joe@x" in (
        " ".join(srv.log)
    )
    deadline = time.monotonic() + 10
    while not srv.log[-1].startswith("disconnect from "):
        assert time.monotonic() < deadline, srv.log
        time.sleep(0.02)
    # As Postfix, the new greeting does not count as XCLIENT's success.
    assert srv.log[-1].startswith("disconnect from spike.example[127.0.0.9] xclient=0/1 ")


def test_xforward_attributes_last_one_message(start_smtpd) -> None:
    """XFORWARD's client is the envelope's (what qmgr and the delivery agents see), with
    its IDENT as log_ident and SOURCE as rewrite_context; the Received: header names the
    client that talked to us; the next message has none of it."""
    srv = start_smtpd(XCLIENT_MAIN_CF)
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    message = ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "DATA"]
    message.append("Subject: x\r\n\r\nbody\r\n.")
    _send(raw, ["EHLO client.example"])
    _send(raw, ["XFORWARD NAME=spike.example ADDR=192.0.2.1 PORT=25 PROTO=ESMTP HELO=spike"])
    assert _send(raw, ["XFORWARD IDENT=ABC123 SOURCE=LOCAL", *message])[-1].startswith("250 ")
    assert _send(raw, message)[-1].startswith("250 ")
    raw.close()
    (first, content), (second, _) = srv.queue.messages
    assert (first.client_name, first.client_addr, first.client_port) == (
        "spike.example",
        "192.0.2.1",
        25,
    )
    assert (first.helo_name, first.protocol) == ("spike", "ESMTP")
    assert first.attrs["log_ident"] == "ABC123"
    assert first.attrs["rewrite_context"] == "local"
    assert content.startswith(b"Received: from client.example (unknown [127.0.0.2])\r\n")
    assert (second.client_name, second.client_addr) == ("unknown", "127.0.0.2")
    assert "log_ident" not in second.attrs and "rewrite_context" not in second.attrs


def test_xforward_source_decides_header_rewriting(start_smtpd) -> None:
    """SOURCE=LOCAL makes cleanup treat the message as local submission (the missing
    Message-Id:, Date: and From: are added, as local_header_rewrite_clients would), SOURCE=
    REMOTE as remote: what real Postfix's cleanup does with smtpd's rewrite_context."""
    srv = start_smtpd(XCLIENT_MAIN_CF)
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    message = ["MAIL FROM:<a@example.org>", "RCPT TO:<postmaster@localhost>", "DATA"]
    message.append("Subject: x\r\n\r\nbody\r\n.")
    _send(raw, ["EHLO client.example", "XFORWARD SOURCE=LOCAL", *message])
    _send(raw, ["XFORWARD SOURCE=REMOTE", *message])
    raw.close()
    (_, local), (_, remote) = srv.queue.messages
    assert b"\r\nMessage-Id: <" in local and b"\r\nFrom: a@example.org\r\n" in local
    assert b"Message-Id:" not in remote and b"From:" not in remote


def test_xclient_clients_are_not_counted_for_the_connection_limit(start_smtpd) -> None:
    """As Postfix's smtpd does not tell anvil of an XCLIENT client's connections, the
    smtpd_client_connection_count_limit does not apply to them."""
    srv = start_smtpd(XCLIENT_MAIN_CF + "smtpd_client_connection_count_limit = 1\n")
    first = Raw(srv.host, srv.port, source="127.0.0.2")
    second = Raw(srv.host, srv.port, source="127.0.0.2")
    assert first.reply().startswith("220 ") and second.reply().startswith("220 ")


def test_xclient_new_client_refused_at_greeting(start_smtpd) -> None:
    """With smtpd_delay_reject = no the new identity meets smtpd_client_restrictions at
    the new greeting: refused, every command but QUIT is 'access denied'."""
    srv = start_smtpd(
        XCLIENT_MAIN_CF + "smtpd_delay_reject = no\n"
        "smtpd_client_restrictions = check_client_access inline:{ {10.9.9.9=REJECT no} }\n"
    )
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    replies = _send(raw, ["XCLIENT ADDR=10.9.9.9 NAME=bad.example", "NOOP", "QUIT"])
    raw.close()
    assert replies == [
        "554 5.7.1 <bad.example[10.9.9.9]>: Client host rejected: no",
        "503 5.7.0 Error: access denied for bad.example[10.9.9.9]",
        "221 2.0.0 Bye",
    ]
