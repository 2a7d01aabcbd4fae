"""qmgr as a real process when a delivery agent fails, as Postfix 3.7's qmgr.

A transport whose agent cannot be reached (here: no master.cf service, so no
private/NAME socket) is throttled for transport_retry_time: one warning, its mail deferred
by the retry service's agent without an attempt, other transports unaffected, attempts
again once the time has passed. Seen in real Postfix 3.7 (Debian's package) with the same
transport_maps: `postfix/qmgr[...]: warning: connect to transport private/gone: No such
file or directory`, then `postfix/error[...]: QID: to=<...>, relay=none, ..., dsn=4.3.0,
status=deferred (mail transport unavailable)` for that mail and for mail arriving within
transport_retry_time, with no second warning until it had passed.

An agent that dies before it answers throttles nothing: Postfix 3.7's qmgr warns
"private/NAME socket: malformed response", logs no line for the recipients and leaves
the mail deferred.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from oxipost.config import Config
from oxipost.qmgr.queue import QueueState

from tests.qmgr.test_service import (
    control,
    enqueue,
    make_conf,
    qmgr_proc,
    start_qmgr,
    stop,
    wait_log,
    wait_socket,
)

__all__ = ["qmgr_proc"]  # the fixture, used by name

RETRY = 3.0
WARNING = (
    r"postfix/qmgr\[\d+\]: warning: connect to transport private/gone: No such file or directory"
)


def _unavailable(qid: str, rcpt: str) -> str:
    return (
        rf"postfix/error\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, relay=none, delay=[\d.]+, "
        r"delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=4\.3\.0, "
        r"status=deferred \(mail transport unavailable\)"
    )


def _sent(qid: str, rcpt: str) -> str:
    return rf"postfix/discard\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, relay=none, .*status=sent"


def _wait_deferred(cfg: Config, qids: tuple[str, ...]) -> None:
    """Each message waits in the deferred queue for its own retry (qmgr's queue writes go
    behind its log lines)."""
    deadline = time.monotonic() + 10
    while {QueueState(cfg).messages[q].state for q in qids} != {"deferred"}:
        assert time.monotonic() < deadline, QueueState(cfg).messages
        time.sleep(0.05)


def test_unreachable_transport_is_throttled_for_transport_retry_time(tmp_path, qmgr_proc):
    cfg = make_conf(
        tmp_path,
        "transport_maps = inline:{gone.test=gone:, ok.test=discard:}\n"
        f"transport_retry_time = {RETRY:g}s\n",
    )
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_socket(cfg, p)
    first = enqueue(cfg, ["a@gone.test", "b@gone.test"])
    other = enqueue(cfg, ["w@ok.test"])
    control(cfg, {"op": "wakeup"})
    log = wait_log(cfg, WARNING)
    throttled_at = time.monotonic()
    for rcpt in ("a@gone.test", "b@gone.test"):
        wait_log(cfg, _unavailable(first, rcpt))
    wait_log(cfg, _sent(other, "w@ok.test"))

    # Within transport_retry_time: new mail for the transport is deferred without an
    # attempt (no second warning), and other transports go on.
    during = enqueue(cfg, ["c@gone.test"])
    other2 = enqueue(cfg, ["x@ok.test"])
    control(cfg, {"op": "wakeup"})
    wait_log(cfg, _unavailable(during, "c@gone.test"))
    log = wait_log(cfg, _sent(other2, "x@ok.test"))
    assert time.monotonic() - throttled_at < RETRY, "too slow to test within the retry time"
    assert len(re.findall(WARNING, log)) == 1, log

    # After it: the transport is tried again.
    time.sleep(max(0.0, throttled_at + RETRY + 0.2 - time.monotonic()))
    after = enqueue(cfg, ["d@gone.test"])
    control(cfg, {"op": "wakeup"})
    log = wait_log(cfg, WARNING, count=2)
    wait_log(cfg, _unavailable(after, "d@gone.test"))
    _wait_deferred(cfg, (first, during, after))
    assert p.poll() is None
    stop(p)


def test_agent_that_dies_throttles_nothing(tmp_path, qmgr_proc):
    # A pipe service without user=: Postfix's pipe logs "fatal: ..." and dies; qmgr warns
    # of the stream it ended, writes no line for the recipients (no agent logged one),
    # defers the mail and keeps using the transport: a second message is tried too.
    cfg = make_conf(tmp_path, "default_transport = nouser\n")
    with open(Path(cfg.config_dir) / "master.cf", "a") as f:
        f.write("nouser    unix  -       n       n       -       -       pipe argv=/bin/true\n")
    fatal = r"postfix/pipe\[\d+\]: fatal: missing user= command-line attribute"
    warning = r"postfix/qmgr\[\d+\]: warning: private/nouser socket: malformed response"
    qid = enqueue(cfg, ["x@example.net"])
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_socket(cfg, p)
    wait_log(cfg, fatal)
    wait_log(cfg, warning)
    second = enqueue(cfg, ["y@example.net"])
    control(cfg, {"op": "wakeup"})
    wait_log(cfg, fatal, count=2)
    log = wait_log(cfg, warning, count=2)
    assert "to=<" not in log, log
    _wait_deferred(cfg, (qid, second))
    assert p.poll() is None
    stop(p)
