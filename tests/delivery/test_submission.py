"""Local submission: sendmail → postdrop → maildrop/ → pickup → cleanup → the queue."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import msgpack
from oxipost.config import load_config
from oxipost.pickup.maildrop import Submission
from oxipost.pickup.service import pickup_once
from oxipost.qmgr.queue import Queue, QueueState


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str) -> None:
        self.lines.append("warning: " + text)

    def for_program(self, _service: str) -> _Log:
        return self


def _conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\nmyhostname = host.example\nmyorigin = example.org\n"
    )
    (conf / "master.cf").write_text("pickup unix n - n 60 1 pickup\n")
    return conf


def _cmd(tool: str, conf: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"oxipost.cli.{tool}", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, "MAIL_CONFIG": str(conf)},
    )


def _maildrop(tmp_path: Path) -> list[Path]:
    d = tmp_path / "spool" / "maildrop"
    return sorted(d.iterdir()) if d.exists() else []


def test_sendmail_writes_one_whole_maildrop_file(tmp_path):
    conf = _conf(tmp_path)
    r = _cmd(
        "sendmail",
        conf,
        "-f",
        "me@example.org",
        "-N",
        "success,delay",
        "you@example.com",
        stdin=b"Subject: hi\n\nline\n.\nafter dot\n",
    )
    assert r.returncode == 0, r.stderr
    (f,) = _maildrop(tmp_path)
    assert not f.name.startswith(".")
    sub = Submission.decode(f.read_bytes())
    assert sub.sender == "me@example.org" and sub.recipients == ["you@example.com"]
    # Without -i a lone "." ends the message; line ends become CRLF.
    assert sub.content == b"Subject: hi\r\n\r\nline\r\n"
    assert sub.dsn_notify == "SUCCESS,DELAY"


def test_sendmail_oi_keeps_dot_lines(tmp_path):
    conf = _conf(tmp_path)
    r = _cmd("sendmail", conf, "-oi", "you", stdin=b"Subject: hi\n\n.\nmore\n")
    assert r.returncode == 0, r.stderr
    (f,) = _maildrop(tmp_path)
    assert Submission.decode(f.read_bytes()).content == b"Subject: hi\r\n\r\n.\r\nmore\r\n"


def test_sendmail_without_recipients(tmp_path):
    conf = _conf(tmp_path)
    r = _cmd("sendmail", conf, stdin=b"Subject: x\n\n")
    assert r.returncode == 75
    assert r.stderr.decode().endswith(
        "): Recipient addresses must be specified on the command line or via the -t option\n"
    )
    assert _maildrop(tmp_path) == []


def test_postdrop_refuses_garbage_and_accepts_a_record(tmp_path):
    conf = _conf(tmp_path)
    r = _cmd("postdrop", conf, stdin=b"not a record")
    assert r.returncode == 69
    assert (
        r.stderr.decode()
        == f"postdrop: warning: uid={os.getuid()}: unexpected or malformed record\n"
    )
    assert _maildrop(tmp_path) == []
    rec = Submission("a@b", ["c@d"], b"Subject: x\r\n\r\n").encode()
    r = _cmd("postdrop", conf, stdin=rec)
    assert r.returncode == 0, r.stderr
    (f,) = _maildrop(tmp_path)
    assert msgpack.unpackb(f.read_bytes())["recipients"] == ["c@d"]
    assert oct(f.stat().st_mode & 0o777) == "0o744"


def test_pickup_extracts_cleans_and_queues(tmp_path):
    conf = _conf(tmp_path)
    r = _cmd(
        "sendmail",
        conf,
        "-t",
        "-F",
        "Joe User",
        "-f",
        "joe",
        "extra",
        stdin=b"To: a@example.com, B <b@example.com>\nBcc: hidden@example.com\n"
        b" ,more@example.com\nSubject: t\n\nbody\n",
    )
    assert r.returncode == 0, r.stderr
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    log = _Log()
    try:
        assert pickup_once(cfg, queue, log) == 1
    finally:
        queue.close()
    assert _maildrop(tmp_path) == []
    state = QueueState(cfg)
    (qid,) = state.messages
    env, content = state.load(qid)
    assert env.sender == "joe@example.org"
    assert [r.address for r in env.recipients] == [
        "extra@example.org",
        "a@example.com",
        "b@example.com",
        "hidden@example.com",
        "more@example.com",
    ]
    mail_name = cfg.get("mail_name").encode()
    # Postfix's pickup form, with the queue ID on the second line and in the Message-Id.
    received = re.escape(b"Received: by host.example (" + mail_name + b", from userid ")
    assert re.match(received + rb"\d+\)\r\n\tid " + qid.encode() + b"; ", content)
    assert b"From: Joe User <joe@example.org>\r\n" in content
    assert b"Bcc" not in content and b"hidden" not in content
    assert re.search(
        rb"\r\nMessage-Id: <\d{14}\." + qid.encode() + rb"@host\.example>\r\n", content
    )
    assert b"\r\nDate: " in content
    assert content.endswith(b"\r\n\r\nbody\r\n")
    # pickup's line, then cleanup's for the Message-Id: it added (as Postfix logs both).
    # The sender as submitted (-f joe): cleanup qualifies it after pickup's line.
    assert log.lines[0] == f"{qid}: uid={os.getuid()} from=<joe>"
    assert log.lines[1].startswith(f"{qid}: message-id=<") and len(log.lines) == 2


def test_pickup_sets_aside_a_bad_file(tmp_path):
    conf = _conf(tmp_path)
    d = tmp_path / "spool" / "maildrop"
    d.mkdir(parents=True)
    (d / "bad").write_bytes(b"junk")
    (d / "bad").chmod(0o744)  # READY, as postdrop leaves a file
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    log = _Log()
    try:
        assert pickup_once(cfg, queue, log) == 0
    finally:
        queue.close()
    assert (d / "bad.corrupt").exists()
    assert log.lines[0].startswith("warning: maildrop/bad: ")


def test_pickup_takes_header_recipients_in_header_order(tmp_path):
    # As Postfix's sendmail -t writes them (mailq shows them so, see test_queue_tools) and
    # its cleanup keeps the first of each: Cc: before To: here, one address twice.
    conf = _conf(tmp_path)
    text = b"Cc: c@example.com\nTo: t@example.com, c@example.com\nSubject: t\n\nbody\n"
    assert _cmd("sendmail", conf, "-t", "-f", "joe", stdin=text).returncode == 0
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    try:
        assert pickup_once(cfg, queue, _Log()) == 1
    finally:
        queue.close()
    state = QueueState(cfg)
    (qid,) = state.messages
    env, _content = state.load(qid)
    assert [r.address for r in env.recipients] == ["c@example.com", "t@example.com"]


def test_pickup_and_mailq_take_only_queue_id_names(tmp_path):
    # As Postfix's pickup and showq (mail_open_ok): a file not named like a queue ID (one
    # being written, one set aside) is neither taken nor listed, even a whole submission.
    conf = _conf(tmp_path)
    d = tmp_path / "spool" / "maildrop"
    d.mkdir(parents=True)
    (d / "1234.5678").write_bytes(Submission("a@b", ["c@d"], b"Subject: x\r\n\r\n").encode())
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    try:
        assert pickup_once(cfg, queue, _Log()) == 0
    finally:
        queue.close()
    assert [f.name for f in _maildrop(tmp_path)] == ["1234.5678"]
    assert _cmd("postqueue", conf, "-p").stdout == b"Mail queue is empty\n"


def test_pickup_leaves_an_incomplete_file(tmp_path):
    # As Postfix's pickup (mail_open_ok): a file postdrop has not made READY (0600: being
    # written, or left so by a postdrop that died) stays, until it is; a symlink by a
    # queue ID's name is warned of at each scan and stays.
    conf = _conf(tmp_path)
    d = tmp_path / "spool" / "maildrop"
    d.mkdir(parents=True)
    half = d / "ABCDEF12345"
    half.write_bytes(Submission("a@b", ["c@d"], b"Subject: x\r\n\r\n").encode())
    half.chmod(0o600)
    (d / "ABCDEF12346").symlink_to(half)
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    log = _Log()
    try:
        assert pickup_once(cfg, queue, log) == 0
        assert log.lines == ["warning: maildrop/ABCDEF12346: uid 0: not a regular file"]
        half.chmod(0o744)
        assert pickup_once(cfg, queue, log) == 1
    finally:
        queue.close()
    assert [f.name for f in _maildrop(tmp_path)] == ["ABCDEF12346"]


def test_sendmail_bs_speaks_smtp_into_the_queue(tmp_path):
    conf = _conf(tmp_path)
    with open(conf / "main.cf", "a") as f:
        f.write(
            "compatibility_level = 3.6\nmydestination = localhost\nlocal_recipient_maps =\n"
            "smtpd_peername_lookup = no\n"
        )
    dialogue = (
        b"EHLO me\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<u@localhost>\r\nDATA\r\n"
        b"Subject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    )
    r = _cmd("sendmail", conf, "-bs", stdin=dialogue)
    assert r.returncode == 0, r.stderr
    replies = r.stdout.decode().splitlines()
    assert replies[0] == "220 host.example ESMTP " + load_config(str(conf)).get("mail_name")
    queued = [ln for ln in replies if ln.startswith("250 2.0.0 Ok: queued as ")]
    assert len(queued) == 1 and replies[-1] == "221 2.0.0 Bye"
    qid = queued[0].rsplit(" ", 1)[1]
    env, content = QueueState(load_config(str(conf))).load(qid)
    assert env.client_addr == "127.0.0.1" and env.sender == "a@b.example"
    assert b"Subject: bs\r\n" in content and content.endswith(b"\r\n\r\nhi\r\n")


def test_sendmail_bp_lists_the_queue(tmp_path):
    conf = _conf(tmp_path)
    r = _cmd("sendmail", conf, "-bp")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "Mail queue is empty\n"
