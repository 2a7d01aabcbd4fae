"""The qmgr control socket: how the queue tools reach a running qmgr.

qmgr listens on `$queue_directory/public/qmgr` (master binds it; see master/context.py).
A client sends one msgpack request and reads one msgpack reply, then closes:

    {"op": "wakeup"}                              new mail was queued (smtpd, pickup)
    {"op": "flush"}                               postqueue -f, postfix flush
    {"op": "flush-site", "site": "example.com"}   postqueue -s, ETRN
    {"op": "flush-id", "id": "QUEUEID"}           postqueue -i
    {"op": "super", "action": "delete|expire|hold|release|requeue", "ids": [...] | "ALL",
     "queues": ["deferred", ...] | None}          postsuper while qmgr holds the state lock

Replies are {"ok": True, "count": N} (a super request's also "ids", those it changed) or
{"ok": False, "error": "text"}. `QmgrDown` means
nothing answers: the tools then say what Postfix's say ("mail system is down").

Before a flush-site request, its sender asks `flush_site_ok` whether fast_flush_domains
lists the site, as Postfix's flush_send_site does before it asks the flush service:
fast_flush_domains is a domain list (parent domains as parent_domain_matches_subdomains
says), and its backwards-compatible default (compatibility_level below 2, relay_domains and
fast_flush_domains unset: $mydestination) is named in a line at each use:
    using backwards-compatible default setting relay_domains=$mydestination to flush mail
        for domain "SITE"
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import msgpack

from oxipost.config import Config
from oxipost.config.params import compat_breaks
from oxipost.rewrite.resolve import domain_list_match

TIMEOUT = 30.0
WAKE_TIMEOUT = 5.0


class QmgrDown(Exception):
    """No qmgr answers on the control socket; errno says why (0: no reply came)."""

    def __init__(self, text: str, errno: int = 0) -> None:
        super().__init__(text)
        self.errno = errno


def socket_path(cfg: Config) -> str:
    return os.path.join(cfg.path("queue_directory"), "public", "qmgr")


def request(cfg: Config, req: dict[str, object], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the running qmgr and return its reply (decoded msgpack)."""
    path = socket_path(cfg)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(msgpack.packb(req, use_bin_type=True))
            s.shutdown(socket.SHUT_WR)
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                unpacker.feed(chunk)
                for reply in unpacker:
                    return dict(reply)
    except OSError as e:
        raise QmgrDown(f"{path}: {e.strerror or e}", e.errno or 0) from None
    raise QmgrDown(f"{path}: no reply")


def flush_site_ok(cfg: Config, site: str, info: Callable[[str], object] | None = None) -> bool:
    """Whether site may be flushed (fast_flush_domains lists it); where the older default
    let it, that line goes to info. TableError propagates."""
    if not domain_list_match(cfg, "fast_flush_domains", site):
        return False
    if info is not None and "fast_flush_domains" in compat_breaks(cfg):
        info(
            "using backwards-compatible default setting relay_domains=$mydestination"
            f' to flush mail for domain "{site}"'
        )
    return True


async def wakeup(cfg: Config) -> None:
    """Tell qmgr that mail was queued ({"op": "wakeup"}), as Postfix's cleanup triggers
    qmgr, without blocking the caller's loop (local(8) inside qmgr, verify(8)). Without
    it the new message waits for qmgr's next queue_run_delay scan."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(socket_path(cfg)), WAKE_TIMEOUT
        )
    except (TimeoutError, OSError):
        return  # no qmgr (an agent run on its own): its start-up scan finds the mail
    try:
        writer.write(msgpack.packb({"op": "wakeup"}, use_bin_type=True))
        writer.write_eof()
        await asyncio.wait_for(reader.read(), WAKE_TIMEOUT)
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def handle_connection(
    conn: socket.socket, handler: Callable[[dict[str, object]], dict[str, object]]
) -> None:
    """Serve one client (qmgr's side): read a request, answer with handler's reply."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
    with conn:
        conn.settimeout(TIMEOUT)
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            unpacker.feed(chunk)
            for req in unpacker:
                try:
                    reply = handler(dict(req))
                except Exception as e:  # the reply says what went wrong; qmgr keeps running
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                conn.sendall(msgpack.packb(reply, use_bin_type=True))
                return
