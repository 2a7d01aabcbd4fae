"""local(8) and virtual(8) as processes of their own: the privileged delivery agents.

Postfix runs its queue manager unprivileged and local(8)/virtual(8) as root (master.cf's
unpriv column "n"), so that a delivery can take the recipient's uid — to write a mailbox as
its owner, read a ~/.forward in a private home, run a |command as the user — while nothing
that parses network input holds root (RELIABILITY.md catalogue 50). oxipost does the same:
master runs these services on private/<service>, and an unprivileged qmgr sends each
request for such a transport there instead of running the agent itself.

Protocol, one request per connection (as qmgr's connection to a Postfix delivery agent):
the client sends one msgpack map {id, transport, nexthop, env, rcpts, content}; the
service answers one msgpack list of [status, text, relay] per recipient, in order.

Diagnostics: an unreadable request is logged ("warning: ...") and the connection closed;
qmgr then defers the recipients with "4.3.0 delivery agent error", as for an agent that
fails in process.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any

import msgpack

from oxipost import runloop
from oxipost.envelope import (
    Outcome,
    envelope_from_dict,
    envelope_to_dict,
    recipients_from_list,
    recipients_to_list,
)

if TYPE_CHECKING:
    from oxipost.config import Config, Service
    from oxipost.delivery import DeliveryRequest
    from oxipost.log import Logger
    from oxipost.master.context import ServiceContext

# master.cf commands whose work needs root: run by master as services when privileged.
PRIVILEGED_AGENTS = ("local", "virtual")
# A request holds a whole message; nothing legitimate is larger than this.
MAX_REQUEST = 1 << 30


def socket_path(cfg: Config, service: Service) -> str:
    sub = "private" if service.is_private else "public"
    return os.path.join(cfg.path("queue_directory"), sub, service.name)


def runs_apart(cfg: Config, service: Service) -> str | None:
    """The socket of the agent process that must do this delivery, or None to run the
    agent in this process: when this process is unprivileged and master runs the agent
    as a privileged service (a qmgr run alone, or as root, delivers itself)."""
    if os.geteuid() == 0 or service.is_unprivileged:
        return None
    if service.command.rsplit("/", 1)[-1] not in PRIVILEGED_AGENTS:
        return None
    path = socket_path(cfg, service)
    return path if os.path.exists(path) else None


async def request(path: str, req: DeliveryRequest) -> list[Outcome]:
    """Have the agent process on `path` deliver req (qmgr's side)."""
    reader, writer = await asyncio.open_unix_connection(path, limit=MAX_REQUEST)
    try:
        writer.write(
            msgpack.packb(
                {
                    "id": req.queue_id,
                    "transport": req.transport,
                    "nexthop": req.nexthop,
                    "env": envelope_to_dict(req.envelope),
                    "rcpts": recipients_to_list(req.recipients),
                    "content": req.content,
                },
                use_bin_type=True,
            )
        )
        await writer.drain()
        writer.write_eof()
        answer = msgpack.unpackb(await reader.read(), raw=False)
    finally:
        writer.close()
    return [Outcome(status, text, relay) for status, text, relay in answer]


async def _serve_one(
    base: Config, log: Logger, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    # Imported here: the package imports this module to decide where a delivery runs.
    from oxipost.delivery import DeliveryRequest, deliver

    try:
        data = await reader.read()
        try:
            msg: dict[str, Any] = msgpack.unpackb(data, raw=False)
            req = DeliveryRequest(
                str(msg["id"]),
                str(msg["transport"]),
                str(msg["nexthop"]),
                envelope_from_dict(msg["env"]),
                recipients_from_list(msg["rcpts"]),
                bytes(msg["content"]),
                base,
            )
        except Exception as e:
            log.warning(f"malformed delivery request: {type(e).__name__}: {e}")
            return
        outcomes = await deliver(req)
        writer.write(
            msgpack.packb([[o.status, o.text, o.relay] for o in outcomes], use_bin_type=True)
        )
        await writer.drain()
    except (ConnectionError, OSError):
        pass  # qmgr went away: it defers what it did not hear back about
    finally:
        writer.close()


async def serve(base: Config, log: Logger, sock: socket.socket) -> None:
    """Serve requests until SIGTERM (exit now, as Postfix's agents are killed; qmgr defers
    what it did not hear back about) or SIGHUP (postfix reload: finish the deliveries in
    progress first, so that none is done twice)."""
    busy: set[asyncio.Task[None]] = set()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            busy.add(task)
        try:
            await _serve_one(base, log, r, w)
        finally:
            busy.discard(task)  # type: ignore[arg-type]

    server = await asyncio.start_unix_server(handle, sock=sock, limit=MAX_REQUEST)
    stop, drain = runloop.stop_and_drain()
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    if drain.is_set() and not stop.is_set() and busy:
        await asyncio.wait(busy)
    for w in waits:
        w.cancel()


def main(ctx: ServiceContext) -> int:
    """Entry point under master (a privileged "local" or "virtual" master.cf service)."""
    from oxipost.config import load_config

    if ctx.listen_socket is None:
        ctx.log.fatal(f"{ctx.service.name}: no listening socket")
    # Requests name their transport; deliver() applies that service's -o overrides to
    # the whole configuration, as qmgr's in-process deliveries do.
    base = load_config(ctx.cfg.config_dir)
    runloop.run(serve(base, ctx.log, ctx.listen_socket))
    return 0
