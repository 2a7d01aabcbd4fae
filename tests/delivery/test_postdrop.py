"""Local users submit mail as with Postfix: maildrop/ is `$mail_owner:$setgid_group` 1730,
public/ 0710, and a user's sendmail hands the message to the set-gid postdrop door, which
writes it with the group's privilege and the user's uid. All real processes: oxipost
under its master, sendmail run as nobody (runuser) in a private mount namespace whose
/etc/postfix (the default configuration directory, never the machine's) lists the test's
configuration in alternate_config_directories, as Postfix requires of a non-root -C.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import grp
import os
import pwd
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.cli.postdrop import POSTQUEUE_DOOR, SETGID_PROGRAM

from tests.conftest import run_ours
from tests.qmgr.test_service import wait_log
from tests.smtpd.test_postfix_differential import running_postfix

from .test_dovecot_reads import ROOT
from .test_e2e_delivery import HOST, Oxipost

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

NOBODY = pwd.getpwnam("nobody")
SENDMAIL = str(Path(sys.executable).parent / "sendmail")


@pytest.fixture
def oxi() -> Iterator[Oxipost]:
    with contextlib.closing(Oxipost()) as run:
        yield run


def as_nobody(
    oxi: Oxipost, argv: list[str], stdin: str = "", *, listed: bool = True, also: str = ""
) -> subprocess.CompletedProcess:
    """argv run as nobody, with a default main.cf that lists oxi's configuration directory
    (and also, another one) in alternate_config_directories (or not)."""
    assert ROOT, "the test suite runs as root (CI): local users cannot be tested otherwise"
    etc = oxi.dir / "etc-postfix"
    etc.mkdir(exist_ok=True)
    (etc / "main.cf").write_text(
        f"alternate_config_directories = {oxi.conf} {also}\n" if listed else ""
    )
    script = 'mount --bind "$1" /etc/postfix && shift && exec runuser -u nobody -- "$@"'
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    return subprocess.run(
        [*namespace, str(etc), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_local_user_sendmail_is_delivered_with_its_uid(oxi: Oxipost) -> None:
    """nobody's `sendmail -t` and `sendmail nobody@localhost` go through the set-gid
    postdrop into maildrop/, and pickup logs them with uid=65534 as Postfix's does."""
    mail = oxi.dir / "mail"
    mail.mkdir()
    mail.chmod(0o1777)
    cfg = oxi.start(f"mail_spool_directory = {mail}/\n")
    headers = "To: info@example.com\nSubject: from a local user\n\n"
    sent = as_nobody(oxi, [SENDMAIL, "-C", str(oxi.conf), "-t"], headers + "by -t\n")
    assert sent.returncode == 0, sent.stderr
    sent = as_nobody(oxi, [SENDMAIL, "-C", str(oxi.conf), "nobody@localhost"], "Subject: b\n\nx\n")
    assert sent.returncode == 0, sent.stderr
    picked = rf"postfix/pickup\[\d+\]: (\w+): uid={NOBODY.pw_uid} from=<nobody>"
    qids = re.findall(picked, wait_log(cfg, picked, count=2, timeout=60))
    log = wait_log(cfg, "|".join(rf"{q}: removed" for q in qids), count=2, timeout=60)
    assert re.search(rf"{qids[0]}: to=<info@example\.com>, .*status=sent", log), log
    assert re.search(rf"{qids[1]}: to=<nobody@localhost>, .*relay=local, .*status=sent", log)
    (path,) = oxi.wait_mail("info")
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "from a local user"
    assert msg["Return-Path"] == f"<nobody@{HOST}>"
    assert list((mail / "nobody" / "new").iterdir())
    assert os.listdir(oxi.dir / "spool" / "maildrop") == []
    oxi.stop()


def test_permissions_as_postfix_files(oxi: Oxipost) -> None:
    """After postfix check (as root): maildrop/ and public/ are the setgid_group's, 1730 and
    0710, postdrop's and postqueue's doors root:postdrop 2755; nobody can neither list
    maildrop/ nor write into it, except through postdrop."""
    (oxi.conf / "main.cf").write_text(
        f"queue_directory = {oxi.dir}/spool\ndata_directory = {oxi.dir}/lib\n"
        f"maillog_file = {oxi.dir}/maillog\nmaillog_file_prefixes = {oxi.dir}\n"
    )
    checked = run_ours("postfix", "-c", str(oxi.conf), "check")
    assert checked.returncode == 0, checked.stderr
    owner, postdrop = pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postdrop").gr_gid

    def owners_mode(path: str) -> tuple[int, int, int]:
        st = os.stat(path)
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    spool = oxi.dir / "spool"
    assert owners_mode(spool / "maildrop") == (owner, postdrop, 0o1730)
    assert owners_mode(spool / "public") == (owner, postdrop, 0o710)
    assert owners_mode(spool / "pid") == (0, 0, 0o755)
    # The queue directory is root's (mail_owner cannot rename pid/ away) and its queues
    # mail_owner's alone, as postfix-files has them; data_directory mail_owner 0700.
    assert owners_mode(spool) == (0, 0, 0o755)
    pgid = pwd.getpwnam("postfix").pw_gid
    for sub in ("segments", "journal", "slots", "corrupt", "private"):
        assert owners_mode(spool / sub) == (owner, pgid, 0o700), sub
    assert owners_mode(oxi.dir / "lib") == (owner, pgid, 0o700)
    assert owners_mode(SETGID_PROGRAM) == (0, postdrop, 0o2755)
    assert owners_mode(POSTQUEUE_DOOR) == (0, postdrop, 0o2755)
    listed = as_nobody(oxi, ["ls", str(spool / "maildrop")])
    assert listed.returncode != 0
    assert "Permission denied" in listed.stderr
    touched = as_nobody(oxi, ["touch", str(spool / "maildrop" / "x")])
    assert touched.returncode != 0
    assert "Permission denied" in touched.stderr
    assert os.listdir(spool / "maildrop") == []


def test_postdrop_refusals_as_postfix(oxi: Oxipost) -> None:
    """Postfix's texts and exit codes: a -C directory the default main.cf does not list
    (sendmail 75, postdrop 1), a message over message_size_limit (postdrop's 4, its
    CLEANUP_STAT_SIZE, then sendmail 75) and a maildrop/ that postdrop cannot write
    (sendmail 75)."""
    oxi.start("message_size_limit = 2000\n")
    argv = [SENDMAIL, "-C", str(oxi.conf), "info@example.com"]
    refused = as_nobody(oxi, argv, "Subject: x\n\nx\n", listed=False)
    assert refused.returncode == 75
    assert refused.stderr == (
        f"sendmail: error: unauthorized configuration directory name: {oxi.conf}\n"
        f'sendmail: fatal: specify "alternate_config_directories = {oxi.conf}" or '
        f'"multi_instance_directories = {oxi.conf}" in /etc/postfix/main.cf\n'
    )
    refused = as_nobody(oxi, [SETGID_PROGRAM, "-c", str(oxi.conf)], listed=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        f"postdrop: error: unauthorized configuration directory name: {oxi.conf}\n"
    )
    usage = as_nobody(oxi, [SETGID_PROGRAM, "-m", "os"])
    assert (usage.returncode, usage.stderr) == (
        1,
        "postdrop: fatal: usage: postdrop [-c config_dir] [-v]\n",
    )
    uid = NOBODY.pw_uid
    big = as_nobody(oxi, argv, "Subject: x\n\n" + "x" * 2000 + "\n")
    assert (big.returncode, big.stderr) == (
        75,
        f"postdrop: warning: uid={uid}: File too large\n"
        "sendmail: warning: mail_stream_cleanup: close error\n"
        f"sendmail: fatal: nobody({uid}): message file too big\n",
    )
    (oxi.dir / "spool" / "maildrop").chmod(0o1700)
    failed = as_nobody(oxi, argv, "Subject: x\n\nx\n")
    assert failed.returncode == 75
    command = f"{SETGID_PROGRAM} -r -c {oxi.conf}"
    lines = failed.stderr.splitlines()
    assert re.fullmatch(
        r"postdrop: warning: mail_queue_enter: create file maildrop/\S+: Permission denied",
        lines[0],
    ), failed.stderr
    assert lines[1:] == [
        f'sendmail: warning: command "{command}" exited with status 75',
        f"sendmail: fatal: nobody({NOBODY.pw_uid}): unable to execute {command}: Application error",
    ]
    oxi.stop()


def _envelope(postcat: subprocess.CompletedProcess, qid: str) -> list[str]:
    """postcat -e's records with the queue ID, the queue, the times and the sizes made
    alike (the content holds the queue ID, whose length differs)."""
    assert postcat.returncode == 0, postcat.stderr
    text = re.sub(r"(?m)^(message_arrival_time|create_time): .*", r"\1: TIME", postcat.stdout)
    sizes = r"(?m)^message_size: +\d+ +\d+ (.*) +\d+ +(\d+)$"
    text = re.sub(sizes, r"message_size: N N \1 N \2", text)
    text = re.sub(r"\*\*\* (.*) \S*?(incoming|deferred)/", r"*** \1 ", text.replace(qid, "QID"))
    return text.splitlines()


def _complete(path: Path) -> bool:
    """A queue file cleanup has finished (its mode says so); cleanup renames its file
    as it names it after the queue ID, so one listed a moment ago may be gone."""
    try:
        return bool(path.stat().st_mode & 0o100)
    except FileNotFoundError:
        return False


def test_submitted_queue_file_records_as_postfix(oxi: Oxipost) -> None:
    """sendmail -F -N -V and three recipients (qualified, in <>, unqualified) through
    pickup: postcat -e shows the envelope records Postfix 3.7's pickup and cleanup write,
    in their order: envelope_id before rewrite_context=local, sender_fullname, each
    recipient's NOTIFY= and the dsn_orig_rcpt cleanup gives it (the address qualified).
    sendmail -B's body type is the encoding record, in both segments; sendmail -t's
    recipients (To:, Cc:, Bcc:) are the extracted segment's, after the content, those of
    the command line the envelope's; a header_checks REDIRECT is a redirect_to record
    there, the recipients kept as they were. sendmail -XV and -Vxy's VERP delimiters are
    the verp_delimiters record. Ours stays in the queue: smtp is a deferred
    transport."""
    argv = ["-F", "Joe Public", "-f", "s@example.org", "-N", "success,delay", "-V", "envx"]
    extract = "To: a@example.net, b\nCc: C <c@example.net>\nBcc: d@example.net\nSubject: t\n\nt\n"
    submissions = [
        ([*argv, "r@example.net", "<q@example.net>", "daemon"], "Subject: x\n\nbody\n"),
        (["-B", "8BITMIME", "-t", "-N", "success", "r@example.net"], extract),
        (["-B", "7BIT", "-f", "s@example.org", "r@example.net"], "Subject: y\n\n7bit\n"),
        (["-f", "s@example.org", "r@example.net", "q@example.net"], "Subject: redirect\n\nr\n"),
        # VERP: -XV's default delimiters, the old -Vxy's own.
        (["-XV", "-f", "s@example.org", "r@example.net"], "Subject: verp\n\nv\n"),
        (["-V+-", "-B", "7BIT", "-f", "s@example.org", "r@example.net"], "Subject: v\n\nv\n"),
    ]
    checks = "header_checks = regexp:{ {/^Subject: redirect/ REDIRECT new@example.net} }\n"
    theirs = []
    with running_postfix(checks, without=("qmgr",)) as (_port, d):
        incoming = d / "spool" / "incoming"
        seen: set[str] = set()
        for args, message in submissions:
            sent = subprocess.run(["sendmail", "-C", str(d), *args], input=message, text=True)
            assert sent.returncode == 0
            deadline = time.monotonic() + 20
            while not (
                files := [p for p in incoming.rglob("*") if _complete(p) and p.name not in seen]
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            qid = files[0].name
            seen.add(qid)
            postcat = ["postcat", "-c", str(d), "-e", "-q", qid]
            theirs.append(_envelope(subprocess.run(postcat, capture_output=True, text=True), qid))
        bad = ["sendmail", "-C", str(d), "-B", "8bitmime", "r@example.net"]
        refused = subprocess.run(bad, capture_output=True, text=True)
        assert refused.returncode == 75
        their_bad = refused.stderr
    cfg = oxi.start(f"defer_transports = smtp\nmyhostname = mx.example.test\n{checks}")
    ours = []
    for n, (args, message) in enumerate(submissions, 1):
        sent = run_ours("sendmail", "-C", str(oxi.conf), *args, stdin=message)
        assert sent.returncode == 0, sent.stderr
        picked = r"pickup\[\d+\]: (\w+): uid="
        qid = re.findall(picked, wait_log(cfg, picked, count=n))[-1]
        # (a REDIRECT's recipient is the target, the first of the others its original)
        wait_log(cfg, rf"{qid}: to=<(r|new)@.*status=deferred")
        ours.append(_envelope(run_ours("postcat", "-c", str(oxi.conf), "-e", "-q", qid), qid))
    oxi.stop()
    assert "named_attribute: dsn_orig_rcpt=rfc822;daemon@mx.example.test" in theirs[0], theirs
    assert "named_attribute: encoding=8bit" in theirs[1], theirs
    assert "redirect_to: new@example.net" in theirs[3], theirs
    assert "verp_delimiters: +-" in theirs[5], theirs
    assert ours == theirs
    bad = ["-B", "8bitmime", "r@example.net"]
    mine = run_ours("sendmail", "-C", str(oxi.conf), *bad)
    assert (mine.returncode, mine.stderr) == (75, their_bad), mine.stderr
