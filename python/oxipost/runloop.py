"""The one way a service runs its asyncio loop: on uvloop when it is installed, and
the one way it hears master's signals.

DESIGN: one loop per process, uvloop when there. Every SMTP command and every delivery is a
few loop turns, and uvloop's turns and socket writes cost a fraction of the pure-Python
selector loop's (the "speed" extra installs it; without it, asyncio's own loop runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

try:
    import uvloop
except ImportError:  # the "speed" extra is optional
    uvloop = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from oxipost.master.context import ServiceContext

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the fastest loop available."""
    if uvloop is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def on_signals(actions: dict[signal.Signals, Callable[[], object]]) -> None:
    """Run each action on the running loop when its signal arrives. Only the main thread
    receives signals, and only its loop may handle them: a loop in another thread (tests
    that serve from one) leaves them to the main thread's own handling."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig, action in actions.items():
        loop.add_signal_handler(sig, action)


def serve_service(
    ctx: ServiceContext, serve: Callable[[socket.socket], Coroutine[Any, Any, None]]
) -> int:
    """A unix service's entry point under master (anvil, verify): serve(its listening
    socket) until master stops or reloads it; fatal without the socket."""
    if ctx.listen_socket is None:
        ctx.log.fatal(f"{ctx.service.name}: no listening socket")
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(ctx.listen_socket))
    return 0


def stop_and_drain() -> tuple[asyncio.Event, asyncio.Event]:
    """(stop, drain), set by master's SIGTERM or SIGINT (exit now) and SIGHUP (postfix
    reload: take no new work, finish what is in progress)."""
    stop, drain = asyncio.Event(), asyncio.Event()
    on_signals({signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: drain.set})
    return stop, drain


class Idle:
    """Sets `expired` once no work has been in flight for `limit` seconds (never when limit
    is 0), as Postfix's daemons end after max_idle. What counts as work is the caller's:
    a request for a delivery agent (qmgr's connection stays open, so an idle agent is one
    without work, not one without a client), a client for showq."""

    def __init__(self, limit: float, expired: asyncio.Event) -> None:
        self.limit = limit
        self.busy = 0
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()
        self.watch = self.loop.create_task(self._watch(expired)) if limit > 0 else None

    def begin(self) -> None:
        self.busy += 1

    def end(self) -> None:
        self.busy -= 1
        self.since = self.loop.time()

    async def _watch(self, expired: asyncio.Event) -> None:
        while True:
            left = self.since + self.limit - self.loop.time()
            if self.busy == 0 and left <= 0:
                expired.set()
                return
            await asyncio.sleep(left if self.busy == 0 else self.limit)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.cancel()


async def serve_unix(
    sock: socket.socket,
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    stop: asyncio.Event,
    drain: asyncio.Event,
    limit: int = 1 << 16,
) -> None:
    """Run handle for each client of the listening unix socket sock (master's) until stop
    (master's SIGTERM: the clients are cut off now) or drain (SIGHUP, postfix reload, or
    an Idle's expiry: no new client, the ones in progress finish first)."""
    clients: set[asyncio.Task[None]] = set()

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            clients.add(task)
        try:
            await handle(r, w)
        except asyncio.CancelledError:
            # Stopped: ends here, as a task asyncio's streams can finish without logging
            # an error (3.11 asks a cancelled client_connected_cb task for its exception).
            w.close()
        finally:
            clients.discard(task)  # type: ignore[arg-type]

    server = await asyncio.start_unix_server(client, sock=sock, limit=limit)
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    if drain.is_set() and not stop.is_set() and clients:
        await asyncio.wait(clients)
    for w in waits:
        w.cancel()
    for task in list(clients):
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)


class Completions:
    """Futures for the tickets of a Rust worker that reports finished jobs through a file
    descriptor (spool.Writer's group commits, mailbox.Pool's writes): `poll()` returns
    tuples (ticket, *outcome), and a ticket's future resolves with its outcome tuple. The
    reader is on whichever loop last waited (tests run several loops in turn)."""

    def __init__(self, fileno: int, poll: Callable[[], list[tuple[Any, ...]]]) -> None:
        self._fileno = fileno
        self._poll = poll
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}

    def wait_for(self, ticket: int) -> asyncio.Future[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()
            loop.add_reader(self._fileno, self._completed)
            self._loop = loop
        fut: asyncio.Future[tuple[Any, ...]] = loop.create_future()
        self._waiting[ticket] = fut
        return fut

    def _completed(self) -> None:
        for ticket, *outcome in self._poll():
            fut = self._waiting.pop(ticket, None)
            # A waiter may have given up (cancelled) or belong to a loop since closed.
            if fut is not None and not fut.done() and not fut.get_loop().is_closed():
                fut.set_result(tuple(outcome))

    def close(self) -> None:
        """Stop watching (the worker is closing, or another loop takes over)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fileno)
        self._loop = None
