"""Local users and the queue tools, as with Postfix 3.7: authorized_submit_users,
authorized_mailq_users and authorized_flush_users refuse the users they do not list, with
Postfix's texts and exit statuses (those of Debian's Postfix 3.7, run as nobody with the
same lists). All real processes: oxipost under its master, the commands run as nobody
(runuser) in a private mount namespace, as in tests/delivery/test_postdrop.py.
"""

from __future__ import annotations

import pwd
import sys
from pathlib import Path

import pytest
from oxipost.cli.postdrop import SETGID_PROGRAM

from tests.conftest import run_ours
from tests.delivery.test_e2e_delivery import Oxipost
from tests.delivery.test_postdrop import as_nobody, oxi

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

__all__ = ["oxi"]

BIN = Path(sys.executable).parent
NOBODY = pwd.getpwnam("nobody").pw_uid
DENIED = "!nobody, static:anyone"


def test_unlisted_user_is_refused_as_postfix(oxi: Oxipost) -> None:
    """nobody, refused by each list, gets Postfix's message and exit status from sendmail
    (75), postdrop (1), and postqueue, mailq, sendmail -bp / -q (69); root may still list
    the queue that it is not listed for (Postfix exempts root and mail_owner)."""
    oxi.start(
        f"authorized_submit_users = {DENIED}\nauthorized_flush_users = {DENIED}\n"
        f"authorized_mailq_users = {DENIED}, !root\n"
    )
    conf = str(oxi.conf)
    submit = f"User nobody({NOBODY}) is not allowed to submit mail\n"
    view = f"postqueue: fatal: User nobody({NOBODY}) is not allowed to view the mail queue\n"
    flush = f"postqueue: fatal: User nobody({NOBODY}) is not allowed to flush the mail queue\n"
    cases = [
        ([str(BIN / "sendmail"), "-C", conf, "root@localhost"], 75, "sendmail: fatal: " + submit),
        ([SETGID_PROGRAM, "-c", conf], 1, "postdrop: fatal: " + submit),
        ([str(BIN / "postqueue"), "-c", conf, "-p"], 69, view),
        ([str(BIN / "postqueue"), "-c", conf, "-j"], 69, view),
        ([str(BIN / "mailq"), "-C", conf], 69, view),
        ([str(BIN / "sendmail"), "-C", conf, "-bp"], 69, view),
        ([str(BIN / "postqueue"), "-c", conf, "-f"], 69, flush),
        ([str(BIN / "postqueue"), "-c", conf, "-s", "example.org"], 69, flush),
        ([str(BIN / "postqueue"), "-c", conf, "-i", "ABCDEF"], 69, flush),
        ([str(BIN / "sendmail"), "-C", conf, "-q"], 69, flush),
    ]
    for argv, status, stderr in cases:
        ran = as_nobody(oxi, argv, "Subject: x\n\nx\n")
        assert (ran.returncode, ran.stderr) == (status, stderr), argv
    assert list((oxi.dir / "spool" / "maildrop").iterdir()) == []
    listed = run_ours("postqueue", "-c", conf, "-p")
    assert (listed.returncode, listed.stdout) == (0, "Mail queue is empty\n"), listed.stderr
    oxi.stop()
