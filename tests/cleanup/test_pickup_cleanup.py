"""cleanup for locally submitted mail: sendmail → postdrop → maildrop/ → pickup, with the
real commands. A header_checks REJECT returns the message to its sender, as Postfix's
cleanup does for pickup; virtual aliases and canonical mapping apply as for SMTP mail."""

from __future__ import annotations

import os
import re
from pathlib import Path

from oxipost.config import load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.pickup.maildrop import requeue
from oxipost.pickup.service import pickup_once
from oxipost.qmgr.queue import Queue, QueueState, mail_owner

from tests.delivery.test_submission import _cmd, _Log, _maildrop


def _setup(tmp_path: Path, main: str) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\nmyhostname = host.example\n"
        f"myorigin = example.org\n{main}"
    )
    (conf / "master.cf").write_text("pickup unix n - n 60 1 pickup\n")
    return conf


def _pickup(conf: Path) -> tuple[_Log, QueueState]:
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    log = _Log()
    try:
        pickup_once(cfg, queue, log)
    finally:
        queue.close()
    return log, QueueState(cfg)


def test_rejected_submission_is_returned_to_the_sender(tmp_path: Path) -> None:
    (tmp_path / "header_checks").write_text("/^Subject: forbidden/ REJECT not from here\n")
    conf = _setup(tmp_path, f"header_checks = regexp:{tmp_path}/header_checks\n")
    r = _cmd("sendmail", conf, "-f", "joe", "bob@example.com", stdin=b"Subject: forbidden\n\nx\n")
    assert r.returncode == 0, r.stderr
    log, state = _pickup(conf)
    assert _maildrop(tmp_path) == []
    ((env, content),) = [state.load(q) for q in state.messages]
    assert env.sender == ""
    assert [r.address for r in env.recipients] == ["joe@example.org"]
    assert b"Subject: Undelivered Mail Returned to Sender" in content
    assert b"not from here" in content
    qid = log.lines[0].split(":", 1)[0]
    assert log.lines[0] == f"{qid}: uid={os.getuid()} from=<joe>"
    assert log.lines[1] == (
        f"{qid}: reject: header Subject: forbidden from local; from=<joe@example.org> "
        "to=<bob@example.com>: 5.7.1 not from here"
    )
    # Before any queue manager, the whole delay is the first of delays= (log_adhoc.c).
    assert re.fullmatch(
        rf"{qid}: to=<bob@example\.com>, relay=none, delay=([\d.]+), delays=\1/0/0/0, "
        r"dsn=5\.7\.1, status=bounced \(not from here\)",
        log.lines[3],
    ), log.lines
    # The Message-Id: cleanup would have added, logged before the bounce as Postfix's.
    assert log.lines[2].startswith(f"{qid}: message-id=<"), log.lines
    # Postfix's cleanup bounced it: no queue file was made, none is removed.
    assert not any(line.endswith(": removed") for line in log.lines)


def test_submission_gets_virtual_aliases_and_canonical(tmp_path: Path) -> None:
    (tmp_path / "virtual").write_text("bob@example.com robert@example.net, bob@example.com\n")
    (tmp_path / "canonical").write_text("joe@example.org Joe.User@example.org\n")
    conf = _setup(
        tmp_path,
        f"virtual_alias_maps = texthash:{tmp_path}/virtual\n"
        f"sender_canonical_maps = texthash:{tmp_path}/canonical\n",
    )
    msg = b"From: joe\nTo: bob@example.com\nSubject: hi\n\nx\n"
    assert _cmd("sendmail", conf, "-f", "joe", "bob@example.com", stdin=msg).returncode == 0
    _log, state = _pickup(conf)
    ((env, content),) = [state.load(q) for q in state.messages]
    assert env.sender == "Joe.User@example.org"
    assert [(r.address, r.original) for r in env.recipients] == [
        ("robert@example.net", "bob@example.com"),
        ("bob@example.com", "bob@example.com"),
    ]
    # Local submissions always get header rewriting: From: joe@$myorigin, then canonical.
    assert b"\r\nFrom: Joe.User@example.org\r\n" in content


def test_null_recipient_queued_as_empty_address_recipient(tmp_path: Path) -> None:
    """sendmail '<>' and '' (Postfix's sendmail passes both on): cleanup queues
    $empty_address_recipient@$myorigin with an empty original recipient, as Postfix's
    cleanup_addr_recipient (test_empty_recipient.py compares the delivery with Postfix's)."""
    conf = _setup(tmp_path, "empty_address_recipient = postmaster\n")
    for rcpts in (["<>"], [""], ["<>", "bob@example.com"]):
        r = _cmd("sendmail", conf, "-f", "joe", *rcpts, stdin=b"Subject: t\n\nx\n")
        assert r.returncode == 0, r.stderr
    log, state = _pickup(conf)
    assert [ln for ln in log.lines if ln.startswith("warning:")] == []
    queued = sorted(
        [(r.address, r.original) for r in state.load(q)[0].recipients] for q in state.messages
    )
    assert queued == [
        [("postmaster@example.org", "")],
        [("postmaster@example.org", "")],
        [("postmaster@example.org", ""), ("bob@example.com", "bob@example.com")],
    ]


def test_added_from_header_names_the_canonical_sender(tmp_path: Path) -> None:
    """The From: cleanup adds to a submission without one has the envelope sender after
    rewriting and canonical mapping (Postfix's state->sender) and -F's full name, after
    the message's own headers."""
    (tmp_path / "canonical").write_text("joe@example.org Joe.User@example.org\n")
    conf = _setup(tmp_path, f"sender_canonical_maps = texthash:{tmp_path}/canonical\n")
    msg = b"Subject: hi\n\nx\n"
    assert _cmd("sendmail", conf, "-f", "joe", "-F", "J. Oe", "bob", stdin=msg).returncode == 0
    _log, state = _pickup(conf)
    ((env, content),) = [state.load(q) for q in state.messages]
    head = content.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[2] == b"Subject: hi"
    assert head[-1] == b'From: "J. Oe" <Joe.User@example.org>'
    assert [(r.address, r.original) for r in env.recipients] == [("bob@example.org", "bob")]


def test_rejected_unqualified_recipient_logged_with_its_original(tmp_path: Path) -> None:
    """A refused submission to an unqualified recipient is bounced as Postfix's cleanup
    logs it: the recipient qualified, then orig_to=<as submitted>."""
    (tmp_path / "header_checks").write_text("/^Subject: forbidden/ REJECT not from here\n")
    conf = _setup(tmp_path, f"header_checks = regexp:{tmp_path}/header_checks\n")
    r = _cmd("sendmail", conf, "-f", "joe", "bob", stdin=b"Subject: forbidden\n\nx\n")
    assert r.returncode == 0, r.stderr
    log, _state = _pickup(conf)
    qid = log.lines[0].split(":", 1)[0]
    assert log.lines[1].endswith("from=<joe@example.org> to=<bob@example.org>: 5.7.1 not from here")
    assert log.lines[3].startswith(
        f"{qid}: to=<bob@example.org>, orig_to=<bob>, relay=none, delay="
    ), log.lines


def test_requeued_message_is_rewritten_again(tmp_path: Path) -> None:
    """postsuper -r: the message goes through pickup and cleanup again under a new ID. A
    virtual alias added since applies (the original recipient kept), the recipient
    delivered stays delivered, its arrival time and Message-Id stay, pickup's Received:
    header comes first, pickup's line names the old ID, and the content filters of the time
    are gone (no content_filter now)."""
    conf = _setup(tmp_path, "")
    cfg = load_config(str(conf))
    q = Queue.open(cfg, "test")
    rcpts = [Recipient("done@example.com"), Recipient("y@example.com", original="y@example.com")]
    content = (
        b"Message-Id: <m@example.org>\r\nDate: Thu, 1 Jan 1970 00:16:40 +0000\r\n"
        b"From: a@example.org\r\n\r\nbody\r\n"
    )
    # A content_filter and a FILTER action of the time: gone with them.
    filters = {"content_filter": "scan:[127.0.0.1]:10025", "filter": "hold:[127.0.0.1]:10026"}
    old = q.enqueue_sync(Envelope("a@example.org", rcpts, 1000.0, attrs=filters), content)
    q.close()
    state = QueueState(cfg, lock=True)
    state.cross_off(old, [0])
    requeue(state, old)
    state.close()
    with (conf / "main.cf").open("a") as f:
        f.write("virtual_alias_maps = inline:{ {y@example.com=z@example.com} }\n")
    log, state = _pickup(conf)
    (new,) = state.messages
    env, queued = state.load(new)
    assert new != old
    assert [(r.address, r.original) for r in env.recipients] == [("z@example.com", "y@example.com")]
    assert (env.sender, env.arrival_time) == ("a@example.org", 1000.0)
    assert env.filter == "" and not env.attrs.keys() & filters.keys()
    owner = mail_owner(cfg)
    uid = owner[0] if owner else os.getuid()
    name = cfg.get("mail_name")
    received = f"Received: by host.example ({name}, from userid {uid})\r\n\tid {new}; "
    assert queued.startswith(received.encode())
    assert queued.endswith(content)
    assert log.lines[:2] == [
        f"{new}: uid={uid} from=<a@example.org> orig_id={old}",
        f"{new}: message-id=<m@example.org>",
    ]
