"""What smtp(8) says in MAIL FROM, RCPT TO and AUTH, compared with real Postfix 3.7's smtp
client: both send the same mail to Debian's smtp-sink, whose transaction dumps (`-d`) keep
the MAIL FROM and RCPT TO arguments (X-Mail-Args, X-Rcpt-Args).

- DSN parameters in Postfix's order (ENVID before RET, ORCPT before NOTIFY), the original
  recipient sent as ORCPT when the client gave none, a local part that is no dot-atom
  quoted (smtp_quote_rfc821_envelope);
- smtp_sasl_security_options: Postfix's default (noplaintext, noanonymous) uses neither
  PLAIN nor LOGIN, and defers 4.7.0 'no mechanism available'; smtp_sasl_mechanism_filter
  leaving none of the server's mechanisms: a warning, and 4.7.0 'offered no compatible
  authentication mechanisms'."""

from __future__ import annotations

import logging
import re
import smtplib
import time
from pathlib import Path

import pytest
from oxipost.delivery import DeliveryRequest
from oxipost.envelope import Envelope, Outcome, Recipient

from .conftest import dumping_sink, make_config, postfix_relay, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"


def _args(files: set[Path]) -> list[str]:
    """X-Mail-Args, then the X-Rcpt-Args sorted (Postfix's qmgr sorts recipients)."""
    out = []
    for f in files:
        head = f.read_text().split("\n\n", 1)[0].splitlines()
        out += [h for h in head if h.startswith("X-Mail-Args")]
        out += sorted(h for h in head if h.startswith("X-Rcpt-Args"))
    return out


def _both(
    tmp_path: Path,
    main: str,
    caplog: pytest.LogCaptureFixture,
    commands: list[str],
    ours: DeliveryRequest,
) -> tuple[tuple[list[str], list[str], str], tuple[list[str], list[str], str]]:
    """(theirs, ours): the arguments smtp-sink received, the smtp warnings and the status
    of the (first) recipient, for the mail that `commands` (MAIL FROM, RCPT TO...) give
    real Postfix and that the request `ours` gives our client, with this main.cf."""

    def send(client: smtplib.SMTP) -> None:
        client.ehlo()
        for command in commands:
            code, text = client.docmd(command)
            assert code == 250, (command, text)
        assert client.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250

    with dumping_sink() as (sink, dump):
        main = main.replace("SINK", str(sink))
        log, dsn, text = postfix_relay(sink, main, send)
        their_files = set(dump.iterdir())
        warnings = re.findall(r"postfix/smtp\[\d+\]: warning: ((?!/).*)", log)
        theirs = (_args(their_files), warnings, f"{dsn} {text}")
        caplog.clear()
        ours.cfg = make_config(tmp_path / "ours", main)
        ours.nexthop = f"[127.0.0.1]:{sink}"
        o: Outcome = run(ours)[0]
        our_warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        mine = (_args(set(dump.iterdir()) - their_files), our_warnings, f"{o.status} {o.text}")
    return theirs, mine


def _request(sender: str, recipients: list[Recipient], **env: str) -> DeliveryRequest:
    envelope = Envelope(sender, recipients, time.time(), **env)  # type: ignore[arg-type]
    content = b"Subject: x\n\nx\n"
    return DeliveryRequest("4ABCDE1234", "smtp", "", envelope, recipients, content, None)  # type: ignore[arg-type]


def test_dsn_parameters_and_quoting_as_postfix(tmp_path, caplog) -> None:
    commands = [
        "MAIL FROM:<a@example.org> RET=HDRS ENVID=abc",
        'RCPT TO:<"john smith"@example.net> NOTIFY=DELAY,FAILURE,SUCCESS',
        "RCPT TO:<b@example.net> ORCPT=rfc822;orig@example.net",
    ]
    recipients = [
        Recipient(
            "john smith@example.net",
            "john smith@example.net",
            frozenset({"DELAY", "FAILURE", "SUCCESS"}),
        ),
        Recipient("b@example.net", "b@example.net", orcpt="rfc822;orig@example.net"),
    ]
    req = _request("a@example.org", recipients, ret="HDRS", envid="abc")
    theirs, ours = _both(tmp_path, "", caplog, commands, req)
    assert ours == theirs
    assert theirs[0] == [
        "X-Mail-Args: <a@example.org> ENVID=abc RET=HDRS",
        'X-Rcpt-Args: <"john smith"@example.net> ORCPT=rfc822;"john+20smith"@example.net '
        "NOTIFY=SUCCESS,FAILURE,DELAY",
        "X-Rcpt-Args: <b@example.net> ORCPT=rfc822;orig@example.net",
    ]


SASL_CF = (
    "smtp_sasl_auth_enable = yes\n"
    "smtp_sasl_password_maps = inline:{ [127.0.0.1]:SINK=carol:letmein }\n"
)
PLAIN_MAIL = ["MAIL FROM:<a@example.org>", "RCPT TO:<b@example.net>"]


def test_default_security_options_use_no_plaintext_mechanism_as_postfix(tmp_path, caplog):
    req = _request("a@example.org", [Recipient("b@example.net")])
    theirs, ours = _both(tmp_path, SASL_CF, caplog, PLAIN_MAIL, req)
    assert ours == theirs
    assert theirs == (
        [],
        ["SASL authentication failure: No worthy mechs found"],
        "4.7.0 SASL authentication failed; cannot authenticate to server "
        "127.0.0.1[127.0.0.1]: no mechanism available",
    )


def test_mechanism_filter_leaving_none_fails_authentication_as_postfix(tmp_path, caplog):
    main = SASL_CF + "smtp_sasl_mechanism_filter = cram-md5\n"
    req = _request("a@example.org", [Recipient("b@example.net")])
    theirs, ours = _both(tmp_path, main, caplog, PLAIN_MAIL, req)
    assert ours == theirs
    assert theirs[1][0].endswith(" offered no supported AUTH mechanisms: 'PLAIN LOGIN'"), theirs
    assert theirs[2] == (
        "4.7.0 SASL authentication failed: server 127.0.0.1[127.0.0.1] offered no compatible "
        "authentication mechanisms for this type of connection security"
    )
