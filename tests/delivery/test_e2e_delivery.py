"""End to end for issue 6 (delivery), all real processes on 127.0.0.1: oxipost under its
master (`oxipost -c DIR start`, the embedded master.cf on a free port) with a test main.cf,
fed by swaks or by Debian's bsd-mailx through our sendmail, delivering into Maildirs (read
back with Python's mailbox module and by a real Dovecot over IMAP) and to Debian's
smtp-sink as the next hop, with and without its fault flags (-r soft 4xx, -f hard 5xx).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
import mailbox
import os
import pwd
import re
import shlex
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.config import Config, load_config
from oxipost.smtpd.sasl import hash_password

from tests.conftest import (
    REPO,
    free_port,
    main_cf_with,
    run_ours,
    shared_dir,
    smtp_sink,
    wait_port,
)
from tests.qmgr.test_service import wait_log

from .test_dovecot_reads import IMAP, ROOT, imap_argv, imap_env

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

SWAKS = "/usr/bin/swaks"
MAILX = "/usr/bin/bsd-mailx"
HOST = "oxi.example.test"
MAIN_CF = """\
queue_directory = {d}/spool
data_directory = {d}/lib
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
compatibility_level = 3.6
myhostname = {host}
mydomain = example.test
mydestination = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
disable_dns_lookups = yes
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = example.com
virtual_mailbox_base = {d}/vmail
virtual_mailbox_maps = texthash:{d}/conf/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
"""
# The virtual users: each a Maildir under vmail/example.com/.
VUSERS = ("info", "alice")
# The virtual mailboxes belong to mail_owner here, so that Dovecot (run as that user) reads
# them; test_catalogue_50_mailbox_written_as_its_owner delivers as another uid.
OWNER = pwd.getpwnam("postfix") if ROOT else pwd.getpwuid(os.getuid())


class Oxipost:
    """One oxipost under its master, in a directory the postfix user and nobody can reach
    (pytest's tmp_path is mode 700): conf/, spool/, vmail/ and the maillog."""

    def __init__(self) -> None:
        self._dir = contextlib.ExitStack()
        self.dir = d = self._dir.enter_context(shared_dir("oxipost-e2e6-"))
        self.conf, self.vmail = d / "conf", d / "vmail"
        self.conf.mkdir()
        self.vmail.mkdir()
        self.vmail.chmod(0o1777)
        self.port = free_port()
        self.started = False
        self.cfg: Config | None = None

    def start(self, main: str = "", master: str = "") -> Config:
        base = MAIN_CF.format(d=self.dir, host=HOST, uid=OWNER.pw_uid, gid=OWNER.pw_gid)
        (self.conf / "main.cf").write_text(main_cf_with(base, main))
        (self.conf / "vmailbox").write_text(
            "".join(f"{u}@example.com example.com/{u}/\n" for u in VUSERS)
        )
        master_cf = (REPO / "conf" / "master.cf").read_text()
        (self.conf / "master.cf").write_text(
            master_cf.replace("127.0.0.1:2525", f"127.0.0.1:{self.port}") + master
        )
        started = run_ours("postfix", "-c", str(self.conf), "start")
        assert started.returncode == 0, started.stderr
        self.started = True
        wait_port(self.port, None, "oxipost's smtpd")
        self.cfg = load_config(str(self.conf))
        return self.cfg

    def stop(self) -> None:
        if self.started:
            stopped = run_ours("postfix", "-c", str(self.conf), "stop")
            self.started = False
            assert stopped.returncode == 0, stopped.stderr

    def maildir(self, user: str) -> Path:
        return self.vmail / "example.com" / user

    def wait_mail(self, user: str, count: int = 1, timeout: float = 60) -> list[Path]:
        """The files in user's Maildir new/, once there are count of them."""
        new = self.maildir(user) / "new"
        deadline = time.monotonic() + timeout
        while True:
            files = sorted(new.iterdir()) if new.is_dir() else []
            if len(files) >= count:
                return files
            if time.monotonic() > deadline:
                pytest.fail(f"no {count} message(s) in {new}:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text() if path.exists() else ""

    def swaks(self, sender: str, rcpt: str, subject: str, body: str) -> str:
        """swaks submits one message over SMTP; returns the queue ID from the 250 reply."""
        if not os.path.exists(SWAKS):
            pytest.fail("swaks is missing: `make sysdeps` installs it")
        argv = [SWAKS, "--server", f"127.0.0.1:{self.port}", "--from", sender, "--to", rcpt]
        argv += ["--helo", "client.example.org", "--h-Subject", subject, "--body", body]
        r = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"<-  250 2\.0\.0 Ok: queued as ([0-9A-F]+)", r.stdout)
        assert m, r.stdout
        return m.group(1)

    def close(self) -> None:
        with self._dir:
            self.stop()


@pytest.fixture
def oxi() -> Iterator[Oxipost]:
    run = Oxipost()
    try:
        yield run
    finally:
        run.close()


def _delay(log: str, qid: str, rcpt: str, status: str) -> float:
    m = re.search(rf"{qid}: to=<{re.escape(rcpt)}>, .*delay=([\d.]+), .*status={status} ", log)
    assert m, log
    return float(m.group(1))


def test_8bit_sender_without_smtputf8_delivered_as_given(oxi):
    """smtputf8_enable = no: a sender with latin-1 bytes (Postfix takes them as they come)
    is queued, scheduled and written into the Maildir's Return-Path byte for byte, and a
    recipient with such bytes is judged as any other (unknown here: 550)."""
    from tests.smtpd.conftest import Raw

    cfg = oxi.start("smtputf8_enable = no\n")
    raw = Raw("127.0.0.1", oxi.port)
    try:
        replies = [raw.reply()]
        for cmd in (b"EHLO caf\xe9.example", b"MAIL FROM:<caf\xe9@example.org>"):
            raw.send(cmd + b"\r\n")
            replies.append(raw.reply())
        for cmd in (b"RCPT TO:<info@example.com>", b"RCPT TO:<nob\xe9dy@example.com>"):
            raw.send(cmd + b"\r\n")
            replies.append(raw.reply())
        replies.append(raw.cmd("DATA"))
        replies.append(raw.cmd("Subject: 8bit\r\n\r\nbody\r\n."))
        raw.cmd("QUIT")
    finally:
        raw.close()
    assert replies[2:4] == ["250 2.1.0 Ok", "250 2.1.5 Ok"], replies
    assert replies[4].startswith("550 5.1.1 <nob"), replies
    qid = replies[6].rsplit(" ", 1)[1]
    wait_log(cfg, rf"{qid}: removed", timeout=60)
    (path,) = oxi.wait_mail("info")
    assert path.read_bytes().startswith(b"Return-Path: <caf\xe9@example.org>\n")


def test_swaks_to_maildir_read_by_mailbox_and_dovecot_imap(oxi):
    """issue 6: swaks → oxipost's smtpd → qmgr → virtual(8) → a Maildir, checked with
    Python's mailbox module and by Debian's Dovecot serving that Maildir over IMAP to
    imaplib (its imap binary pre-authenticated, speaking over a socket pair)."""
    if not os.path.exists(IMAP):
        pytest.fail("dovecot imap is missing: `make sysdeps` installs dovecot-imapd")
    cfg = oxi.start()
    qid = oxi.swaks("sender@example.org", "info@example.com", "e2e six", "hello through swaks")
    wait_log(cfg, rf"{qid}: removed", timeout=60)
    log = oxi.log()
    assert re.search(
        rf"postfix/virtual\[\d+\]: {qid}: to=<info@example.com>, relay=virtual, .*"
        r"dsn=2\.0\.0, status=sent \(delivered to maildir\)",
        log,
    ), log
    (path,) = oxi.wait_mail("info")
    assert (path.stat().st_uid, path.stat().st_gid) == (OWNER.pw_uid, OWNER.pw_gid)
    (msg,) = list(mailbox.Maildir(str(oxi.maildir("info")), create=False))
    assert msg["Subject"] == "e2e six"
    assert msg["Return-Path"] == "<sender@example.org>"
    assert msg["Delivered-To"] == "info@example.com"
    assert "hello through swaks" in msg.get_payload()
    assert any(f"by {HOST}" in r for r in msg.get_all("Received")), msg.get_all("Received")

    # Dovecot's imap binary, pre-authenticated as the mailbox owner, on one end of a socket
    # pair; imaplib speaks IMAP over the other end (IMAP4_stream runs it as a command).
    with shared_dir("oxipost-e2e6-home-") as home:
        argv = ["env", "-i", *(f"{k}={v}" for k, v in imap_env(home, OWNER.pw_name).items())]
        argv += imap_argv(f"maildir:{oxi.maildir('info')}", OWNER.pw_uid, OWNER.pw_gid)
        imap = imaplib.IMAP4_stream(shlex.join(argv))
        try:
            assert imap.state == "AUTH", imap.state  # PREAUTH greeting
            typ, data = imap.select("INBOX", readonly=True)
            assert (typ, data) == ("OK", [b"1"]), (typ, data)
            typ, fetched = imap.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK", fetched
            raw = fetched[0][1]
            typ, found = imap.search(None, "SUBJECT", '"e2e six"')
            assert (typ, found) == ("OK", [b"1"]), (typ, found)
            imap.logout()
        finally:
            imap.shutdown()
    seen = email.message_from_bytes(raw, policy=email.policy.default)
    assert seen["Subject"] == "e2e six"
    assert seen["Delivered-To"] == "info@example.com"
    assert seen["Message-Id"] == msg["Message-Id"]
    assert "hello through swaks" in seen.get_content()
    oxi.stop()


def test_remote_4xx_deferred_then_sent_after_backoff(oxi):
    """issue 6: the next hop (smtp-sink, relayhost) answers RCPT TO with a 4xx (-r RCPT):
    the message is deferred with the remote text kept; smtp-sink is restarted on the same
    port without the fault and the message goes out at the next retry, which comes no
    sooner than minimal_backoff_time after the first attempt."""
    backoff = 3
    relay = free_port()
    cfg = oxi.start(
        f"relayhost = [127.0.0.1]:{relay}\nminimal_backoff_time = {backoff}s\n"
        f"maximal_backoff_time = {2 * backoff}s\nqueue_run_delay = 1s\n"
    )
    with smtp_sink(relay, "-r", "RCPT"):
        qid = oxi.swaks("alice@example.com", "far@example.net", "soft", "try again")
        wait_log(
            cfg,
            rf"postfix/smtp\[\d+\]: {qid}: to=<far@example\.net>, "
            rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{relay}, .*dsn=4\.\d+\.\d+, "
            r"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 4\d\d [^()]*"
            r"\(in reply to RCPT TO command\)\)",
            timeout=60,
        )
    with smtp_sink(relay):
        wait_log(cfg, rf"{qid}: removed", timeout=120)
    log = oxi.log()
    assert re.search(
        rf"postfix/smtp\[\d+\]: {qid}: to=<far@example\.net>, "
        rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{relay}, .*dsn=2\.0\.0, status=sent \(250 ",
        log,
    ), log
    # The sent attempt came no sooner than one backoff after arrival (and the deferral).
    assert _delay(log, qid, "far@example.net", "sent") >= backoff, log
    assert "status=bounced" not in log, log
    oxi.stop()


def test_remote_5xx_bounces_to_the_local_sender(oxi):
    """issue 6: the next hop (smtp-sink -f RCPT) rejects the recipient with a 5xx: the log
    says status=bounced with the remote text, and the sender, a virtual mailbox of this same
    oxipost, receives an RFC 3464 multipart/report in Postfix's wording."""
    relay = free_port()
    cfg = oxi.start(f"relayhost = [127.0.0.1]:{relay}\n")
    with smtp_sink(relay, "-f", "RCPT"):
        qid = oxi.swaks("alice@example.com", "gone@example.net", "hard", "no such user")
        wait_log(cfg, rf"{qid}: removed", timeout=60)
        (path,) = oxi.wait_mail("alice")
    log = oxi.log()
    m = re.search(
        rf"postfix/smtp\[\d+\]: {qid}: to=<gone@example\.net>, "
        rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{relay}, .*dsn=(5\.\d+\.\d+), "
        r"status=bounced \((host 127\.0\.0\.1\[127\.0\.0\.1\] said: (5\d\d [^()]*) "
        r"\(in reply to RCPT TO command\))\)",
        log,
    )
    assert m, log
    status, said, reply = m.groups()
    notice = re.search(
        rf"postfix/bounce\[\d+\]: {qid}: sender non-delivery notification: (\w+)", log
    )
    assert notice, log
    log = wait_log(cfg, rf"{notice.group(1)}: removed", timeout=60)
    assert re.search(
        rf"{notice.group(1)}: to=<alice@example\.com>, relay=virtual, .*status=sent", log
    ), log

    raw = path.read_bytes()
    # As Postfix's notice: post_mail's Received: and cleanup's Message-Id, each with the
    # notice's own queue ID.
    new = notice.group(1)
    assert re.search(rf"\nReceived: by {HOST} \(\w+\)\n\tid {new}; ".encode(), raw), raw
    assert re.search(rf"\nMessage-Id: <\d{{14}}\.{new}@{HOST}>\n".encode(), raw), raw
    assert f"\nFrom: Mail Delivery System <MAILER-DAEMON@{HOST}>\n".encode() in raw, raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Return-Path"] == "<>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["To"] == "alice@example.com"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    text, dsn, original = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    body = text.get_content()
    assert body.startswith(f"This is the mail system at host {HOST}.\n")
    assert "your message could not\nbe delivered to one or more recipients" in body
    # Folded as Postfix's bounce_print_wrap() folds it: continuations indented by 4.
    assert f"<gone@example.net>: {said}" in re.sub(r"\n    ", " ", body), body
    assert dsn.get_content_type() == "message/delivery-status"
    fields = dsn.as_string()
    assert f"Reporting-MTA: dns; {HOST}" in fields
    assert f"X-Postfix-Queue-ID: {qid}" in fields
    assert "Final-Recipient: rfc822; gone@example.net" in fields
    assert "Action: failed" in fields
    assert f"Status: {status}" in fields
    # As Postfix's bounce writes a remote server's reply.
    assert "\nRemote-MTA: dns; 127.0.0.1\n" in fields, fields
    unfolded = re.sub(rb"\n    ", b" ", raw)
    assert f"\nDiagnostic-Code: smtp; {reply}\n".encode() in unfolded, raw
    assert original.get_content_type() == "message/rfc822"
    (returned,) = original.get_payload()
    assert returned["Subject"] == "hard"
    oxi.stop()


def forwarded_as(line: str, rcpt: str) -> str:
    """The queue ID of the message local(8) forwarded for rcpt, from its delivery line."""
    m = re.search(
        rf"postfix/local(?:\[\d+\])?: (?:\w+: )?to=<{re.escape(rcpt)}>, relay=local, "
        r".*dsn=2\.0\.0, status=sent \(forwarded as (\w+)\)",
        line,
    )
    assert m, line
    return m.group(1)


def test_dot_forward_resubmits_to_the_forwarded_address(oxi, system_user):
    """issue 6: a local user's ~/.forward holds another address; mail to the user is
    resubmitted with the new envelope recipient (seed slide 7) and lands in the Maildir of
    the forwarded address, the original sender kept, Delivered-To naming the user."""
    user = system_user.pw_name
    fwd = Path(system_user.pw_dir) / ".forward"
    fwd.write_text("info@example.com\n")
    os.chown(fwd, system_user.pw_uid, system_user.pw_gid)
    cfg = oxi.start(f"mail_spool_directory = {oxi.dir}/mail/\n")
    qid = oxi.swaks("sender@example.org", f"{user}@localhost", "forward me", "via .forward")
    log = wait_log(cfg, rf"{qid}: removed", timeout=60)
    resent = forwarded_as(log, f"{user}@localhost")
    log = wait_log(cfg, rf"{resent}: removed", timeout=60)
    assert re.search(
        rf"{resent}: to=<info@example\.com>, orig_to=<{user}@localhost>, relay=virtual, .*"
        r"status=sent \(delivered to maildir\)",
        log,
    ), log
    (path,) = oxi.wait_mail("info")
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "forward me"
    assert msg["Return-Path"] == "<sender@example.org>"
    assert msg.get_all("Delivered-To") == ["info@example.com", f"{user}@localhost"]
    assert "via .forward" in msg.get_content()
    # Nothing was written to the user's own mailbox.
    assert not (oxi.dir / "mail" / user).exists()
    oxi.stop()


def test_bsd_mailx_submits_through_our_sendmail(oxi):
    """issue 6: `echo body | mail -s subject rcpt` with Debian's bsd-mailx works against
    oxipost. bsd-mailx runs /usr/sbin/sendmail (Debian's Postfix owns that path here), so it
    runs in a private mount namespace where our sendmail is bind-mounted over it, and finds
    our configuration through MAIL_CONFIG as Postfix's sendmail would: sendmail → maildrop/
    → pickup (as mail_owner) → qmgr → virtual(8)."""
    if not os.path.exists(MAILX):
        pytest.fail("bsd-mailx is missing: `make sysdeps` installs it")
    sendmail = Path(sys.executable).parent / "sendmail"
    assert sendmail.exists(), sendmail
    cfg = oxi.start()
    r = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'mount --bind "{sendmail}" /usr/sbin/sendmail && exec {MAILX} -s "$1" "$2"',
            "sh",
            "hello from mailx",
            "info@example.com",
        ],
        input="a body line\nand another\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAIL_CONFIG": str(oxi.conf)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    me = pwd.getpwuid(os.getuid()).pw_name
    picked = rf"postfix/pickup\[\d+\]: (\w+): uid={os.getuid()} from=<{me}>"
    m = re.search(picked, wait_log(cfg, picked, timeout=60))
    assert m
    log = wait_log(cfg, rf"{m.group(1)}: removed", timeout=60)
    (path,) = oxi.wait_mail("info")
    assert re.search(rf"{m.group(1)}: to=<info@example\.com>, .*status=sent", log), log
    assert "warning" not in log, log
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert msg["Subject"] == "hello from mailx"
    assert msg["Return-Path"] == f"<{me}@{HOST}>"
    assert msg["To"] == "info@example.com"
    assert "a body line\nand another" in msg.get_content()
    # Nothing was left behind in maildrop/ (set aside as .corrupt or unread).
    assert os.listdir(oxi.dir / "spool" / "maildrop") == []
    oxi.stop()


def test_catalogue_50_mailbox_written_as_its_owner(oxi):
    """catalogue 50: master runs qmgr unprivileged (mail_owner) and virtual(8) privileged,
    as Postfix does; qmgr hands the delivery to the virtual process, which writes the
    Maildir as virtual_uid_maps' user — not as mail_owner, never as root."""
    assert ROOT, "the test suite runs as root (CI): privileges cannot be tested otherwise"
    nobody = pwd.getpwnam("nobody")
    oxi.start(
        f"virtual_uid_maps = static:{nobody.pw_uid}\nvirtual_gid_maps = static:{nobody.pw_gid}\n"
    )
    qid = oxi.swaks("sender@example.org", "alice@example.com", "owned", "whose file?")
    (path,) = oxi.wait_mail("alice")
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert b"\n\nwhose file?" in path.read_bytes()
    wait_log(oxi.cfg, rf"{qid}: to=<alice@example.com>, .*status=sent \(delivered to maildir\)")
    # The queue manager that handed it over is not root.
    owners = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(oxi.conf).encode() in argv and b"qmgr/unix" in argv:
            owners["qmgr"] = proc.stat().st_uid
    assert owners.get("qmgr") == pwd.getpwnam("postfix").pw_uid, owners


def _processes(oxi: Oxipost) -> dict[str, tuple[int, int]]:
    """The pid and uid of each of oxi's service processes, by master.cf service
    ("qmgr/unix")."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            uid = proc.stat().st_uid
        except OSError:
            continue
        if str(oxi.conf).encode() in argv and b"--service" in argv:
            found[argv[argv.index(b"--service") + 1].decode()] = (int(proc.name), uid)
    return found


def _owners(oxi: Oxipost) -> dict[str, int]:
    """The uid of each of oxi's service processes, by master.cf service ("qmgr/unix")."""
    return {service: uid for service, (_pid, uid) in _processes(oxi).items()}


def test_delivery_line_carries_the_agent_process_pid(oxi):
    """The line of a delivery that an agent process of its own made (virtual(8) here,
    privileged) carries that process's pid, as Postfix's agent logs it; qmgr writes it."""
    assert ROOT, "the test suite runs as root (CI): agents run apart only under root's master"
    oxi.start()
    qid = oxi.swaks("sender@example.org", "info@example.com", "whose pid", "the agent's")
    assert oxi.cfg is not None
    log = wait_log(oxi.cfg, rf"{qid}: to=<info@example.com>, .*status=sent")
    m = re.search(rf"postfix/virtual\[(\d+)\]: {qid}: to=<info@example.com>, relay=virtual", log)
    assert m, log
    procs = _processes(oxi)
    assert int(m.group(1)) == procs["virtual/unix"][0], (m.group(1), procs)
    assert int(m.group(1)) != procs["qmgr/unix"][0]


# Two pipe services, as a site defines them (Debian's master.cf has six): one whose user=
# is right, one that Postfix's pipe(8) refuses to run.
PIPE_MASTER_CF = """\
piper     unix  -       n       n       -       -       pipe
  flags=R user=nobody argv=/bin/sh {dir}/cmd.sh ${{sender}} ${{recipient}}
rootpipe  unix  -       n       n       -       -       pipe
  flags=R user=root argv=/bin/sh {dir}/cmd.sh ${{sender}} ${{recipient}}
saslpipe  unix  -       n       n       -       -       pipe
  flags=R user=nobody argv=/bin/sh {dir}/cmd.sh ${{sasl_username}} ${{sasl_sender}}
"""
# master.cf has no quoting (argv is split at blanks): the shell's work is in a script.
PIPE_COMMAND = """\
id -u > {dir}/uid
echo "$1 $2" > {dir}/args
cat > {dir}/msg
"""


@pytest.fixture
def piped(oxi) -> Iterator[tuple[Oxipost, Path]]:
    """oxi with mail for pipe.example.test routed to the piper service, for
    root.example.test to rootpipe and for sasl.example.test to saslpipe; the command writes
    into the directory yielded. smtpd offers AUTH, for alice (password s3cret)."""
    assert ROOT, "the test suite runs as root (CI): privileges cannot be tested otherwise"
    # The command runs as nobody: not pytest's 0700 tmp_path.
    with shared_dir("oxipost-pipe-", 0o1777) as d:
        (d / "cmd.sh").write_text(PIPE_COMMAND.format(dir=d))
        (d / "cmd.sh").chmod(0o644)
        (oxi.conf / "transport").write_text(
            "pipe.example.test piper:\nroot.example.test rootpipe:\nsasl.example.test saslpipe:\n"
        )
        (oxi.conf / "sasl-users").write_text(f"alice:{hash_password('s3cret')}\n")
        oxi.start(
            f"transport_maps = texthash:{oxi.conf}/transport\n"
            "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = passwd-file\n"
            f"smtpd_sasl_path = {oxi.conf}/sasl-users\n",
            PIPE_MASTER_CF.format(dir=d),
        )
        yield oxi, d


def test_pipe_service_runs_its_command_as_its_user(piped):
    """catalogue 50: master runs each pipe service privileged, a process of its own on
    private/<service>; the unprivileged qmgr hands it the delivery, and the command runs
    as the service's user= with the service's argv, as Postfix's pipe(8) does."""
    oxi, d = piped
    qid = oxi.swaks("sender@example.org", "u@pipe.example.test", "piped", "through a pipe")
    assert oxi.cfg is not None
    wait_log(
        oxi.cfg,
        rf"postfix/pipe\[\d+\]: {qid}: to=<u@pipe.example.test>, relay=piper, .*"
        r"dsn=2\.0\.0, status=sent \(delivered via piper service\)",
    )
    nobody = pwd.getpwnam("nobody")
    assert (d / "uid").read_text() == f"{nobody.pw_uid}\n"
    assert (d / "args").read_text() == "sender@example.org u@pipe.example.test\n"
    msg = (d / "msg").read_bytes()
    assert msg.startswith(b"Return-Path: <sender@example.org>\n"), msg
    assert b"\n\nthrough a pipe\n" in msg, msg
    owners = _owners(oxi)
    postfix = pwd.getpwnam("postfix").pw_uid
    # One agent process per pipe service, privileged; the queue manager is not.
    assert owners.get("qmgr/unix") == postfix, owners
    assert owners.get("piper/unix") == 0, owners
    # Started when qmgr first needs it, as Postfix's master starts it: no mail, no process.
    assert "rootpipe/unix" not in owners, owners


def test_pipe_command_gets_the_auth_parameter_as_sasl_sender(piped):
    """An authenticated client's MAIL FROM AUTH=<...> (RFC 4954 section 5) goes through the
    queue to a pipe(8) command's ${sasl_sender}, as given (xtext not decoded), beside
    ${sasl_username}."""
    oxi, d = piped
    with smtplib.SMTP("127.0.0.1", oxi.port, timeout=30) as s:
        s.ehlo("client.example.org")
        s.login("alice", "s3cret")
        s.mail("alice@example.org", ["AUTH=<x+2By@example.org>"])
        s.rcpt("u@sasl.example.test")
        code, reply = s.data(b"Subject: authenticated\r\n\r\nbody\r\n")
    assert code == 250, reply
    qid = reply.decode().rsplit(" ", 1)[1]
    assert oxi.cfg is not None
    wait_log(
        oxi.cfg,
        rf"postfix/pipe\[\d+\]: {qid}: to=<u@sasl.example.test>, relay=saslpipe, .*"
        r"status=sent \(delivered via saslpipe service\)",
    )
    assert (d / "args").read_text() == "alice <x+2By@example.org>\n"
    assert re.search(
        rf"{qid}: client=localhost\[127\.0\.0\.1\], sasl_method=PLAIN, "
        r"sasl_username=alice, sasl_sender=<x\+2By@example\.org>\n",
        oxi.log(),
    ), oxi.log()


def test_pipe_service_with_user_root_defers_as_postfix(piped):
    """A pipe service with user=root: the agent logs Postfix's pipe(8) fatal and exits,
    and the mail is deferred as by Postfix's qmgr when its pipe process dies: a warning
    about the stream, no line for the recipient, never bounced and never run."""
    oxi, d = piped
    oxi.swaks("sender@example.org", "u@root.example.test", "rooted", "not as root")
    assert oxi.cfg is not None
    wait_log(
        oxi.cfg,
        r"postfix/pipe\[\d+\]: fatal: user= command-line attribute specifies root privileges",
    )
    wait_log(oxi.cfg, r"postfix/qmgr\[\d+\]: warning: private/rootpipe socket: malformed response")
    assert not (d / "uid").exists()
    assert "to=<u@root.example.test>" not in oxi.log()
    # As Postfix's master, whose pipe died within its first seconds too.
    wait_log(oxi.cfg, r"warning: .*/pipe: bad command startup -- throttling")


def test_agents_start_on_demand_and_end_after_max_idle(shared_tmp, oxi):
    """As Postfix's master and daemons: no process for a privileged agent service until
    qmgr connects to its socket; the process ends after max_idle (here the master.cf
    override -o max_idle=2) without a request, and master starts another for the next
    delivery, which is made and logged once (nothing deferred by the idle exit)."""
    assert ROOT, "the test suite runs as root (CI): agents run apart only under root's master"
    # The command runs as nobody: not pytest's 0700 tmp_path.
    d = shared_tmp
    d.chmod(0o1777)
    (d / "cmd.sh").write_text(PIPE_COMMAND.format(dir=d))
    (oxi.conf / "transport").write_text("pipe.example.test piper:\n")
    cfg = oxi.start(
        f"transport_maps = texthash:{oxi.conf}/transport\n",
        "piper unix - n n - - pipe\n  -o max_idle=2 flags=R user=nobody "
        f"argv=/bin/sh {d}/cmd.sh ${{sender}} ${{recipient}}\n",
    )
    deadline = time.monotonic() + 20
    while "qmgr/unix" not in _processes(oxi):
        assert time.monotonic() < deadline, _processes(oxi)
        time.sleep(0.1)
    time.sleep(1)  # master started every resident service at once
    idle = _processes(oxi)
    for service in ("piper/unix", "virtual/unix", "local/unix"):
        assert service not in idle, idle

    def delivered(qid: str) -> int:
        log = wait_log(cfg, rf"{qid}: to=<u@pipe.example.test>, .*status=sent")
        m = re.search(rf"postfix/pipe\[(\d+)\]: {qid}: to=<u@pipe.example.test>", log)
        assert m, log
        return int(m.group(1))

    pid = delivered(oxi.swaks("sender@example.org", "u@pipe.example.test", "1", "one"))
    logged = time.monotonic()
    running = _processes(oxi)
    assert running.get("piper/unix", (0, 0))[0] == pid, (pid, running)
    assert "virtual/unix" not in running, running
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() - logged < 15, "the idle agent did not end"
        time.sleep(0.05)
    assert time.monotonic() - logged > 1.5
    time.sleep(1)  # not started again without a client
    assert "piper/unix" not in _processes(oxi)

    qid = oxi.swaks("sender@example.org", "u@pipe.example.test", "2", "two")
    assert delivered(qid) not in (pid, 0)
    log = oxi.log()
    assert len(re.findall(rf"{qid}: to=<", log)) == 1, log
    assert "status=deferred" not in log, log
    assert not re.search(rf"pid {pid} (exit status|killed)", log), log


def test_service_processes_read_the_master_cf_master_loaded(oxi):
    """A master.cf edited badly and not reloaded stops no service process: as Postfix's
    daemons get their options from master, not from the file, ours read master's copy of
    the master.cf of the last start or reload. An agent started on demand after the edit
    (virtual(8)) and a qmgr restarted after it both work; the commands that in Postfix
    never read master.cf (sendmail, postqueue) work too."""
    assert ROOT, "the test suite runs as root (CI): agents run apart only under root's master"
    oxi.start()
    # qmgr has served a request (a flush): its death is no bad command startup, which
    # master would throttle for service_throttle_time, as Postfix's does.
    deadline = time.monotonic() + 20
    while run_ours("postqueue", "-c", str(oxi.conf), "-f").returncode != 0:
        assert time.monotonic() < deadline, "qmgr never answered"
        time.sleep(0.1)
    assert oxi.cfg is not None
    # The privileged agents read the copy: mail_owner must not be able to replace it.
    pid_dir = Path(oxi.cfg.path("queue_directory")) / "pid"
    for path, mode in ((pid_dir, 0o755), (pid_dir / "master.cf", 0o644)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, mode), path
    master_cf = oxi.conf / "master.cf"
    good = master_cf.read_text()
    master_cf.write_text(good + "half an edit\n")
    try:
        _work_on_the_master_cf_master_loaded(oxi)
    finally:
        master_cf.write_text(good)  # postfix stop refuses a bad master.cf, as Postfix's


def _work_on_the_master_cf_master_loaded(oxi: Oxipost) -> None:
    qmgr_pid = _processes(oxi)["qmgr/unix"][0]
    os.kill(qmgr_pid, signal.SIGKILL)
    qid = oxi.swaks("sender@example.org", "info@example.com", "after the edit", "still")
    assert oxi.cfg is not None
    log = wait_log(oxi.cfg, rf"{qid}: to=<info@example.com>, .*status=sent")
    assert "fatal" not in log, log
    procs = _processes(oxi)
    assert procs["qmgr/unix"][0] != qmgr_pid and "virtual/unix" in procs, procs
    submitted = run_ours(
        "sendmail",
        "-C",
        str(oxi.conf),
        "-f",
        "sender@example.org",
        "info@example.com",
        stdin="Subject: by sendmail\n\nbody\n",
    )
    assert submitted.returncode == 0, submitted.stderr
    oxi.wait_mail("info", 2)
    listed = run_ours("postqueue", "-c", str(oxi.conf), "-p")
    assert listed.returncode == 0 and "Mail queue is empty" in listed.stdout, listed


def test_postfix_stop_ends_every_service_at_once(oxi):
    """Postfix's daemons die of master's SIGTERM at once. pickup, waiting in select() for
    its next wakeup, went on waiting after the signal (PEP 475 resumes the call), until
    master killed it 10 s later."""
    oxi.start()
    deadline = time.monotonic() + 20
    while not {"pickup/unix", "qmgr/unix"} <= set(_processes(oxi)):
        assert time.monotonic() < deadline, _processes(oxi)
        time.sleep(0.1)
    time.sleep(2)  # pickup is past its first scan, waiting for the next
    pids = [pid for pid, _uid in _processes(oxi).values()]
    began = time.monotonic()
    oxi.stop()
    while any(os.path.exists(f"/proc/{pid}") for pid in pids):
        assert time.monotonic() - began < 5, _processes(oxi)
        time.sleep(0.05)
    assert time.monotonic() - began < 5  # postfix stop waits for master's end
