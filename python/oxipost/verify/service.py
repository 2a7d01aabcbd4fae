"""verify - address verification server

What reject_unverified_recipient and reject_unverified_sender ask (oxipost.verify.client):
a cache of each address's last probe outcome, in memory, and kept in address_verify_map
when that is an lmdb: table, so that it outlives a restart: each change is written
through, as Postfix's verify(8) writes "STATUS:PROBED:UPDATED:TEXT" under the address
(with ':' as '_'), and a start reads back what is there ("bad address verify table entry:
ENTRY" for what is not in that form). Postfix reads our file and we read its. Another
type (the default btree:, which we do not write) keeps it in memory only, as an empty
address_verify_map does. As Postfix's verify(8):
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
import contextlib
import os
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
from oxipost.verify.client import STAT_BOUNCE, STAT_DEFER, STAT_OK, STAT_TODO

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.log import Logger
    from oxipost.master.context import ServiceContext

IN_PROGRESS = "Address verification in progress"
# Where Postfix's dict_cache notes its last cleanup in a persistent cache.
CLEANUP_STAMP = "_LAST_CACHE_CLEANUP_COMPLETED_"
# How long a probe in flight keeps another from going out (verify.c's PROBE_TTL).
PROBE_TTL = 1000


@dataclass(slots=True)
class Entry:
    status: int
    probed: float  # when the last probe went out (0: none in flight)
    updated: float  # when its outcome came (0: none yet)
    text: str


def persistent_map(cfg: Config) -> str | None:
    """The name of the lmdb: table address_verify_map names; None for any other."""
    kind, _, name = cfg.get("address_verify_map").partition(":")
    return name if kind == "lmdb" and name else None


def open_map(cfg: Config, name: str) -> None:
    """Open (create) the table for writing, as Postfix's verify opens it O_CREAT|O_RDWR
    under umask 022; TableError if it cannot."""
    from oxipost.maps import lmdb

    saved = os.umask(0o022)
    try:
        # An empty update: what opens the file for writing, as the later ones find it.
        lmdb.write(name, [], "replace", cfg.get_int("lmdb_map_size"), truncate=False)
    finally:
        os.umask(saved)


def pre_jail_init(cfg: Config) -> None:
    """Before the drop to mail_owner, as Postfix's verify: open the persistent map, so
    that a file root owns (Postfix's verify creates it so) is written all the same."""
    from oxipost.maps import TableError

    name = persistent_map(cfg)
    if name is not None:
        # Said once Verifier opens it again, in the maillog.
        with contextlib.suppress(TableError):
            open_map(cfg, name)


def _key(address: str) -> str:
    # Postfix neuters ':' (an IPv6 literal's) in the key; we fold the case too.
    return address.lower().replace(":", "_")


def _parse_entry(raw: str) -> Entry | None:
    """verify_parse_entry: STATUS:PROBED:UPDATED:TEXT, a known status, a time set."""
    parts = raw.split(":", 3)
    if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    status, probed, updated = (int(p) for p in parts[:3])
    if status not in (STAT_OK, STAT_DEFER, STAT_BOUNCE, STAT_TODO) or not (probed or updated):
        return None
    return Entry(status, float(probed), float(updated), parts[3])


class Verifier:
    """The cache and its rules; `clock` is the time in seconds."""

    def __init__(self, cfg: Config, log: Logger, clock: Callable[[], float] = time.time) -> None:
        self.cfg, self.log = cfg, log
        self.clock = clock
        self.cache: dict[str, Entry] = {}
        self._queue: Queue | None = None
        self.name = "internal:verify"
        self.store = self._load()

    def _load(self) -> str | None:
        """The name of the lmdb: table address_verify_map names (created if need be),
        its entries now in the cache; None for any other kind of table."""
        name = persistent_map(self.cfg)
        if name is None:
            return None
        from oxipost.maps import TableError, lmdb

        try:
            open_map(self.cfg, name)
            items = lmdb.LmdbTable(name, fold_keys=False).items()
        except TableError as e:
            self.log.error(f"{e}: keeping address verification status in memory")
            return None
        for key, raw in items:
            entry = _parse_entry(raw)
            if entry is not None:
                self.cache[key] = entry
            elif key != CLEANUP_STAMP:
                self.log.warning(f"bad address verify table entry: {raw[:100]}")
        self.name = f"lmdb:{name}"
        return name

    def _save(self, *keys: str, stamp: str | None = None) -> None:
        """Write the cache's entries for `keys` through to the table (none: removed)."""
        if self.store is None:
            return
        from oxipost.maps import TableError, lmdb

        kept, gone = [], []
        for key in keys:
            e = self.cache.get(key)
            if e is None or not (e.probed or e.updated):
                gone.append(key.encode())
            else:
                value = f"{e.status}:{int(e.probed)}:{int(e.updated)}:{e.text}"
                kept.append((key.encode(), value.encode(), 0))
        if stamp is not None:
            kept.append((CLEANUP_STAMP.encode(), stamp.encode(), 0))
        try:
            if kept:
                size = self.cfg.get_int("lmdb_map_size")
                lmdb.write(self.store, kept, "replace", size, truncate=False)
            if gone:
                lmdb.delete(self.store, gone)
        except TableError as e:
            self.log.warning(str(e))

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
        key = _key(address)
        e = self.cache.get(key)
        if e is None or (e.updated and self._expired(e, now)):
            e = self.cache[key] = Entry(STAT_TODO, e.probed if e else 0.0, 0.0, IN_PROGRESS)
        probe = now - e.probed > PROBE_TTL and (
            e.status == STAT_TODO or self._older(e, now, "refresh")
        )
        if probe:
            e.probed = now
            # Postfix keeps a probe in flight only where it may keep a failure.
            if e.updated or self.cfg.get_bool("address_verify_negative_cache"):
                self._save(key)
        return e.status, e.text, probe

    def update(self, address: str, status: int, text: str) -> None:
        now = self.clock()
        key = _key(address)
        old = self.cache.get(key)
        if status != STAT_OK:
            # A failed probe does not clobber an address known good (verify.c): it is
            # probed again at the next query.
            if old is not None and old.status == STAT_OK and not self._expired(old, now):
                old.probed = 0.0
                self._save(key)
                return
            if not self.cfg.get_bool("address_verify_negative_cache"):
                return
        self.cache[key] = Entry(status, 0.0, now, text)
        self._save(key)

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
            entry = self.cache.get(_key(address))
            if entry is not None:
                entry.probed = 0.0
                self._save(_key(address))
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
        self._save(*dropped, stamp=str(int(now)))
        self.log.info(
            f"cache {self.name} full cleanup: retained={len(self.cache)} "
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
