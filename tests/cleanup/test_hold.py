"""header_checks HOLD end to end: cleanup marks the message, the real qmgr process puts
it on hold instead of delivering it, and postsuper -H releases it to delivery."""

from __future__ import annotations

import time
from pathlib import Path

from oxipost.cleanup import cleanup_message
from oxipost.qmgr.queue import Queue, QueueState

from tests.cleanup.conftest import RECEIVED, envelope
from tests.conftest import run_ours
from tests.qmgr.test_service import make_conf, qmgr_proc, start_qmgr, stop, wait_log

__all__ = ["qmgr_proc"]


def test_hold_then_release(tmp_path: Path, qmgr_proc) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "header_checks").write_text("/^Subject: hold/ HOLD quarantine\n")
    cfg = make_conf(
        tmp_path, f"default_transport = discard\nheader_checks = regexp:{tmp_path}/header_checks\n"
    )
    cleaned = cleanup_message(
        envelope("a@example.org", "b@example.net"),
        b"Subject: hold this\r\n\r\nbody\r\n",
        RECEIVED,
        cfg,
    )
    assert cleaned.reply is None
    q = Queue.open(cfg, writer="test")
    try:
        qid = q.enqueue_sync(cleaned.envelope, cleaned.content)
    finally:
        q.close()
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    deadline = time.monotonic() + 20
    while QueueState(cfg).messages[qid].state != "hold":
        assert time.monotonic() < deadline, "never held"
        time.sleep(0.05)
    time.sleep(0.5)
    assert QueueState(cfg).messages[qid].state == "hold"
    assert run_ours("postsuper", "-c", cfg.config_dir, "-H", qid).returncode == 0
    run_ours("postqueue", "-c", cfg.config_dir, "-f")
    wait_log(cfg, rf"{qid}: removed")
    stop(p)
