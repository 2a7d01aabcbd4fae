"""smtp(8)'s content checks (smtp_header_checks, smtp_mime_header_checks,
smtp_nested_header_checks, smtp_body_checks), compared with real Postfix 3.7's smtp client:
both send the same MIME message (a multipart with a text part and an attached
message/rfc822) to Debian's smtp-sink, whose transaction dumps keep what arrived, with the
same tables. The message that arrives and smtp's log lines must be the same, queue IDs
aside: header_checks(5)'s restricted actions (REPLACE, PREPEND, STRIP, IGNORE, WARN, INFO,
DUNNO, OK) in each class, the others (REJECT, DISCARD, HOLD, REDIRECT, BCC, FILTER, PASS)
unsupported, each logged as Postfix's smtp logs it."""

from __future__ import annotations

import logging
import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_log
from tests.smtpd.test_postfix_differential import running_postfix

from .conftest import dumping_sink, make_config, postfix_relay, request, run
from .test_e2e_delivery import Oxipost

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

HEADER_CHECKS = """\
/^Subject: (.*)/ REPLACE Subject: [ext] $1
/^X-Folded:/ WARN folded
/^X-Hold:/ HOLD held
/^Content-Type: multipart/ INFO primary mime
/^X-Dunno:/ DUNNO
"""
MIME_HEADER_CHECKS = """\
/^Content-Type: text\\/plain/ PREPEND X-Mime: seen
/^X-Part:/ REPLACE X-Part: replaced
/^Content-Type: multipart/ WARN multipart
/^Content-Description:/ STRIP gone
/^Content-Disposition:/ REDIRECT x@example.com
"""
NESTED_HEADER_CHECKS = """\
/^Subject: (.*)/ REPLACE Subject: [nested] $1
/^X-Nested:/ IGNORE
/^From: inner/ DISCARD
/^To: inner/ OK
"""
BODY_CHECKS = """\
/spam/ REPLACE ham line
/^prepend here/ PREPEND inserted line
/^strip this/ STRIP stripped
/^ignore this/ IGNORE
/^warn body/ WARN body warning
/^info body/ INFO
/^reject body/ REJECT 5.7.1 no
/^bcc body/ BCC x@example.com
/^--BOUND--/ INFO last boundary
/^replace empty/ REPLACE
"""
MESSAGE = """\
From: a@example.org
To: b@example.net
Subject: hello
Message-Id: <1@example.org>
Date: Sun, 6 Dec 2026 12:00:00 +0000
X-Folded: first
 second line
X-Hold: h
X-Dunno: k
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUND"

preamble spam
--BOUND
Content-Type: text/plain
Content-Description: words
Content-Disposition: inline
X-Part: p

body spam line
prepend here
strip this
ignore this
warn body
info body
reject body
bcc body
replace empty
--BOUND
Content-Type: message/rfc822

From: inner@example.org
To: inner@example.net
Subject: inner subject
X-Nested: n
Content-Type: multipart/alternative; boundary="IN"

--IN
Content-Type: text/plain

inner spam
--IN--
--BOUND--
epilogue spam
"""


def _arrived(files: set[Path]) -> list[str]:
    """The one message dumped, from its From: header on (what the sink and each MTA's
    cleanup put before it differs)."""
    (f,) = files
    lines = f.read_text().splitlines()
    return lines[next(i for i, ln in enumerate(lines) if ln.startswith("From: ")) :]


def _smtp_lines(lines: list[str]) -> list[str]:
    return [re.sub(r"^(warning: )?[0-9A-F]{6,}: ", r"\1QID: ", ln) for ln in lines]


def _their_lines(log: str, program: str = "smtp") -> list[str]:
    """Postfix's smtp (lmtp) lines but the delivery status and its main.cf warnings."""
    return [
        ln.split("]: ", 1)[1]
        for ln in log.splitlines()
        if f"/{program}[" in ln and " to=<" not in ln and "overriding" not in ln
    ]


def _our_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        ("warning: " if r.levelno == logging.WARNING else "") + r.getMessage()
        for r in caplog.records
        if r.name == "oxipost.smtp"
    ]


def _relayed_by_postfix(
    sink: int, dump: Path, main: str, message: str
) -> tuple[list[str], list[str]]:
    """Real Postfix with `main` relays `message` to the sink: → what arrived and its smtp's
    lines (_their_lines)."""
    log, dsn, _text = postfix_relay(
        sink,
        main,
        lambda c: c.sendmail(
            "a@example.org", ["b@example.net"], message.replace("\n", "\r\n").encode()
        ),
    )
    assert dsn == "2.0.0"
    return _arrived(set(dump.iterdir())), _their_lines(log)


def _compare(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    main: str,
    message: str,
    sink_flags: tuple[str, ...] = (),
) -> list[str]:
    """Relay `message` through real Postfix and through oxipost's smtp with `main` to a
    smtp-sink with `sink_flags`; checks that the same message arrives and the same lines
    are logged; → what arrived."""
    with dumping_sink(*sink_flags) as (sink, dump):
        theirs, their_lines = _relayed_by_postfix(sink, dump, main, message)
        their_files = set(dump.iterdir())
        cfg = make_config(tmp_path / "ours", main)
        # What Postfix's own cleanup put first, folded.
        content = ("Received: from somewhere\n\tby here\n" + message).encode()
        req = request(cfg, "smtp", f"[127.0.0.1]:{sink}", ["b@example.net"], content=content)
        caplog.clear()
        caplog.set_level(logging.INFO, logger="oxipost.smtp")
        (o,) = run(req)
        assert o.delivered, o
        ours = _arrived(set(dump.iterdir()) - their_files)
    assert ours == theirs, (ours, theirs)
    assert _smtp_lines(_our_lines(caplog)) == _smtp_lines(their_lines)
    return theirs


def _tables(d: Path) -> str:
    (d / "header").write_text(HEADER_CHECKS)
    (d / "mime").write_text(MIME_HEADER_CHECKS)
    (d / "nested").write_text(NESTED_HEADER_CHECKS)
    (d / "body").write_text(BODY_CHECKS)
    return (
        f"smtp_header_checks = regexp:{d}/header\n"
        f"smtp_mime_header_checks = regexp:{d}/mime\n"
        f"smtp_nested_header_checks = regexp:{d}/nested\n"
        f"smtp_body_checks = regexp:{d}/body\n"
    )


def test_content_checks_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # body_checks_size_limit is cleanup's: smtp's body checks see every line; and with
    # checks, smtp's MIME walk ignores disable_mime_input_processing.
    main = _tables(shared_tmp) + "body_checks_size_limit = 10\n"
    main += "disable_mime_input_processing = yes\n"
    arrived = _compare(tmp_path, caplog, main, MESSAGE)
    # Not a message both left alone: each class of checks changed something.
    assert "Subject: [ext] hello" in arrived
    assert arrived.count("X-Mime: seen") == 2
    assert "Subject: [nested] inner subject" in arrived
    assert "X-Nested: n" not in arrived
    assert arrived.count("ham line") == 4
    assert "Content-Description: words" not in arrived
    assert ["inserted line", "prepend here"] == arrived[
        arrived.index("inserted line") : arrived.index("inserted line") + 2
    ]


# MESSAGE's primary header to its Date:, then a multipart of its own.
CUT_BOUNDARY_MESSAGE = (
    MESSAGE[: MESSAGE.index("X-Folded:")]
    + """\
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUNDARY-LONG"

preamble
--BOUNDxyz
X-Part: p

part spam
--BOUND--
epilogue spam
"""
)


def test_boundary_cut_to_mime_boundary_length_limit_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mime_boundary_length_limit = 5: smtp's MIME walk matches boundary=BOUNDARY-LONG by
    "BOUND", as Postfix's mime_state cuts it: "--BOUNDxyz" opens a part (its X-Part: a
    MIME header) and "--BOUND--" closes the multipart."""
    main = _tables(shared_tmp) + "mime_boundary_length_limit = 5\n"
    arrived = _compare(tmp_path, caplog, main, CUT_BOUNDARY_MESSAGE)
    assert "X-Part: replaced" in arrived
    assert arrived.count("ham line") == 2


# Every action in the primary header, and a header the log cuts at 60 bytes.
PRIMARY_CHECKS = """\
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
/^X-Tab:/ REPLACE\tX-Tab: after a tab
"""
PRIMARY_MESSAGE = """\
From: a@example.org
To: b@example.net
Subject: hello
X-Mailer: m1
X-Warn: a header longer than sixty characters, to see where the log cuts it
X-Info: i
X-Disc: d
X-Dunno: k
X-Strip: s
X-Bogus: b
X-Reject: r
X-Bad: x
X-Tab: t
Message-Id: <2@example.org>
Date: Sun, 6 Dec 2026 12:00:00 +0000

body
"""


def test_header_checks_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (shared_tmp / "checks").write_text(PRIMARY_CHECKS)
    main = f"smtp_header_checks = regexp:{shared_tmp}/checks\n"
    arrived = _compare(tmp_path, caplog, main, PRIMARY_MESSAGE)
    assert arrived[2:4] == ["Subject: [ext] hello", "X-Note: had mailer"]
    assert "X-Strip: s" not in arrived
    assert "X-Tab: after a tab" in arrived


def test_header_checks_alone_leave_mime_headers_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """smtp_mime_header_checks is empty by default (mime_header_checks is $header_checks):
    with smtp_header_checks alone, a primary Content-Type: is not looked up at all."""
    (shared_tmp / "header").write_text(HEADER_CHECKS)
    main = f"smtp_header_checks = regexp:{shared_tmp}/header\n"
    arrived = _compare(tmp_path, caplog, main, MESSAGE)
    assert "Subject: [ext] hello" in arrived
    assert "preamble spam" in arrived


def _next_hop_lines(log: str) -> list[str]:
    """A real Postfix next hop's smtpd lines about how a session ended, the byte count
    (the relays' Received: headers differ) aside."""
    return [
        re.sub(r"\(\d+ bytes\)", "(N bytes)", ln.split("]: ", 1)[1])
        for ln in log.splitlines()
        if "/smtpd[" in ln
        and ("lost connection after" in ln or "disconnect from" in ln)
        and "commands=0/0" not in ln
        and "after CONNECT" not in ln
    ]


@pytest.mark.parametrize(
    ("param", "spec", "which"),
    [("mime_header_checks", "fail:broken", "header"), ("body_checks", "MISSING", "body")],
)
def test_checks_table_error_as_postfix(
    tmp_path: Path,
    shared_tmp: Path,
    caplog: pytest.LogCaptureFixture,
    param: str,
    spec: str,
    which: str,
) -> None:
    """A table that cannot be read (or opened: it fails as its first line is looked up,
    dict_surrogate's 'is unavailable') defers the message as it is sent: MAIL, RCPT and
    DATA go out, then what the checks gave back before the table failed, and the session
    ends there with no "." (the next hop's 'lost connection after DATA'); 4.3.0 'local
    data error while talking to H[A]' after 'TABLE lookup error for "LINE"' and 'warning:
    QID: smtp header checks lookup error' (body for smtp_body_checks)."""
    spec = spec.replace("MISSING", f"regexp:{shared_tmp}/missing")
    main = f"smtp_{param} = {spec}\n"
    message = b"Subject: y\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nz\r\n"
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(log_cf, without=("qmgr",)) as (hop, d):
        log, dsn, text = postfix_relay(
            hop, main, lambda c: c.sendmail("a@example.org", ["b@example.net"], message)
        )
        # The next hop's postlogd writes behind the relay's status line: wait for the
        # session's last line (the start-up probe's has no "ehlo=").
        hop_log = wait_for_log(d / "maillog", r"/smtpd\[\d+\]: disconnect from .* ehlo=")
        their_hop = _next_hop_lines(hop_log)
        cfg = make_config(tmp_path / "ours", main)
        caplog.set_level(logging.INFO, logger="oxipost.smtp")
        (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{hop}", ["b@example.net"], content=message))
        deadline = time.monotonic() + 10
        while len(_next_hop_lines((d / "maillog").read_text())) < 2 * len(their_hop):
            assert time.monotonic() < deadline, (d / "maillog").read_text()
            time.sleep(0.1)
        our_hop = _next_hop_lines((d / "maillog").read_text())[len(their_hop) :]
    assert (o.status, o.text) == (dsn, text)
    assert (dsn, text) == ("4.3.0", "local data error while talking to 127.0.0.1[127.0.0.1]")
    assert (
        our_hop
        == their_hop
        == [
            "lost connection after DATA (N bytes) from unknown[127.0.0.1]",
            "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4",
        ]
    )
    # Postfix's smtp also says "error: open FILE: ..." as it starts (its tables are opened
    # then): a process's line, not the delivery's.
    theirs = [ln for ln in _their_lines(log) if not ln.startswith("error: ")]
    assert _smtp_lines(_our_lines(caplog)) == _smtp_lines(theirs)
    assert f"warning: QID: smtp {which} checks lookup error" in _smtp_lines(theirs)
    assert any("lookup error for " in ln for ln in theirs)


def test_checks_once_per_attempt_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The checks run each time the message is sent: a relay that refuses it after DATA
    (4xx to ".") and the fallback relay that takes it each get it checked, each action
    logged again."""
    (shared_tmp / "body").write_text("/^z/ REPLACE replaced\n/^w/ WARN warned\n")
    message = "From: a@example.org\nTo: b@example.net\nSubject: y\nMessage-Id: <5@example.org>\n"
    message += "Date: Sun, 6 Dec 2026 12:00:00 +0000\n\nz\nw\n"
    with dumping_sink("-r", ".") as (soft, _), dumping_sink() as (good, dump):
        main = f"smtp_body_checks = regexp:{shared_tmp}/body\n"
        main += f"smtp_fallback_relay = [127.0.0.1]:{good}\n"
        theirs, their_lines = _relayed_by_postfix(soft, dump, main, message)
        their_files = set(dump.iterdir())
        cfg = make_config(tmp_path / "ours", main)
        caplog.set_level(logging.INFO, logger="oxipost.smtp")
        (o,) = run(
            request(cfg, "smtp", f"[127.0.0.1]:{soft}", ["b@example.net"], content=message.encode())
        )
        assert o.delivered, o
        ours = _arrived(set(dump.iterdir()) - their_files)
    assert ours == theirs
    assert theirs[-3:] == ["replaced", "w", ""]
    assert _smtp_lines(_our_lines(caplog)) == _smtp_lines(their_lines)
    assert _smtp_lines(their_lines).count("QID: replace: body z: replaced") == 2


def test_no_check_lines_when_nothing_is_sent_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Postfix applies the checks as it sends the message: a next hop that refuses the
    connection gets nothing, and nothing but the refusal is logged."""
    main = _tables(shared_tmp)
    closed = free_port()
    log, dsn, text = postfix_relay(
        closed,
        main,
        lambda c: c.sendmail(
            "a@example.org", ["b@example.net"], MESSAGE.replace("\n", "\r\n").encode()
        ),
    )
    cfg = make_config(tmp_path / "ours", main)
    caplog.set_level(logging.INFO, logger="oxipost.smtp")
    req = request(cfg, "smtp", f"[127.0.0.1]:{closed}", ["b@example.net"], content=MESSAGE.encode())
    (o,) = run(req)
    assert (o.status, o.text) == (dsn, text)
    refused = f"connect to 127.0.0.1[127.0.0.1]:{closed}: Connection refused"
    assert _our_lines(caplog) == _their_lines(log) == [refused]


def test_generic_maps_after_checks_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """smtp_generic_maps rewrites what the header checks leave of a sender or recipient
    header (smtp_header_rewrite), not what PREPEND puts before it (sent as it is)."""
    (shared_tmp / "checks").write_text(
        "/^Subject:/ PREPEND Reply-To: joe@local.test\n"
        "/^X-Also:/ REPLACE Cc: joe@local.test\n"
        "/^To: (.*)/ REPLACE To: joe@local.test, $1\n"
    )
    (shared_tmp / "generic").write_text("/^joe@local\\.test$/ joe@example.com\n")
    main = f"smtp_header_checks = regexp:{shared_tmp}/checks\n"
    main += f"smtp_generic_maps = regexp:{shared_tmp}/generic\n"
    message = (
        "From: joe@local.test\nTo: b@example.net\nSubject: s\nX-Also: joe@local.test\n"
        "Message-Id: <3@example.org>\nDate: Sun, 6 Dec 2026 12:00:00 +0000\n\nbody\n"
    )
    arrived = _compare(tmp_path, caplog, main, message)
    assert arrived[:5] == [
        "From: joe@example.com",
        "To: joe@example.com, b@example.net",
        "Reply-To: joe@local.test",
        "Subject: s",
        "Cc: joe@local.test",
    ]


def test_content_checks_in_the_running_system_as_postfix(shared_tmp: Path) -> None:
    """The same through a running oxipost (smtpd, cleanup, qmgr, smtp) and its maillog:
    smtp's lines as postfix/smtp[PID] writes them."""
    main = _tables(shared_tmp)
    with dumping_sink() as (sink, dump):
        theirs, their_lines = _relayed_by_postfix(sink, dump, main, MESSAGE)
        their_files = set(dump.iterdir())
        oxi = Oxipost()
        try:
            oxi.start(f"relayhost = [127.0.0.1]:{sink}\n" + main)
            with smtplib.SMTP("127.0.0.1", oxi.port, timeout=60) as c:
                c.sendmail("a@example.org", ["b@example.net"], MESSAGE.replace("\n", "\r\n"))
            deadline = time.monotonic() + 60
            while "status=sent" not in (log := oxi.log()):
                assert time.monotonic() < deadline, log
                time.sleep(0.1)
        finally:
            oxi.close()
        ours = _arrived(set(dump.iterdir()) - their_files)
    assert ours == theirs
    assert _smtp_lines(_their_lines(log)) == _smtp_lines(their_lines)


def test_lmtp_content_checks_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """lmtp(8) has the same checks under the lmtp_ names, and logs them the same."""
    main = re.sub(r"(?m)^smtp_", "lmtp_", _tables(shared_tmp))
    with dumping_sink("-L") as (sink, dump):
        log, dsn, _text = postfix_relay(
            sink,
            main + "default_transport = lmtp\n",
            lambda c: c.sendmail(
                "a@example.org", ["b@example.net"], MESSAGE.replace("\n", "\r\n").encode()
            ),
        )
        their_files = set(dump.iterdir())
        theirs = _arrived(their_files)
        cfg = make_config(tmp_path / "ours", main)
        caplog.set_level(logging.INFO, logger="oxipost.smtp")
        content = ("Received: from somewhere\n" + MESSAGE).encode()
        (o,) = run(request(cfg, "lmtp", f"[127.0.0.1]:{sink}", ["b@example.net"], content=content))
        assert o.delivered, o
        ours = _arrived(set(dump.iterdir()) - their_files)
    assert (o.status, dsn) == ("2.2.0", "2.2.0")  # smtp-sink's LMTP answer
    assert ours == theirs
    assert "X-Mime: seen" in ours
    assert _smtp_lines(_our_lines(caplog)) == _smtp_lines(_their_lines(log, "lmtp"))


def test_long_body_lines_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A body line longer than line_length_limit is looked at in pieces of that length,
    as Postfix's queue file holds it: each piece matches on its own, and what the checks
    leave of each continues the line."""
    (shared_tmp / "body").write_text(
        "/^a/ INFO starts\n/b$/ INFO ends\n/^c/ REPLACE d\n/^e/ IGNORE\n/^f/ PREPEND before\n"
        "/^q/ IGNORE\n"
    )
    # smtp_line_length_limit (998) breaks them on output: its line comes as the first long
    # line is sent, after the actions on that line's first piece.
    main = f"smtp_body_checks = regexp:{shared_tmp}/body\nline_length_limit = 1000\n"
    body = "a" + "x" * 1500 + "b\n" + "z" * 1000 + "c" * 20 + "\n"
    body += "e" * 1000 + "y" * 10 + "\n" + "w" * 1000 + "f" * 10 + "\n" + "e" * 1500 + "\nend\n"
    # A line of exactly line_length_limit bytes is that piece and an empty one; a line
    # whose last piece is removed goes on with the next line.
    body += "q" * 1000 + "\n" + "v" * 1000 + "e" * 10 + "\nnext\n"
    head = "From: a@example.org\nTo: b@example.net\nMessage-Id: <9@example.org>\n"
    message = head + "Date: Sun, 6 Dec 2026 12:00:00 +0000\n\n" + body
    arrived = _compare(tmp_path, caplog, main, message)
    joined = "\n".join(arrived).replace("\n ", "").split("\n")  # as it was before the breaks
    assert "z" * 1000 + "d" in joined
    assert "y" * 10 in joined
    # PREPEND ends the line where its piece starts.
    assert joined[joined.index("w" * 1000 + "before") + 1] == "f" * 10
    last = joined.index("f" * 10)
    assert joined[last + 1 : last + 3] == ["", "v" * 1000 + "next"]
    assert "breaking line > 998 bytes with <CR><LF>SPACE" in caplog.text


# Each class's table notes every Content-Transfer-Encoding header it is asked about.
DOWNGRADE_CHECKS = {
    "smtp_header_checks": "/^Content-Transfer-Encoding: *(.*)/ PREPEND X-Primary-Saw: $1\n",
    "smtp_mime_header_checks": "/^Content-Transfer-Encoding: *(.*)/ PREPEND X-Mime-Saw: $1\n",
    "smtp_nested_header_checks": "/^Content-Transfer-Encoding: *(.*)/ PREPEND X-Nested-Saw: $1\n",
    "smtp_body_checks": "/^late line/ REPLACE late line replaced\n/=C3=BC/ WARN converted\n"
    "/\\xc3\\xbc/ WARN not converted\n",
}
# 8bit and binary entities for a server without 8BITMIME (the primary one a multipart, an
# attached message and its own text); a line past body_checks_size_limit. MESSAGE's
# primary header to its Date: first.
DOWNGRADE_MESSAGE = (
    MESSAGE[: MESSAGE.index("X-Folded:")]
    + """\
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BOUND"
Content-Transfer-Encoding: 8bit

--BOUND
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Gr\u00fc\u00dfe from the first part
padding line to pass the limit
late line
--BOUND
Content-Type: application/octet-stream
Content-Transfer-Encoding: binary

bin \u00fc
--BOUND
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Subject: inner
Content-Type: text/plain
Content-Transfer-Encoding: 8bit

inner \u00fc
--BOUND
Content-Type: text/plain
Content-Transfer-Encoding: quoted-printable

already =C3=BC
--BOUND--
"""
)


def test_checks_see_the_downgraded_message_as_postfix(
    tmp_path: Path, shared_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """To a server without 8BITMIME (smtp-sink -8) the checks see what the MIME downgrade
    sends: an 8bit or binary Content-Transfer-Encoding header only as the one that
    replaces it, looked up in its block's own table (the primary header's in
    smtp_header_checks, an attached message's in smtp_nested_header_checks), and the body
    lines converted, every one of them (body_checks_size_limit is cleanup's)."""
    main = "body_checks_size_limit = 40\n"
    for param, text in DOWNGRADE_CHECKS.items():
        (shared_tmp / param).write_text(text)
        main += f"{param} = regexp:{shared_tmp}/{param}\n"
    arrived = _compare(tmp_path, caplog, main, DOWNGRADE_MESSAGE, ("-8",))
    saw = [line for line in arrived if "-Saw: " in line]
    assert saw == [
        "X-Primary-Saw: 7bit",
        "X-Mime-Saw: quoted-printable",
        "X-Mime-Saw: quoted-printable",
        "X-Mime-Saw: 7bit",
        "X-Nested-Saw: quoted-printable",
        "X-Mime-Saw: quoted-printable",
    ]
    assert "late line replaced" in arrived
    assert caplog.text.count(": converted") == 4
    assert "not converted" not in caplog.text
