"""Local users and the queue tools, as with Postfix 3.7: authorized_submit_users,
authorized_mailq_users and authorized_flush_users refuse the users they do not list, with
Postfix's texts and exit statuses (those of Debian's Postfix 3.7, run as nobody with the
same lists). All real processes: oxipost under its master, the commands run as nobody
(runuser) in a private mount namespace, as in tests/delivery/test_postdrop.py.
"""

from __future__ import annotations

import json
import pwd
import re
import sys
from pathlib import Path

import pytest
from oxipost.cli.postdrop import SETGID_PROGRAM
from oxipost.config import Config

from tests.cli.test_queue_tools import stopped_postfix
from tests.conftest import run_ours
from tests.delivery.test_e2e_delivery import Oxipost
from tests.delivery.test_postdrop import as_nobody, oxi
from tests.qmgr.test_service import wait_attempts, wait_log

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


REFUSED = "connect to 127.0.0.1[127.0.0.1]:9: Connection refused"


def _deferred(oxi: Oxipost, extra: str = "") -> tuple[Config, str]:
    """oxi started with a relayhost that refuses connections, and a message deferred there
    (its reason in the journal, which qmgr writes behind its log lines)."""
    cfg = oxi.start(f"relayhost = [127.0.0.1]:9\n{extra}")
    qid = oxi.swaks("sender@example.org", "rcpt@example.net", "deferred", "x")
    assert wait_attempts(cfg, qid, 1).reason == REFUSED
    return cfg, qid


def test_local_user_lists_the_queue_through_showq(oxi: Oxipost) -> None:
    """nobody, who cannot read the queue (mail_owner's 0700), lists it as Postfix's users
    do: postqueue -p / -j, mailq and sendmail -bp go through postqueue's set-gid door to
    the showq service, which master starts on demand; the deferred message is there with
    its reason, as root sees it. postqueue -f and sendmail -q reach qmgr the same way."""
    cfg, qid = _deferred(oxi)
    conf = str(oxi.conf)
    assert as_nobody(oxi, ["ls", str(oxi.dir / "spool" / "segments")]).returncode != 0
    root = run_ours("postqueue", "-c", conf, "-p")
    assert (root.returncode, root.stderr) == (0, ""), root.stderr
    assert f"({REFUSED})" in root.stdout and root.stdout.startswith("-Queue ID-  --Size--")
    assert re.search(rf"^{qid} +\d+ .* sender@example\.org\n", root.stdout, re.M), root.stdout
    for argv in (
        [str(BIN / "postqueue"), "-c", conf, "-p"],
        [str(BIN / "mailq"), "-C", conf],
        [str(BIN / "sendmail"), "-C", conf, "-bp"],
    ):
        listed = as_nobody(oxi, argv)
        assert (listed.returncode, listed.stderr, listed.stdout) == (0, "", root.stdout), argv
    listed = as_nobody(oxi, [str(BIN / "postqueue"), "-c", conf, "-j"])
    assert listed.returncode == 0, listed.stderr
    (msg,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (msg["queue_id"], msg["queue_name"], msg["sender"]) == (
        qid,
        "deferred",
        "sender@example.org",
    )
    assert msg["recipients"] == [{"address": "rcpt@example.net", "delay_reason": REFUSED}]
    assert re.search(r"postfix/showq\[\d+\]", oxi.log()) is None  # showq logs nothing
    for argv in (
        [str(BIN / "postqueue"), "-c", conf, "-f"],
        [str(BIN / "sendmail"), "-C", conf, "-q"],
    ):
        flushed = as_nobody(oxi, argv)
        assert (flushed.returncode, flushed.stderr) == (0, ""), argv
    # Each flush is another attempt (the first was the message's own).
    wait_log(cfg, rf"{qid}: to=<rcpt@example\.net>, .*status=deferred", count=3, timeout=60)
    oxi.stop()


def test_flush_site_and_id_answers_as_postfix(oxi: Oxipost) -> None:
    """postqueue -s for a site outside fast_flush_domains ($relay_domains, empty here) is
    refused as Postfix's flush service refuses it, the fatal line logged too; a listed
    site, and a queue ID no longer queued, are accepted (exit 0), as Postfix accepts them."""
    cfg, qid = _deferred(oxi, "fast_flush_domains = example.net\n")
    conf = str(oxi.conf)
    denied = run_ours("postqueue", "-c", conf, "-s", "example.org")
    assert (denied.returncode, denied.stderr) == (
        69,
        'postqueue: fatal: Flush service is not configured for destination "example.org"\n',
    )
    assert re.search(
        r"postfix/postqueue\[\d+\]: fatal: Flush service is not configured for destination"
        r' "example\.org"\n',
        oxi.log(),
    ), oxi.log()
    for args in (["-s", "example.net"], ["-i", "NOSUCHID0"]):
        done = run_ours("postqueue", "-c", conf, *args)
        assert (done.returncode, done.stderr) == (0, ""), args
    # The listed site's flush is another attempt at its deferred message.
    wait_log(cfg, rf"{qid}: to=<rcpt@example\.net>, .*status=deferred", count=2, timeout=60)
    oxi.stop()


def test_local_user_refused_by_authorized_mailq_users_sees_nothing(oxi: Oxipost) -> None:
    """With the queue listed through showq, authorized_mailq_users still decides: nobody,
    not in it, gets Postfix's refusal and no listing, before anything is asked of showq."""
    _cfg, qid = _deferred(oxi, "authorized_mailq_users = !nobody, static:anyone\n")
    conf = str(oxi.conf)
    view = f"postqueue: fatal: User nobody({NOBODY}) is not allowed to view the mail queue\n"
    for argv in ([str(BIN / "postqueue"), "-c", conf, "-p"], [str(BIN / "mailq"), "-C", conf]):
        refused = as_nobody(oxi, argv)
        assert (refused.returncode, refused.stdout, refused.stderr) == (69, "", view), argv
    assert qid in run_ours("postqueue", "-c", conf, "-p").stdout
    oxi.stop()


def test_mail_system_down_as_postfix(oxi: Oxipost) -> None:
    """With the mail system stopped, a local user's postqueue -p / -j, mailq, sendmail -bp,
    postqueue -f and -i say what Debian's Postfix 3.7 says, byte for byte (mail_name set to
    Postfix, which Postfix's messages name): "Queue report unavailable - mail system is down
    (Connect to the Postfix showq service: No such file or directory)", exit 69. Root reads
    the queue itself after a warning, as Postfix's postqueue runs showq stand-alone."""
    _cfg, qid = _deferred(oxi, "mail_name = Postfix\n")
    oxi.stop()
    conf, real_conf = str(oxi.conf), stopped_postfix(oxi.dir / "real")
    for ours, theirs in (
        ([BIN / "postqueue", "-c", conf, "-p"], ["/usr/sbin/postqueue", "-c", real_conf, "-p"]),
        ([BIN / "postqueue", "-c", conf, "-j"], ["/usr/sbin/postqueue", "-c", real_conf, "-j"]),
        ([BIN / "mailq", "-C", conf], ["/usr/bin/mailq", "-C", real_conf]),
        ([BIN / "sendmail", "-C", conf, "-bp"], ["/usr/sbin/sendmail", "-C", real_conf, "-bp"]),
        ([BIN / "postqueue", "-c", conf, "-f"], ["/usr/sbin/postqueue", "-c", real_conf, "-f"]),
        (
            [BIN / "postqueue", "-c", conf, "-i", qid],
            ["/usr/sbin/postqueue", "-c", real_conf, "-i", qid],
        ),
    ):
        mine = as_nobody(oxi, [str(a) for a in ours], also=real_conf)
        expected = as_nobody(oxi, theirs, also=real_conf)
        assert expected.returncode == 69 and "mail system is down" in expected.stderr
        assert (mine.returncode, mine.stdout, mine.stderr) == (
            expected.returncode,
            expected.stdout,
            expected.stderr,
        ), ours
    root = run_ours("postqueue", "-c", conf, "-p")
    assert root.returncode == 0 and f"({REFUSED})" in root.stdout and qid in root.stdout
    assert root.stderr == (
        "postqueue: warning: Mail system is down -- accessing queue directly"
        " (Connect to the Postfix showq service: No such file or directory)\n"
    )
