"""Local submission over message_size_limit, compared with real Postfix 3.7: its postdrop
sets message_size_limit as its file size limit, so a maildrop file that would pass it is
not written ("postdrop: warning: uid=0: File too large"), and sendmail gives up with
"warning: mail_stream_cleanup: close error" and "fatal: SENDER(UID): message file too
big", exit 75, all logged. The file is Postfix's records (rec_put(): a type, a length, the
data), the content's lines cut at line_length_limit, so the limit falls where Postfix's
does: a message whose file is exactly the limit is taken."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import wait_for_log
from tests.delivery.test_sendmail_as_postfix import our_sendmail, submit
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

LIMIT = 5000
PLAIN = ["-F", "root", "-f", "nobody@localhost", "daemon"]
DSN = [
    *PLAIN[:4],
    "-N",
    "success,delay",
    "-R",
    "full",
    "-V",
    "envid1",
    "-B",
    "8BITMIME",
    "-XV",
    "-t",
    "daemon",
]


def _plain(size: int) -> str:
    # The records: the arrival time "SECONDS USECONDS" (6 digits but one time in ten: then
    # shorter, never longer) 19, rewrite_context=local 23, the full name 6, the sender 18,
    # the recipient 8, M, X and E 6; "Subject: s" 12 and the empty line 2; the body line
    # in pieces of 2048 (two of 2051) and the rest (its length and 3).
    return "Subject: s\n\n" + "x" * (size - 103) + "\n"


def _dsn(size: int) -> str:
    # Besides: envelope_id=envid1 20, ret_flags=1 13, encoding=8bit 15, the VERP
    # delimiters 4, notify_flags=10 17 before each recipient, the extracted one's 5,
    # "To: bin" 9.
    return "To: bin\nSubject: s\n\n" + "x" * (size - 103 - 100) + "\n"


# (arguments, message, taken): at the limit, and past it by more than the arrival time's
# record can be short.
SUBMISSIONS = [
    (PLAIN, _plain(LIMIT), True),
    (PLAIN, _plain(LIMIT + 6), False),
    (DSN, _dsn(LIMIT), True),
    (DSN, _dsn(LIMIT + 6), False),
]


def test_sendmail_over_message_size_limit_as_postfix(tmp_path: Path) -> None:
    settings = f"message_size_limit = {LIMIT}\ndefault_transport = discard\n"
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(settings + logging) as (_port, d):
        postfix = ["/usr/sbin/sendmail", "-C", str(d)]
        theirs = [submit(postfix, args, text) for args, text, _taken in SUBMISSIONS]
        refused = sum(not taken for _args, _text, taken in SUBMISSIONS)
        text = wait_for_log(d / "maillog", r"postfix/sendmail\[\d+\]: fatal", refused)
        their_log = [
            ln.split("]: ", 1)[1]
            for ln in text.splitlines()
            if " postfix/sendmail[" in ln or " postfix/postdrop[" in ln
        ]
    sendmail = our_sendmail(tmp_path, settings)
    for (args, text, taken), their in zip(SUBMISSIONS, theirs, strict=True):
        mine = submit(sendmail, args, text)
        assert (mine.returncode, mine.stderr) == (their.returncode, their.stderr), args
        assert their.returncode == (0 if taken else 75), their.stderr
    our_log = [ln.split("]: ", 1)[1] for ln in (tmp_path / "maillog").read_text().splitlines()]
    assert our_log == their_log
    assert "warning: uid=0: File too large" in our_log
    assert len(list(tmp_path.glob("spool/maildrop/*"))) == refused
