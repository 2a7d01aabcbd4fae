"""smtpd acceptance into the durable spool, beside real Postfix, in the same run (issue 5).

    .venv/bin/python bench/smtpd_bench.py [--dir DIR] [--seconds S] [--repeat N]
        [--sessions 1,20,200] [--sizes 1024,65536] [--idle 2000] [--idle-postfix 100]

Both MTAs run as their real processes on loopback: oxipost with its master (`oxipost -c DIR
start`), Debian's Postfix with `postfix -c DIR start`, each with its own main.cf, master.cf
and queue directory, the same main.cf settings (tests/smtpd/conftest.py's base), and
`defer_transports = smtp` so what is accepted stays queued. Both acknowledge a message only
once it is on stable storage (Postfix's cleanup fsyncs the queue file; oxipost's spool
commits the segment) and both write a maillog file (Postfix through postlogd).

Load is Postfix's own `smtp-source` (one connection per message, as it sends by default).
Every size and session count starts both MTAs afresh on empty queues; a warm-up run sizes
the message count to about S seconds, then oxipost and Postfix take turns (the order
alternating) N times; the median is shown.

Memory: N idle sessions (connected, greeted, EHLO answered) are held on oxipost and M on
Postfix; the total memory of each MTA is the sum over its master and every descendant of
Pss (/proc/PID/smaps_rollup: shared pages split between the processes that map them) and,
for reference, of VmRSS (shared pages counted in every process). Socket buffers are kernel
memory and in neither figure.

Needs root (Postfix's queue is root- and postfix-owned) and installs Debian's postfix with
scripts/install-debian-deps.sh when it is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import run_ours  # noqa: E402
from tests.smtpd.conftest import write_config  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
POSTFIX = "/usr/sbin/postfix"
SENDER = "bench@example.com"
RECIPIENT = "bench@example.org"  # relayed for mynetworks, then held by defer_transports

# Settings both MTAs get on top of the shared test base (mynetworks 127.0.0.1/32, no
# peername lookup, no local recipient table).
COMMON_MAIN_CF = """\
defer_transports = smtp
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
data_directory = {top}/data
maillog_file = {top}/log/maillog
maillog_file_prefixes = {top}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.makefile("rb").readline().startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers 220 on 127.0.0.1:{port}")
        time.sleep(0.2)


@dataclass
class Mta:
    name: str
    top: Path
    conf: Path
    port: int
    sent: int = 0
    running: bool = True

    def master_pid(self) -> int:
        return int((self.top / "spool" / "pid" / "master.pid").read_text().split()[0])

    def wait(self) -> None:
        try:
            wait_listening(self.port)
        except BaseException:
            self.stop()
            raise

    def queued(self) -> tuple[int, int]:
        """(messages in the queue, how many of them qmgr already moved to deferred)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Oxipost(Mta):
    @classmethod
    def start(cls, top: Path) -> Oxipost:
        conf = top / "conf"
        conf.mkdir(parents=True)
        write_config(str(conf), COMMON_MAIN_CF.format(top=top))
        # The base config puts the queue under the config dir; keep the layouts alike.
        main = (conf / "main.cf").read_text().replace(f"{conf}/spool", f"{top}/spool")
        (conf / "main.cf").write_text(main)
        port = free_port()
        # maxproc 0: oxipost's sessions are coroutines, not processes; no cap. No pickup:
        # nothing is submitted locally.
        (conf / "master.cf").write_text(
            f"127.0.0.1:{port} inet n - n - 0 smtpd\nqmgr unix n - n 300 1 qmgr\n"
        )
        out = run_ours("postfix", "-c", str(conf), "start")
        if out.returncode:
            raise RuntimeError(f"oxipost start failed: {out.stderr}")
        mta = cls("oxipost", top, conf, port)
        mta.wait()
        return mta

    def queued(self) -> tuple[int, int]:
        from oxipost.config import load_config
        from oxipost.qmgr.queue import QueueState

        states = [m.state for m in QueueState(load_config(str(self.conf))).messages.values()]
        return len(states), states.count("deferred")

    def stop(self) -> None:
        if self.running:
            self.running = False
            run_ours("postfix", "-c", str(self.conf), "stop")


class Postfix(Mta):
    @classmethod
    def start(cls, top: Path) -> Postfix:
        conf = top / "conf"
        conf.mkdir(parents=True)
        for sub in ("data", "log", "spool"):
            (top / sub).mkdir()
        subprocess.run(["chown", "postfix", str(top / "data"), str(top / "log")], check=True)
        write_config(str(conf), COMMON_MAIN_CF.format(top=top))
        main = (conf / "main.cf").read_text().replace(f"{conf}/spool", f"{top}/spool")
        (conf / "main.cf").write_text(main)
        port = free_port()
        master = Path("/usr/share/postfix/master.cf.dist").read_text()
        # 250 smtpd processes: room for 200 sessions without Postfix's process-limit
        # stress mode. The rest (qmgr, cleanup, postlog, ...) is the shipped master.cf.
        master = re.sub(
            r"(?m)^smtp\s+inet\s.*$", f"127.0.0.1:{port} inet n - n - 250 smtpd", master
        )
        (conf / "master.cf").write_text(master)
        out = subprocess.run(
            [POSTFIX, "-c", str(conf), "start"], capture_output=True, text=True, timeout=120
        )
        if out.returncode:
            raise RuntimeError(f"postfix start failed: {out.stdout}{out.stderr}")
        mta = cls("postfix", top, conf, port)
        mta.wait()
        return mta

    def queued(self) -> tuple[int, int]:
        n = {}
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            n[q] = sum(len(files) for _r, _d, files in os.walk(self.top / "spool" / q))
        return sum(n.values()), n["deferred"]

    def stop(self) -> None:
        if self.running:
            self.running = False
            cmd = [POSTFIX, "-c", str(self.conf), "stop"]
            subprocess.run(cmd, capture_output=True, timeout=120)


# Load ------------------------------------------------------------------------------------


def smtp_source(mta: Mta, sessions: int, size: int, messages: int) -> float:
    """Send `messages` with smtp-source; return messages/s. Any non-2xx reply aborts
    smtp-source (no -A), so a run that returns counted only accepted messages."""
    argv = [
        SMTP_SOURCE,
        "-s",
        str(sessions),
        "-m",
        str(messages),
        "-l",
        str(size),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-M",
        "source.example.net",
        f"inet:127.0.0.1:{mta.port}",
    ]
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"smtp-source against {mta.name} failed: {out.stderr.strip()}")
    mta.sent += messages
    return messages / elapsed


def rate_cell(
    mtas: list[Mta], sessions: int, size: int, seconds: float, repeat: int
) -> dict[str, list[float]]:
    counts: dict[str, int] = {}
    for mta in mtas:
        # The warm-up also starts Postfix's smtpd processes and fills caches on both sides.
        probe = max(2 * sessions, 40)
        rate = smtp_source(mta, sessions, size, probe)
        counts[mta.name] = max(2 * sessions, int(rate * seconds))
    rates: dict[str, list[float]] = {m.name: [] for m in mtas}
    for i in range(repeat):
        for mta in mtas if i % 2 == 0 else mtas[::-1]:
            rates[mta.name].append(smtp_source(mta, sessions, size, counts[mta.name]))
    return rates


# Memory ----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kib(path: str, field: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0  # the process went away while we looked
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def memory(mta: Mta) -> tuple[int, int, int]:
    """(processes, total Pss KiB, total VmRSS KiB) of the MTA's master and descendants."""
    pids = descendants(mta.master_pid())
    pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    rss = sum(_kib(f"/proc/{p}/status", "VmRSS") for p in pids)
    return len(pids), pss, rss


def open_idle(mta: Mta, count: int) -> list[socket.socket]:
    """`count` sessions that got the greeting and an EHLO reply, then say nothing."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", mta.port), timeout=30)
        socks.append(s)
        _read_reply(s)
        s.sendall(b"EHLO idle.example.net\r\n")
        _read_reply(s)
    return socks


def _read_reply(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("session closed")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def close_idle(socks: list[socket.socket]) -> int:
    """QUIT every session; return how many were still there to say 221."""
    alive = 0
    for s in socks:
        try:
            s.sendall(b"QUIT\r\n")
            alive += _read_reply(s).startswith(b"221")
        except (OSError, RuntimeError):
            pass
        s.close()
    return alive


def idle_cell(mta: Mta, count: int) -> dict[str, int]:
    procs0, pss0, rss0 = memory(mta)
    socks = open_idle(mta, count)
    time.sleep(2)  # let lazily started processes settle
    procs, pss, rss = memory(mta)
    alive = close_idle(socks)
    return {
        "sessions": count,
        "alive": alive,
        "procs0": procs0,
        "pss0": pss0,
        "rss0": rss0,
        "procs": procs,
        "pss": pss,
        "rss": rss,
    }


# Driver ----------------------------------------------------------------------------------


def prerequisites() -> None:
    if os.geteuid() != 0:
        sys.exit("smtpd_bench: needs root (real Postfix runs from a root-owned queue)")
    subprocess.run(["bash", str(REPO / "scripts" / "install-debian-deps.sh")], check=True)
    for path in (SMTP_SOURCE, POSTFIX):
        if not os.path.exists(path):
            sys.exit(f"smtpd_bench: {path} is missing")
    from oxipost import _core

    if _core.build_profile() != "release":
        sys.exit("smtpd_bench: oxipost._core is a debug build; run `make develop`")
    # 2,000 client sockets here and as many in oxipost's workers (who inherit the limit).
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="where the queues go (default: a temp dir in var/)")
    ap.add_argument("--seconds", type=float, default=4.0, help="target length of one run")
    ap.add_argument("--repeat", type=int, default=3, help="runs per MTA and cell")
    ap.add_argument("--sessions", default="1,20,200")
    ap.add_argument("--sizes", default="1024,65536")
    ap.add_argument("--idle", type=int, default=2000, help="idle sessions held on oxipost")
    ap.add_argument("--idle-postfix", type=int, default=100, help="idle sessions on Postfix")
    ap.add_argument("--keep", action="store_true", help="keep the queues and logs afterwards")
    args = ap.parse_args()
    prerequisites()

    base = Path(args.dir or REPO / "var")
    base.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix="smtpd-bench-", dir=base))
    # Postfix's daemons run as user postfix: they must be able to reach their queue.
    top.chmod(0o755)
    print(" ".join(sys.argv), time.strftime("(%Y-%m-%d %H:%M)"))
    print(f"directory: {top}  cpus: {os.cpu_count()}")
    totals = {"oxipost": [0, 0, 0], "postfix": [0, 0, 0]}  # sent, queued, deferred
    try:
        held: dict[str, dict[str, int]] = {}
        if args.idle or args.idle_postfix:
            print("\n  mta      sessions alive procs  Pss MiB  RSS MiB  (idle: procs, Pss, RSS)")
            with fresh_systems(top / "idle", totals, args.keep) as (ox, pf):
                for mta, count in ((ox, args.idle), (pf, args.idle_postfix)):
                    r = held[mta.name] = idle_cell(mta, count)
                    print(
                        f"  {mta.name:8s} {r['sessions']:8d} {r['alive']:5d} {r['procs']:5d} "
                        f"{r['pss'] / 1024:8.1f} {r['rss'] / 1024:8.1f}  "
                        f"({r['procs0']}, {r['pss0'] / 1024:.1f}, {r['rss0'] / 1024:.1f})",
                        flush=True,
                    )
        sessions = [int(x) for x in args.sessions.split(",") if x]
        sizes = [int(x) for x in args.sizes.split(",") if x]
        if sessions and sizes:
            print(
                f"\n  size sessions  oxipost msg/s  postfix msg/s   ratio"
                f"   (median of {args.repeat} runs of ~{args.seconds:g} s; all runs)"
            )
        ratios: dict[tuple[int, int], float] = {}
        for size in sizes:
            for n in sessions:
                with fresh_systems(top / f"{size}-{n}", totals, args.keep) as (ox, pf):
                    rates = rate_cell([ox, pf], n, size, args.seconds, args.repeat)
                o = statistics.median(rates["oxipost"])
                p = statistics.median(rates["postfix"])
                ratios[size, n] = o / p
                runs = " / ".join(
                    ",".join(f"{r:.0f}" for r in rates[name]) for name in ("oxipost", "postfix")
                )
                print(f"{size:6d} {n:8d} {o:14.0f} {p:14.0f} {o / p:7.2f}   ({runs})", flush=True)
        print()
        for (size, n), ratio in sorted(ratios.items()):
            if n == 20:
                verdict = "met" if ratio >= 3 else "NOT met"
                print(f"target >= 3x Postfix at 20 sessions, {size} B: {ratio:.2f}x, {verdict}")
        if "oxipost" in held and "postfix" in held:
            o, p = held["oxipost"], held["postfix"]
            verdict = "met" if o["pss"] < p["pss"] and o["alive"] == o["sessions"] else "NOT met"
            print(
                f"target {o['sessions']} idle sessions on oxipost in less memory than "
                f"{p['sessions']} on Postfix: Pss {o['pss'] / 1024:.1f} vs "
                f"{p['pss'] / 1024:.1f} MiB, {verdict} "
                f"(RSS {o['rss'] / 1024:.1f} vs {p['rss'] / 1024:.1f} MiB)"
            )
        for name, (sent, queued, deferred) in totals.items():
            print(
                f"{name}: {queued} of {sent} messages sent were in the queue after the runs, "
                f"{deferred} of them already deferred by qmgr (defer_transports)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def fresh_systems(
    top: Path, totals: dict[str, list[int]], keep: bool
) -> Iterator[tuple[Oxipost, Postfix]]:
    """Both MTAs started on empty queues, stopped and counted afterwards: every cell starts
    alike, not with the mail (or, for Postfix, the idle smtpd processes) of the last one."""
    top.mkdir()
    top.chmod(0o755)
    ox = Oxipost.start(top / "oxipost")
    try:
        pf = Postfix.start(top / "postfix")
    except BaseException:
        ox.stop()
        raise
    try:
        yield ox, pf
    finally:
        for mta in (ox, pf):
            mta.stop()
        for mta in (ox, pf):
            queued, deferred = mta.queued()
            t = totals[mta.name]
            t[0] += mta.sent
            t[1] += queued
            t[2] += deferred
        if not keep:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
