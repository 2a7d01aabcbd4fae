"""What local(8) and virtual(8) share: table lookups with Postfix's address search
order, the Delivered-To loop check, the prepended headers, and the Rust mailbox writes
run off the event loop in their own threads (mailbox.Pool).
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from oxipost import runloop
from oxipost._core import mailbox
from oxipost.envelope import Outcome
from oxipost.maps import TableError, open_table
from oxipost.maps.search import SearchKey, maps_find_warned

if TYPE_CHECKING:
    from oxipost.config import Config


class LookupFailed(Exception):
    """A table could not be read: the recipient is deferred, never bounced."""


def lookup_tables(
    cfg: Config,
    param: str,
    keys: Sequence[SearchKey | str],
    warn: Callable[[str], None],
    no_regsub: bool = False,
    paranoid: bool = False,
) -> str | None:
    """First match in the tables of `param`: each key in every table before the next key,
    a partial key only in fixed tables (oxipost.maps.search.maps_find, as Postfix's
    mail_addr_find). `no_regsub` and `paranoid` (DICT_FLAG_NO_REGSUB, DICT_FLAG_PARANOID)
    as oxipost.maps says. LookupFailed when a table fails, after Postfix's warnings, given
    to `warn` (maps_find_warned)."""
    specs = cfg.get_list(param)
    if not specs:
        return None
    try:
        found = maps_find_warned(
            specs,
            keys,
            lambda spec: open_table(spec, cfg, no_regsub=no_regsub, paranoid=paranoid),
            warn,
        )
    except (TableError, OSError) as e:
        raise LookupFailed(f"{param}: {e}") from e
    return None if found is None else found[0]


# A Delivered-To: header line, its value up to the line's end (a continuation line starts
# with white space, so is never one).
_DELIVERED_TO = re.compile(rb"^delivered-to:([^\n]*)", re.IGNORECASE | re.MULTILINE)


def delivered_to(content: bytes) -> set[str]:
    """Delivered-To: values in the message header (lowercased), for loop detection."""
    ends = [i for i in (content.find(b"\r\n\r\n"), content.find(b"\n\n")) if i >= 0]
    head = content[: min(ends)] if ends else content
    return {m.strip().decode("utf-8", "replace").lower() for m in _DELIVERED_TO.findall(head)}


def loop_outcome(content: bytes, recipient: str) -> Outcome | None:
    if recipient.lower() in delivered_to(content):
        return Outcome("5.4.6", f"mail forwarding loop for {recipient}")
    return None


def prefix_headers(sender: str, recipient: str, original: str = "") -> bytes:
    """Return-Path, X-Original-To and Delivered-To, as Postfix's mail_copy prepends them."""
    if original:
        text = f"Return-Path: <{sender}>\r\nX-Original-To: {original}\r\n"
    else:
        text = f"Return-Path: <{sender}>\r\n"
    # An address's 8-bit bytes (taken with smtputf8_enable = no) are written as they came.
    return f"{text}Delivered-To: {recipient}\r\n".encode("utf-8", "surrogateescape")


def would_deliver(path: str) -> Outcome:
    """A probe's answer for a mailbox (Envelope.trace_only): what would be written, and
    nothing is (Postfix's maildir.c and mailbox.c, local's and virtual's alike)."""
    return Outcome("2.0.0", "delivers to maildir" if path.endswith("/") else "delivers to mailbox")


# The mailbox locks we take, in the order Postfix lists its own (postconf -l).
LOCK_METHODS = ("flock", "fcntl", "dotlock")


def lock_options(cfg: Config, param: str) -> dict[str, object]:
    styles = set(cfg.get_list(param))
    return {
        **{method: method in styles for method in LOCK_METHODS},
        "attempts": cfg.get_int("deliver_lock_attempts"),
        "delay": cfg.get_time("deliver_lock_delay"),
        "stale": cfg.get_time("stale_lock_time"),
    }


@functools.cache
def hostname() -> str:
    # Once per process, as Postfix's get_hostname(): it names every Maildir file.
    return socket.gethostname()


class _Writers:
    """The Rust threads mailbox writes run in (mailbox.Pool), and their outcomes' futures.
    A write mostly waits for its fsyncs, so as many may be in flight as Postfix would run
    delivery agents (default_process_limit; the scheduler keeps each transport within its
    own limit)."""

    def __init__(self, size: int) -> None:
        self.pool = mailbox.Pool(size)
        self.completions = runloop.Completions(self.pool.fileno(), self.pool.poll)


_WRITERS: dict[int, _Writers] = {}


async def _run(cfg: Config, submit: Callable[[mailbox.Pool], int]) -> tuple[str, bool, str, str]:
    size = max(1, cfg.get_int("default_process_limit"))
    writers = _WRITERS.get(size)
    if writers is None:
        writers = _WRITERS[size] = _Writers(size)
    status, permanent, text, warning = await writers.completions.wait_for(submit(writers.pool))
    return status, permanent, text, warning


async def maildir(
    path: str, prefix: bytes, content: bytes, ids: tuple[int, int] | None, cfg: Config
) -> Outcome:
    # The writer takes these ids only when running as root (a geteuid per write saved).
    uid, gid = ids if ids is not None else (None, None)
    status, _perm, text, _warning = await _run(
        cfg, lambda pool: pool.submit_maildir(path, prefix, content, hostname(), uid, gid)
    )
    return Outcome(status, text)


async def mbox(
    path: str,
    sender: str,
    prefix: bytes,
    content: bytes,
    locks: dict[str, object],
    ids: tuple[int, int] | None,
    cfg: Config,
    warn: Callable[[str], None] | None = None,
) -> Outcome:
    """The append; warn is given what it got past (locks' dotlock_may_fail)."""
    uid, gid = ids if ids is not None else (None, None)

    def submit(pool: mailbox.Pool) -> int:
        return pool.submit_mbox(
            path,
            sender,
            prefix,
            content,
            uid=uid,
            gid=gid,
            **locks,  # type: ignore[arg-type]
        )

    status, _perm, text, warning = await _run(cfg, submit)
    if warning and warn is not None:
        warn(warning)
    return Outcome(status, text)
