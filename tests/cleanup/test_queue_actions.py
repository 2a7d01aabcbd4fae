"""What cleanup decides, carried out by the real qmgr process: header_checks HOLD puts the
message on hold until postsuper -H releases it; content_filter and FILTER send every
recipient to the filter's transport:nexthop (here Debian's smtp-sink)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from oxipost.cleanup.message import cleanup_message
from oxipost.config import Config
from oxipost.qmgr.queue import Queue, QueueState

from tests.cleanup.conftest import RECEIVED, envelope
from tests.conftest import run_ours
from tests.qmgr.test_service import make_conf, qmgr_proc, sink, start_qmgr, stop, wait_log

__all__ = ["qmgr_proc", "sink"]


def _queue(cfg: Config, content: bytes) -> str:
    """The message as smtpd would queue it after cleanup."""
    cleaned = cleanup_message(envelope("a@example.org", "b@example.net"), content, RECEIVED, cfg)
    assert cleaned.reply is None
    q = Queue.open(cfg, writer="test")
    try:
        return q.enqueue_sync(cleaned.envelope, cleaned.content)
    finally:
        q.close()


def test_hold_then_release(tmp_path: Path, qmgr_proc) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "header_checks").write_text("/^Subject: hold/ HOLD quarantine\n")
    cfg = make_conf(
        tmp_path, f"default_transport = discard\nheader_checks = regexp:{tmp_path}/header_checks\n"
    )
    qid = _queue(cfg, b"Subject: hold this\r\n\r\nbody\r\n")
    other = _queue(cfg, b"Subject: hold that\r\n\r\nbody\r\n")
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    deadline = time.monotonic() + 20
    while any(QueueState(cfg).messages[q].state != "hold" for q in (qid, other)):
        assert time.monotonic() < deadline, "never held"
        time.sleep(0.05)
    time.sleep(0.5)
    assert QueueState(cfg).messages[qid].state == "hold"
    # qmgr deletes what postsuper names by its ID (not in maildrop/, looked in first).
    deleted = run_ours("postsuper", "-c", cfg.config_dir, "-d", other)
    assert (deleted.returncode, deleted.stderr) == (
        0,
        f"postsuper: {other}: removed\npostsuper: Deleted: 1 message\n",
    )
    assert other not in QueueState(cfg).messages
    # postsuper reports the message qmgr released, as Postfix's does (qmgr logs nothing).
    released = run_ours("postsuper", "-c", cfg.config_dir, "-H", qid)
    assert (released.returncode, released.stderr) == (
        0,
        f"postsuper: {qid}: released from hold\npostsuper: Released from hold: 1 message\n",
    )
    wait_log(cfg, rf"postsuper\[\d+\]: {qid}: released from hold")
    run_ours("postqueue", "-c", cfg.config_dir, "-f")
    wait_log(cfg, rf"{qid}: removed")
    stop(p)


@pytest.mark.parametrize("how", ["content_filter", "FILTER"])
def test_filter_sends_every_recipient_to_the_filter(  # type: ignore[no-untyped-def]
    tmp_path: Path, qmgr_proc, sink: int, how: str
) -> None:
    target = f"smtp:[127.0.0.1]:{sink}"
    (tmp_path / "header_checks").write_text(f"/^Subject: scan/ FILTER {target}\n")
    main = "default_transport = discard\n"
    if how == "content_filter":
        main += f"content_filter = {target}\n"
    else:
        main += f"header_checks = regexp:{tmp_path}/header_checks\n"
    cfg = make_conf(tmp_path, main)
    qid = _queue(cfg, b"Subject: scan me\r\n\r\nbody\r\n")
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    log = wait_log(cfg, rf"{qid}: removed")
    assert re.search(
        rf"postfix/smtp\[\d+\]: {qid}: to=<b@example.net>, relay=.*{sink}.*status=sent", log
    )
    assert "postfix/discard" not in log
    stop(p)
