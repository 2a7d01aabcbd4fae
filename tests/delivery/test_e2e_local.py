"""End to end, all real processes: sendmail → maildrop/ → pickup → the queue → qmgr →
local(8) → a Maildir that Debian's Dovecot reads over IMAP (catalogue 10)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.pickup.service import pickup_once
from oxipost.qmgr.queue import Queue, QueueState

from tests.qmgr.test_service import qmgr_proc, start_qmgr, stop, wait_log

from .test_dovecot_reads import ROOT, UID, imap

pytestmark = pytest.mark.slow
__all__ = ["qmgr_proc"]  # the fixture, used by name

MASTER_CF = """\
qmgr      unix  n       -       n       300     1       qmgr
pickup    unix  n       -       n       60      1       pickup
local     unix  -       n       n       -       -       local
error     unix  -       -       n       -       -       error
"""


class _Log:
    def info(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        raise AssertionError(text)


def test_sendmail_to_maildir_read_by_dovecot(tmp_path, qmgr_proc):
    spool = Path(tempfile.mkdtemp(prefix="oxipost-e2e-mail-"))
    spool.chmod(0o1777)
    try:
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "main.cf").write_text(
            f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/lib\n"
            f"maillog_file = {tmp_path}/maillog\nmyhostname = mx.test.example\n"
            "mydestination = localhost\ninet_protocols = ipv4\ndisable_dns_lookups = yes\n"
            f"alias_maps =\nlocal_recipient_maps =\nmail_spool_directory = {spool}/\n"
        )
        (conf / "master.cf").write_text(MASTER_CF)
        cfg = load_config(str(conf))
        user = "nobody" if ROOT else os.environ.get("USER", "root")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "oxipost.cli.sendmail",
                "-C",
                str(conf),
                "-f",
                "a@example.org",
                f"{user}@localhost",
            ],
            input=b"Subject: end to end\n\nhello via pickup and qmgr\n",
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        queue = Queue.open(cfg, writer="pickup")
        try:
            assert pickup_once(cfg, queue, _Log()) == 1
        finally:
            queue.close()
        (qid,) = QueueState(cfg).messages
        p = start_qmgr(cfg)
        qmgr_proc.append(p)
        log = wait_log(cfg, rf"{qid}: removed")
        assert re.search(
            rf"postfix/local\[\d+\]: {qid}: to=<{user}@localhost>, .*dsn=2\.0\.0, "
            r"status=sent \(delivered to maildir\)",
            log,
        ), log
        stop(p)
        maildir = spool / user
        (name,) = os.listdir(maildir / "new")
        if ROOT:
            assert (maildir / "new" / name).stat().st_uid == UID
        home = Path(tempfile.mkdtemp(prefix="oxipost-e2e-home-"))
        home.chmod(0o755)
        try:
            out = imap(
                home, f"maildir:{maildir}", "a SELECT INBOX\nb FETCH 1 (BODY.PEEK[])\nc LOGOUT\n"
            )
        finally:
            shutil.rmtree(home, ignore_errors=True)
        assert "* 1 EXISTS" in out, out
        assert "Return-Path: <a@example.org>" in out
        assert f"Delivered-To: {user}@localhost" in out
        assert "Subject: end to end" in out and "hello via pickup and qmgr" in out
    finally:
        shutil.rmtree(spool, ignore_errors=True)
