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
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # the "speed" extra is optional
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the fastest loop available."""
    if uvloop is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def on_signals(actions: dict[signal.Signals, Callable[[], object]]) -> None:
    """Run each action on the running loop when its signal arrives. A loop without
    signal support (asyncio raises NotImplementedError or RuntimeError: not the main
    thread, as in tests that serve from a thread) goes without; the signals then keep
    their default action, and master's SIGTERM still ends the process."""
    loop = asyncio.get_running_loop()
    for sig, action in actions.items():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, action)


def stop_and_drain() -> tuple[asyncio.Event, asyncio.Event]:
    """(stop, drain), set by master's SIGTERM or SIGINT (exit now) and SIGHUP (postfix
    reload: take no new work, finish what is in progress)."""
    stop, drain = asyncio.Event(), asyncio.Event()
    on_signals({signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGHUP: drain.set})
    return stop, drain


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
