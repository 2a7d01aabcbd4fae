"""AUTH PLAIN/LOGIN (catalogue 41-43) against the built-in passwd-file backend and a real
Dovecot auth server started from Debian's dovecot-core."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from oxipost.smtpd.sasl import hash_password

from tests.smtpd.conftest import Raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_OK = b64(b"\0alice\0s3cret")
PLAIN_BAD = b64(b"\0alice\0wrong")


@pytest.fixture
def passwd_file(tmp_path: Path) -> str:
    p = tmp_path / "sasl-users"
    p.write_text(f"alice:{hash_password('s3cret')}\nbob:{{PLAIN}}hunter2\n")
    return str(p)


def _auth_conf(kind: str, path: str, extra: str = "") -> str:
    return (
        "smtpd_sasl_auth_enable = yes\n"
        f"smtpd_sasl_type = {kind}\nsmtpd_sasl_path = {path}\n"
        "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,"
        " reject_unauth_destination\n" + extra
    )


def _session(srv) -> Raw:
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    ehlo = raw.cmd("EHLO client.example")
    raw.ehlo = ehlo  # type: ignore[attr-defined]
    return raw


def test_42_builtin_plain_login_and_relay(start_smtpd, passwd_file: str) -> None:
    srv = start_smtpd(_auth_conf("passwd-file", passwd_file))
    raw = _session(srv)
    assert "250-AUTH PLAIN LOGIN" in raw.ehlo.split("\n")  # type: ignore[attr-defined]
    assert raw.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert raw.cmd("RCPT TO:<u@foreign.example>") == (
        "554 5.7.1 <u@foreign.example>: Relay access denied"
    )
    assert raw.cmd(f"AUTH PLAIN {PLAIN_OK}") == "503 5.5.1 Error: MAIL transaction in progress"
    raw.cmd("RSET")
    assert raw.cmd(f"AUTH PLAIN {PLAIN_BAD}") == (
        "535 5.7.8 Error: authentication failed: authentication failure"
    )
    assert raw.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert raw.cmd("*") == "501 5.7.0 Authentication aborted"
    assert raw.cmd("AUTH PLAIN") == "334 "
    assert raw.cmd(PLAIN_OK) == "235 2.7.0 Authentication successful"
    assert raw.cmd(f"AUTH PLAIN {PLAIN_OK}") == "503 5.5.1 Error: already authenticated"
    # 39: after AUTH the relay matrix is accepted.
    raw.cmd("MAIL FROM:<alice@example.org>")
    assert raw.cmd("RCPT TO:<u@foreign.example>") == "250 2.1.5 Ok"
    raw.cmd("DATA")
    raw.send(b"x\r\n.\r\n")
    assert raw.reply().startswith("250 2.0.0 Ok: queued as")
    env, content = srv.queue.messages[0]
    assert env.sasl_username == "alice" and env.sasl_method == "PLAIN"
    # The queue file keeps EHLO's protocol, as Postfix's; the Received: header adds the A.
    assert env.protocol == "ESMTP"
    assert b" with ESMTPA id " in content


def test_42_login_mechanism_and_response_limit(start_smtpd, passwd_file: str) -> None:
    # 12288 is the least Postfix's smtpd starts with (RFC 4954's minimum).
    srv = start_smtpd(_auth_conf("passwd-file", passwd_file, "smtpd_sasl_response_limit = 12288\n"))
    raw = _session(srv)
    assert raw.cmd("AUTH PLAIN") == "334 "
    assert raw.cmd("A" * 12289) == "500 5.5.6 SASL response limit exceeded"
    assert raw.cmd(f"AUTH LOGIN {b64(b'bob')}") == "334 UGFzc3dvcmQ6"
    assert raw.cmd(b64(b"hunter2")) == "235 2.7.0 Authentication successful"


def test_42_auth_rate_limit(start_smtpd, passwd_file: str) -> None:
    srv = start_smtpd(_auth_conf("passwd-file", passwd_file, "smtpd_client_auth_rate_limit = 2\n"))
    raw = _session(srv)
    for _ in range(2):
        assert raw.cmd(f"AUTH PLAIN {PLAIN_BAD}").startswith("535 ")
    assert raw.cmd(f"AUTH PLAIN {PLAIN_OK}") == (
        "450 4.7.1 Error: too many AUTH commands from 127.0.0.2"
    )
    # Counted by anvil(8), as Postfix's smtpd_sasl_auth_cmd logs it.
    assert (
        "warning: AUTH command rate limit exceeded: 3 from unknown[127.0.0.2] for service smtp"
        in srv.log
    )


def test_41_tls_auth_only(start_smtpd, passwd_file: str) -> None:
    srv = start_smtpd(_auth_conf("passwd-file", passwd_file, "smtpd_tls_auth_only = yes\n"))
    raw = _session(srv)
    assert "AUTH" not in raw.ehlo  # type: ignore[attr-defined]
    assert raw.cmd(f"AUTH PLAIN {PLAIN_OK}") == "503 5.5.1 Error: authentication not enabled"


def test_46_sasl_username_with_control_chars_rejected(start_smtpd, passwd_file: str) -> None:
    srv = start_smtpd(_auth_conf("passwd-file", passwd_file))
    raw = _session(srv)
    bad = b64(b"\0ali\rce\0s3cret")
    assert raw.cmd(f"AUTH PLAIN {bad}").startswith("535 5.7.8 ")


# Dovecot (the dovecot fixture is in conftest.py) ---------------------------------------


@pytest.mark.slow
def test_42_43_dovecot_auth(start_smtpd, dovecot) -> None:
    path, log = dovecot
    srv = start_smtpd(_auth_conf("dovecot", path))
    raw = _session(srv)
    nope = b64(b"\0carol\0nope")
    assert raw.cmd(f"AUTH PLAIN {nope}") == (
        "535 5.7.8 Error: authentication failed: authentication failure"
    )
    # 43: a TAB (or any non-base64 byte) never reaches Dovecot.
    assert log.read_text().count("client in: AUTH") == 1
    assert raw.cmd(f"AUTH PLAIN {nope[:4]}\tx") == (
        "535 5.7.8 Error: authentication failed: Invalid base64 data in initial response"
    )
    assert raw.cmd("AUTH PLAIN") == "334 "
    assert raw.cmd("AGNh\tcm9s") == (
        "535 5.7.8 Error: authentication failed: Invalid base64 data in client response"
    )
    # Neither attempt reached Dovecot: its debug log shows no further AUTH request.
    assert log.read_text().count("client in: AUTH") == 1
    raw2 = _session(srv)
    assert raw2.cmd(f"AUTH LOGIN {b64(b'dave')}") == "334 UGFzc3dvcmQ6"
    assert raw2.cmd(b64(b"pw")) == "235 2.7.0 Authentication successful"
    raw3 = _session(srv)
    good = b64(b"\0carol\0letmein")
    assert raw3.cmd(f"AUTH PLAIN {good}") == "235 2.7.0 Authentication successful"
    text = log.read_text()
    # Without TLS, Dovecot must not be told the session is secured; lip/rip always go.
    assert "rip=127.0.0.2" in text
    assert "secured" not in text


def test_44_sender_login_maps(start_smtpd, passwd_file: str, tmp_path: Path) -> None:
    """Authenticated alice may not send as bob's address; nobody unauthenticated may use an
    address the map gives an owner (reject_sender_login_mismatch)."""
    owners = tmp_path / "owners"
    owners.write_text("alice@example.org alice\nbob@example.org bob, carol\n")
    srv = start_smtpd(
        _auth_conf(
            "passwd-file",
            passwd_file,
            f"smtpd_sender_login_maps = texthash:{owners}\n"
            "smtpd_sender_restrictions = reject_sender_login_mismatch\n",
        )
    )
    raw = _session(srv)
    # Unauthenticated: an owned address is refused, an unowned one is not.
    raw.cmd("MAIL FROM:<bob@example.org>")
    assert raw.cmd("RCPT TO:<u@example.com>") == (
        "553 5.7.1 <bob@example.org>: Sender address rejected: not logged in"
    )
    raw.cmd("RSET")
    assert raw.cmd(f"AUTH PLAIN {PLAIN_OK}") == "235 2.7.0 Authentication successful"
    raw.cmd("MAIL FROM:<bob@example.org>")
    assert raw.cmd("RCPT TO:<u@example.com>") == (
        "553 5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice"
    )
    raw.cmd("RSET")
    raw.cmd("MAIL FROM:<Alice@Example.org>")
    assert raw.cmd("RCPT TO:<u@example.com>") == "250 2.1.5 Ok"


def test_14_dovecot_socket_down_is_a_temporary_failure(start_smtpd, tmp_path: Path) -> None:
    """catalogue 14: with Dovecot's auth socket gone, AUTH fails temporarily and nothing is
    relayed."""
    srv = start_smtpd(_auth_conf("dovecot", str(tmp_path / "no-such-auth-socket")))
    raw = _session(srv)
    assert raw.cmd(f"AUTH PLAIN {PLAIN_OK}") == (
        "454 4.7.0 Temporary authentication failure: Connection lost to authentication server"
    )
    raw.cmd("MAIL FROM:<alice@example.org>")
    assert raw.cmd("RCPT TO:<u@foreign.example>") == (
        "554 5.7.1 <u@foreign.example>: Relay access denied"
    )
