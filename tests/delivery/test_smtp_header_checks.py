"""smtp(8)'s smtp_header_checks, compared with real Postfix 3.7's smtp client: both send
the same message to Debian's smtp-sink (its transaction dumps keep what arrived), with
the same table: the headers that arrive, in order, and smtp's log lines must be the same
(IGNORE, STRIP, REPLACE, PREPEND, WARN, INFO, DUNNO; DISCARD, REJECT and unknown actions
unsupported)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from .conftest import dumping_sink, make_config, postfix_relay, request, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

CHECKS = """\
/^Received:/ IGNORE
/^Subject: (.*)/ REPLACE Subject: [ext] $1
/^X-Mailer:/ PREPEND X-Note: had mailer
/^X-Warn:/ WARN warned text
/^X-Info:/ INFO
/^X-Disc:/ DISCARD gone
/^X-Dunno:/ DUNNO
/^X-Strip:/ STRIP stripped it
/^X-Bogus:/ BOGUS
/^X-Reject:/ REJECT nope
/^X-Bad:/ PREPEND no header here
"""
HEADERS = (
    "From: a@example.org\n"
    "To: b@example.net\n"
    "Subject: hello\n"
    "X-Mailer: m1\n"
    "X-Warn: a header longer than sixty characters, to see where the log cuts it\n"
    "X-Info: i\n"
    "X-Disc: d\n"
    "X-Dunno: k\n"
    "X-Strip: s\n"
    "X-Bogus: b\n"
    "X-Reject: r\n"
    "X-Bad: x\n"
)
OURS = [ln.split(":", 1)[0] for ln in HEADERS.splitlines()] + ["X-Note"]


def _arrived(files: set[Path]) -> list[str]:
    """The headers of the one message dumped, but for the ones each MTA adds itself."""
    (f,) = files
    head = f.read_text().split("\n\n", 2)[0].splitlines()
    return [h for h in head if h.split(":", 1)[0] in OURS]


def _smtp_lines(lines: list[str]) -> list[str]:
    return [re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln) for ln in lines]


def test_header_checks_as_postfix(tmp_path, shared_tmp, caplog) -> None:
    # Read by Postfix's cleanup as user postfix: not pytest's 0700 tree.
    tables = shared_tmp
    (tables / "checks").write_text(CHECKS)
    main = f"smtp_header_checks = regexp:{tables}/checks\n"
    message = HEADERS + "\nbody\n"
    with dumping_sink() as (sink, dump):
        log, dsn, _text = postfix_relay(
            sink,
            main,
            lambda c: c.sendmail(
                "a@example.org", ["b@example.net"], message.replace("\n", "\r\n").encode()
            ),
        )
        their_files = set(dump.iterdir())
        theirs = _arrived(their_files)
        caplog.clear()
        caplog.set_level(logging.INFO, logger="oxipost.smtp")
        cfg = make_config(tmp_path / "ours", main)
        content = ("Received: from somewhere\n" + message).encode()
        (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{sink}", ["b@example.net"], content=content))
        assert o.delivered, o
        ours = _arrived(set(dump.iterdir()) - their_files)
    assert dsn == "2.0.0"
    assert ours == theirs
    their_lines = [
        ln.split("]: ", 1)[1]
        for ln in log.splitlines()
        if "/smtp[" in ln and " to=<" not in ln and "overriding" not in ln
    ]
    our_lines = [
        ("warning: " if r.levelno == logging.WARNING else "") + r.getMessage()
        for r in caplog.records
        if r.name == "oxipost.smtp"
    ]
    assert _smtp_lines(our_lines) == _smtp_lines(their_lines)
    assert theirs[2:4] == ["Subject: [ext] hello", "X-Note: had mailer"]
    assert "X-Strip: s" not in theirs


def test_header_checks_table_error_as_postfix(tmp_path, caplog) -> None:
    """A table that cannot be read defers the message while it is sent: 4.3.0 'local data
    error while talking to H[A]', after 'warning: QID: smtp header checks lookup error'."""
    main = "smtp_header_checks = fail:broken\n"
    with dumping_sink() as (sink, _dump):
        log, dsn, text = postfix_relay(
            sink,
            main,
            lambda c: c.sendmail("a@example.org", ["b@example.net"], b"X: y\r\n\r\nz\r\n"),
        )
        cfg = make_config(tmp_path / "ours", main)
        (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{sink}", ["b@example.net"]))
    assert re.search(r"postfix/smtp\[\d+\]: warning: \w+: smtp header checks lookup error", log)
    assert "4ABCDE1234: smtp header checks lookup error" in caplog.messages
    assert (o.status, o.text) == (dsn, text)
    assert o.relay == f"127.0.0.1[127.0.0.1]:{sink}"
    assert (dsn, text) == ("4.3.0", "local data error while talking to 127.0.0.1[127.0.0.1]")
