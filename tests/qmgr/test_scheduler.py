"""oxipost.qmgr.scheduler: the Rust scheduler through the binding, configured from main.cf."""

from __future__ import annotations

from pathlib import Path

import pytest
from oxipost._core import sched
from oxipost.config import ConfigError, load_config
from oxipost.qmgr.scheduler import Scheduler

from tests.conftest import check_stub

STUB = Path(__file__).parents[2] / "python" / "oxipost" / "_core_stubs" / "sched.pyi"


def test_stub_matches_runtime_signatures():
    check_stub(sched, STUB)


def write_conf(tmp_path: Path, main: str, master: str = "") -> Path:
    (tmp_path / "main.cf").write_text(main)
    (tmp_path / "master.cf").write_text(
        master or "smtp unix - - n - - smtp\nlocal unix - n n - - local\n"
    )
    return tmp_path


def test_limits_from_config(tmp_path):
    d = write_conf(
        tmp_path,
        "smtp_destination_concurrency_limit = 3\n"
        "smtp_destination_recipient_limit = 2\n"
        "initial_destination_concurrency = 2\n",
        "smtp unix - - n - 7 smtp\nlocal unix - n n - - local\n",
    )
    s = Scheduler.from_config(load_config(str(d)))
    assert s.recipient_limit("smtp") == 2
    assert s.recipient_limit("local") == 1  # Postfix's local_destination_recipient_limit
    s.insert(1, 0.0, False, [(i, "smtp", "example.com") for i in range(10)])
    first = s.next_deliveries(0.0)
    assert [len(b.rcpts) for b in first] == [2, 2]  # window starts at 2, 2 rcpts each
    for b in first:
        s.report(b.id, 1.0, [(r, "sent") for r in b.rcpts])
    # Two successes at window 2 grow it to 3, the limit.
    assert s.queue_state("smtp", "example.com") == (3, 0, False)
    nxt = s.next_deliveries(1.0)
    assert len(nxt) == 3
    for b in nxt:
        s.report(b.id, 2.0, [(r, "sent") for r in b.rcpts])
    assert s.queue_state("smtp", "example.com")[0] == 3


def test_backoff_and_expiry_from_config(tmp_path):
    d = write_conf(
        tmp_path,
        "minimal_backoff_time = 100s\nmaximal_backoff_time = 350s\n"
        "maximal_queue_lifetime = 1h\ndelay_warning_time = 10m\n",
    )
    s = Scheduler(load_config(str(d)))
    now = 0.0
    delays = []
    kinds = []
    while True:
        s.insert(5, 0.0, False, [(0, "smtp", "x")])
        (b,) = s.next_deliveries(now)
        s.report(b.id, now, [(0, "deferred")])
        events = s.drain_events()
        kinds += [e.kind for e in events]
        deferred = [e for e in events if e.kind == "deferred"]
        if not deferred:
            break
        delays.append(deferred[0].time - now)
        now = deferred[0].time
        assert s.take_due(now) == [5]
    # Postfix's delay is the time queued, within the two backoff times.
    assert delays[:5] == [100.0, 100.0, 200.0, 350.0, 350.0]
    assert kinds.count("delay_warning") == 1
    assert kinds[-1] == "expired"
    assert now >= 3600


def test_defer_transports_and_flush(tmp_path):
    d = write_conf(tmp_path, "defer_transports = smtp\n")
    s = Scheduler(load_config(str(d)))
    s.insert(1, 0.0, False, [(0, "smtp", "example.com")])
    assert s.next_deliveries(0.0) == []
    ev = s.drain_events()
    assert ev[0].kind == "rcpt_deferred"
    assert (ev[0].status, ev[0].reason) == ("4.3.2", "deferred transport")
    assert ev[1].kind == "deferred"
    s.flush(1.0)
    assert s.take_due(1.0) == [1]
    s.insert(1, 0.0, False, [(0, "smtp", "example.com")])
    (b,) = s.next_deliveries(1.0)
    assert b.queue == "example.com"


def test_dead_destination_via_site_failure(tmp_path):
    s = Scheduler(load_config(str(write_conf(tmp_path, ""))))
    for m in range(8):
        s.insert(m, 0.0, False, [(0, "smtp", "down.example")])
    batches = s.next_deliveries(0.0)
    assert len(batches) == 5
    for b in batches:
        s.report(b.id, 0.0, [(0, "deferred")], site_failure=("4.4.2", "lost connection"))
    assert s.queue_state("smtp", "down.example")[2]
    assert s.next_deliveries(0.0) == []
    dsns = {(e.status, e.reason) for e in s.drain_events() if e.kind == "rcpt_deferred"}
    assert dsns == {("4.4.2", "delivery temporarily suspended: lost connection")}


def test_bad_feedback_is_a_config_error(tmp_path):
    d = write_conf(tmp_path, "default_destination_concurrency_positive_feedback = lots\n")
    s = Scheduler(load_config(str(d)))
    with pytest.raises(ConfigError, match="bad feedback value"):
        s.insert(1, 0.0, False, [(0, "smtp", "x")])


def test_bad_result_kind_is_refused():
    s = Scheduler()
    s.insert(1, 0.0, False, [(0, "smtp", "x")])
    (b,) = s.next_deliveries(0.0)
    with pytest.raises(ValueError, match="bad result"):
        s.report(b.id, 0.0, [(0, "maybe")])
