"""Running a delivery's external command, as another user when this process is root.

`run(argv, data, limit, env, cwd, ids)` starts the command with `data` on its stdin and
stdout and stderr captured together, and returns (exit status, output), or None for the
status when `limit` seconds passed (the command and its process group are killed; what it
wrote is kept). With ids (uid, gid) the command runs as that uid with gid as its group and
only supplementary group, as Postfix's set_ugid leaves it.

The command runs from a thread of this module's pool: uvloop, the loop our services run
on, has no user=/group= for its subprocesses, and switching ids in a preexec_fn is unsafe
in a process with threads. subprocess.Popen switches them in the child between fork and
exec. The pool's threads are made on demand; qmgr's process limit for the transport
bounds how many commands run at once.

`finished(rc, command, output, delivered)` is the outcome Postfix's pipe_command.c gives
a command that ran (local(8) and pipe(8) share it): the time limit and a status outside
sysexits.h bounce with 5.3.0, a signal defers, output that starts with a 4.X.X or 5.X.X
status is that status and reason, sysexits.h's statuses map as dsn.SYSEXITS says, and the
command's output is appended, newlines as spaces.

`chdir_error(path, ids)` says why the command could not change to its working directory,
`chdir_failed()` logs it and defers as Postfix does, `queue_cwd(cfg)` is the default one.
`lookup_error(path, ids)` and `read_error(path, ids)` say why a file could not be looked
up or read with another user's rights (Postfix's stat_as, open_as).

Diagnostics: a command that cannot be started raises OSError.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from oxipost.delivery.dsn import SYSEXITS
from oxipost.envelope import Outcome

if TYPE_CHECKING:
    from oxipost.config import Config

# More than any master.cf process limit is likely to allow one transport.
_MAX_COMMANDS = 1000
_pool = ThreadPoolExecutor(_MAX_COMMANDS, thread_name_prefix="oxipost-command")
# How much of a command's output a reason quotes.
_OUTPUT_LIMIT = 2048
# pipe_command.c's capture of the output: tabs and newlines become spaces (a last newline
# too) and other control characters "_".
_PRINTABLE = str.maketrans({chr(c): " " if chr(c) in "\t\n" else "_" for c in (*range(0x20), 0x7F)})
_DSN_TEXT = re.compile(r"([45]\.\d{1,3}\.\d{1,3})(?=\s|$)")


def _run(
    argv: list[str],
    data: bytes,
    limit: float,
    env: dict[str, str],
    cwd: str | None,
    ids: tuple[int, int] | None,
) -> tuple[int | None, bytes]:
    uid, gid = ids if ids is not None else (None, None)
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        user=uid,
        group=gid,
        extra_groups=None if gid is None else [gid],
        # A session of its own, as pipe_command.c's child: at the time limit the whole
        # group is killed, so a shell's children cannot hold the output pipe open.
        start_new_session=True,
        # Postfix's daemons run with umask 077, which their commands inherit: a file a
        # command creates is its user's alone.
        umask=0o077,
    ) as proc:
        try:
            output, _ = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return None, output
    return proc.returncode, output


async def run(
    argv: list[str],
    data: bytes,
    limit: float,
    env: dict[str, str],
    cwd: str | None = None,
    ids: tuple[int, int] | None = None,
) -> tuple[int | None, bytes]:
    """(exit status, negative for a signal, or None after the time limit; output)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, _run, argv, data, limit, env, cwd, ids)


def finished(rc: int | None, command: str, output: bytes, delivered: str) -> Outcome:
    """The outcome of a command that ran: rc as run() returns it, delivered the reason
    when it succeeded."""
    text = output[:_OUTPUT_LIMIT].decode("utf-8", "replace").translate(_PRINTABLE)
    suffix = f". Command output: {text}" if text else ""
    if rc == 0:
        return Outcome("2.0.0", delivered)
    # A notice's Diagnostic-Code is "x-unix; " and the output, else the exit status's text.
    if rc is None or rc < 0:
        dsn, detail = SYSEXITS[70]  # EX_SOFTWARE
        if rc is None:
            reason = f'Command time limit exceeded: "{command}"{suffix}'
        else:
            dsn, reason = "4.3.0", f'Command died with signal {-rc}: "{command}"{suffix}'
        return Outcome(dsn, reason, diagnostic=f"x-unix; {text or detail}")
    # Output that starts with "D.S.N text" is the status and reason, whatever the exit
    # status says (a 2.X.X one Postfix would bounce with its success code: not taken).
    m = _DSN_TEXT.match(text)
    if m:
        reason = text[m.end() :].lstrip()
        return Outcome(m.group(1), reason, diagnostic=f"x-unix; {reason}")
    if rc in SYSEXITS:
        dsn, detail = SYSEXITS[rc]
        return Outcome(dsn, detail + suffix, diagnostic=f"x-unix; {text or detail}")
    reason = f'Command died with status {rc}: "{command}"{suffix}'
    detail = text or f"unknown mail system error {rc}"
    return Outcome("5.3.0", reason, diagnostic=f"x-unix; {detail}")


_SEARCH = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_READ = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def _may(st: os.stat_result, uid: int, gid: int, bits: tuple[int, int, int]) -> bool:
    """Whether uid, with gid as its only group, has the owner/group/other bits of st."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & bits[0])
    if st.st_gid == gid:
        return bool(st.st_mode & bits[1])
    return bool(st.st_mode & bits[2])


def _reach_error(directory: str, uid: int, gid: int) -> OSError | None:
    """Why uid with gid cannot enter directory: it, or one above it, is no directory or
    cannot be searched."""
    current = "/"
    for part in ["", *os.path.abspath(directory).split("/")[1:]]:
        current = os.path.join(current, part)
        try:
            st = os.stat(current)
        except OSError as e:
            return e
        if not stat.S_ISDIR(st.st_mode):
            return NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not _may(st, uid, gid, _SEARCH):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return None


def chdir_error(path: str, ids: tuple[int, int] | None) -> OSError | None:
    """Why a command run as ids (None: as this process) cannot change to directory path.

    Postfix's child changes directory after it became the user, so a directory that user
    cannot reach fails there. subprocess.Popen changes directory before it changes user,
    so for another user the check is made here, for that uid with gid as its only group
    (what set_ugid leaves), on the directory and each one above it."""
    if ids is None:
        try:
            if not stat.S_ISDIR(os.stat(path).st_mode):
                return NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        except OSError as e:
            return e
        if not os.access(path, os.X_OK):
            return PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return None
    return _reach_error(path, *ids)


def lookup_error(path: str, ids: tuple[int, int] | None) -> OSError | None:
    """Why path cannot be looked up as ids (None: as this process), as Postfix's stat_as()
    fails: a directory above it that ids cannot search, or no such file. Checked here
    rather than by switching ids, which would switch every thread of the process."""
    if ids is not None:
        failed = _reach_error(os.path.dirname(os.path.abspath(path)), *ids)
        if failed is not None:
            return failed
    try:
        os.stat(path)
    except OSError as e:
        return e
    return None


def read_error(path: str, ids: tuple[int, int] | None) -> OSError | None:
    """Why path cannot be opened for reading as ids, as Postfix's open_as() fails; for
    None (this process) only what lookup_error() finds: the open itself says the rest."""
    failed = lookup_error(path, ids)
    if failed is not None or ids is None:
        return failed
    if not _may(os.stat(path), *ids, _READ):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return None


def queue_cwd(cfg: Config) -> str | None:
    """The working directory Postfix's agents give a command: theirs, the queue directory
    (None, this process's own, where it does not exist: an agent run outside a system)."""
    path = cfg.path("queue_directory")
    return path if os.path.isdir(path) else None


def chdir_failed(
    log: logging.Logger, directory: str, ids: tuple[int, int] | None, err: OSError
) -> Outcome:
    """Postfix's child dies of a directory it cannot change to, and the mail is deferred
    with the status of its exit (EX_TEMPFAIL): "4.3.0 temporary failure". log is the
    agent's, whose name the line carries."""
    uid, gid = ids if ids is not None else (os.getuid(), os.getgid())
    log.critical(
        'cannot change directory to "%s" for uid=%d gid=%d: %s', directory, uid, gid, err.strerror
    )
    return Outcome("4.3.0", "temporary failure")
