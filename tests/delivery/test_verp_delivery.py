"""VERP delivery: the smtp client sends each recipient of a VERP message alone, from
the sender with the (original) recipient in it, compared with Postfix 3.7 relaying the
same messages to smtp-sink, which dumps each transaction's envelope."""

from __future__ import annotations

import re
import smtplib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port, run_ours, smtp_sink
from tests.smtpd.test_postfix_differential import running_postfix

from .test_e2e_delivery import Oxipost
from .test_smtp_xforward import LOG_CF

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

MAIN_CF = (
    "myhostname = mx.example.test\nmynetworks = 127.0.0.0/8\n"
    "smtpd_authorized_verp_clients = 127.0.0.0/8\n"
    "virtual_alias_maps = inline:{ {alias@example.net=f@example.net} }\n"
    # cleanup gives a sender without a domain none.
    "append_at_myorigin = no\n"
)
# (MAIL FROM's parameters, sender, recipients) submitted over SMTP, then by sendmail -XV.
SESSIONS = [
    (" XVERP", "owner@example.org", ["a@example.net", "b@example.edu", "alias@example.net"]),
    (" XVERP=-=", "list", ["c@example.net"]),
    ("", "plain@example.org", ["d@example.net", "e@example.net"]),
]
SENDMAIL = (["-XV+-", "-f", "owner@example.org"], ["g@example.net", "h@example.edu"])
# The transactions: one for each VERP recipient, one for the plain message.
TRANSACTIONS = 7
SENT = 8


def _submit(port: int, sendmail: Callable[[list[str]], object]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.example")
        for params, sender, rcpts in SESSIONS:
            assert c.docmd(f"MAIL FROM:<{sender}>{params}")[0] == 250
            for rcpt in rcpts:
                assert c.docmd(f"RCPT TO:<{rcpt}>")[0] == 250
            assert c.data(b"Subject: verp\r\n\r\nhi\r\n")[0] == 250
    args, rcpts = SENDMAIL
    sendmail([*args, *rcpts])


def _dumped(dump: Path) -> list[tuple[str, ...]]:
    """Each transaction smtp-sink dumped: its MAIL FROM and RCPT TO addresses, sorted."""
    deadline = time.monotonic() + 60
    while len(files := list(dump.iterdir())) < TRANSACTIONS:
        assert time.monotonic() < deadline, files
        time.sleep(0.1)
    time.sleep(0.5)  # none more
    out = []
    for f in dump.iterdir():
        head = f.read_text().split("\n\n", 1)[0]
        args = re.findall(r"(?m)^X-(?:Mail|Rcpt)-Args: (\S*)", head)
        out.append(tuple(args))
        f.unlink()
    return sorted(out)


def _smtp_lines(log: str) -> list[str]:
    """The smtp client's delivery lines, without queue IDs, ports, times and connection
    reuse (which of the concurrent deliveries finds a cached session is timing's)."""
    lines = re.findall(r"(?m)(?:postfix|oxipost)/smtp\[\d+\]: \w+: (to=.*)$", log)
    lines = [re.sub(r"\]:\d+", "]:PORT", ln) for ln in lines]
    lines = [re.sub(r"(delays?|conn_use)=[\d./]+, ", "", ln) for ln in lines]
    return sorted(re.sub(r"queued as \w+", "queued as QID", ln) for ln in lines)


def _wait_sent(log: Callable[[], str]) -> str:
    deadline = time.monotonic() + 60
    while (text := log()).count("status=sent") < SENT:
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    return text


def test_verp_deliveries_as_postfix(shared_tmp: Path) -> None:
    """XVERP (default delimiters, -=), sendmail -XV+- and a plain message relayed to
    smtp-sink: a VERP message goes one recipient a transaction, from
    sender-local+rcpt-local=rcpt-domain@sender-domain (the recipient a virtual alias
    rewrote as first given; a sender without a domain gets none), the plain message in
    one; and the smtp client's log lines, as Postfix's."""
    dump = shared_tmp / "dump"
    dump.mkdir()
    dump.chmod(0o777)
    sink = free_port()
    relay = f"relayhost = [127.0.0.1]:{sink}\n" + MAIN_CF
    with smtp_sink(sink, "-d", f"{dump}/%M%S."):
        with running_postfix(relay + LOG_CF) as (port, d):

            def their_sendmail(args: list[str]) -> None:
                argv = ["/usr/sbin/sendmail", "-C", str(d), *args]
                subprocess.run(argv, input=b"Subject: v\n\nv\n", timeout=60, check=True)

            _submit(port, their_sendmail)
            their_log = _wait_sent(lambda: (d / "maillog").read_text())
        theirs = _dumped(dump)
        oxi = Oxipost()
        try:
            oxi.start(relay)

            def our_sendmail(args: list[str]) -> None:
                done = run_ours("sendmail", "-C", str(oxi.conf), *args, stdin="Subject: v\n\nv\n")
                assert done.returncode == 0, done.stderr

            _submit(oxi.port, our_sendmail)
            our_log = _wait_sent(oxi.log)
        finally:
            oxi.close()
        ours = _dumped(dump)
    assert ours == theirs
    assert ("<owner+alias=example.net@example.org>", "<f@example.net>") in theirs, theirs
    assert ("<list-c=example.net>", "<c@example.net>") in theirs, theirs
    assert _smtp_lines(our_log) == _smtp_lines(their_log)
