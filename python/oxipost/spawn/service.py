"""spawn(8): the external command spawner, for policy servers and other helpers.

    policy  unix  -  n  n  -  0  spawn  user=nobody argv=/usr/bin/policyd
    127.0.0.1:9998 inet n n n - - spawn user=nobody argv=/usr/bin/filter

For each connection accepted on the service's socket, run argv with its standard input and
output connected to the client, as `user=` (required when master runs as root), for at most
`$service_time_limit` seconds (default $command_time_limit). The process's share of maxproc
caps simultaneous commands. The command's environment is export_environment with PATH reset.

Diagnostics (Postfix's wording): `fatal: missing argv attribute`, `fatal: user= command-line
attribute specifies root privileges`, `warning: command /x exit status N`, `warning: command
/x killed by signal N`, `warning: command /x time limit exceeded`.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import socket

from oxipost import log, runloop
from oxipost.environ import command_environment
from oxipost.master.context import ServiceContext


def _attributes(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split `name=value ... argv=cmd args...` (argv= takes the rest of the line)."""
    attrs: dict[str, str] = {}
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if not eq:
            continue
        if name == "argv":
            return attrs, [value, *args[i + 1 :]]
        attrs[name] = value
    return attrs, []


def _credentials(ctx: ServiceContext, attrs: dict[str, str]) -> tuple[int, int] | None:
    user = attrs.get("user", "")
    if os.geteuid() != 0:
        return None
    if not user:
        ctx.log.fatal("missing user= command-line attribute")
    name, _, group = user.partition(":")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        ctx.log.fatal(f"unknown user name: {name}")
    if pw.pw_uid == 0:
        ctx.log.fatal("user= command-line attribute specifies root privileges")
    gid = pw.pw_gid
    if group:
        import grp

        gid = grp.getgrnam(group).gr_gid
    return pw.pw_uid, gid


async def _serve(ctx: ServiceContext, argv: list[str], ids: tuple[int, int] | None) -> None:
    assert ctx.listen_socket is not None
    limit_name = f"{ctx.service.name}_time_limit"
    try:
        time_limit = ctx.cfg.get_time(limit_name)
    except KeyError:
        time_limit = ctx.cfg.get_time("command_time_limit")
    slots = asyncio.Semaphore(ctx.max_sessions) if ctx.max_sessions else None
    # export_environment and PATH alone, as Postfix's spawn_command() gives its command.
    environ = command_environment(ctx.cfg)
    running: set[asyncio.Task[None]] = set()
    draining = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        log.flush()
        os._exit(0)

    runloop.on_signals({signal.SIGHUP: draining.set, signal.SIGTERM: stop})
    listener = ctx.listen_socket
    listener.setblocking(False)

    async def session(conn: socket.socket) -> None:
        # asyncio hands out non-blocking sockets; the command expects ordinary blocking I/O.
        conn.setblocking(True)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=conn.fileno(),
                stdout=conn.fileno(),
                env=environ,
                user=ids[0] if ids else None,
                group=ids[1] if ids else None,
            )
            conn.close()
            try:
                status = await asyncio.wait_for(proc.wait(), time_limit)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                ctx.log.warning(f"command {argv[0]} time limit exceeded")
                return
            if status > 0:
                ctx.log.warning(f"command {argv[0]} exit status {status}")
            elif status < 0:
                ctx.log.warning(f"command {argv[0]} killed by signal {-status}")
        except OSError as e:
            ctx.log.warning(f"command {argv[0]}: {e.strerror}")
        finally:
            conn.close()
            if slots:
                slots.release()

    accepting = asyncio.ensure_future(draining.wait())
    while not draining.is_set():
        if slots:
            await slots.acquire()
        accept = asyncio.ensure_future(loop.sock_accept(listener))
        done, _ = await asyncio.wait({accept, accepting}, return_when=asyncio.FIRST_COMPLETED)
        if accept not in done:
            accept.cancel()
            break
        conn, _addr = accept.result()
        task = asyncio.ensure_future(session(conn))
        running.add(task)
        task.add_done_callback(running.discard)
    # Reload: the next generation accepts now; finish what this one started.
    if running:
        await asyncio.wait(running)


def main(ctx: ServiceContext) -> int:
    """Run the spawn service until master stops or reloads it."""
    attrs, argv = _attributes(ctx.service.command_args)
    if not argv:
        ctx.log.fatal("missing argv attribute")
    ids = _credentials(ctx, attrs)
    if ctx.listen_socket is None:
        ctx.log.fatal(f"service {ctx.service.name}: spawn needs a listening socket")
    asyncio.run(_serve(ctx, argv, ids))
    return 0
