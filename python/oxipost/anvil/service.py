"""anvil - session count and request rate control

The server behind smtpd's smtpd_client_*_limit parameters: it keeps, for each (service,
client) identity "SERVICE:ADDR", the number of simultaneous connections and the number of
connections, MAIL commands, recipients, new TLS sessions and AUTH commands in the current
time unit. As Postfix's anvil, a rate is not a moving average: the counts start again
once anvil_rate_time_unit has passed since the first of them. An identity without a
connection is forgotten a time unit later.

Requests (request=NAME, ident=IDENT): connect (answers count and rate), disconnect,
message, recipient, newtls, auth (each answers its rate), newtls_status (the new TLS
session rate, not counting one), lookup (every count). A connection's counts belong to the
smtpd process that registered them: when that process's connection to anvil closes (it
exited or was killed), they are dropped. Unlike Postfix's anvil, which keeps one client per
smtpd process, any number of sessions per process are counted: an oxipost smtpd process
serves many at a time.

Diagnostics: every anvil_status_update_time and when it exits, the peaks since the last
report: "statistics: max connection rate N/Ts for (IDENT) at Mon DD HH:MM:SS", "max
connection count N", "max message rate", "max recipient rate", "max newtls rate", "max
auth rate", "max cache size N at ..." (Postfix's lines). An unknown request is "warning:
unrecognized request: "NAME", ignored" and answered status=-1; a request that is not
exactly request= and ident= ends that client's connection, as Postfix's anvil hangs up.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oxipost import runloop
from oxipost.anvil.client import STAT_FAIL, STAT_OK, attr_bytes, read_attrs

if TYPE_CHECKING:
    from oxipost.master.context import ServiceContext

# The peaks Postfix's anvil reports, in its order, with the name its "statistics:" line
# gives each.
PEAKS = (
    ("rate", "connection rate"),
    ("count", "connection count"),
    ("mail", "message rate"),
    ("rcpt", "recipient rate"),
    ("ntls", "newtls rate"),
    ("auth", "auth rate"),
)
EVENT_RATES = {"message": "mail", "recipient": "rcpt", "newtls": "ntls", "auth": "auth"}


@dataclass
class Remote:
    """One (service, client) identity."""

    ident: str
    count: int = 0
    rate: int = 0
    mail: int = 0
    rcpt: int = 0
    ntls: int = 0
    auth: int = 0
    start: int = 0  # when the current time unit began
    idle_since: int = 0  # when its last connection ended

    def reset_rates(self, start: int) -> None:
        self.rate = self.mail = self.rcpt = self.ntls = self.auth = 0
        self.start = start


@dataclass
class Peak:
    value: int = 0
    ident: str = ""
    when: int = 0


class Anvil:
    """The counts. Time is an argument: whole seconds, as Postfix's event_time()."""

    def __init__(self, time_unit: int) -> None:
        self.unit = time_unit
        self.remotes: dict[str, Remote] = {}
        self.peaks = {what: Peak() for what, _ in PEAKS}
        self.max_cache = 0
        self.max_cache_time = 0

    def _stale(self, remote: Remote, now: int) -> bool:
        return remote.start + self.unit < now

    def _incr(self, remote: Remote, what: str, now: int) -> int:
        if self._stale(remote, now):
            remote.reset_rates(now)
        value = getattr(remote, what) + 1
        setattr(remote, what, value)
        return value

    def _peak(self, what: str, value: int, ident: str, now: int) -> None:
        peak = self.peaks[what]
        if value > peak.value:
            peak.value, peak.ident, peak.when = value, ident, now

    def _conn_update(self, local: Counter[str], ident: str, now: int) -> Remote:
        remote = self.remotes.get(ident)
        if remote is None:
            remote = self.remotes[ident] = Remote(ident, count=1, rate=1, start=now)
            if len(self.remotes) > self.max_cache:
                self.max_cache, self.max_cache_time = len(self.remotes), now
        else:
            self._incr(remote, "rate", now)
            remote.count += 1
        local[ident] += 1
        return remote

    def connect(self, local: Counter[str], ident: str, now: int) -> tuple[int, int]:
        """A new connection of `local` (an smtpd process): (count, rate)."""
        remote = self._conn_update(local, ident, now)
        self._peak("rate", remote.rate, ident, now)
        self._peak("count", remote.count, ident, now)
        return remote.count, remote.rate

    def event(self, request: str, local: Counter[str], ident: str, now: int) -> int:
        """Count a message, recipient, newtls or auth event: its rate."""
        what = EVENT_RATES[request]
        remote = self.remotes.get(ident)
        if remote is None:
            # As Postfix's anvil: a connection registered before a postfix reload.
            remote = self._conn_update(local, ident, now)
        value = self._incr(remote, what, now)
        self._peak(what, value, ident, now)
        return value

    def report(self, ident: str, now: int) -> Remote:
        """The counts of ident, without stale rates (a new Remote when unknown)."""
        remote = self.remotes.get(ident)
        if remote is None:
            return Remote(ident)
        if remote.start and self._stale(remote, now):
            remote.reset_rates(0)
        return remote

    def disconnect(self, local: Counter[str], ident: str, now: int) -> None:
        remote = self.remotes.get(ident)
        if local[ident] > 0 and remote is not None:
            local[ident] -= 1
            self._drop(remote, now)
        if not local[ident]:
            del local[ident]

    def drop_local(self, local: Counter[str], now: int) -> None:
        """An smtpd process went away: its connections end."""
        for ident, n in local.items():
            remote = self.remotes.get(ident)
            for _ in range(n if remote is not None else 0):
                self._drop(remote, now)  # type: ignore[arg-type]
        local.clear()

    def _drop(self, remote: Remote, now: int) -> None:
        if remote.count > 0:
            remote.count -= 1
            if remote.count == 0:
                remote.idle_since = now

    def expire(self, now: int) -> None:
        """Forget the identities that have had no connection for a time unit."""
        for ident in [
            i for i, r in self.remotes.items() if r.count == 0 and r.idle_since + self.unit <= now
        ]:
            del self.remotes[ident]

    def statistics(self) -> list[str]:
        """The peaks since the last report, as Postfix's anvil logs them; reset."""
        lines: list[str] = []
        for what, name in PEAKS:
            peak = self.peaks[what]
            if peak.value <= 0:
                continue
            value = f"{peak.value}" if what == "count" else f"{peak.value}/{self.unit}s"
            lines.append(
                f"statistics: max {name} {value} for ({peak.ident}) at {_ctime(peak.when)}"
            )
            peak.value = 0
        if self.max_cache > 0:
            at = _ctime(self.max_cache_time)
            lines.append(f"statistics: max cache size {self.max_cache} at {at}")
            self.max_cache = 0
        return lines


def _ctime(when: int) -> str:
    """Postfix's "%.15s" of ctime() + 4: "Dec  6 12:39:44"."""
    return time.ctime(when)[4:19]


class AnvilServer:
    """Serves Anvil to smtpd processes over the plain attribute protocol."""

    def __init__(self, cfg: Any, log: Any, clock: Callable[[], float] = time.time) -> None:
        self.anvil = Anvil(int(cfg.get_time("anvil_rate_time_unit")))
        self.status_time = cfg.get_time("anvil_status_update_time")
        self.log = log
        self.clock = clock
        self.tasks: list[asyncio.Task[None]] = []
        self.clients: set[asyncio.Task[Any]] = set()

    def now(self) -> int:
        return int(self.clock())

    def answer(self, request: str, ident: str, local: Counter[str]) -> dict[str, object]:
        now = self.now()
        anvil = self.anvil
        if request == "connect":
            count, rate = anvil.connect(local, ident, now)
            return {"status": STAT_OK, "count": count, "rate": rate}
        if request in EVENT_RATES:
            return {"status": STAT_OK, "rate": anvil.event(request, local, ident, now)}
        if request == "disconnect":
            anvil.disconnect(local, ident, now)
            return {"status": STAT_OK}
        if request == "newtls_status":
            return {"status": STAT_OK, "rate": anvil.report(ident, now).ntls}
        if request == "lookup":
            r = anvil.report(ident, now)
            return {
                "status": STAT_OK,
                "count": r.count,
                "rate": r.rate,
                "mail": r.mail,
                "rcpt": r.rcpt,
                "newtls": r.ntls,
                "auth": r.auth,
            }
        self.log.warning(f'unrecognized request: "{request}", ignored')
        return {"status": STAT_FAIL}

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One smtpd process's connection, until it closes."""
        local: Counter[str] = Counter()
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
        try:
            while True:
                attrs = await read_attrs(reader)
                if attrs is None or attrs.keys() != {"request", "ident"}:
                    break
                writer.write(attr_bytes(self.answer(attrs["request"], attrs["ident"], local)))
                await writer.drain()
        except (OSError, ValueError):
            pass
        finally:
            self.clients.discard(task)  # type: ignore[arg-type]
            self.anvil.drop_local(local, self.now())
            writer.close()

    async def close(self) -> None:
        """End the timers and every client connection."""
        for task in (*self.tasks, *self.clients):
            task.cancel()
        await asyncio.gather(*self.tasks, *self.clients, return_exceptions=True)
        self.tasks.clear()

    def dump(self) -> None:
        for line in self.anvil.statistics():
            self.log.info(line)

    def start_timers(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._every(self.status_time, self.dump)))
        expire = max(1, self.anvil.unit)
        self.tasks.append(
            loop.create_task(self._every(expire, lambda: self.anvil.expire(self.now())))
        )

    async def _every(self, seconds: float, action: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(max(1, seconds))
            action()


async def serve(cfg: Any, sock: socket.socket, log: Any) -> None:
    """Serve on master's listening socket until SIGTERM or postfix reload (a new anvil
    takes over the socket at once; its counts start from nothing, as Postfix's do)."""
    anvil = AnvilServer(cfg, log)
    server = await asyncio.start_unix_server(anvil.client, sock=sock)
    anvil.start_timers()
    stop, drain = runloop.stop_and_drain()
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    server.close()
    await anvil.close()
    anvil.dump()


def main(ctx: ServiceContext) -> int:
    return runloop.serve_service(ctx, lambda sock: serve(ctx.cfg, sock, ctx.log))
