"""cleanup's log lines carry the program name "cleanup" (postfix/cleanup[pid]) whichever
process runs it, so pflogsumm counts header/body rejects and warnings as for Postfix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from oxipost.cleanup.message import cleanup_message
from oxipost.log import Logger

from tests.cleanup.conftest import RECEIVED, envelope, make_config


def test_pflogsumm_counts_cleanup_rejects_and_warnings(tmp_path: Path) -> None:
    (tmp_path / "hc").write_text("/^Subject: spam/ REJECT go away\n/^Subject: odd/ WARN odd one\n")
    cfg = make_config(tmp_path, "header_checks = regexp:{dir}/hc\n")
    maillog = tmp_path / "maillog"
    log = Logger("smtpd", maillog_file=str(maillog), host="mx")
    for subject in (b"spam", b"odd"):
        env = envelope("a@example.org", "b@example.test")
        res = cleanup_message(env, b"Subject: " + subject + b"\r\n\r\nx\r\n", RECEIVED, cfg)
        res.log_notes(log, "NOQUEUE" if res.reply else "4A5B6C7D8E")
    log.info("connect from unknown[192.0.2.7]")
    lines = maillog.read_text().splitlines()
    assert re.match(
        r".* mx postfix/cleanup\[\d+\]: NOQUEUE: reject: header Subject: spam ", lines[0]
    )
    assert re.match(r".* mx postfix/cleanup\[\d+\]: 4A5B6C7D8E: warning: header ", lines[1])
    assert re.match(r".* mx postfix/cleanup\[\d+\]: 4A5B6C7D8E: message-id=<>$", lines[2])
    assert re.match(r".* mx postfix/smtpd\[\d+\]: connect from ", lines[3])
    pflogsumm = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    if not os.path.exists(pflogsumm):
        pytest.fail("pflogsumm is missing: scripts/install-debian-deps.sh installs it")
    out = subprocess.run([pflogsumm, str(maillog)], capture_output=True, text=True).stdout
    assert re.search(r"^\s*1\s+rejected", out, re.M), out
    assert re.search(r"^\s*1\s+reject warnings", out, re.M), out
