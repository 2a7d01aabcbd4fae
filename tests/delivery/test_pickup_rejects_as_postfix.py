"""A local submission cleanup refuses (too many hops, a header_checks REJECT), logged as
Postfix 3.7 logs it: pickup's "uid=N from=<SENDER>" first, cleanup's warnings, then
cleanup's to= line for each recipient bounced, with the reason its smtpd would give after
"Error: " ("too many hops"), and bounce's notice; no queue file was made, so nothing is
logged as removed. The message-id line is logged, the Message-Id: cleanup adds too. Ours
logged those to= lines as pickup's, the reason with "Error: ", one hopcount warning where
Postfix's cleanup gives one for each Received: header from the limit's on, "removed", no
pickup line, and no message-id line for the one it would have added.

Too many hops (four Received: headers and pickup's, hopcount_limit = 3) only flags the
message: cleanup goes on through the header, each header's header_checks line before
its hopcount warning, a WARN for a header after them too. smtpd's message, the same one
over SMTP, is looked at only to the header that made too many hops: one warning, no
message-id line, "554 5.4.0 Error: too many hops". Ours refused both before the
header_checks, with one warning for each hop over.

A message postsuper -r requeues goes through cleanup again with the Date: cleanup added
the first time, which a header_checks rule then rejects: pickup's line names its old
queue ID (orig_id=) as for one cleanup takes; ours left that out for a refused one.

A message postdrop takes under message_size_limit whose queue file (envelope, pickup's
Received:, the headers cleanup adds) passes it is bounced by cleanup: "queue file size
limit exceeded", status=bounced (message file too big), then rec_get()'s warning for the
record the limit cut as cleanup reads the file back, and a notice with the headers alone
(compared as postcat shows it). Ours queued it.

Each Received: header counts as a hop by its name before header_checks, one they IGNORE
too, and cleanup warns only at one they leave (or make, by REPLACE) from the limit's on:
pickup's, two IGNOREd and one more is too many hops at hopcount_limit = 3; pickup's and
two IGNOREd is not. Ours counted only the headers the checks left: it queued the first."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import wait_for_log
from tests.delivery.test_e2e_local import running_ours
from tests.delivery.test_sendmail_as_postfix import submit
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

MESSAGES = [
    "Received: a\nReceived: b\nReceived: c\nReceived: d\nSubject: hops\n\nx\n",
    "Subject: forbidden\nMessage-ID: <m1@example.com>\n\nx\n",
    "Subject: forbidden\n\nx\n",
    # Within message_size_limit as postdrop writes it, past it with the envelope and the
    # headers cleanup adds. Each line of its own length names the one the limit cuts,
    # far from either end (queue IDs and the arrival time's record vary in length).
    "Subject: big\n\n" + "".join("x" * n + "\n" for n in (1100, 1200, 1300)),
]
# Queued (and deferred: defer_transports) the first time, refused once requeued.
REQUEUED = "Subject: requeued\n\nx\n"
RECIPIENTS = ["b@example.com", "c"]
# A warning about the queue file names it by its path.
_LINE = re.compile(
    r" postfix/(pickup|cleanup|bounce|smtpd)\[\d+\]: (warning: (?:incoming/)?)?([0-9A-F]+): (.*)"
)


def _submit(
    sendmail: list[str], tool: Callable[[str], list[str]], maillog: Path, port: int
) -> list[list[str]]:
    """Each message's lines, queue IDs, times and delays set aside; `tool` is the command
    line of one of the system's postsuper, postkick. The first message is sent over SMTP
    to `port` too."""
    with smtplib.SMTP("127.0.0.1", port) as s:
        s.ehlo("client.example")
        s.mail("a@example.com")
        s.rcpt("b@example.com")
        assert s.data(MESSAGES[0].replace("\n", "\r\n").encode()) == (
            554,
            b"5.4.0 Error: too many hops",
        )
    for n, text in enumerate([*MESSAGES, REQUEUED], 1):
        r = submit(sendmail, ["-f", "a@example.com", *RECIPIENTS], text)
        assert r.returncode == 0, r.stderr
        if text != REQUEUED:
            wait_for_log(maillog, r"sender non-delivery notification", n)
    queued = re.findall(
        r" postfix/pickup\[\d+\]: ([0-9A-F]+): uid=", wait_for_log(maillog, " uid=", n)
    )
    wait_for_log(maillog, rf": {queued[-1]}: to=<.*status=deferred", len(RECIPIENTS))
    # postsuper does not wake pickup: postkick does, before its next scan.
    for argv in (
        [*tool("postsuper"), "-r", queued[-1]],
        [*tool("postkick"), "public", "pickup", "W"],
    ):
        r = subprocess.run(argv, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
    log = wait_for_log(maillog, r"sender non-delivery notification", n)
    # The notice of the message too big: its headers alone.
    notice = re.findall(r"sender non-delivery notification: (\w+)", log)[3]
    text = subprocess.run(
        [*tool("postcat"), "-bh", "-q", notice], capture_output=True, text=True, timeout=30
    ).stdout
    text = re.sub(r"\w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [+-]\d{4} \(\w+\)", "DATE", text)
    text = re.sub(r"[0-9A-F]{10,}(\.\d+)?", "QID", re.sub(r"<\d{14}\.", "<STAMP.", text))
    lines: dict[str, list[str]] = {"notice": text.replace("(oxipost", "(Postfix").splitlines()}
    for m in _LINE.finditer(maillog.read_text()):
        program, warning, qid, text = m.groups()
        warning = (warning or "").replace("incoming/", "incoming/QID: ")
        if (program, text[:4]) in (("pickup", "uid="), ("smtpd", "clie")):
            lines[qid] = []
        if qid in lines:
            text = re.sub(r"delay=[\d.]+, delays=[\d.]+/", "delay=D, delays=D/", text)
            text = re.sub(r"message-id=<\d{14}\.", "message-id=<STAMP.", text)
            text = re.sub(
                r"Date: \w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [+-]\d{4} \(\w+\)", "Date: DATE", text
            )
            lines[qid].append(f"{program}: {warning}{re.sub(r'[0-9A-F]{10,}', 'QID', text)}")
    return list(lines.values())


def test_pickup_rejects_logged_as_postfix(shared_tmp: Path) -> None:
    (shared_tmp / "header_checks").write_text(
        "/^Subject: forbidden/ REJECT not from here\n/^Date:/ REJECT requeued\n"
        "/^Subject: hops/ WARN late\n/^Received: c$/ WARN third\n"
    )
    # The limit above the two Received: headers a requeued message has (pickup's twice).
    # Local mail goes to discard too: deferred whatever local(8) would make of it (Postfix's
    # defers it only while /etc/aliases.db is missing).
    main_cf = (
        "hopcount_limit = 3\ndefault_transport = discard\ndefer_transports = discard\n"
        "local_transport = discard\n"
        "message_size_limit = 4000\n"
        f"header_checks = regexp:{shared_tmp}/header_checks\n"
    )
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(main_cf + logging) as (port, d):
        theirs = _submit(
            ["/usr/sbin/sendmail", "-C", str(d)],
            lambda name: [f"/usr/sbin/{name}", "-c", str(d)],
            d / "maillog",
            port,
        )
    top = shared_tmp / "ours"
    top.mkdir()
    services = "pickup unix n - n 60 1 pickup\ndiscard unix - - n - - discard\n"
    with running_ours(top, main_cf + f"queue_directory = {top}/spool\n", services) as port:
        conf = str(top / "conf")
        sendmail = [sys.executable, "-m", "oxipost.cli.sendmail", "-C", conf]
        ours = _submit(
            sendmail,
            lambda name: [sys.executable, "-m", f"oxipost.cli.{name}", "-c", conf],
            top / "maillog",
            port,
        )
    assert ours == theirs
    hops = theirs[2]
    assert hops.count("cleanup: warning: message rejected: hopcount exceeded") == 3
    third = hops.index(
        "cleanup: warning: header Received: c from local; from=<a@example.com> "
        "to=<c@mx.example.test>: third"
    )
    assert hops[third + 1] == "cleanup: warning: message rejected: hopcount exceeded"
    assert any(ln.startswith("cleanup: warning: header Subject: hops ") for ln in hops)
    # smtpd's: nothing after the header that made too many hops, one warning.
    assert theirs[1] == [
        "smtpd: client=unknown[127.0.0.1]",
        "cleanup: warning: message rejected: hopcount exceeded",
    ]
    assert "Content-Type: text/rfc822-headers" in theirs[0]
    eof = "cleanup: warning: incoming/QID: unexpected EOF in data, record type 78 length 1300"
    assert eof in theirs[5]
    assert theirs[-1][0].startswith("pickup: uid=") and theirs[-1][0].endswith(" orig_id=QID")
    assert (
        "cleanup: to=<b@example.com>, relay=none, delay=D, delays=D/0/0/0, dsn=5.4.0, "
        "status=bounced (too many hops)" in hops
    )


# With hopcount_limit = 3: too many hops, not, not (a Received: header REPLACE makes is no hop).
IGNORED_HOPS = [
    "Received: drop1\nReceived: drop2\nReceived: x\nSubject: s1\n\nx\n",
    "Received: drop1\nReceived: drop2\nSubject: s2\n\nx\n",
    "Received: drop1\nX-Make: r\nSubject: s3\n\nx\n",
]


def _ignored_hops(sendmail: list[str], maillog: Path) -> list[list[str]]:
    """cleanup's lines of each message, sorted (pickup takes them in no set order)."""
    for text in IGNORED_HOPS:
        r = submit(sendmail, ["-f", "a@example.com", "b@example.com"], text)
        assert r.returncode == 0, r.stderr
    # The messages' and the notice's.
    wait_for_log(maillog, r"message-id=", len(IGNORED_HOPS) + 1)
    lines: dict[str, list[str]] = {}
    for m in _LINE.finditer(maillog.read_text()):
        program, warning, qid, text = m.groups()
        if program == "pickup" and text.startswith("uid="):
            lines[qid] = []
        if qid in lines and program == "cleanup":
            text = re.sub(r"delay=[\d.]+, delays=[\d.]+/", "delay=D, delays=D/", text)
            text = re.sub(r"<\d{14}\.[0-9A-F]+@", "<ID@", text)
            lines[qid].append(f"{warning or ''}{text}")
    return sorted(lines.values())


def test_ignored_received_headers_counted_as_postfix(shared_tmp: Path) -> None:
    main_cf = (
        "hopcount_limit = 3\ndefault_transport = discard\nheader_checks = regexp:{"
        " {/^Received: drop/ IGNORE}, {/^X-Make: r/ REPLACE Received: made},"
        " {/^Subject: / WARN seen} }\n"
    )
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(main_cf + logging) as (_port, d):
        theirs = _ignored_hops(["/usr/sbin/sendmail", "-C", str(d)], d / "maillog")
    top = shared_tmp / "ours"
    top.mkdir()
    services = "pickup unix n - n 60 1 pickup\ndiscard unix - - n - - discard\n"
    with running_ours(top, main_cf + f"queue_directory = {top}/spool\n", services):
        sendmail = [sys.executable, "-m", "oxipost.cli.sendmail", "-C", str(top / "conf")]
        ours = _ignored_hops(sendmail, top / "maillog")
    assert ours == theirs
    hops = [group for group in theirs if "warning: message rejected: hopcount exceeded" in group]
    assert len(hops) == 1 and "Subject: s1 " in hops[0][1], theirs
