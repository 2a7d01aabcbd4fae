"""qmgr as a real process: mail queued through the Queue API is delivered by the real agents
(discard, error, retry, smtp to Debian's smtp-sink), logged in Postfix's format (read back
by pflogsumm), retried on flush, and a second qmgr is refused."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from oxipost.config import Config, load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import MessageInfo, Queue, QueueState

from tests.conftest import free_port, run_ours, smtp_sink, wait_for_log
from tests.qmgr.spool_writer import committed_bytes

MASTER_CF = """\
qmgr      unix  n       -       n       300     1       qmgr
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
"""
MESSAGE = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: t\r\n\r\nhello\r\n"


def make_conf(tmp_path: Path, main: str) -> Config:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\n"
        f"data_directory = {tmp_path}/lib\n"
        f"maillog_file = {tmp_path}/maillog\nmaillog_file_prefixes = {tmp_path}\n"
        "myhostname = mx.test.example\nmydestination = localhost\n"
        "inet_protocols = ipv4\ndisable_dns_lookups = yes\n" + main
    )
    (d / "master.cf").write_text(MASTER_CF)
    return load_config(str(d))


def enqueue(cfg: Config, rcpts: list[str], sender: str = "a@example.org") -> str:
    q = Queue.open(cfg, writer="test")
    try:
        env = Envelope(sender, [Recipient(r) for r in rcpts], time.time())
        return q.enqueue_sync(env, MESSAGE)
    finally:
        q.close()


def control(cfg: Config, req: dict[str, object]) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.path.join(cfg.path("queue_directory"), "public", "qmgr"))
        s.sendall(msgpack.packb(req))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return dict(msgpack.unpackb(data, raw=False))


def start_qmgr(cfg: Config, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "oxipost.qmgr.service", "-c", cfg.config_dir, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_log(cfg: Config, pattern: str, count: int = 1, timeout: float = 20) -> str:
    return wait_for_log(Path(cfg.get("maillog_file")), pattern, count, timeout)


def wait_attempts(cfg: Config, qid: str, attempts: int, timeout: float = 20) -> MessageInfo:
    """The message's state once its journal shows `attempts` attempts: qmgr writes the
    journal behind its log lines (JOURNAL_LINGER), so a line seen says nothing yet."""
    deadline = time.monotonic() + timeout
    while True:
        st = QueueState(cfg).messages[qid]
        if st.attempts >= attempts or time.monotonic() >= deadline:
            return st
        time.sleep(0.05)


def wait_socket(cfg: Config, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"qmgr exited: {proc.communicate()}")
        try:
            control(cfg, {"op": "wakeup"})
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail("qmgr never answered on public/qmgr")


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out, err


@pytest.fixture
def qmgr_proc() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def test_queued_before_start_is_delivered_and_removed(tmp_path, qmgr_proc):
    cfg = make_conf(tmp_path, "default_transport = discard\n")
    qid = enqueue(cfg, ["x@example.net", "y@example.net"])
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    log = wait_log(cfg, rf"{qid}: removed")
    assert re.search(
        rf"postfix/qmgr\[\d+\]: {qid}: from=<a@example.org>, size={len(MESSAGE)}, nrcpt=2 "
        r"\(queue active\)",
        log,
    )
    for r in ("x@example.net", "y@example.net"):
        assert re.search(
            rf"postfix/discard\[\d+\]: {qid}: to=<{r}>, relay=none, delay=[\d.]+, "
            r"delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, status=sent \(",
            log,
        ), log
    stop(p)
    assert QueueState(cfg).messages == {}


def test_bounce_notice_and_notification_over_the_socket(tmp_path, qmgr_proc):
    cfg = make_conf(tmp_path, "default_transport = error:5.1.1 no such user here\n")
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_socket(cfg, p)
    qid = enqueue(cfg, ["nobody@example.net"])
    assert control(cfg, {"op": "wakeup"})["ok"]
    log = wait_log(cfg, rf"{qid}: removed")
    assert re.search(
        rf"postfix/error\[\d+\]: {qid}: to=<nobody@example.net>, relay=none, .*dsn=5\.1\.1, "
        r"status=bounced \(no such user here\)",
        log,
    ), log
    m = re.search(rf"postfix/bounce\[\d+\]: {qid}: sender non-delivery notification: (\w+)", log)
    assert m, log
    # The notice itself goes through the queue (from <>), and bounces into nothing.
    wait_log(cfg, rf"{m.group(1)}: from=<>, size=\d+, nrcpt=1 \(queue active\)")
    wait_log(cfg, rf"{m.group(1)}: removed")
    stop(p)


def test_deferred_then_flushed(tmp_path, qmgr_proc):
    cfg = make_conf(tmp_path, "default_transport = retry:4.7.1 come back later\n")
    qid = enqueue(cfg, ["later@example.net"])
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_log(cfg, rf"{qid}: to=<later@example.net>, .*status=deferred \(come back later\)")
    wait_socket(cfg, p)
    st = wait_attempts(cfg, qid, 1)
    assert st.state == "deferred"
    assert st.next_attempt - time.time() > 200  # minimal_backoff_time, not yet due
    reply = control(cfg, {"op": "flush"})
    assert reply == {"ok": True, "count": 1}
    wait_log(cfg, rf"{qid}: to=<later@example.net>, .*status=deferred", count=2)
    st = wait_attempts(cfg, qid, 2)
    assert st.attempts == 2
    assert st.state == "deferred"
    reply = control(cfg, {"op": "nonsense"})
    assert reply["ok"] is False
    stop(p)


def test_unreachable_destination_is_deferred_and_shown_by_mailq(tmp_path, qmgr_proc):
    """catalogue 13: a next hop that refuses connections leaves the mail deferred, and
    mailq shows it with the reason, as Postfix's does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    cfg = make_conf(tmp_path, f"relayhost = [127.0.0.1]:{closed}\n")
    qid = enqueue(cfg, ["far@example.net"])
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    reason = f"connect to 127.0.0.1[127.0.0.1]:{closed}: Connection refused"
    wait_log(
        cfg,
        rf"{qid}: to=<far@example.net>, relay=none, .*dsn=4\.4\.1, "
        rf"status=deferred \({re.escape(reason)}\)",
    )
    stop(p)
    listing = run_ours("mailq", "-c", cfg.config_dir).stdout
    assert re.search(
        rf"(?m)^{qid}\s+\d+ \w{{3}} \w{{3}} [ \d]\d \d\d:\d\d:\d\d  a@example.org$", listing
    ), listing
    assert f"({reason})" in listing
    assert "far@example.net" in listing


def _kill_destination(
    tmp_path: Path, qmgr_proc: list[subprocess.Popen[str]], *sink_flags: str
) -> tuple[Config, int, list[str], str, subprocess.Popen[str]]:
    """Four messages for one next hop, an smtp-sink with `sink_flags` there, concurrency 1
    and failed cohort limit 1 (the default): the first failure kills the destination and
    the retry service's agent defers the other three. Returns (cfg, port, queue IDs, log,
    qmgr)."""
    port = free_port()
    cfg = make_conf(
        tmp_path,
        f"relayhost = [127.0.0.1]:{port}\n"
        "smtp_initial_destination_concurrency = 1\nsmtp_destination_concurrency_limit = 1\n",
    )
    qids = [enqueue(cfg, [f"r{i}@example.net"]) for i in range(4)]
    with smtp_sink(port, *sink_flags):
        p = start_qmgr(cfg)
        qmgr_proc.append(p)
        log = wait_log(cfg, r"postfix/error\[\d+\]: .*status=deferred", count=3)
    return cfg, port, qids, log, p


def _deferred_as_dead(log: str, qids: list[str], killer: str, dsn: str, why: str) -> None:
    """The messages other than `killer` were deferred without an attempt, with the DSN of
    the failure that killed the destination, as Postfix 3.7's qmgr (queue->dsn) has the
    retry service's agent log them."""
    suspended = re.escape(f"delivery temporarily suspended: {why}")
    for qid in set(qids) - {killer}:
        assert re.search(
            rf"postfix/error\[\d+\]: {qid}: to=<r\d@example\.net>, relay=none, "
            rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn={re.escape(dsn)}, "
            rf"status=deferred \({suspended}\)$",
            log,
            re.M,
        ), log


def test_dead_destination_defers_with_the_failure_that_killed_it(tmp_path, qmgr_proc):
    """A next hop that drops the connection at EHLO dies at the first failure; its other
    mail is deferred with that failure's status and text, as Postfix 3.7 logs it relaying
    to the same smtp-sink -q EHLO: `postfix/error[...]: QID: to=<...>, relay=none, ...,
    dsn=4.4.2, status=deferred (delivery temporarily suspended: lost connection with
    127.0.0.1[127.0.0.1] while ...)`, and mailq shows that text."""
    cfg, _port, qids, log, p = _kill_destination(tmp_path, qmgr_proc, "-q", "EHLO")
    m = re.search(
        r"postfix/smtp\[\d+\]: (\w+): to=<r\d@example\.net>, .*dsn=4\.4\.2, "
        r"status=deferred \((lost connection with 127\.0\.0\.1\[127\.0\.0\.1\] while [^)]+)\)$",
        log,
        re.M,
    )
    assert m, log
    killer, why = m.groups()
    _deferred_as_dead(log, qids, killer, "4.4.2", why)
    stop(p)
    listing = run_ours("mailq", "-c", cfg.config_dir).stdout
    assert listing.count(f"(delivery temporarily suspended: {why})") == 3, listing
    assert listing.count(f"({why})") == 1, listing


def test_refused_greeting_kills_the_destination(tmp_path, qmgr_proc):
    """A 421 greeting is a site failure whatever its status (Postfix's smtp_site_fail), not
    only 4.4.x: the destination dies at the first one, with the greeting's status (4.0.0,
    smtp-sink's "421 4.0.0 Server closing connection"), and relay= names the host."""
    _cfg, port, qids, log, p = _kill_destination(tmp_path, qmgr_proc, "-Q", "connect")
    m = re.search(
        rf"postfix/smtp\[\d+\]: (\w+): to=<r\d@example\.net>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
        rf"{port}, .*dsn=4\.0\.0, status=deferred \((host 127\.0\.0\.1\[127\.0\.0\.1\] refused "
        r"to talk to me: 421 4\.0\.0 Server closing connection)\)$",
        log,
        re.M,
    )
    assert m, log
    assert log.count("postfix/smtp[") == 1, log
    _deferred_as_dead(log, qids, m.group(1), "4.0.0", m.group(2))
    stop(p)


def test_second_qmgr_is_refused(tmp_path, qmgr_proc):
    cfg = make_conf(tmp_path, "default_transport = discard\n")
    first = start_qmgr(cfg)
    qmgr_proc.append(first)
    wait_socket(cfg, first)
    second = start_qmgr(cfg, "--lock-wait", "0")
    qmgr_proc.append(second)
    _out, err = second.communicate(timeout=30)
    assert second.returncode == 1
    assert "fatal: the queue is being managed by another process (is qmgr running?)" in err
    # The first is untouched and still answers.
    assert control(cfg, {"op": "wakeup"})["ok"]
    stop(first)


@pytest.fixture
def sink() -> Iterator[int]:
    port = free_port()
    with smtp_sink(port):
        yield port


@pytest.mark.slow
def test_smtp_to_smtp_sink_and_pflogsumm(tmp_path, qmgr_proc, sink):
    cfg = make_conf(tmp_path, f"relayhost = [127.0.0.1]:{sink}\n")
    qids = [enqueue(cfg, [f"r{i}-{j}@example.net" for j in range(3)]) for i in range(6)]
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    log = wait_log(cfg, r": removed$", count=len(qids))
    sent = re.findall(
        r"postfix/smtp\[\d+\]: (\w+): to=<[^>]+>, "
        r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent ",
        log,
    )
    assert sorted(set(sent)) == sorted(qids)
    assert len(sent) == 18
    stop(p)
    pflogsumm = shutil.which("pflogsumm") or "/usr/sbin/pflogsumm"
    if not os.path.exists(pflogsumm):
        pytest.fail("pflogsumm is missing: scripts/install-debian-deps.sh installs it")
    out = subprocess.run(
        [pflogsumm, cfg.get("maillog_file")], capture_output=True, text=True, timeout=60
    ).stdout
    assert re.search(r"^\s*18\s+delivered", out, re.M), out
    assert re.search(r"^\s*0\s+bounced", out, re.M), out
    assert re.search(r"^\s*0\s+deferred", out, re.M), out


def test_wakeup_scan_reads_new_mail_only(tmp_path):
    """A wakeup (one per burst of new mail) activates what arrived; deferred mail that
    qmgr does not know yet waits for the walk of the whole queue (at start, then every
    queue_run_delay), so a large deferred queue does not make every wakeup cost a walk."""
    from oxipost.log import get_logger
    from oxipost.qmgr.service import Qmgr

    cfg = make_conf(tmp_path, "default_transport = retry:4.7.1 come back later\n")
    state = QueueState(cfg, lock=True)
    qmgr = Qmgr(cfg, get_logger("qmgr", cfg), state)
    try:
        old = enqueue(cfg, ["old@example.net"])
        state.refresh()
        # Deferred by an earlier qmgr: known to the queue, not to this scheduler.
        state.defer(old, "come back later", time.time() + 3600)
        new = enqueue(cfg, ["new@example.net"])
        assert qmgr.scan(time.time()) == 1
        assert state.messages[new].state == "active"
        assert qmgr.sched.retry_state(qmgr._id(old)) is None
        assert qmgr.scan(time.time(), full=True) == 0
        assert qmgr.sched.retry_state(qmgr._id(old)) is not None
    finally:
        state.close()


def test_unreadable_segment_does_not_stop_qmgr(tmp_path, qmgr_proc):
    """A segment qmgr cannot read (here a directory in its place, which stops root too) is
    skipped with a warning: qmgr goes on delivering the other mail, and the segment's mail
    is delivered by the first pass after it reads again."""
    cfg = make_conf(tmp_path, "default_transport = discard\nqueue_run_delay = 3600s\n")
    # The message to hide, written in a spool of its own: qmgr must not see it before the
    # directory takes its place.
    (tmp_path / "staging").mkdir()
    staging = make_conf(tmp_path / "staging", "")
    hidden = enqueue(staging, ["hidden@example.net"])
    (staged,) = (Path(staging.path("queue_directory")) / "segments").iterdir()
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_socket(cfg, p)
    seg = Path(cfg.path("queue_directory")) / "segments" / "w7e-00000001.seg"
    seg.mkdir()
    qid = enqueue(cfg, ["other@example.net"])
    assert control(cfg, {"op": "wakeup"})["ok"]
    log = wait_log(cfg, rf"{qid}: removed")
    assert re.search(rf"postfix/qmgr\[\d+\]: warning: {seg}: Is a directory; skipping", log), log
    assert p.poll() is None
    seg.rmdir()
    staged.rename(seg)
    assert control(cfg, {"op": "wakeup"})["ok"]
    log = wait_log(cfg, rf"{hidden}: removed")
    assert re.search(rf"{hidden}: to=<hidden@example.net>, .*status=sent", log), log
    assert len(re.findall("skipping", log)) == 1, log
    stop(p)


def test_a_read_error_keeps_the_message_queued_damage_goes_to_corrupt(tmp_path, qmgr_proc):
    """Activating a message whose read fails (EISDIR here, a directory in its segment's
    place; EIO or running out of descriptors alike) leaves it in its queue with Postfix's
    "open QUEUE QID: STRERROR" warning, and the next queue run delivers it once it reads;
    a record that reads but fails its checks goes to the corrupt queue (catalogue 6)."""
    cfg = make_conf(tmp_path, "default_transport = discard\nqueue_run_delay = 1s\n")
    later = enqueue(cfg, ["later@example.net"])
    damaged = enqueue(cfg, ["damaged@example.net"])
    first, second = sorted((Path(cfg.path("queue_directory")) / "segments").iterdir())
    st = QueueState(cfg, lock=True)
    for qid in (later, damaged):
        st.defer(qid, "come back later", time.time() + 3600)
    st.close()
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_socket(cfg, p)
    # Both are known to qmgr now, deferred for an hour; their segments change under it.
    aside = first.with_name("aside")
    first.rename(aside)
    first.mkdir()
    fd = os.open(second, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\xff", 8 + int.from_bytes(second.read_bytes()[0:4], "little") // 2)
    finally:
        os.close(fd)

    assert control(cfg, {"op": "flush"})["ok"]
    wait_log(cfg, rf"postfix/qmgr\[\d+\]: warning: open deferred {later}: Is a directory$")
    log = wait_log(
        cfg,
        rf'warning: saving corrupt file "{damaged}" from queue "deferred" to queue "corrupt"$',
    )
    assert re.search(rf"warning: {damaged}: .*bad checksum", log), log
    assert f'"{later}"' not in log
    first.rmdir()
    aside.rename(first)
    log = wait_log(cfg, rf"{later}: removed")
    assert re.search(rf"{later}: to=<later@example.net>, .*status=sent", log), log
    stop(p)


def test_damaged_last_record_is_warned_about_and_kept(tmp_path, qmgr_proc):
    """The last record of a segment damaged after its commit, followed by the preallocated
    zeros (what a torn write looks like too), used to be dropped without a word at replay.
    qmgr warns about it in the maillog, saves its bytes under corrupt/, and delivers the
    rest of the mail (catalogue 6)."""
    cfg = make_conf(tmp_path, "default_transport = discard\nqueue_run_delay = 3600s\n")
    q = Queue.open(cfg, writer="test")
    try:
        env = Envelope("a@example.org", [Recipient("r@example.net")], time.time())
        qids = [q.enqueue_sync(env, MESSAGE) for _ in range(3)]
    finally:
        q.close()
    (seg,) = (Path(cfg.path("queue_directory")) / "segments").iterdir()
    data = committed_bytes(seg)
    last = 8 + int.from_bytes(data[0:4], "little")
    last += 8 + int.from_bytes(data[last : last + 4], "little")
    data[-20] ^= 0xFF
    seg.write_bytes(bytes(data) + bytes(4096))
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    log = wait_log(cfg, rf"{qids[1]}: removed")
    assert re.search(rf"{qids[0]}: removed", log), log
    name = f"segments/{seg.name}"
    assert re.search(
        rf"postfix/qmgr\[\d+\]: warning: {name}: corrupt record at offset {last}: bad checksum$",
        log,
        re.M,
    ), log
    assert (
        f'warning: saving corrupt record at offset {last} of "{name}" to '
        f'"corrupt/{seg.name}.{last}"' in log
    ), log
    saved = Path(cfg.path("queue_directory")) / "corrupt" / f"{seg.name}.{last}"
    assert saved.read_bytes() == bytes(data[last:])
    assert qids[2] not in log
    assert p.poll() is None
    stop(p)
    moved = Path(cfg.path("queue_directory")) / "corrupt" / seg.name
    assert seg.exists() or moved.exists(), "the segment is kept with its damage"


@pytest.mark.parametrize(
    ("content", "line_limit", "size"),
    [
        # Short lines: each record's type and length take the place of its CR LF.
        (b"Subject: s\r\n\r\nbody\r\n", 2048, 20),
        # 200 bytes: a record with two length bytes, one more than the line's CR LF.
        (b"a" * 200 + b"\r\n", 2048, 203),
        # 300 bytes over a line_length_limit of 128: records of 128, 128 and 44 bytes.
        (b"b" * 300 + b"\r\n" + b"end\r\n", 128, 313),
        # Long lines among short ones, each counted.
        (b"x\r\n" + b"c" * 130 + b"\r\ny\r\n" + b"e" * 140 + b"\r\n", 2048, 282),
        # line_length_limit 0: the line is one record, whatever its length.
        (b"d" * 1000 + b"\r\n", 0, 1003),
    ],
)
def test_message_size_counts_the_records_of_long_lines(
    content: bytes, line_limit: int, size: int
) -> None:
    """qmgr's size= as Postfix's message_size: the queue file's content records."""
    from oxipost.qmgr.queue import message_size

    assert message_size(content, line_limit) == size


def test_control_socket_answers_each_client_once(tmp_path, qmgr_proc):
    """A client that sends nothing hears "empty request"; an unknown operation is named in
    the error; one whose request does not decode is closed on unanswered; qmgr goes on.
    flush-site refuses a site fast_flush_domains does not list: a subdomain of a listed one
    where parent_domain_matches_subdomains leaves the list out."""
    no_parent = "parent_domain_matches_subdomains = relay_domains\n"
    cfg = make_conf(
        tmp_path, f"default_transport = discard\nfast_flush_domains = example.net\n{no_parent}"
    )
    p = start_qmgr(cfg)
    qmgr_proc.append(p)
    wait_socket(cfg, p)
    path = os.path.join(cfg.path("queue_directory"), "public", "qmgr")

    def raw(data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out

    assert msgpack.unpackb(raw(b""), raw=False) == {"ok": False, "error": "empty request"}
    assert msgpack.unpackb(raw(msgpack.packb({"op": "nonesuch"})), raw=False) == {
        "ok": False,
        "error": "unknown request: 'nonesuch'",
    }
    assert raw(b"\xc1") == b""
    assert control(cfg, {"op": "flush"}) == {"ok": True, "count": 0}
    assert control(cfg, {"op": "flush-site", "site": "example.net"}) == {"ok": True, "count": 0}
    assert control(cfg, {"op": "flush-site", "site": "sub.example.net"}) == {
        "ok": False,
        "denied": True,
        "error": "sub.example.net: not in fast_flush_domains",
    }
    stop(p)
