"""reject_multi_recipient_bounce, reject_plaintext_session and sleep: the replies and log
lines compared with real Postfix 3.7 given the same main.cf and dialogue; under TLS (ours
alone: Postfix could not read the test's key) reject_plaintext_session lets a request by."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.maps.test_net_tables import peer
from tests.smtpd.conftest import Raw
from tests.smtpd.test_policy import _reject_and_warning_lines, policy_server
from tests.smtpd.test_postfix_differential import Played, _namespace_as_postfix
from tests.smtpd.test_tls import _tls_conf, _wrap
from tests.smtpd.test_tls import cert as cert  # the fixture

BOUNCE = [
    "EHLO client.example",
    "MAIL FROM:<>",
    "RCPT TO:<x@localhost>",
    "RCPT TO:<y@localhost>",
    "RSET",
    "MAIL FROM:<a@example.org>",
    "RCPT TO:<x@localhost>",
    "RCPT TO:<y@localhost>",
    "QUIT",
]
# At DATA: two recipients refused, then one let through.
BOUNCE_DATA = [
    *BOUNCE[:4],
    "DATA",
    "RSET",
    "MAIL FROM:<>",
    "RCPT TO:<x@localhost>",
    "DATA",
    "Subject: bounce\r\n\r\nbody\r\n.",
    "QUIT",
]


@pytest.mark.postfix
@pytest.mark.slow
@pytest.mark.parametrize(
    "main_cf",
    [
        "smtpd_recipient_restrictions = reject_multi_recipient_bounce, permit\n",
        # With smtpd_delay_reject the sender list runs at RCPT: the second recipient.
        "smtpd_sender_restrictions = reject_multi_recipient_bounce\n",
        "smtpd_data_restrictions = reject_multi_recipient_bounce\n"
        "multi_recipient_bounce_reject_code = 554\n",
    ],
)
def test_multi_recipient_bounce_as_postfix(start_smtpd, main_cf: str) -> None:
    data = "data" in main_cf
    both = Played(start_smtpd, BOUNCE_DATA if data else BOUNCE, main_cf)
    # (The queue ID in the reply to the message let through differs.)
    end = -2 if data else None
    assert both.our_replies[1:end] == both.their_replies[1:end]
    assert any(" 5.5.3 " in r for r in both.their_replies)
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)


@pytest.mark.postfix
@pytest.mark.slow
@pytest.mark.parametrize(
    "main_cf",
    [
        "smtpd_recipient_restrictions = reject_plaintext_session, permit\n",
        "smtpd_helo_restrictions = reject_plaintext_session\nplaintext_reject_code = 554\n",
    ],
)
def test_plaintext_session_as_postfix(start_smtpd, main_cf: str) -> None:
    both = Played(start_smtpd, [*BOUNCE[:3], "QUIT"], main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    assert "Session encryption is required" in both.their_replies[3]
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)


@pytest.mark.postfix
@pytest.mark.slow
def test_sleep_as_postfix(start_smtpd) -> None:
    """sleep 1 pauses the reply and goes on with the next restriction; sleep without a
    number is a configuration error, Postfix's warning and 451 4.3.5."""
    main_cf = (
        "smtpd_recipient_restrictions = sleep 1, permit_mynetworks, reject_unauth_destination\n"
        "smtpd_data_restrictions = sleep x\n"
    )
    started = time.monotonic()
    both = Played(start_smtpd, [*BOUNCE[:3], "DATA", "QUIT"], main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    assert both.their_replies[4].startswith("451 4.3.5 ")
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)
    assert time.monotonic() - started >= 2


def _others_go_on(srv: Any) -> None:
    """While a session waits (its request sent a moment ago), a new one is greeted
    within a second."""
    time.sleep(0.3)
    started = time.monotonic()
    other = Raw(srv.host, srv.port, source="127.0.0.3")
    assert other.reply().startswith("220 ")
    assert time.monotonic() - started < 1.0


def test_sleep_holds_only_its_session(start_smtpd) -> None:
    srv = start_smtpd("smtpd_helo_restrictions = sleep 2\n")
    slow = Raw(srv.host, srv.port, source="127.0.0.2")
    slow.reply()
    slow.send(b"EHLO client.example\r\n")
    _others_go_on(srv)
    assert slow.reply().startswith("250-")


def test_a_slow_socketmap_holds_only_its_session(start_smtpd) -> None:
    """A check_recipient_access socketmap: whose server takes its time keeps the other
    sessions of that smtpd going, as Postfix's one process per session does."""

    def answer(request: bytes) -> bytes:
        time.sleep(2)
        return b"9:NOTFOUND ,"

    with peer("netstring", answer) as (_, endpoint):
        srv = start_smtpd(
            "relay_domains = example.com\nsmtpd_recipient_restrictions = "
            f"check_recipient_access socketmap:inet:{endpoint}:access\n"
        )
        slow = Raw(srv.host, srv.port, source="127.0.0.2")
        slow.reply()
        for command in ("EHLO client.example", "MAIL FROM:<a@example.org>"):
            slow.cmd(command)
        slow.send(b"RCPT TO:<u@example.com>\r\n")
        _others_go_on(srv)
        assert slow.reply().startswith("250 2.1.5")


def test_encrypted_session_passes_and_policy_told(start_smtpd, cert) -> None:
    """Under STARTTLS reject_plaintext_session lets the request through, and a policy
    request names the protocol, cipher and its bits."""
    with policy_server("DUNNO") as server:
        srv = start_smtpd(
            _tls_conf(
                cert,
                extra="smtpd_recipient_restrictions = reject_plaintext_session,"
                f" check_policy_service {server.endpoint}, permit\n",
            )
        )
        raw = Raw(srv.host, srv.port, source="127.0.0.2")
        raw.reply()
        raw.cmd("EHLO client.example")
        assert raw.cmd("STARTTLS").startswith("220 ")
        _wrap(raw)
        raw.cmd("EHLO client.example")
        raw.cmd("MAIL FROM:<a@example.org>")
        assert raw.cmd("RCPT TO:<x@localhost>") == "250 2.1.5 Ok"
        attrs = dict(line.split("=", 1) for line in server.requests[0])
    assert attrs["encryption_protocol"] == "TLSv1.3"
    assert re.fullmatch(r"TLS_\w+", attrs["encryption_cipher"])
    assert int(attrs["encryption_keysize"]) >= 128


@pytest.mark.postfix
@pytest.mark.slow
def test_unknown_helo_hostname_as_postfix(tmp_path: Path) -> None:
    """reject_unknown_helo_hostname (and its old name) against one DNS server in a namespace
    of the test's own (tests/smtpd/helo_namespace.py): a name with an A, AAAA, MX or null
    MX record passes, one with none is refused with unknown_hostname_reject_code, one whose
    lookup fails for now as unknown_helo_hostname_tempfail_action says (defer now, or
    defer_if_permit: only what the lists go on to permit), an address literal
    is not looked up; reject_unknown_sender_domain the same names as a sender's domain
    (unknown_address_tempfail_action, RFC 7505's null MX); word for word as Postfix, on
    asyncio's loop and on uvloop."""
    theirs = _namespace_as_postfix("tests.smtpd.helo_namespace", tmp_path)
    replies = theirs["default code"]
    assert replies["none.helo.test"] == (
        "450 4.7.1 <none.helo.test>: Helo command rejected: Host not found"
    ), replies
    assert replies["nullmx.helo.test"].startswith("250 "), replies
    assert theirs["550"]["none.helo.test"].startswith("550 5.7.1 "), theirs
    assert theirs["550"]["fail.helo.test"].startswith("450 4.7.1 "), theirs
    # defer_if_permit: deferred at RCPT, which would have been accepted; a reject wins.
    assert theirs["defer_if_permit"]["fail.helo.test"] == (
        "450 4.7.1 <fail.helo.test>: Helo command rejected: Host not found"
    ), theirs
    assert theirs["defer_if_permit, then reject"]["fail.helo.test"].startswith("554 5.7.1 ")
    # reject_unknown_sender_domain: unknown_address_tempfail_action, and a null MX.
    senders = theirs["sender defer_if_permit"]
    assert senders["fail.helo.test"] == (
        "450 4.1.8 <a@fail.helo.test>: Sender address rejected: Domain not found"
    ), senders
    assert senders["nullmx.helo.test"].startswith("550 5.7.27 "), senders
    assert senders["none.helo.test"].startswith("450 4.1.8 "), senders
    assert theirs["sender defer_if_permit, then reject"]["fail.helo.test"].startswith("554 ")
    assert theirs["sender defer"]["fail.helo.test"].startswith("450 4.1.8 "), theirs
