"""RELIABILITY.md catalogue 15 (load), all real processes: Debian's smtp-source sends
`-s 50 -m 20000 -l 20000` into oxipost running under its master (the embedded default
master.cf), whose qmgr relays every message to Debian's smtp-sink (relayhost).

Sent == received: the sink dumps each transaction to a file of its own (`-d`), and
smtp-source numbers the recipients (`-N`), so a lost message is a missing number and a
duplicate is a number seen twice. The queue ends empty, nothing in the log says a process
died or a delivery failed, and memory stays bounded: the peak RSS of qmgr and of each smtpd
worker, sampled from /proc during the run, stays far below what holding the messages'
content would take (20000 x 20 KB = 400 MB). No speed is asserted (bench/ measures that);
the time limits only turn a hang into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, run_ours, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

SOURCE = "/usr/sbin/smtp-source"
SINK = "/usr/sbin/smtp-sink"
SESSIONS = 50
MESSAGES = 20000
SIZE = 20000
# A run that stops making progress for this long has hung: fail instead of waiting it out.
STALL = 120.0
# Peak resident memory allowed to qmgr and to each smtpd worker. An idle service is about
# 40-60 MB; holding every message's content would add 400 MB.
RSS_LIMIT = 200 << 20
RCPT = re.compile(rb"^X-Rcpt-Args: <(\d+)rcpt@relay\.example\.net>", re.M)


class LogCounter:
    """Counts lines of a growing maillog, reading only what was appended since last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.removed = 0
        self.sent = 0
        self.deferred = 0
        self.bad: list[str] = []

    def update(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        data = data[: data.rfind(b"\n") + 1]
        self.pos += len(data)
        self.removed += data.count(b": removed\n")
        self.sent += data.count(b", status=sent (")
        self.deferred += data.count(b", status=deferred (")
        for line in data.decode("utf-8", "replace").splitlines():
            # A process that died, a bounce, anything logged as a failure: under load
            # none of them is expected.
            if re.search(r"(warning|error|fatal|panic): |status=bounced|Traceback", line):
                self.bad.append(line)


class MemorySampler(threading.Thread):
    """Samples VmRSS of master's qmgr and smtpd children every 0.2 s; keeps each peak."""

    def __init__(self, master: int, smtpd_key: str) -> None:
        super().__init__(daemon=True)
        self.master = master
        self.keys = {"qmgr/unix": "qmgr", smtpd_key: "smtpd"}
        self.peaks: dict[str, int] = {}
        self.pids: dict[int, str] = {}
        self.done = threading.Event()

    def _children(self) -> dict[int, str]:
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) != self.master or b"--service" not in argv:
                continue
            role = self.keys.get(argv[argv.index(b"--service") + 1].decode())
            if role is not None:
                out[int(entry)] = role
        return out

    def run(self) -> None:
        while not self.done.is_set():
            self.pids.update(self._children())
            for pid, role in self.pids.items():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
                if m:
                    name = f"{role}[{pid}]"
                    self.peaks[name] = max(self.peaks.get(name, 0), int(m.group(1)) << 10)
            self.done.wait(0.2)


def _sink_numbers(dumps: Path) -> list[int]:
    """The recipient number of every transaction the sink received."""
    numbers = []
    for entry in os.scandir(dumps):
        with open(entry.path, "rb") as f:
            head = f.read(4096)
        m = RCPT.search(head)
        assert m, f"{entry.path}: no recipient in {head[:300]!r}"
        numbers.append(int(m.group(1)))
    return numbers


class LoadRun:
    """One oxipost under its master (the embedded master.cf, smtpd on a free port), a
    relayhost port for smtp-sink, the maillog counter and the memory sampler."""

    def __init__(self) -> None:
        for tool in (SOURCE, SINK):
            if not os.path.exists(tool):
                pytest.fail(f"{tool} is missing: `make sysdeps` installs Debian's postfix")
        # Not pytest's tmp_path (mode 700): smtpd drops to mail_owner, the sink to nobody.
        # Not /tmp either: a tmpfs there would hold the 400 MB queue in memory.
        self.dir = d = Path(tempfile.mkdtemp(prefix="oxipost-load-", dir="/var/tmp"))
        d.chmod(0o755)
        self.conf, self.dumps = d / "conf", d / "dumps"
        self.conf.mkdir()
        self.dumps.mkdir()
        self.dumps.chmod(0o1777)
        self.port, self.relay = free_port(), free_port()
        (self.conf / "main.cf").write_text(
            f"queue_directory = {d}/spool\ndata_directory = {d}/lib\n"
            f"maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n"
            "compatibility_level = 3.6\n"
            "myhostname = load.example.test\nmydomain = example.test\nmydestination =\n"
            "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n"
            "alias_maps =\nalias_database =\nlocal_recipient_maps =\n"
            f"disable_dns_lookups = yes\nrelayhost = [127.0.0.1]:{self.relay}\n"
        )
        master_cf = (REPO / "conf" / "master.cf").read_text()
        master_cf = master_cf.replace("127.0.0.1:2525", f"127.0.0.1:{self.port}")
        (self.conf / "master.cf").write_text(master_cf)
        self.log = LogCounter(d / "maillog")
        self.sink: subprocess.Popen[bytes] | None = None
        self.source: subprocess.Popen[bytes] | None = None
        self.sampler: MemorySampler | None = None
        self.started = False
        self._sink_err = open(d / "sink.err", "wb")  # closed by close()

    def start_sink(self) -> None:
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.sink = subprocess.Popen(
            [SINK, *user, "-d", f"{self.dumps}/m.", f"127.0.0.1:{self.relay}", "1024"],
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=self._sink_err,
        )
        wait_port(self.relay, self.sink, "smtp-sink")

    def start_oxipost(self) -> None:
        started = run_ours("postfix", "-c", str(self.conf), "start")
        assert started.returncode == 0, started.stderr
        self.started = True
        status = run_ours("postfix", "-c", str(self.conf), "status", terminal=True)
        assert status.returncode == 0, status.stderr
        master = int(status.stderr.strip().rsplit(" ", 1)[1])
        self.sampler = MemorySampler(master, f"127.0.0.1:{self.port}/inet")
        self.sampler.start()
        deadline = time.monotonic() + 60
        while not _listening(self.port):
            assert time.monotonic() < deadline, "oxipost's smtpd is not listening"
            time.sleep(0.1)

    def send(self) -> None:
        """smtp-source in the background: one numbered recipient per message."""
        argv = [SOURCE, "-N", "-s", str(SESSIONS), "-m", str(MESSAGES), "-l", str(SIZE)]
        argv += ["-f", "load@example.org", "-t", "rcpt@relay.example.net"]
        self.source = subprocess.Popen(
            [*argv, f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def wait(self, done: Callable[[], bool]) -> None:
        """Until smtp-source has finished and done() holds; fails after STALL seconds
        without progress (the log and the sink both still)."""
        assert self.source is not None
        progress: tuple[int, ...] = ()
        moved = time.monotonic()
        while True:
            self.log.update()
            if self.source.poll() is not None and done():
                break
            now = (self.log.removed, self.log.deferred, len(os.listdir(self.dumps)))
            if now != progress:
                progress, moved = now, time.monotonic()
            if time.monotonic() - moved > STALL:
                status = self.source.poll()
                sink = None if self.sink is None else self.sink.poll()
                pytest.fail(
                    f"no progress for {STALL:.0f}s: {now[0]} removed from the queue, "
                    f"{now[1]} deferrals, {now[2]} at the sink; smtp-source exit {status}, "
                    f"smtp-sink exit {sink}: {(self.dir / 'sink.err').read_text()!r}; "
                    f"see {self.dir}"
                )
            time.sleep(0.5)

    def check_delivered(self) -> None:
        """smtp-source succeeded; the sink got every message once; the queue is empty."""
        assert self.source is not None
        out, err = self.source.communicate(timeout=60)
        assert self.source.returncode == 0, (out, err)
        assert err == b"", err
        # Sent == received: every number once, none missing, none twice.
        numbers = _sink_numbers(self.dumps)
        seen: set[int] = set()
        twice = sorted({n for n in numbers if n in seen or seen.add(n)})
        assert not twice, f"delivered more than once: {twice[:20]}"
        missing = sorted(set(range(1, MESSAGES + 1)) - seen)
        assert not missing, f"lost: {len(missing)} ({missing[:20]})"
        assert len(numbers) == MESSAGES
        assert self.log.sent == MESSAGES
        assert self.log.removed == MESSAGES
        assert not self.log.bad, "\n".join(self.log.bad[:20])
        mailq = run_ours("mailq", "-C", str(self.conf))
        assert mailq.returncode == 0, mailq.stderr
        assert mailq.stdout == "Mail queue is empty\n"

    def check_memory(self, what: str) -> None:
        """qmgr's and each smtpd worker's peak RSS under RSS_LIMIT; none of them died."""
        assert self.sampler is not None
        self.sampler.done.set()
        self.sampler.join()
        peaks = self.sampler.peaks
        assert {name.split("[")[0] for name in peaks} == {"qmgr", "smtpd"}, peaks
        figures = ", ".join(f"{k} {v >> 20} MB" for k, v in sorted(peaks.items()))
        print(f"\ncatalogue 15, {what}: peak RSS {figures}")
        for name, peak in peaks.items():
            assert peak < RSS_LIMIT, f"{name} peaked at {peak >> 20} MB ({figures})"
        # Every process sampled was there to the end: none died and was restarted.
        assert all(os.path.exists(f"/proc/{pid}") for pid in self.sampler.pids), self.sampler.pids

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.done.set()
        if self.source is not None:
            if self.source.poll() is None:
                self.source.kill()
            self.source.communicate()
        if self.started:
            run_ours("postfix", "-c", str(self.conf), "stop")
        if self.sink is not None:
            self.sink.terminate()
            self.sink.wait()
        self._sink_err.close()
        if os.environ.get("OXIPOST_KEEP_LOAD") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def load() -> Iterator[LoadRun]:
    run = LoadRun()
    try:
        yield run
    finally:
        run.close()


@pytest.mark.timeout(1200)
def test_catalogue_15_load_relayed_to_smtp_sink(load):
    """Catalogue 15 as written: 20000 messages of 20 KB over 50 sessions while qmgr relays
    them to smtp-sink: each received exactly once, nothing deferred, the queue empty
    afterwards, qmgr and smtpd memory bounded."""
    load.start_sink()
    load.start_oxipost()
    began = time.monotonic()
    load.send()
    load.wait(lambda: load.log.removed >= MESSAGES)
    print(f"\ncatalogue 15: {MESSAGES} messages relayed in {time.monotonic() - began:.0f}s")
    load.check_delivered()
    assert load.log.deferred == 0
    load.check_memory("relayed while sent")


@pytest.mark.timeout(1200)
def test_catalogue_15_full_active_queue_flushed(load):
    """Catalogue 15 with the next hop down while the 20000 messages arrive: all of them
    are deferred, then smtp-sink starts and `postqueue -f` brings the whole queue into
    the active queue at once (under qmgr_message_active_limit = 20000, as in Postfix).
    Each is received exactly once, and qmgr's memory stays bounded: the active queue
    holds envelopes, not 400 MB of content."""
    load.start_oxipost()
    load.send()
    load.wait(lambda: load.log.deferred >= MESSAGES)
    assert load.log.sent == 0
    load.start_sink()
    flushed = run_ours("postqueue", "-c", str(load.conf), "-f")
    assert flushed.returncode == 0, flushed.stderr
    load.wait(lambda: load.log.removed >= MESSAGES)
    load.check_delivered()
    assert load.log.deferred == MESSAGES
    load.check_memory("whole deferred queue flushed")
