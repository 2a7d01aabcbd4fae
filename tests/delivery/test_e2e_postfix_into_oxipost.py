"""End to end, all real processes: Debian's Postfix relays (relayhost) into oxipost's
smtpd, whose qmgr hands the mail to virtual(8), which writes a Maildir."""

from __future__ import annotations

import mailbox
import os
import subprocess
import time

import pytest

from tests.conftest import free_port, run_ours, wait_for_log
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
qmgr      unix  n       -       n       300     1       qmgr
virtual   unix  -       n       n       -       -       virtual
"""


def test_real_postfix_relays_into_oxipost_maildir(shared_tmp):
    # Reachable by the postfix user (Postfix's and our unprivileged processes).
    d = shared_tmp
    conf, vmail = d / "conf", d / "vmail"
    conf.mkdir()
    vmail.mkdir(mode=0o1777)
    vmail.chmod(0o1777)
    port = free_port()
    (conf / "main.cf").write_text(
        f"queue_directory = {d}/spool\ndata_directory = {d}/lib\nmaillog_file = {d}/maillog\n"
        f"maillog_file_prefixes = {d}\n"
        "compatibility_level = 3.6\nmyhostname = oxi.example.test\ninet_protocols = ipv4\n"
        "disable_dns_lookups = yes\n"
        "mynetworks = 127.0.0.0/8\nmydestination =\nvirtual_mailbox_domains = example.com\n"
        f"virtual_mailbox_base = {vmail}\nvirtual_mailbox_maps = texthash:{conf}/vmailbox\n"
        "virtual_uid_maps = static:65534\nvirtual_gid_maps = static:65534\n"
    )
    (conf / "vmailbox").write_text("info@example.com example.com/info/\n")
    (conf / "master.cf").write_text(MASTER_CF.format(port=port))
    started = run_ours("postfix", "-c", str(conf), "start")
    assert started.returncode == 0, started.stderr
    try:
        with running_postfix(f"relayhost = [127.0.0.1]:{port}\nmydestination =\n") as (_, pf):
            sent = subprocess.run(
                [
                    "/usr/sbin/sendmail",
                    "-C",
                    str(pf),
                    "-f",
                    "alice@example.org",
                    "info@example.com",
                ],
                input=b"Subject: through Postfix\n\nrelayed into oxipost\n",
                capture_output=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stderr
            box = vmail / "example.com" / "info"
            deadline = time.monotonic() + 60
            while not (box / "new").is_dir() or not os.listdir(box / "new"):
                assert time.monotonic() < deadline, (d / "maillog").read_text()
                time.sleep(0.2)
        (msg,) = list(mailbox.Maildir(str(box), create=False))
        assert msg["Subject"] == "through Postfix"
        assert msg["Return-Path"] == "<alice@example.org>"
        assert "relayed into oxipost" in msg.get_payload()
        # Postfix's smtp client handed it over, and Postfix's own Received: header came along.
        received = msg.get_all("Received")
        assert any("by oxi.example.test" in r for r in received), received
        assert any("ESMTP Postfix" in r or "Postfix" in r for r in received), received
        # virtual(8) logs its line after the file is in new/.
        wait_for_log(d / "maillog", r"status=sent \(delivered to maildir\)")
    finally:
        run_ours("postfix", "-c", str(conf), "stop")
