"""An empty envelope recipient (sendmail '<>' or '', which Postfix's sendmail passes on as
it is; smtpd refuses RCPT TO:<>) becomes $empty_address_recipient in cleanup, rewritten as
any local address, its original recipient left empty: Postfix's cleanup_addr_recipient.
Compared end to end with Debian's Postfix 3.7 (tests/cleanup/test_pickup_cleanup.py has
what the queue keeps)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_ours, shared_dir
from tests.delivery.test_e2e_delivery import HOST, Oxipost

# Both sides: mail for the host is local, and no alias for mailer-daemon.
MAIN_CF = "mydestination = $myhostname\nalias_maps =\nalias_database =\nlocal_recipient_maps =\n"
EMPTY = ["<>", ""]


@contextlib.contextmanager
def _real_postfix(top: Path) -> Iterator[tuple[Path, Path]]:
    """Debian's Postfix with MAIN_CF on top/conf, running; yields (configuration directory,
    maillog)."""
    conf, spool, data = top / "conf", top / "spool", top / "data"
    for p in (conf, spool, data):
        p.mkdir()
    subprocess.run(["chown", "postfix", str(data)], check=True)
    master = Path("/usr/share/postfix/master.cf.dist").read_text()
    (conf / "master.cf").write_text(re.sub(r"(?m)^smtp(\s+)inet", r"#smtp\1inet", master))
    (conf / "main.cf").write_text(
        f"compatibility_level = 3.6\nmyhostname = {HOST}\nmydomain = example.test\n"
        f"inet_interfaces = loopback-only\ninet_protocols = ipv4\nqueue_directory = {spool}\n"
        f"data_directory = {data}\nmaillog_file = {top}/maillog\n" + MAIN_CF
    )
    try:
        subprocess.run(["/usr/sbin/postfix", "-c", str(conf), "start"], check=True, timeout=60)
        yield conf, top / "maillog"
    finally:
        subprocess.run(["/usr/sbin/postfix", "-c", str(conf), "stop"], timeout=120)


def _local_lines(maillog: Path) -> list[str]:
    """local(8)'s lines for the two messages, once both are delivered, without queue IDs
    and times."""
    deadline = time.monotonic() + 60
    while (text := maillog.read_text() if maillog.exists() else "").count(
        "postfix/local"
    ) < 2 * len(EMPTY):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    lines = re.findall(r"postfix/local\[\d+\]: (?:[0-9A-F]+: )?(.*)", text)
    return sorted(re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", ln) for ln in lines)


@pytest.mark.slow
@pytest.mark.postfix
def test_null_recipient_delivered_as_postfix_delivers_it() -> None:
    """sendmail '<>' and sendmail '': to=<MAILER-DAEMON@$myorigin> without orig_to, local
    finds no mailer-daemon alias and discards it, as Postfix 3.7 logs it."""
    # Postfix logs to a maillog_file under /var only (maillog_file_prefixes).
    with shared_dir("oxipost-empty-rcpt-", parent="/var/tmp") as top:
        with _real_postfix(top) as (real_conf, real_log):
            for rcpt in EMPTY:
                subprocess.run(
                    ["/usr/sbin/sendmail", "-C", str(real_conf), "-f", "a@example.org", rcpt],
                    input=b"Subject: t\n\nhi\n",
                    check=True,
                    timeout=60,
                )
            theirs = _local_lines(real_log)
    with contextlib.closing(Oxipost()) as oxi:
        oxi.start(MAIN_CF)
        for rcpt in EMPTY:
            sent = run_ours(
                "sendmail",
                "-C",
                str(oxi.conf),
                "-f",
                "a@example.org",
                rcpt,
                stdin="Subject: t\n\nhi\n",
            )
            assert sent.returncode == 0, sent.stderr
        ours = _local_lines(oxi.dir / "maillog")
    assert ours == theirs
    assert theirs == [
        f"to=<MAILER-DAEMON@{HOST}>, relay=local, dsn=2.0.0, status=sent (discarded)",
        f"to=<MAILER-DAEMON@{HOST}>, relay=local, dsn=2.0.0, status=sent (discarded)",
        "warning: required alias not found: mailer-daemon",
        "warning: required alias not found: mailer-daemon",
    ]
