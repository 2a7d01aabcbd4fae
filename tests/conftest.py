"""Shared test fixtures: temp config dirs and the commands under test as real processes."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
POSTFIX_POSTCONF = "/usr/sbin/postconf"
SMTP_SINK = "/usr/sbin/smtp-sink"


def on_terminal(argv: list[str], executable: str | None = None) -> subprocess.CompletedProcess:
    """Run argv with stderr on a pseudo-terminal, as an admin at a shell runs it (stdin from
    /dev/null, stdout discarded); its stderr is what the terminal showed (CR LF back to LF)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv,
            executable=executable,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
    finally:
        os.close(slave)
    shown = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: nothing holds the terminal any more
                    break
                if not data:
                    break
                shown += data
            elif proc.poll() is not None:
                # Exited and nothing more to read (a daemon it started may hold the
                # terminal without writing to it).
                break
        returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    return subprocess.CompletedProcess(
        argv, returncode, "", shown.decode("utf-8", "replace").replace("\r\n", "\n")
    )


def run_ours(
    tool: str,
    *args: str,
    stdin: str | None = None,
    terminal: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run one of our console commands (python -m oxipost.cli.TOOL) as a real process; with
    terminal, its stderr on a pseudo-terminal (see on_terminal); env replaces the
    environment it is started with."""
    argv = [sys.executable, "-m", f"oxipost.cli.{tool}", *args]
    if terminal:
        return on_terminal(argv)
    return subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def run_postfix(
    path: str, *args: str, stdin: str | None = None, terminal: bool = False
) -> subprocess.CompletedProcess:
    """Run one of real Postfix's commands (Debian's package, installed by `make test`); with
    terminal, its stderr on a pseudo-terminal (see on_terminal)."""
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: `make sysdeps` installs Debian's postfix")
    # argv[0] is the bare name, so Postfix's messages start "postconf: " as ours do.
    if terminal:
        return on_terminal([os.path.basename(path), *args], executable=path)
    return subprocess.run(
        [os.path.basename(path), *args],
        executable=path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def postconf_as_postfix(confdir: Path, *args: str) -> None:
    """Our postconf and Postfix's on confdir with args: the same status, output and errors."""
    ours = run_ours("postconf", "-c", str(confdir), *args)
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), *args)
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )


def main_cf_with(base: str, extra: str) -> str:
    """main.cf text: base's lines but those of a parameter extra sets, then extra. A
    parameter set twice is warned of ("overriding earlier entry") by every program that
    reads main.cf, ours and Postfix's; a test's own setting replaces the base's."""
    names = set(re.findall(r"^([A-Za-z0-9_]+)[ \t]*=", extra, re.MULTILINE))
    kept = [
        ln for ln in base.splitlines(keepends=True) if ln.partition("=")[0].strip() not in names
    ]
    return "".join(kept) + extra


# Postfix's cleanup warns when a queue file's mtime is later than time() after fsync
# (mail_stream.c): Linux stamps files from a clock that can be a tick ahead, so a message
# written as a second turns may draw these two lines. They tell of the host, not the mail.
POSTFIX_CLOCK_SKEW = re.compile(
    r"warning: (?:file system clock is \d+ seconds (?:ahead of|behind) local clock"
    r"|resetting file time stamps - this hurts performance)$"
)


def postfix_log_lines(log: str, programs: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(program, text) of each maillog line a program of programs logged, in order,
    without the syslog prefix and without Postfix's clock-skew warnings."""
    prefix = re.compile(rf" postfix/({'|'.join(programs)})\[\d+\]: (.*)")
    for line in log.splitlines():
        m = prefix.search(line)
        if m is not None and not POSTFIX_CLOCK_SKEW.match(m.group(2)):
            yield m.group(1), m.group(2)


def wait_for_log(path: Path, pattern: str, count: int = 1, timeout: float = 20) -> str:
    """path's text once the regular expression pattern (multiline) matches count times in
    it; fails the test after timeout seconds. For a log that another process writes behind
    what the test saw (Postfix's postlogd, a next hop's, our agents'): wait for the last
    line a comparison needs, not for one logged before it."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if len(re.findall(pattern, text, re.M)) >= count:
            return text
        time.sleep(0.1)
    pytest.fail(f"no {count}x {pattern!r} in {path}:\n{text}")


def free_port() -> int:
    """A 127.0.0.1 TCP port nothing listens on (as long as nobody takes it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 60) -> None:
    """Until something accepts connections on 127.0.0.1:port; fails if proc exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                pytest.fail(f"{what} is not listening on 127.0.0.1:{port}")
            time.sleep(0.05)


@contextlib.contextmanager
def smtp_sink(
    port: int, *flags: str, output: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's smtp-sink on 127.0.0.1:port with these flags (e.g. "-r", "RCPT" for a 4xx
    to every RCPT TO), listening when this yields, stopped when it ends; what it prints
    (with -v, each command it received) goes to `output` when given."""
    if not os.path.exists(SMTP_SINK):
        pytest.fail("smtp-sink is missing: `make sysdeps` installs Debian's postfix")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    argv = [SMTP_SINK, *user, *flags, f"127.0.0.1:{port}", "100"]
    out = open(output, "wb") if output is not None else None
    proc = subprocess.Popen(argv, cwd="/", stdout=out, stderr=out)
    try:
        wait_port(port, proc, "smtp-sink", timeout=10)
        yield proc
    finally:
        proc.terminate()
        proc.wait()
        if out is not None:
            out.close()


@contextlib.contextmanager
def shared_dir(prefix: str, mode: int = 0o755, parent: str | None = None) -> Iterator[Path]:
    """A new directory, mode `mode`, in parent (default: the temp dir) and removed with all
    it holds when the block ends. For what other users must reach (our services as
    mail_owner, commands as nobody, Postfix's daemons, Dovecot, smtp-sink): pytest's
    tmp_path lies under a 0700 directory of ours."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        d.chmod(mode)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def shared_tmp(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A shared_dir (mode 0755) for this test, removed after it."""
    with shared_dir(f"oxipost-{request.module.__name__.rsplit('.', 1)[-1]}-") as d:
        yield d


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    """An empty configuration directory with main.cf and master.cf."""
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("")
    return tmp_path


@pytest.fixture
def debian_master_cf() -> str:
    """The master.cf Debian's postfix package ships: a real-world file to read unchanged."""
    for path in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist"):
        if os.path.exists(path):
            return Path(path).read_text()
    pytest.fail("Debian's postfix master.cf is missing: `make sysdeps` installs it")


def copy_conf(dest: Path) -> Path:
    """A copy of the embedded default conf/ in dest."""
    shutil.copytree(REPO / "conf", dest, dirs_exist_ok=True)
    return dest


def check_stub(module: object, stub: Path) -> None:
    """A hand-written stub of a pyo3 submodule names exactly the runtime's public functions,
    classes and methods, with the same parameters (stubtest cannot see into submodules)."""
    import ast
    import inspect

    def params(obj: object, node: ast.FunctionDef, method: bool) -> None:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
        runtime = [p for p in sig.parameters if p != "self"]
        args = node.args.args[1:] if method else node.args.args
        assert [a.arg for a in args] + [a.arg for a in node.args.kwonlyargs] == runtime, node.name

    tree = ast.parse(stub.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert names == {n for n in dir(module) if not n.startswith("_")}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            params(getattr(module, node.name), node, method=False)
        elif isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name)
            members = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
            assert set(members) == {n for n in dir(cls) if not n.startswith("_")} | {"__init__"}
            for name, member in members.items():
                if name == "__init__":
                    params(cls, member, method=True)
                elif not any(
                    isinstance(d, ast.Name) and d.id == "property" for d in member.decorator_list
                ):
                    params(getattr(cls, name), member, method=True)
