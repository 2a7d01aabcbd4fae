"""local(8), virtual(8) and pipe(8) as processes of their own: the privileged agents.

Postfix runs its queue manager unprivileged and local(8), virtual(8) and pipe(8) as root
(master.cf's unpriv column "n"), so that a delivery can take the recipient's uid — to
write a mailbox as its owner, read a ~/.forward in a private home, run a |command as the
user, run a pipe service's command as its user= — while nothing that parses network input
holds root (RELIABILITY.md catalogue 50). oxipost does the same: master runs each such
master.cf service (one process per service: every pipe service is one, e.g. "mailman"
or "maildrop") on private/<service>, and an unprivileged qmgr sends each request for its
transport there instead of running the agent itself. A request names its transport; the
agent process applies that service's settings (-o overrides, a pipe's user= and argv=).

Protocol: qmgr keeps one connection to each agent process and sends every request for it
there, without waiting for the answers to earlier ones (a connection per delivery, as
between Postfix's qmgr and its agents, cost both processes more than the delivery). Each
message is msgpack: the request [n, {id, transport, nexthop, env, rcpts, content}], with n
the request's number on this connection; the answer [n, [[status, text, relay, site,
entries, agent], ...]], one per recipient in order (entries: [address, original, status,
text, agent, relay] for each member of an alias or .forward local(8) delivered itself, see
Outcome.entries; agent: the transport local(8) passed the recipient to, see
Outcome.agent), in whatever order deliveries finish. The agent opens with [0, its pid]:
qmgr logs each delivery attempt, and the line carries the pid of the agent process that
made it (postfix/local[pid]: ...), as Postfix's agent logs it. On postfix reload the agent reads no
further, finishes what it has read and says goodbye with [-1, last n it read];
qmgr sends the requests it made after that again, on a new connection (they were never
looked at). A connection lost without the goodbye (the agent died) defers the requests
still unanswered with Postfix's "4.3.0 unknown mail transport error".

Master starts an agent process when qmgr first connects to its socket, and the agent ends
after max_idle seconds (main.cf, or master.cf's -o max_idle=) without a request in flight,
as Postfix's master starts its daemons on demand and they exit after max_idle without a
client: a site's many pipe services cost nothing while unused. The agent ends as on a
reload, with the goodbye, so that what qmgr sent meanwhile goes to the next process.

Diagnostics: an unreadable request is logged ("warning: ...") and answered with "4.3.0
delivery agent error" for its recipients, as an agent that fails in process. A
configuration error that Postfix's agent dies of (AgentFatal: a pipe service without
user=, or with user=root) is logged "fatal: ..." and ends the process, as there: qmgr
defers the mail with "4.3.0 unknown mail transport error", and master starts another for
the next connection once its bad-startup throttle is over.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any

import msgpack

from oxipost import runloop
from oxipost.envelope import (
    UNICODE_ERRORS,
    Outcome,
    envelope_from_dict,
    envelope_to_dict,
    outcome_from_list,
    outcome_to_list,
    packb,
    recipients_from_list,
    recipients_to_list,
)
from oxipost.master.services import PRIVILEGED_AGENTS

if TYPE_CHECKING:
    from oxipost.config import Config, Service
    from oxipost.delivery import DeliveryRequest
    from oxipost.log import Logger
    from oxipost.master.context import ServiceContext

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
    # A qmgr runs under master, whose sockets outlive their services, or alone for good.
    found = _socket_seen.get(path)
    if found is None:
        found = _socket_seen[path] = os.path.exists(path)
    return path if found else None


_socket_seen: dict[str, bool] = {}


class AgentGone(Exception):
    """The agent's connection ended before it answered (it died, or said goodbye)."""


class _Channel:
    """qmgr's connection to one agent process, carrying every request for it at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.sent = 0
        self.said_goodbye_after: int | None = None
        self.pid = 0  # the agent's, from its first message
        self.waiting: dict[int, asyncio.Future[list[Any]]] = {}
        self.loop = asyncio.get_running_loop()
        self.reading = self.loop.create_task(self._read(reader))

    @property
    def usable(self) -> bool:
        return not self.reading.done() and asyncio.get_running_loop() is self.loop

    def send(self, req: DeliveryRequest) -> asyncio.Future[list[Any]]:
        self.sent += 1
        body = {
            "id": req.queue_id,
            "transport": req.transport,
            "nexthop": req.nexthop,
            "env": envelope_to_dict(req.envelope),
            "rcpts": recipients_to_list(req.recipients),
            "content": req.content,
        }
        fut: asyncio.Future[list[Any]] = self.loop.create_future()
        self.waiting[self.sent] = fut
        self.writer.write(packb([self.sent, body]))
        return fut

    async def _read(self, reader: asyncio.StreamReader) -> None:
        unpacker = msgpack.Unpacker(
            raw=False, max_buffer_size=MAX_REQUEST, unicode_errors=UNICODE_ERRORS
        )
        try:
            while self.said_goodbye_after is None:
                data = await reader.read(1 << 16)
                if not data:
                    break
                unpacker.feed(data)
                for n, answer in unpacker:
                    if n < 0:
                        self.said_goodbye_after = answer
                        break
                    if n == 0:
                        self.pid = answer
                        continue
                    fut = self.waiting.pop(n, None)
                    if fut is not None and not fut.done():
                        fut.set_result(answer)
        except (ConnectionError, OSError, ValueError, TypeError, msgpack.UnpackException):
            pass  # as a lost connection: what is unanswered is deferred
        finally:
            self.writer.close()
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(AgentGone())
            self.waiting.clear()


_channels: dict[str, _Channel] = {}


async def _channel(path: str) -> _Channel:
    chan = _channels.get(path)
    if chan is None or not chan.usable:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_REQUEST)
        chan = _channels.get(path)
        if chan is None or not chan.usable:  # another delivery may have connected meanwhile
            chan = _channels[path] = _Channel(reader, writer)
        else:
            writer.close()
    return chan


async def request(path: str, req: DeliveryRequest) -> list[Outcome]:
    """Have the agent process on `path` deliver req (qmgr's side)."""
    unheard = False
    while True:
        chan = await _channel(path)
        fut = chan.send(req)
        n = chan.sent
        try:
            await chan.writer.drain()
        except (ConnectionError, OSError):
            pass  # the channel's reader hears of it too, and fails what is unanswered
        try:
            answer = await fut
        except AgentGone:
            after = chan.said_goodbye_after
            if after is not None and n > after:
                continue  # never read: the agent is being reloaded, or ends idle
            if not chan.pid and not unheard:
                # Closed before the agent's first word, which comes before it reads: an
                # agent that ended just as it accepted the connection (once, so that a
                # socket that only ever drops connections cannot keep qmgr here).
                unheard = True
                continue
            return [Outcome("4.3.0", "unknown mail transport error")] * len(req.recipients)
        return [outcome_from_list(item, chan.pid) for item in answer]


async def _serve_channel(
    base: Config,
    log: Logger,
    drain: asyncio.Event,
    idle: runloop.Idle,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    # Imported here: the package imports this module to decide where a delivery runs.
    from oxipost.delivery import AgentFatal, DeliveryRequest, deliver

    loop = asyncio.get_running_loop()
    unpacker = msgpack.Unpacker(
        raw=False, max_buffer_size=MAX_REQUEST, unicode_errors=UNICODE_ERRORS
    )
    packer = msgpack.Packer(use_bin_type=True)

    def pack(obj: Any) -> bytes:
        # An outcome's text may name an 8-bit address (see packb).
        try:
            return packer.pack(obj)
        except UnicodeEncodeError:
            return packb(obj)

    busy: set[asyncio.Task[None]] = set()
    last = 0
    # The answers of one loop turn go out in one write: the Maildir writes of a batch
    # finish together, and a send each cost more than their encoding.
    answers: list[bytes] = []

    def flush() -> None:
        # A connection closed meanwhile (stop, a lost qmgr) takes no more answers.
        if answers and not writer.is_closing():
            writer.write(b"".join(answers))
        answers.clear()

    async def one(n: int, body: Any) -> None:
        idle.begin()
        try:
            try:
                req = DeliveryRequest(
                    str(body["id"]),
                    str(body["transport"]),
                    str(body["nexthop"]),
                    envelope_from_dict(body["env"]),
                    recipients_from_list(body["rcpts"]),
                    bytes(body["content"]),
                    base,
                )
            except Exception as e:
                log.warning(f"malformed delivery request: {type(e).__name__}: {e}")
                answer: list[list[object]] = []  # qmgr counts no outcomes as an agent error
            else:
                try:
                    outcomes = await deliver(req)
                except AgentFatal as e:
                    log.fatal(str(e))
                answer = [outcome_to_list(o) for o in outcomes]
        finally:
            idle.end()
        if not answers:
            loop.call_soon(flush)
        answers.append(pack([n, answer]))

    async def read() -> None:
        # One task reads the whole connection (a task per read cost more than the read);
        # drain cancels it at its read, so it stops between requests, never inside one.
        nonlocal last
        while data := await reader.read(1 << 16):
            unpacker.feed(data)
            for n, body in unpacker:
                last = n
                task = loop.create_task(one(n, body))
                busy.add(task)
                task.add_done_callback(busy.discard)

    draining = asyncio.ensure_future(drain.wait())
    reading = loop.create_task(read())
    try:
        writer.write(pack([0, os.getpid()]))
        await asyncio.wait({reading, draining}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            reading.cancel()
        else:
            reading.result()  # a lost connection or a malformed stream: handled below
        if busy:
            await asyncio.wait(busy)
        flush()
        if drain.is_set():
            writer.write(pack([-1, last]))
        await writer.drain()
    except (ConnectionError, OSError):
        pass  # qmgr went away: it defers what it did not hear back about
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        log.warning(f"malformed delivery request stream: {type(e).__name__}: {e}")
    finally:
        draining.cancel()
        reading.cancel()
        writer.close()


async def serve(
    base: Config,
    log: Logger,
    sock: socket.socket,
    stop: asyncio.Event,
    drain: asyncio.Event,
    max_idle: float = 0.0,
) -> None:
    """Serve requests until `stop` (master's SIGTERM: exit now, as Postfix's agents are
    killed; qmgr defers what it did not hear back about), `drain` (its SIGHUP, postfix
    reload: finish the deliveries in progress first, so that none is done twice) or, with
    max_idle, that long without a request in flight (ends as on drain)."""
    idle = runloop.Idle(max_idle, drain)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _serve_channel(base, log, drain, idle, r, w)

    await runloop.serve_unix(sock, handle, stop, drain, limit=MAX_REQUEST)
    idle.close()


def main(ctx: ServiceContext) -> int:
    """Entry point under master (a privileged local, virtual or pipe master.cf service)."""
    if ctx.listen_socket is None:
        ctx.log.fatal(f"{ctx.service.name}: no listening socket")
    # Requests name their transport; deliver() applies that service's -o overrides to
    # the whole configuration, as qmgr's in-process deliveries do.
    base = ctx.base

    async def run() -> None:
        stop, drain = runloop.stop_and_drain()
        max_idle = ctx.cfg.get_time("max_idle")
        await serve(base, ctx.log, ctx.listen_socket, stop, drain, max_idle)  # type: ignore[arg-type]

    runloop.run(run())
    return 0
