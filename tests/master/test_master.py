"""master(8) and the control command with real processes: start, status, a killed worker
restarted, reload keeping the listener while a client stays connected, stop leaving nothing.

The service under master here is spawn(8) running /bin/cat: a real oxipost service, so the
sockets, workers and signals are the ones every other service gets.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from oxipost.cli.postfix import SCRIPT_USAGE
from oxipost.master.master import STARTUP_GRACE

from tests.conftest import copy_conf, run_ours, run_postfix

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry))
    return sorted(out)


def workers_of(pid: int, port: int) -> list[int]:
    """master's children serving the test's spawn service on `port` (the embedded conf's
    other services come and go: here they cannot reach a 0700 temporary directory)."""
    key = f"127.0.0.1:{port}/inet".encode()
    out = []
    for child in children_of(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if key in argv:
            out.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def echo(sock: socket.socket, text: bytes) -> bytes:
    sock.sendall(text)
    got = b""
    while not got.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        got += chunk
    return got


def _user() -> str:
    """spawn's user= for a command run by a master that is root (and must not run as it)."""
    return "user=nobody " if os.geteuid() == 0 else ""


@pytest.fixture
def system(tmp_path):
    conf = copy_conf(tmp_path / "conf")
    var = tmp_path / "var"
    main = (conf / "main.cf").read_text()
    main = main.replace("queue_directory = var/spool", f"queue_directory = {var}/spool")
    main = main.replace("data_directory = var/lib", f"data_directory = {var}/lib")
    main = main.replace("maillog_file = var/log/maillog", f"maillog_file = {var}/log/maillog")
    main = main.replace("maillog_file_prefixes = var/log", f"maillog_file_prefixes = {var}/log")
    main += "smtpd_worker_processes = 2\n"
    (conf / "main.cf").write_text(main)
    port = free_port()
    # The embedded default's smtpd moves off 2525, which a developer's `make run` may hold.
    master_cf = (conf / "master.cf").read_text()
    (conf / "master.cf").write_text(master_cf.replace("127.0.0.1:2525", f"127.0.0.1:{free_port()}"))
    with open(conf / "master.cf", "a") as f:
        f.write(f"127.0.0.1:{port} inet n n n - 4 spawn {_user()}argv=/bin/cat\n")
    info = {"conf": str(conf), "port": port, "log": var / "log" / "maillog"}
    yield info
    run_ours("postfix", "-c", str(conf), "abort")


def master_pid(system) -> int:
    proc = run_ours("postfix", "-c", system["conf"], "status", terminal=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().rsplit(" ", 1)[1])


def started(system) -> int:
    """Start the system; master's pid once both workers of the test's service run."""
    assert run_ours("postfix", "-c", system["conf"], "start").returncode == 0
    pid = master_pid(system)
    assert wait_until(lambda: len(workers_of(pid, system["port"])) == 2)
    return pid


def test_start_status_stop(system):
    conf = system["conf"]
    assert run_ours("postfix", "-c", conf, "status").returncode == 1
    # At a terminal the admin sees postfix-script's lines; from cron (stderr not a terminal)
    # they go to the log alone, as postlog(1) sends them.
    started = run_ours("postfix", "-c", conf, "start", terminal=True)
    assert started.returncode == 0, started.stderr
    assert "postfix/postfix-script: starting the Postfix mail system\n" in started.stderr
    pid = master_pid(system)
    again = run_ours("postfix", "-c", conf, "start", terminal=True)
    assert again.returncode == 1
    assert again.stderr == (
        "postfix/postfix-script: fatal: the Postfix mail system is already running\n"
    )
    quiet = run_ours("postfix", "-c", conf, "start")
    assert (quiet.returncode, quiet.stderr) == (1, "")
    assert re.search(
        r"postfix/postfix-script\[\d+\]: fatal: the Postfix mail system is already running\n",
        system["log"].read_text(),
    )
    port = system["port"]
    assert wait_until(lambda: len(workers_of(pid, port)) == 2)
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert echo(s, b"hello\n") == b"hello\n"
    workers = children_of(pid)
    # A master that goes within the first look: postfix-script's one line, no "waiting".
    stopped = run_ours("postfix", "-c", conf, "stop", terminal=True)
    assert (stopped.returncode, stopped.stderr) == (
        0,
        "postfix/postfix-script: stopping the Postfix mail system\n",
    )
    assert not alive(pid)
    assert not any(alive(w) for w in workers)
    status = run_ours("postfix", "-c", conf, "status", terminal=True)
    assert status.returncode == 1
    assert status.stderr == "postfix/postfix-script: the Postfix mail system is not running\n"
    log = system["log"].read_text()
    assert re.search(r"postfix/postfix-script\[\d+\]: starting the Postfix mail system\n", log)
    assert re.search(r"postfix/postfix-script\[\d+\]: stopping the Postfix mail system\n", log)
    assert f"postfix/master[{pid}]: daemon started -- version" in log
    assert "terminating on signal 15" in log
    # Entries oxipost folds elsewhere are accepted and noted once, never refused.
    assert log.count('service "cleanup/unix" (cleanup): folded into') == 1


# postfix(1) commands on a running system, then on a stopped one: (command words, stderr
# is a terminal). postfix-script reads its first word alone; no command is its "unknown
# command: ''"; a bad option is postfix(1)'s own usage error.
RUNNING_STEPS = [("status", False), ("status", True), ("reload", False), ("reload", True)]
RUNNING_STEPS += [("start", False), ("start", True)]
STOPPED_STEPS = [("stop", False), ("stop", True), ("reload", True), ("abort", False)]
STOPPED_STEPS += [("status", False), ("status", True), ("status extra", True)]
STOPPED_STEPS += [("", False), ("", True), ("-x", False), ("-x", True)]
BAD = "postfix: invalid option -- 'x'\n"


@pytest.mark.postfix
def test_control_messages_on_stderr_only_at_a_terminal_as_postfix(system):
    """From cron (stderr not a terminal) postfix(1) prints nothing, so cron mails nothing;
    at a terminal it shows postfix-script's lines. Ours and real Postfix 3.7, step by step:
    the same exit status and the same stderr."""
    from tests.smtpd.test_postfix_differential import running_postfix

    def steps(run) -> list[tuple[int, str]]:
        out = [run(command, terminal) for command, terminal in RUNNING_STEPS]
        # Stopped as from cron: nothing on stderr (at a terminal Postfix's "waiting for
        # ... to terminate" lines depend on how fast master goes).
        assert run("stop", False) == (0, "")
        return out + [run(command, terminal) for command, terminal in STOPPED_STEPS]

    def ours(command: str, terminal: bool) -> tuple[int, str]:
        proc = run_ours("postfix", "-c", system["conf"], *command.split(), terminal=terminal)
        return proc.returncode, re.sub(r"PID: \d+", "PID: N", proc.stderr)

    started(system)
    mine = steps(ours)
    with running_postfix("") as (_port, d):

        def real(command: str, terminal: bool) -> tuple[int, str]:
            args = command.split()
            proc = run_postfix("/usr/sbin/postfix", "-c", str(d), *args, terminal=terminal)
            return proc.returncode, re.sub(r"PID: \d+", "PID: N", proc.stderr)

        theirs = steps(real)
    assert mine == theirs
    assert mine[1] == (0, "postfix/postfix-script: the Postfix mail system is running: PID: N\n")
    order = RUNNING_STEPS + STOPPED_STEPS
    quiet = [result for (_, terminal), result in zip(order, mine, strict=True) if not terminal]
    # getopt's complaint is not postfix(1)'s fatal: it reaches stderr wherever that is.
    assert quiet == [(0, ""), (0, ""), (1, ""), (1, ""), (1, ""), (1, ""), (1, ""), (1, BAD)]
    assert mine[-3] == (1, f"postfix/postfix-script: fatal: unknown command: ''. {SCRIPT_USAGE}\n")
    assert mine[-1] == (1, f"{BAD}postfix: fatal: usage: postfix [-c config_dir] [-Dv] command\n")
    log = system["log"].read_text()
    # Every step's line is in the log, terminal or not.
    for text, count in (
        ("refreshing the Postfix mail system", 2),
        ("fatal: the Postfix mail system is not running", 4),
        ("the Postfix mail system is running: PID: \\d+", 3),  # started() asks once too
        ("the Postfix mail system is not running", 3),
        (re.escape(f"fatal: unknown command: ''. {SCRIPT_USAGE}"), 2),
    ):
        assert len(re.findall(rf"postfix/postfix-script\[\d+\]: {text}\n", log)) == count


STOP_LINES = (
    "postfix/postfix-script: stopping the Postfix mail system\n"
    + "postfix/postfix-script: waiting for the Postfix mail system to terminate\n" * 5
    + "postfix/postfix-script: warning: stopping the Postfix mail system with force\n"
)


@pytest.mark.postfix
def test_stop_of_a_master_that_does_not_go_as_postfix(system):
    """A master that ignores SIGTERM (stopped with SIGSTOP): postfix-script's five
    "waiting" lines a second apart, its forced stop, exit status 1, ours and Debian's
    Postfix 3.7 alike. Ours then has master and every service it started killed (the
    script's kill -9 of master's process group, which Debian's never runs: see
    oxipost.cli.postfix)."""
    from tests.smtpd.test_postfix_differential import running_postfix

    def stop_stuck(run, pid: int) -> tuple[int, str, float]:
        os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        proc = run("stop", terminal=True)
        return proc.returncode, proc.stderr, time.monotonic() - began

    pid = started(system)
    services = children_of(pid)
    status, stderr, took = stop_stuck(partial(run_ours, "postfix", "-c", system["conf"]), pid)
    assert (status, stderr) == (1, STOP_LINES)
    assert 5 <= took < 8
    assert wait_until(lambda: not alive(pid), 5)
    assert not any(alive(p) for p in services)
    # The same lines in the log, whatever stderr is.
    logged = re.findall(r"postfix/postfix-script\[\d+\]: (.*)\n", system["log"].read_text())
    assert "".join(f"postfix/postfix-script: {t}\n" for t in logged[-7:]) == STOP_LINES
    assert run_ours("postfix", "-c", system["conf"], "status").returncode == 1
    with running_postfix("") as (_port, d):
        theirs = int((d / "spool" / "pid" / "master.pid").read_text())
        try:
            real = stop_stuck(partial(run_postfix, "/usr/sbin/postfix", "-c", str(d)), theirs)
        finally:
            # Debian's script leaves its master stopped: let it take its SIGTERM.
            os.kill(theirs, signal.SIGCONT)
    assert real[:2] == (status, stderr)


def test_master_cf_error_is_logged_and_start_fails_at_once(system):
    # Postfix's master dies on a "{" without its "}" and logs why; postfix start reports
    # the failed startup. It need not wait out the start timeout for that.
    conf = Path(system["conf"])
    with open(conf / "master.cf", "a") as f:
        f.write("broken unix - n n - - pipe user=nobody argv=/bin/sh -c { echo hi\n")
    began = time.monotonic()
    started = run_ours("postfix", "-c", str(conf), "start", terminal=True)
    assert started.returncode == 1
    assert "postfix/postfix-script: fatal: mail system startup failed\n" in started.stderr
    assert time.monotonic() - began < 10
    log = system["log"].read_text()
    assert f"fatal: {conf}/master.cf: line " in log
    assert "missing '}' in \"{ echo hi\"" in log
    assert run_ours("postfix", "-c", str(conf), "status").returncode == 1


def _add_service(system, line: str) -> str:
    """Append a master.cf entry; returns the file as it was."""
    path = Path(system["conf"]) / "master.cf"
    before = path.read_text()
    path.write_text(before + line + "\n")
    return before


def test_reload_with_master_cf_master_refuses_is_fatal_to_master(system):
    # postconf accepts a private inet service, so postfix reload signals; Postfix's master
    # then logs the reload, reads master.cf, dies of it and its children go with it.
    conf = system["conf"]
    pid = started(system)
    port = system["port"]
    workers = workers_of(pid, port)
    lineno = len(Path(conf, "master.cf").read_text().splitlines()) + 1
    _add_service(system, f"127.0.0.1:{free_port()} inet y n n - 1 spawn argv=/bin/cat")
    reloaded = run_ours("postfix", "-c", conf, "reload")
    assert (reloaded.returncode, reloaded.stderr) == (0, "")
    assert wait_until(lambda: not alive(pid))
    assert not any(alive(w) for w in workers)
    log = system["log"].read_text()
    reload_at = log.index(f"postfix/master[{pid}]: reload -- version")
    fatal = f"postfix/master[{pid}]: fatal: {conf}/master.cf: line {lineno}: "
    assert log.index(fatal + "inet service cannot be private\n") > reload_at
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert run_ours("postfix", "-c", conf, "status").returncode == 1


def test_reload_with_master_cf_postconf_refuses_signals_nothing(system):
    # postfix-script runs postconf before it signals master: master keeps running as it was.
    conf = system["conf"]
    pid = started(system)
    port = system["port"]
    good = _add_service(system, "bad bogus - n n - - spawn argv=/bin/cat")
    try:
        reloaded = run_ours("postfix", "-c", conf, "reload")
    finally:
        Path(conf, "master.cf").write_text(good)
    assert reloaded.returncode == 1
    # postconf writes to stderr whatever it is; postfix-script's line only goes to the log.
    assert reloaded.stderr.splitlines() == [
        '/usr/sbin/postconf: fatal: invalid type field "bogus" in'
        ' "bad bogus - n n - - spawn argv=/bin/cat"',
    ]
    time.sleep(1.0)
    assert master_pid(system) == pid
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert echo(s, b"still\n") == b"still\n"
    log = system["log"].read_text()
    assert "reload -- version" not in log
    assert "postfix/postfix-script[" in log and "fatal: cannot execute /usr/sbin/postconf!" in log


@pytest.mark.parametrize(
    ("entry", "fatal"),
    [
        # Real Postfix 3.7 master's words for each (observed on a reload).
        ("x bogus n - n - - spawn", "bad transport type: bogus"),
        ("x unix x - n - - spawn", 'field "private": bad value: "x"'),
        ("x unix - x n - - spawn", 'field "unprivileged": bad value: "x"'),
        ("x unix - - x - - spawn", 'field "chroot": bad value: "x"'),
        ("x unix - - n x - spawn", 'field "wakeup_time": bad value: "x"'),
        ("x unix - - n -1 - spawn", 'field "wakeup_time": bad value: "-1"'),
        ("x unix - - n - x spawn", 'field "max_proc": bad value: "x"'),
        ("x unix - - n - -", 'missing "command" field'),
        ("x unix - - n", 'missing "wakeup_time" field'),
        ("x", 'missing "transport type" field'),
        ("x unix - - n - - -", 'field "command" has no default value'),
    ],
)
def test_master_refuses_master_cf_fields_in_postfix_words(system, entry, fatal):
    conf = system["conf"]
    lineno = len(Path(conf, "master.cf").read_text().splitlines()) + 1
    _add_service(system, entry)
    proc = subprocess.run(
        [sys.executable, "-m", "oxipost.master", "-c", conf], capture_output=True, timeout=60
    )
    assert proc.returncode == 1
    log = system["log"].read_text()
    assert f": fatal: {conf}/master.cf: line {lineno}: {fatal}\n" in log
    assert "postfix/master[" in log.rsplit("\n", 2)[-2]


def test_master_reads_wakeup_and_process_limit_as_atoi(system):
    # Postfix's master takes "1x" for 1 (postconf would refuse it, master does not).
    conf = system["conf"]
    port = free_port()
    _add_service(system, f"127.0.0.1:{port} inet n n n 1x 1x spawn {_user()}argv=/bin/cat")
    master = subprocess.Popen([sys.executable, "-m", "oxipost.master", "-c", conf])
    try:
        assert wait_until(lambda: len(workers_of(master.pid, port)) == 1)
        with socket.create_connection(("127.0.0.1", port)) as s:
            assert echo(s, b"hi\n") == b"hi\n"
    finally:
        master.terminate()
        master.wait(timeout=30)
    assert f"postfix/master[{master.pid}]: daemon started" in system["log"].read_text()


@pytest.mark.parametrize(
    ("option", "fatal"),
    [
        ("-o { a b }", "invalid \"-o a b\" option value: missing '=' after attribute name"),
        ("-o name", "invalid \"-o name\" option value: missing '=' after attribute name"),
        ("-o =value", 'invalid "-o =value" option value: missing attribute name'),
        # The first bad one, in order, as getopt hands them over.
        ("-o a=b -o c -o =d", "invalid \"-o c\" option value: missing '=' after attribute name"),
    ],
)
def test_invalid_o_option_is_fatal_to_the_service(system, option, fatal):
    # Postfix's daemons split each -o with split_nameval and die of what it refuses; master
    # sees a bad command startup.
    conf = system["conf"]
    port = free_port()
    _add_service(system, f"127.0.0.1:{port} inet n n n - 1 spawn {option} {_user()}argv=/bin/cat")
    assert run_ours("postfix", "-c", conf, "start").returncode == 0
    spawn_fatal = re.compile(r"postfix/spawn\[(\d+)\]: fatal: (.*)\n")
    assert wait_until(lambda: spawn_fatal.search(system["log"].read_text()))
    m = spawn_fatal.search(system["log"].read_text())
    assert m and m.group(2) == fatal
    path = "/usr/lib/postfix/sbin/spawn"
    exited = f"warning: process {path} pid {m.group(1)} exit status 1\n"
    assert wait_until(lambda: exited in system["log"].read_text())
    assert f"warning: {path}: bad command startup -- throttling" in system["log"].read_text()
    # The other services run.
    with socket.create_connection(("127.0.0.1", system["port"])) as s:
        assert echo(s, b"ok\n") == b"ok\n"


def test_killed_worker_is_restarted(system):
    pid = started(system)
    port = system["port"]
    # Let the workers get past the start-up grace period, so this is a crash, not a loop:
    # the grace counts from when a worker's service starts, after its imports, which take
    # a while when master starts every service at once on a busy machine.
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert echo(s, b"up\n") == b"up\n"
    time.sleep(STARTUP_GRACE + 2.0)
    victim = workers_of(pid, port)[0]
    os.kill(victim, 9)
    assert wait_until(
        lambda: len(workers_of(pid, port)) == 2 and victim not in workers_of(pid, port)
    )
    with socket.create_connection(("127.0.0.1", system["port"])) as s:
        assert echo(s, b"still here\n") == b"still here\n"
    # master writes its lines at the end of its loop turn, after it forked the replacement.
    assert wait_until(lambda: f"pid {victim} killed by signal 9" in system["log"].read_text())


def test_reload_keeps_listener_and_connected_client(system):
    conf = system["conf"]
    pid = started(system)
    port = system["port"]
    before = workers_of(pid, port)
    client = socket.create_connection(("127.0.0.1", system["port"]))
    assert echo(client, b"one\n") == b"one\n"
    reloaded = run_ours("postfix", "-c", conf, "reload", terminal=True)
    assert reloaded.returncode == 0
    assert reloaded.stderr == "postfix/postfix-script: refreshing the Postfix mail system\n"
    assert wait_until(lambda: "reload -- version" in system["log"].read_text())
    # A new generation of workers serves the same socket.
    assert wait_until(lambda: len(set(workers_of(pid, port)) - set(before)) == 2)
    # The client connected before the reload still talks to its session...
    assert echo(client, b"two\n") == b"two\n"
    # ...and new clients are accepted by the new generation on the same socket.
    with socket.create_connection(("127.0.0.1", system["port"])) as fresh:
        assert echo(fresh, b"three\n") == b"three\n"
    client.close()
    assert master_pid(system) == pid


def test_entries_given_twice_are_warned_of_and_the_last_one_runs(system):
    """Postfix 3.7's master (observed): a service entered twice in master.cf is warned of as
    it reads master.cf, at start and at each reload, and runs as its last entry; a main.cf
    parameter set twice is warned of by each daemon process as it starts (to the maillog),
    and by master at a reload (at start it has not read maillog_file yet: syslog)."""
    conf = Path(system["conf"])
    port = system["port"]
    with open(conf / "master.cf", "a") as f:
        f.write(f"127.0.0.1:{port} inet n n n - 4 spawn {_user()}argv=/bin/sed -u s/^/last:/\n")
    with open(conf / "main.cf", "a") as f:
        f.write("bounce_size_limit = 50000\nbounce_size_limit = 50001\n")
    line = len((conf / "main.cf").read_text().splitlines())
    main_cf_warning = (
        f"warning: {conf}/main.cf, line {line}: overriding earlier entry: bounce_size_limit=50000"
    )
    duplicate = (
        f'warning: duplicate master.cf entry for service "127.0.0.1:{port}" '
        f"([127.0.0.1]:{port}) -- using the last entry"
    )
    pid = started(system)
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert echo(s, b"hi\n") == b"last:hi\n"
    workers = workers_of(pid, port)
    for worker in workers:
        ours = f"postfix/spawn[{worker}]: {main_cf_warning}\n"
        assert wait_until(lambda: ours in system["log"].read_text())  # noqa: B023
    log = system["log"].read_text()
    assert log.index(f"postfix/master[{pid}]: {duplicate}\n") < log.index("daemon started")
    assert f"postfix/master[{pid}]: {main_cf_warning}" not in log
    assert all(log.count(f"postfix/spawn[{w}]: {main_cf_warning}\n") == 1 for w in workers)
    assert run_ours("postfix", "-c", str(conf), "reload").returncode == 0
    assert wait_until(lambda: len(set(workers_of(pid, port)) - set(workers)) == 2)
    log = system["log"].read_text()
    reload_at = log.index(f"postfix/master[{pid}]: reload -- version")
    assert log.index(f"postfix/master[{pid}]: {main_cf_warning}\n", reload_at) < log.index(
        f"postfix/master[{pid}]: {duplicate}\n", reload_at
    )


def test_crash_looping_service_is_throttled(system, tmp_path):
    conf = Path(system["conf"])
    port = free_port()
    with open(conf / "master.cf", "a") as f:
        # spawn without argv= exits at once: a service that cannot start.
        f.write(f"127.0.0.1:{port} inet n n n - 1 spawn\n")
    assert run_ours("postfix", "-c", str(conf), "start").returncode == 0
    # Run as root, the embedded conf's unprivileged services fail here too (as mail_owner
    # they cannot reach the 0700 temporary directory) and are throttled in turn, smtpd's
    # line often first: wait for this service's own.
    assert wait_until(
        lambda: "/spawn: bad command startup -- throttling" in system["log"].read_text()
    )
    log = system["log"].read_text()
    assert "fatal: missing argv attribute" in log, log
    # Throttled: one failure logged, not a tight restart loop.
    time.sleep(1.0)
    assert system["log"].read_text().count("fatal: missing argv attribute") == 1


def test_unknown_command_and_usage():
    proc = subprocess.run(
        [sys.executable, "-m", "oxipost", "frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_check_creates_directories(system):
    result = run_ours("postfix", "-c", system["conf"], "check")
    assert result.returncode == 0, result.stderr
    assert system["log"].parent.is_dir()


def test_missing_config_dir_is_fatal_without_traceback(tmp_path):
    proc = run_ours("postfix", "-c", str(tmp_path / "none"), "status", terminal=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("postfix: fatal: open ")
    assert "Traceback" not in proc.stderr
    # As postfix(1): on stderr only when it is a terminal (it goes to syslog).
    quiet = run_ours("postfix", "-c", str(tmp_path / "none"), "status")
    assert (quiet.returncode, quiet.stderr) == (1, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_unprivileged_service_drops_to_mail_owner(system):
    import pwd

    conf = Path(system["conf"])
    port = free_port()
    with open(conf / "master.cf", "a") as f:
        # unpriv "-" (yes): the worker runs as mail_owner, and so does the command it spawns.
        f.write(f"127.0.0.1:{port} inet n - n - 1 spawn user=nobody argv=/usr/bin/id -un\n")
    assert run_ours("postfix", "-c", str(conf), "start").returncode == 0
    pid = master_pid(system)
    owner = pwd.getpwnam("postfix").pw_uid

    def worker_uids() -> set[int]:
        uids = set()
        for child in children_of(pid):
            status = Path(f"/proc/{child}/status").read_text()
            uid_line = next(x for x in status.splitlines() if x.startswith("Uid:"))
            uids.add(int(uid_line.split()[1]))
        return uids

    assert wait_until(lambda: owner in worker_uids())
    # The worker still serves after the drop: its command runs as mail_owner too.
    with socket.create_connection(("127.0.0.1", port)) as s:
        assert echo(s, b"") == b"postfix\n"


def test_services_run_as_batch_scheduled(system):
    """master and every service it starts run as SCHED_BATCH: a woken service waits for the
    running process's turn instead of preempting it (fewer context switches per message)."""
    pid = started(system)
    assert os.sched_getscheduler(pid) == os.SCHED_BATCH
    workers = workers_of(pid, system["port"])
    assert workers and all(os.sched_getscheduler(w) == os.SCHED_BATCH for w in workers)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_smtpd_as_mail_owner_wakes_qmgr(shared_tmp):
    """smtpd workers run as mail_owner while master binds qmgr's public socket as root: the
    socket must still take their wakeups (Postfix's unix_listen makes it mode 0666)."""
    import smtplib

    # Services running as mail_owner must reach the queue: not pytest's private tmp tree.
    top = shared_tmp
    conf = top / "conf"
    conf.mkdir()
    port = free_port()
    # No lookup tables; a queue run so rare that only a wakeup explains a prompt pick-up.
    (conf / "main.cf").write_text(
        "compatibility_level = 3.6\nmyhostname = mx.example.test\nmydestination =\n"
        "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.1/32\n"
        "smtpd_peername_lookup = no\nlocal_recipient_maps =\ndefer_transports = smtp\n"
        f"queue_run_delay = 3600s\nqueue_directory = {top}/spool\n"
        f"data_directory = {top}/data\nmaillog_file = {top}/maillog\n"
        f"maillog_file_prefixes = {top}\nsmtpd_worker_processes = 1\n"
    )
    (conf / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\nqmgr unix n - n 300 1 qmgr\n"
    )
    log = top / "maillog"

    def send() -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo("client.example.net")
            assert s.mail("a@example.com")[0] == 250
            assert s.rcpt("b@example.org")[0] == 250
            code, text = s.data(b"Subject: t\r\n\r\nhello\r\n")
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[1]

    def activated(qid: str) -> bool:
        return f"{qid}: from=<a@example.com>" in log.read_text()

    try:
        assert run_ours("postfix", "-c", str(conf), "start").returncode == 0
        assert wait_until(lambda: _answers(port))
        # The first message may be found by qmgr's start-up scan; the second only by a wakeup.
        first = send()
        assert wait_until(lambda: activated(first)), log.read_text()
        second = send()
        assert wait_until(lambda: activated(second), timeout=10), log.read_text()
    finally:
        run_ours("postfix", "-c", str(conf), "stop")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(100).startswith(b"220")
    except OSError:
        return False


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


def test_master_keeps_import_environment_only(system):
    """master(8) clears its environment to import_environment (LANG=C sets the value), so a
    service inherits nothing else of the shell that started it; a spawn(8) command gets
    export_environment and PATH."""
    conf = Path(system["conf"])
    port = free_port()
    with open(conf / "master.cf", "a") as f:
        f.write(f"127.0.0.1:{port} inet n n n - 1 spawn {_user()}argv=/usr/bin/env\n")
    env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
    env.update(TZ="Europe/Paris", LANG="de_DE.UTF-8", OXIPOST_UNLISTED="leak")
    assert run_ours("postfix", "-c", str(conf), "start", env=env).returncode == 0
    pid = master_pid(system)
    assert wait_until(lambda: len(workers_of(pid, system["port"])) == 2)
    # What the interpreter needs to start a service stays (oxipost.environ).
    kept = {k: os.environ[k] for k in ("PYTHONPATH", "PYTHONHOME") if k in os.environ}
    expected = {"TZ": "Europe/Paris", "LANG": "C", **kept}
    # (/proc shows the environment a process was started with: master's own is the shell's.)
    workers = workers_of(pid, system["port"])
    assert workers and all(_environ_of(w) == expected for w in workers)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
    lines = dict(line.split("=", 1) for line in got.decode().splitlines())
    assert lines == {"PATH": "/usr/bin:/bin", "TZ": "Europe/Paris", "LANG": "C"}


def test_logrotate_rotates_maillog_and_master_writes_to_the_new_one(system):
    # postfix-script's logrotate: renamed with the date suffix, compressed a second later;
    # master, told to reload, writes its next lines to a new maillog_file.
    pid = started(system)
    log = system["log"]
    rotated = run_ours("postfix", "-c", system["conf"], "logrotate", terminal=True)
    assert (rotated.returncode, rotated.stderr) == (0, "")
    old = list(log.parent.glob("maillog.*"))
    assert len(old) == 1 and re.fullmatch(r"maillog\.\d{8}-\d{6}\.gz", old[0].name)
    text = subprocess.run(["gzip", "-dc", str(old[0])], capture_output=True, text=True).stdout
    assert "daemon started" in text and "reload -- version" in text
    victim = workers_of(pid, system["port"])[0]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: f"pid {victim} killed by signal 9" in log.read_text())
    assert "daemon started" not in log.read_text()
    if os.geteuid() == 0:
        assert log.stat().st_uid != 0  # mail_owner's, as set-permissions leaves it


def test_drain_kills_master_and_lets_services_finish(system):
    # postfix-script's drain: master is killed; the services finish what they are doing
    # (the session in progress goes on) and exit.
    pid = started(system)
    workers = workers_of(pid, system["port"])
    client = socket.create_connection(("127.0.0.1", system["port"]))
    assert echo(client, b"one\n") == b"one\n"
    drained = run_ours("postfix", "-c", system["conf"], "drain", terminal=True)
    assert (drained.returncode, drained.stderr) == (
        0,
        "postfix/postfix-script: stopping the Postfix mail system\n",
    )
    assert wait_until(lambda: not alive(pid))
    assert echo(client, b"two\n") == b"two\n"
    client.close()
    assert wait_until(lambda: not any(alive(w) for w in workers))
    status = run_ours("postfix", "-c", system["conf"], "status")
    assert status.returncode == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="set-permissions chowns: root only")
def test_set_permissions_fixes_the_queue_and_saves_install_parameters(system):
    conf = Path(system["conf"])
    assert run_ours("postfix", "-c", str(conf), "check").returncode == 0
    queue = system["log"].parent.parent / "spool"
    maildrop, stray = queue / "maildrop", queue / "segments"
    maildrop.chmod(0o777)
    os.chown(stray, 0, 0)
    # An installation parameter given is saved to main.cf first (post-install's), others
    # set nothing; the new data_directory is made and given to mail_owner.
    data = queue.parent / "lib2"
    args = ("set-permissions", f"data_directory={data}", "x=y")
    done = run_ours("postfix", "-c", str(conf), *args)
    assert (done.returncode, done.stderr) == (0, "")
    assert oct(maildrop.stat().st_mode & 0o7777) == "0o1730"
    assert stray.stat().st_uid != 0
    assert data.stat().st_uid != 0 and oct(data.stat().st_mode & 0o777) == "0o700"
    main = (conf / "main.cf").read_text()
    assert f"data_directory = {data}\n" in main and "x = y" not in main


@pytest.mark.postfix
@pytest.mark.parametrize(
    ("main_cf", "args"),
    [
        ("", ("logrotate", "x")),
        ("", ("logrotate",)),  # no maillog_file to rotate: mv's complaint
        ("maillog_file_compressor = /bin/false\n", ("logrotate",)),
        ("maillog_file = /dev/stdout\n", ("logrotate",)),
        ("", ("drain",)),
        ("", ("set-permissions", "a b")),
    ],
)
def test_logrotate_drain_and_set_permissions_refusals_as_postfix(tmp_path, main_cf, args):
    # The same configuration for ours and Debian's Postfix 3.7: the same status and words.
    results = []
    for who in ("ours", "real"):
        d = tmp_path / who
        (d / "queue").mkdir(parents=True)
        (d / "main.cf").write_text(
            f"queue_directory = {d}/queue\ndata_directory = {d}/data\n"
            + ("" if "maillog_file =" in main_cf else f"maillog_file = {d}/maillog\n")
            + f"maillog_file_prefixes = {d}, /dev/stdout\ncompatibility_level = 3.6\n"
            + main_cf
        )
        (d / "master.cf").write_text(Path("/usr/share/postfix/master.cf.dist").read_text())
        if who == "ours":
            proc = run_ours("postfix", "-c", str(d), *args, terminal=True)
        else:
            proc = run_postfix("/usr/sbin/postfix", "-c", str(d), *args, terminal=True)
        results.append((proc.returncode, proc.stderr.replace(str(d), "DIR")))
    assert results[0] == results[1]


def test_quick_stop_marks_the_queue_and_the_next_start_skips_check(system):
    """postfix-script's quick-stop: stop, then touch $queue_directory/quick-start, which
    the next start consumes instead of running check (here: no unused-parameter warning,
    which check logs at every other start)."""
    conf = Path(system["conf"])
    with open(conf / "main.cf", "a") as f:
        f.write("bogus_quick_param = 1\n")
    spool = Path(system["log"]).parent.parent / "spool"
    started(system)
    unused = "warning: " + str(conf / "main.cf") + ": unused parameter: bogus_quick_param=1"
    assert system["log"].read_text().count(unused) >= 1
    before = system["log"].read_text().count(unused)
    assert run_ours("postfix", "-c", system["conf"], "quick-stop").returncode == 0
    assert (spool / "quick-start").exists()
    assert run_ours("postfix", "-c", system["conf"], "start").returncode == 0
    assert not (spool / "quick-start").exists()
    assert "starting the Postfix mail system" in system["log"].read_text()
    assert system["log"].read_text().count(unused) == before
    # Not running: stop fails, the mark is made all the same, and quick-stop says 0.
    assert run_ours("postfix", "-c", system["conf"], "stop").returncode == 0
    assert run_ours("postfix", "-c", system["conf"], "quick-stop").returncode == 0
    assert (spool / "quick-start").exists()


def _ask_unix(path: Path, text: bytes) -> bytes:
    """text through the service that listens on unix socket path, once it is there."""
    assert wait_until(path.exists)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        return echo(s, text)


PRIVATE_AND_PUBLIC = (
    "x unix - n n - 1 spawn {user}argv=/bin/sed -u s/^/private:/\n"
    "x unix n n n - 1 spawn {user}argv=/bin/sed -u s/^/public:/\n"
)


@pytest.mark.postfix
def test_private_and_public_entries_of_a_name_are_two_services_as_postfix(system):
    """`x unix - ...` (private/x) and `x unix n ...` (public/x) are two services to Postfix
    3.7's master, not one entered twice: each listens and runs as its own entry, and
    nothing is warned of. Asked of real Postfix too."""
    from tests.smtpd.test_postfix_differential import running_postfix

    conf = Path(system["conf"])
    with open(conf / "master.cf", "a") as f:
        f.write(PRIVATE_AND_PUBLIC.format(user=_user()))
    started(system)
    spool = Path(system["conf"]).parent / "var" / "spool"
    mine = [_ask_unix(spool / sub / "x", b"hi\n") for sub in ("private", "public")]
    assert mine == [b"private:hi\n", b"public:hi\n"]
    assert "duplicate master.cf entry" not in system["log"].read_text()
    with running_postfix("") as (_port, d):
        with open(d / "master.cf", "a") as f:
            f.write(PRIVATE_AND_PUBLIC.format(user="user=nobody "))
        reloaded = run_postfix("/usr/sbin/postfix", "-c", str(d), "reload")
        assert reloaded.returncode == 0, reloaded.stderr
        theirs = [_ask_unix(d / "spool" / sub / "x", b"hi\n") for sub in ("private", "public")]
    assert mine == theirs


def test_a_service_refuses_a_bad_override_as_postfix_daemons_do(system):
    """A value Postfix's daemons refuse as they start (mail_params_init), given to one
    service with -o: that service's process logs Postfix's fatal line and exits (master
    throttles it); postfix(1), which reads main.cf alone, started all the same."""
    port = free_port()
    with open(Path(system["conf"]) / "master.cf", "a") as f:
        f.write(f"127.0.0.1:{port} inet n n n - 1 spawn -o soft_bounce=maybe ")
        f.write(f"{_user()}argv=/bin/cat\n")
    started(system)
    fatal = r"postfix/spawn\[\d+\]: fatal: bad boolean configuration: soft_bounce = maybe\n"
    assert wait_until(lambda: re.search(fatal, system["log"].read_text()))
    assert "Traceback" not in system["log"].read_text()


def test_a_service_refuses_its_daemon_value_as_it_starts(system):
    """A value smtpd's own tables refuse (Postfix's smtpd reads them as it starts), given
    to one smtpd service with -o: its process logs the fatal line as it starts, before any
    client has connected, and master throttles it; the other services run. The texts are
    compared with Postfix's daemons in tests/config/test_daemon_checks.py."""
    port = free_port()
    _add_service(system, f"127.0.0.1:{port} inet n - n - 1 smtpd -o smtpd_recipient_limit=x")
    started(system)
    fatal = re.compile(
        r"postfix/smtpd\[(\d+)\]: fatal: bad numerical configuration: smtpd_recipient_limit = x\n"
    )
    assert wait_until(lambda: fatal.search(system["log"].read_text()))
    m = fatal.search(system["log"].read_text())
    assert m
    path = "/usr/lib/postfix/sbin/smtpd"
    exited = f"warning: process {path} pid {m.group(1)} exit status 1\n"
    assert wait_until(lambda: exited in system["log"].read_text())
    assert "Traceback" not in system["log"].read_text()
    with socket.create_connection(("127.0.0.1", system["port"])) as s:
        assert echo(s, b"ok\n") == b"ok\n"


def test_master_service_disable_skips_the_entries_it_matches(system):
    # Postfix's match_service: the first pattern decides, '!' negates, a bare type
    # matches every service of that type, the old name.type form is name/type.
    conf = Path(system["conf"])
    port = system["port"]
    master_cf = (conf / "master.cf").read_text()
    smtpd_port = re.search(r"^127\.0\.0\.1:(\d+) +inet .* smtpd$", master_cf, re.M)
    assert smtpd_port
    with open(conf / "main.cf", "a") as f:
        f.write(f"master_service_disable = !127.0.0.1:{port}.inet, INET\n")
    pid = started(system)
    with socket.create_connection(("127.0.0.1", port)) as client:
        assert echo(client, b"kept\n") == b"kept\n"
    # Not even bound: the listener is master's, made before any worker runs.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(smtpd_port.group(1))), timeout=5).close()
    # The unix services still run.
    cmdlines = [Path(f"/proc/{child}/cmdline").read_bytes() for child in children_of(pid)]
    assert any(b"qmgr" in cmdline for cmdline in cmdlines)
