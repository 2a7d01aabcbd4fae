"""verify - address verification server

What reject_unverified_recipient and reject_unverified_sender ask (oxipost.verify.client):
a cache of each address's last probe outcome, in memory (address_verify_map empty; a
persistent map is not kept: its entries start from nothing at each start, and
address_verify_map is otherwise ignored). As Postfix's verify(8):
- query: an address not known, or whose entry expired (a success older than
  address_verify_positive_expire_time, a failure older than
  address_verify_negative_expire_time), is STAT_TODO "Address verification in progress";
  a known one is its status and text. A probe goes out, after the answer, when there is no
  entry or it needs a refresh (a success older than address_verify_positive_refresh_time,
  a failure older than address_verify_negative_refresh_time), and none went out for it in
  the last 1000 seconds (Postfix's PROBE_TTL).
- update (qmgr, at the end of a probe's delivery attempt): the outcome, with its time; a
  failure does not replace a success that has not expired, and is not kept at all with
  address_verify_negative_cache = no.
A probe is a message from address_verify_sender ("<>" for the null sender) to the address,
queued as Postfix's post_mail() queues it (Received: by host, cleanup's missing headers) with
the TRACE_MTA_VRFY flag: the delivery agents go as far as they would and say what they
found (oxipost.envelope), and qmgr reports it here instead of delivering or bouncing.

Every address_verify_cache_cleanup_interval, from the start, expired entries (and probes
in flight for longer than 1000 seconds without an outcome) are dropped: "cache
internal:verify full cleanup: retained=N dropped=M entries", as Postfix's dict_cache logs it
for its in-memory map.

Requests: request=query address=A → status=0 recipient_status=N reason=TEXT; request=update
address=A recipient_status=N reason=TEXT → status=0. Anything else is "warning:
unrecognized request: "NAME", ignored" and status=-1, as anvil's.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oxipost import bounce, runloop
from oxipost.anvil.client import STAT_FAIL, attr_bytes, read_attrs
from oxipost.envelope import TRACE_MTA_VRFY, Envelope, Recipient
from oxipost.qmgr import control
from oxipost.qmgr.queue import Queue
from oxipost.rewrite.rewrite import rewrite_address
from oxipost.verify.client import STAT_OK, STAT_TODO

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.log import Logger
    from oxipost.master.context import ServiceContext

IN_PROGRESS = "Address verification in progress"
# How long a probe in flight keeps another from going out (verify.c's PROBE_TTL).
PROBE_TTL = 1000


@dataclass(slots=True)
class Entry:
    status: int
    probed: float  # when the last probe went out (0: none in flight)
    updated: float  # when its outcome came (0: none yet)
    text: str


class Verifier:
    """The cache and its rules; `clock` is the time in seconds."""

    def __init__(self, cfg: Config, log: Logger, clock: Callable[[], float] = time.time) -> None:
        self.cfg, self.log = cfg, log
        self.clock = clock
        self.cache: dict[str, Entry] = {}
        self._queue: Queue | None = None

    def _older(self, e: Entry, now: float, what: str) -> bool:
        """Whether e's outcome is older than its address_verify_*_{what}_time (what:
        "expire" or "refresh"), positive or negative as it is."""
        sign = "positive" if e.status == STAT_OK else "negative"
        return e.updated + self.cfg.get_time(f"address_verify_{sign}_{what}_time") < now

    def _expired(self, e: Entry, now: float) -> bool:
        return self._older(e, now, "expire")

    def query(self, address: str) -> tuple[int, str, bool]:
        """(status, text, probe now?) for address."""
        now = self.clock()
        key = address.lower()
        e = self.cache.get(key)
        if e is None or (e.updated and self._expired(e, now)):
            e = self.cache[key] = Entry(STAT_TODO, e.probed if e else 0.0, 0.0, IN_PROGRESS)
        probe = now - e.probed > PROBE_TTL and (
            e.status == STAT_TODO or self._older(e, now, "refresh")
        )
        if probe:
            e.probed = now
        return e.status, e.text, probe

    def update(self, address: str, status: int, text: str) -> None:
        now = self.clock()
        key = address.lower()
        old = self.cache.get(key)
        if status != STAT_OK:
            # A failed probe does not clobber an address known good (verify.c): it is
            # probed again at the next query.
            if old is not None and old.status == STAT_OK and not self._expired(old, now):
                old.probed = 0.0
                return
            if not self.cfg.get_bool("address_verify_negative_cache"):
                return
        self.cache[key] = Entry(status, 0.0, now, text)

    async def send_probe(self, address: str) -> None:
        """Queue a probe for address and wake qmgr; a failure leaves no probe in flight."""
        sender = self.cfg.get("address_verify_sender")
        sender = "" if sender in ("<>", "") else rewrite_address(self.cfg, sender)
        env = Envelope(
            sender,
            [Recipient(address, original=address)],
            time.time(),
            attrs={"trace_flags": str(TRACE_MTA_VRFY)},
        )
        try:
            if self._queue is None:
                self._queue = Queue.open(self.cfg, writer="verify")
            qid, cleaned = bounce.queue_notice(self.cfg, self._queue, env, b"")
            refused = cleaned.reply
        except Exception as err:
            self.log.warning(f"probe to <{address}> not queued: {err}")
            refused = str(err)
        if refused is not None:
            entry = self.cache.get(address.lower())
            if entry is not None:
                entry.probed = 0.0
            return
        cleaned.log_notes(self.log, qid)
        await control.wakeup(self.cfg)

    def answer(self, attrs: dict[str, str]) -> tuple[dict[str, object], str]:
        """The reply to one request, and the address to probe ("" for none)."""
        request, address = attrs.get("request", ""), attrs.get("address", "")
        if request == "query":
            status, text, probe = self.query(address)
            reply = {"status": 0, "recipient_status": status, "reason": text}
            return reply, address if probe else ""
        if request == "update":
            try:
                status = int(attrs.get("recipient_status", ""))
            except ValueError:
                return {"status": STAT_FAIL}, ""
            self.update(address, status, attrs.get("reason", ""))
            return {"status": 0}, ""
        self.log.warning(f'unrecognized request: "{request}", ignored')
        return {"status": STAT_FAIL}, ""

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: requests answered in order until it closes."""
        try:
            while (attrs := await read_attrs(reader)) is not None:
                reply, probe = self.answer(attrs)
                writer.write(attr_bytes(reply))
                await writer.drain()
                if probe:
                    await self.send_probe(probe)
        except (OSError, ValueError):
            pass
        finally:
            writer.close()

    def cleanup(self) -> None:
        """Drop what expired (Postfix's dict_cache_clean with verify's validator)."""
        now = self.clock()
        dropped = [
            key
            for key, e in self.cache.items()
            if (e.updated and self._expired(e, now))
            or (not e.updated and now - e.probed > PROBE_TTL)
        ]
        for key in dropped:
            del self.cache[key]
        self.log.info(
            f"cache internal:verify full cleanup: retained={len(self.cache)} "
            f"dropped={len(dropped)} entries"
        )

    async def cleanups(self) -> None:
        interval = self.cfg.get_time("address_verify_cache_cleanup_interval")
        while interval > 0:
            self.cleanup()
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()


async def serve(cfg: Config, sock: socket.socket, log: Logger) -> None:
    """Serve on master's listening socket until SIGTERM or postfix reload."""
    verifier = Verifier(cfg, log)
    stop, drain = runloop.stop_and_drain()
    cleanups = asyncio.get_running_loop().create_task(verifier.cleanups())
    try:
        await runloop.serve_unix(sock, verifier.client, stop, drain)
    finally:
        cleanups.cancel()
        verifier.close()


def main(ctx: ServiceContext) -> int:
    return runloop.serve_service(ctx, lambda sock: serve(ctx.cfg, sock, ctx.log))
