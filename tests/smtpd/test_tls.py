"""STARTTLS and wrapper mode (catalogue 21-22) with a certificate made by openssl."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess

import pytest

from tests.smtpd.conftest import Raw


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mx.example.test",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(crt), str(key)


def _tls_conf(cert: tuple[str, str], level: str = "may", extra: str = "") -> str:
    return (
        f"smtpd_tls_cert_file = {cert[0]}\nsmtpd_tls_key_file = {cert[1]}\n"
        f"smtpd_tls_security_level = {level}\n{extra}"
    )


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _wrap(raw: Raw) -> None:
    raw.file.close()
    raw.sock = _client_ctx().wrap_socket(raw.sock, server_hostname="mx.example.test")
    raw.file = raw.sock.makefile("rb")


def test_21_starttls_injection_plaintext_is_discarded(start_smtpd, cert) -> None:
    srv = start_smtpd(_tls_conf(cert))
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    ehlo = raw.cmd("EHLO client.example")
    assert "250-STARTTLS" in ehlo.split("\n")
    raw.send(b"STARTTLS\r\nRSET\r\n")
    assert raw.reply() == "220 2.0.0 Ready to start TLS"
    _wrap(raw)
    # The first reply over TLS belongs to EHLO: nothing answered the injected RSET.
    ehlo = raw.cmd("EHLO client.example")
    assert ehlo.startswith("250-mx.example.test\n")
    assert "STARTTLS" not in ehlo
    assert raw.cmd("STARTTLS") == "554 5.5.1 Error: TLS already active"
    raw.cmd("MAIL FROM:<a@example.org>")
    raw.cmd("RCPT TO:<postmaster@localhost>")
    raw.cmd("DATA")
    raw.send(b"Subject: tls\r\n\r\nx\r\n.\r\n")
    assert raw.reply().startswith("250 2.0.0 Ok: queued as")
    env, content = srv.queue.messages[0]
    # The queue file keeps EHLO's protocol, as Postfix's; the Received: header adds the S.
    assert env.protocol == "ESMTP"
    assert b" with ESMTPS id " in content
    # smtpd_tls_received_header = no, Postfix's default: ESMTPS is all the header says.
    assert b"(using " not in content.split(b"\r\n\r\n")[0]
    assert not any("TLS connection established" in ln for ln in srv.log)


def test_tls_received_header_and_log_line_as_postfix(start_smtpd, cert) -> None:
    """What Postfix 3.7 writes with smtpd_tls_received_header = yes and smtpd_tls_loglevel
    = 1 (recorded from it), less what Python's ssl module cannot tell: the key exchange,
    server signature and digest Postfix appends to the cipher."""
    srv = start_smtpd(
        _tls_conf(cert, extra="smtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 1\n")
    )
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    raw.cmd("EHLO client.example")
    assert raw.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    _wrap(raw)
    raw.cmd("EHLO client.example")
    raw.cmd("MAIL FROM:<a@example.org>")
    raw.cmd("RCPT TO:<postmaster@localhost>")
    raw.cmd("DATA")
    raw.send(b"Subject: tls\r\n\r\nx\r\n.\r\n")
    assert raw.reply().startswith("250 2.0.0 Ok: queued as")
    head = srv.queue.messages[0][1].split(b"\r\n\r\n")[0].decode()
    cipher = r"TLSv1\.3 with cipher TLS_\w+ \((\d+)/\1 bits\)"
    assert re.search(
        r"^Received: from client\.example \(unknown \[127\.0\.0\.2\]\)\r\n"
        rf"\t\(using {cipher}\)\r\n"
        r"\t\(No client certificate requested\)\r\n"
        r"\tby mx\.example\.test \(\w+\) with ESMTPS id ",
        head,
    ), head
    established = [ln for ln in srv.log if "TLS connection established" in ln]
    assert len(established) == 1
    assert re.fullmatch(
        rf"Anonymous TLS connection established from unknown\[127\.0\.0\.2\]: {cipher}",
        established[0],
    ), established


def test_22_starttls_state_rules(start_smtpd, cert) -> None:
    srv = start_smtpd(_tls_conf(cert))
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    raw.cmd("EHLO client.example")
    assert raw.cmd("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
    assert raw.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert raw.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    _wrap(raw)
    # TLS resets the session: the MAIL transaction and the EHLO are gone.
    assert raw.cmd("RCPT TO:<postmaster@localhost>") == "503 5.5.1 Error: need MAIL command"


def test_22_tls_required(start_smtpd, cert) -> None:
    srv = start_smtpd(_tls_conf(cert, "encrypt"))
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    raw.cmd("EHLO client.example")
    assert raw.cmd("MAIL FROM:<a@example.org>") == "530 5.7.0 Must issue a STARTTLS command first"
    assert raw.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    _wrap(raw)
    raw.cmd("EHLO client.example")
    assert raw.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"


def test_22_wrapper_mode(start_smtpd, cert) -> None:
    srv = start_smtpd(_tls_conf(cert, "encrypt", "smtpd_tls_wrappermode = yes\n"))
    with socket.create_connection((srv.host, srv.port), timeout=10) as plain:
        plain.sendall(b"EHLO client.example\r\n")
        # No cleartext banner: the server only speaks TLS, and gives up on this client.
        data = plain.recv(4096)
        assert not data.startswith(b"220")
    raw = Raw.__new__(Raw)
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    raw.sock = _client_ctx().wrap_socket(sock, server_hostname="mx.example.test")
    raw.file = raw.sock.makefile("rb")
    try:
        assert raw.reply() == "220 mx.example.test ESMTP oxipost"
        assert "STARTTLS" not in raw.cmd("EHLO client.example")
        assert raw.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    finally:
        raw.close()


def test_no_starttls_without_certificate(start_smtpd) -> None:
    srv = start_smtpd("smtpd_tls_security_level = may\n")
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    raw.reply()
    assert "STARTTLS" not in raw.cmd("EHLO client.example")
    assert raw.cmd("STARTTLS") == "502 5.5.1 Error: command not implemented"
