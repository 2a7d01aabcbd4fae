"""End to end, all real processes: sendmail → maildrop/ → pickup → the queue → qmgr →
local(8) → a Maildir that Debian's Dovecot reads over IMAP (catalogue 10)."""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.pickup.service import pickup_once
from oxipost.qmgr.queue import Queue, QueueState

from tests.conftest import run_ours
from tests.qmgr.test_service import qmgr_proc, start_qmgr, stop, wait_log
from tests.smtpd.conftest import write_config

from .conftest import read_env
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


def test_sendmail_to_maildir_read_by_dovecot(tmp_path, shared_tmp, qmgr_proc):
    # Mailboxes written as their user, read by Dovecot as that user: not pytest's 0700 tree.
    spool = shared_tmp / "mail"
    spool.mkdir()
    spool.chmod(0o1777)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/lib\n"
        f"maillog_file = {tmp_path}/maillog\nmaillog_file_prefixes = {tmp_path}\n"
        "myhostname = mx.test.example\n"
        "mydestination = localhost\ninet_protocols = ipv4\ndisable_dns_lookups = yes\n"
        f"alias_maps =\nlocal_recipient_maps =\nmail_spool_directory = {spool}/\n"
        # compatibility_level 0's append_dot_mydomain = yes would make user@localhost
        # user@localhost.$mydomain (as in Postfix), not a local address.
        "append_dot_mydomain = no\n"
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
    home = shared_tmp / "home"
    home.mkdir()
    out = imap(home, f"maildir:{maildir}", "a SELECT INBOX\nb FETCH 1 (BODY.PEEK[])\nc LOGOUT\n")
    assert "* 1 EXISTS" in out, out
    assert "Return-Path: <a@example.org>" in out
    assert f"Delivered-To: {user}@localhost" in out
    assert "Subject: end to end" in out and "hello via pickup and qmgr" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(path: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return True
        time.sleep(0.1)
    return False


def _start(conf: Path, port: int, env: dict[str, str] | None = None) -> smtplib.SMTP:
    """`postfix start` with conf, and a session with its smtpd on port once it answers."""
    assert run_ours("postfix", "-c", str(conf), "start", env=env).returncode == 0
    deadline = time.monotonic() + 30
    while True:
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=10)
        except OSError:
            assert time.monotonic() < deadline, "smtpd does not answer"
            time.sleep(0.1)


@contextlib.contextmanager
def running_ours(top: Path, main_cf: str, services: str = "") -> Iterator[int]:
    """Our Postfix on a free port with its configuration in top/conf: main.cf (with a
    data directory, the maillog top/maillog and one smtpd worker), a master.cf of smtpd,
    qmgr, local and `services`; yields the port, then stops it."""
    conf = top / "conf"
    conf.mkdir()
    port = _free_port()
    write_config(
        str(conf),
        main_cf + f"data_directory = {conf}/data\n"
        f"maillog_file = {top}/maillog\nmaillog_file_prefixes = {top}\n"
        "smtpd_worker_processes = 1\n",
    )
    (conf / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\n"
        "local unix - n n - - local\n" + services
    )
    try:
        _start(conf, port).quit()
        yield port
    finally:
        run_ours("postfix", "-c", str(conf), "stop")


def test_alias_and_pipe_commands_environment_under_master(shared_tmp):
    """smtpd → qmgr → local(8) |command and pipe(8), all started by master from a shell
    with a variable import_environment does not name: the alias command sees local(8)'s
    variables (the client's from the SMTP session) and export_environment, the pipe
    command export_environment alone, neither the unlisted variable."""
    # Services running as mail_owner and commands as nobody: not pytest's private tree.
    top = shared_tmp
    out = top / "out"
    out.mkdir(mode=0o1777)
    out.chmod(0o1777)
    conf = top / "conf"
    conf.mkdir()
    port = _free_port()
    (top / "aliases").write_text(f'envdump "|env > {out}/alias.env"\n')
    (top / "transport").write_text("pipe.example envpipe:\n")
    user = "user=nobody " if ROOT else f"user={os.environ.get('USER', 'root')} "
    (conf / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = mx.example.test\nmydestination = localhost\n"
        "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.1/32\n"
        "smtpd_peername_lookup = no\nlocal_recipient_maps =\nrecipient_delimiter = +\n"
        f"alias_maps = texthash:{top}/aliases\nalias_database =\n"
        f"transport_maps = texthash:{top}/transport\nrelay_domains = pipe.example\n"
        f"queue_directory = {top}/spool\ndata_directory = {top}/data\n"
        f"maillog_file = {top}/maillog\nmaillog_file_prefixes = {top}\n"
        "smtpd_worker_processes = 1\n"
    )
    (conf / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\n"
        "local unix - n n - - local\n"
        f"envpipe unix - n n - - pipe {user}argv=/bin/sh -c env>{out}/pipe.env\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    env.update(TZ="Europe/Paris", LANG="de_DE.UTF-8", OXIPOST_UNLISTED="leak")
    try:
        with _start(conf, port, env) as s:
            s.ehlo("client.example.net")
            s.sendmail(
                "o'neil@example.com",
                ["EnvDump+Lists@localhost", "someone@pipe.example"],
                b"Subject: env\r\n\r\nhello\r\n",
            )
        log = top / "maillog"
        assert _wait_for(out / "alias.env"), log.read_text()
        assert _wait_for(out / "pipe.env"), log.read_text()
        spool = str(top / "spool")
        assert read_env(out / "alias.env") == {
            "PATH": "/usr/bin:/bin",
            "TZ": "Europe/Paris",
            "LANG": "C",  # import_environment's LANG=C, then exported
            "PWD": spool,
            "LOGNAME": "envdump",
            "USER": "envdump",
            "LOCAL": "envdump+lists",
            "DOMAIN": "localhost",
            "EXTENSION": "lists",
            "RECIPIENT": "EnvDump+Lists@localhost",
            "ORIGINAL_RECIPIENT": "EnvDump+Lists@localhost",
            "SENDER": "o_neil@example.com",
            "CLIENT_ADDRESS": "127.0.0.1",
            "CLIENT_HOSTNAME": "unknown",
            "CLIENT_HELO": "client.example.net",
            "CLIENT_PROTOCOL": "ESMTP",
        }
        assert read_env(out / "pipe.env") == {
            "PATH": "/usr/bin:/bin",
            "TZ": "Europe/Paris",
            "LANG": "C",
            "PWD": spool,
        }
    finally:
        run_ours("postfix", "-c", str(conf), "stop")


def test_list_alias_owner_rights_and_sender_under_master(system_user, shared_tmp):
    """smtpd → qmgr → local(8) → qmgr → local(8), started by master: an alias table owned
    by a user runs the list's command with that user's rights, HOME and SHELL (alias.c);
    its owner-list alias makes owner-list@$myorigin the sender of the command's delivery
    and of the copy resubmitted to the member, neither naming the original recipient any
    more (no ORIGINAL_RECIPIENT; the member's X-Original-To is its own address)."""
    # Services running as mail_owner, commands as the list's owner: not pytest's tree.
    top = shared_tmp
    out = top / "out"
    out.mkdir()
    out.chmod(0o1777)
    mail = top / "mail"
    mail.mkdir()
    mail.chmod(0o1777)
    conf = top / "conf"
    conf.mkdir()
    port = _free_port()
    aliases = top / "aliases"
    aliases.write_text(
        f'list "|id -u > {out}/uid; env > {out}/env", nobody\nowner-list listadmin\n'
    )
    os.chown(aliases, system_user.pw_uid, system_user.pw_gid)
    (conf / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = mx.example.test\n"
        "mydestination = localhost, $myhostname\ninet_interfaces = 127.0.0.1\n"
        "inet_protocols = ipv4\nmynetworks = 127.0.0.1/32\nsmtpd_peername_lookup = no\n"
        f"local_recipient_maps =\nalias_maps = texthash:{aliases}\nalias_database =\n"
        f"mail_spool_directory = {mail}/\nqueue_directory = {top}/spool\n"
        f"data_directory = {top}/data\nmaillog_file = {top}/maillog\n"
        f"maillog_file_prefixes = {top}\nsmtpd_worker_processes = 1\n"
    )
    (conf / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\n"
        "local unix - n n - - local\n"
    )
    try:
        with _start(conf, port) as s:
            s.sendmail("poster@example.com", ["list@localhost"], b"Subject: t\r\n\r\nhi\r\n")
        log = top / "maillog"
        assert _wait_for(out / "env"), log.read_text()
        assert (out / "uid").read_text() == f"{system_user.pw_uid}\n"
        env = read_env(out / "env")
        assert (env["HOME"], env["SHELL"]) == (system_user.pw_dir, "/usr/sbin/nologin")
        assert (env["USER"], env["SENDER"]) == ("list", "owner-list@mx.example.test")
        assert "ORIGINAL_RECIPIENT" not in env
        new = mail / "nobody" / "new"
        deadline = time.monotonic() + 30
        while not (new.is_dir() and os.listdir(new)):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        (name,) = os.listdir(new)
        head = (new / name).read_text().split("\n\n", 1)[0].splitlines()
        assert head[:3] == [
            "Return-Path: <owner-list@mx.example.test>",
            "X-Original-To: nobody@mx.example.test",
            "Delivered-To: nobody@mx.example.test",
        ]
        assert "Delivered-To: list@localhost" in head
    finally:
        run_ours("postfix", "-c", str(conf), "stop")
