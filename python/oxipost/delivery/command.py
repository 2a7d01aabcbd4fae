"""Running a delivery's external command, as another user when this process is root.

`run(argv, data, limit, env, cwd, ids)` starts the command with `data` on its stdin and
stdout and stderr captured together, and returns (exit status, output), or None for the
status when `limit` seconds passed (the command is killed). With ids (uid, gid) the
command runs as that uid with gid as its group and only supplementary group, as Postfix's
set_ugid leaves it.

The command runs from a thread of this module's pool: uvloop, the loop our services run
on, has no user=/group= for its subprocesses, and switching ids in a preexec_fn is unsafe
in a process with threads. subprocess.Popen switches them in the child between fork and
exec. The pool's threads are made on demand; qmgr's process limit for the transport
bounds how many commands run at once.

Diagnostics: a command that cannot be started raises OSError.
"""

from __future__ import annotations

import asyncio
import subprocess
from concurrent.futures import ThreadPoolExecutor

# More than any master.cf process limit is likely to allow one transport.
_MAX_COMMANDS = 1000
_pool = ThreadPoolExecutor(_MAX_COMMANDS, thread_name_prefix="oxipost-command")


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
    ) as proc:
        try:
            output, _ = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None, b""
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
