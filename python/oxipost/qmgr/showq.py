"""showq(8): list the mail queue, for mailq / postqueue -p / postqueue -j.

The queue is mail_owner's alone (0700), so a local user cannot read it: as in Postfix,
postqueue asks the showq service, which master starts on demand on
`public/$showq_service_name` and which runs as mail_owner (master.cf: `showq unix n - n
- - showq`). public/ is `$mail_owner:$setgid_group` 0710, reached by postqueue through
its set-gid door (oxipost.cli.postqueue). showq takes no input from the client: each
connection gets the whole queue as read at that moment, then showq closes it; it ends
after max_idle seconds without a client, as Postfix's daemons do.

Stream (msgpack): {"protocol": "showq"}, then one object per message in the order
postqueue prints them (maildrop, in directory order as Postfix's showq reads it: local
submissions pickup has not taken yet, and what postsuper -r put there; then incoming,
active, deferred, hold, corrupt, each by arrival time),
each Postfix's postqueue -j object (`record`), then {"end": True}. The client formats it: the
postqueue -p layout (`compat_lines`, Postfix's showq_compat) or one JSON object a line
(`json_lines`, showq_json). `listing(cfg)` is the client; when the mail system is down,
root (or whoever may read the queue) reads it itself (`records`).

Diagnostics: what the queue's replay reports (a damaged record, an unreadable segment) is
logged as a warning, once per listing; a client that goes away mid-listing ends it
quietly (Postfix's showq sees EPIPE and stops). The client raises ShowqError
("malformed showq server response") on a stream it cannot read or that ends early.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from oxipost import runloop
from oxipost.config import Config
from oxipost.envelope import UNICODE_ERRORS, packb
from oxipost.pickup.maildrop import (
    MaildropError,
    Submission,
    header_recipients,
    maildrop_dir,
    maildrop_ids,
    requeued,
)
from oxipost.qmgr.queue import MessageInfo, QueueState

if TYPE_CHECKING:
    from oxipost.master.context import ServiceContext

HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
# Postfix right-aligns a deferral reason to this column and indents recipients to 41.
REASON_COLUMN = 78
RECIPIENT_INDENT = 41
STATUS = {"active": "*", "hold": "!"}
# The order postqueue walks the queues in.
ORDER = ("incoming", "active", "deferred", "hold", "corrupt")
HELLO = {"protocol": "showq"}
END = {"end": True}
# How long a client waits for showq (master starts it on demand: an interpreter start).
TIMEOUT = 60.0
# A message object is small (envelope only); this bounds what a client buffers.
MAX_RECORD = 16 << 20


class ShowqError(Exception):
    """The showq service's stream cannot be read ("malformed showq server response")."""


def socket_path(cfg: Config) -> str:
    return os.path.join(cfg.path("queue_directory"), "public", cfg.get("showq_service_name"))


def _sender(info: MessageInfo) -> str:
    return info.sender or "MAILER-DAEMON"


def listed(state: QueueState) -> list[MessageInfo]:
    out: list[MessageInfo] = []
    for queue in ORDER:
        out.extend(sorted(state.in_queue(queue), key=lambda i: (i.arrival_time, i.queue_id)))
    return out


def record(info: MessageInfo) -> dict[str, Any]:
    """One message as Postfix's postqueue -j object (what showq sends for it)."""
    recipients: list[dict[str, str]] = []
    pending = info.pending
    logged = info.deferrals
    if logged:
        # As Postfix's showq: the defer log's recipients first, in its order and each
        # with its reason, then the others the queue file still has, without one.
        left = dict(pending)
        # Blanks at either end of a reason go, as split_nameval() reads the logfile's.
        for idx, d in logged.items():
            if d.members:
                # The logfile names an alias's members; the recipient itself, not in it,
                # is one of the others.
                recipients += [{"address": m[0], "delay_reason": m[3].strip()} for m in d.members]
                continue
            rcpt = left.pop(idx, None)
            if rcpt is not None:
                recipients.append({"address": rcpt.address, "delay_reason": d.text.strip()})
        recipients += [{"address": rcpt.address} for rcpt in left.values()]
    else:
        for _i, rcpt in pending:
            entry = {"address": rcpt.address}
            if info.reason:
                entry["delay_reason"] = info.reason
            recipients.append(entry)
    return {
        "queue_name": info.state,
        "queue_id": info.queue_id,
        "arrival_time": int(info.arrival_time),
        "message_size": info.message_size,
        "forced_expire": info.expired,
        "sender": _sender(info),
        "recipients": recipients,
    }


def records(state: QueueState) -> Iterator[dict[str, Any]]:
    """The queue's messages, in listing order, as showq sends them. The size is the one
    qmgr logs, Postfix's queue file content records: what showq reads from its SIZE
    record, here what replay found (no message's content is read again)."""
    yield from maildrop(state.cfg)
    for info in listed(state):
        yield record(info)


def maildrop(cfg: Config) -> list[dict[str, Any]]:
    """The maildrop queue, which Postfix's showq lists first, in readdir() order (its
    scan_dir, not sorted): each file pickup will take, under the queue ID it is named
    after. A message postsuper -r put there is shown as it was listed before; a local
    submission with its arrival time, sender and recipients, and its file's size
    (Postfix's showq finds no size record there and counts the file). A file that is not
    a submission (pickup's to report) is not listed, as Postfix's showq lists none whose
    records it cannot read."""
    d = maildrop_dir(cfg.path("queue_directory"))
    out = []
    for name in maildrop_ids(cfg):
        try:
            fd = os.open(os.path.join(d, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with open(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    continue
                sub = Submission.decode(f.read())
        except (OSError, MaildropError):
            continue  # gone to pickup meanwhile, or not a submission
        if requeued(cfg, st, sub) and sub.listed:
            out.append(sub.listed)
            continue
        out.append(
            {
                "queue_name": "maildrop",
                "queue_id": name,
                "arrival_time": int(sub.time),
                "message_size": st.st_size,
                "forced_expire": False,
                "sender": sub.sender or "MAILER-DAEMON",
                # sendmail -t: ours leaves the header's recipients to pickup; Postfix's sendmail
                # writes them into the file, where its showq lists them.
                "recipients": [
                    {"address": rcpt}
                    for rcpt in sub.recipients
                    + (header_recipients(sub.content) if sub.extract else [])
                ],
            }
        )
    return out


def compat_lines(messages: Iterable[dict[str, Any]]) -> Iterator[str]:
    """postqueue -p / mailq output, line by line (Postfix's showq_compat): a recipient's
    delay reason is printed above it when it differs from the one before."""
    total = count = 0
    for msg in messages:
        if not count:
            yield HEADER
        count += 1
        total += msg["message_size"]
        stamp = time.asctime(time.localtime(msg["arrival_time"]))[:20]
        # A force-expired message's '#' follows the queue's mark (a held one is "!#").
        marks = STATUS.get(msg["queue_name"], "") + ("#" if msg.get("forced_expire") else "")
        # Postfix pads "ID+marks" to 11: a long ID without a mark has no blank after it.
        ident = msg["queue_id"] + marks
        yield f"{ident:<11} {msg['message_size']:>7} {stamp} {msg['sender']}"
        shown = ""
        for rcpt in msg["recipients"]:
            reason = rcpt.get("delay_reason", "")
            if reason != shown:
                # A recipient without a reason after one with.
                text = f"({reason or 'reason unavailable'})"
                yield " " * max(0, REASON_COLUMN - len(text)) + text
            shown = reason
            yield " " * RECIPIENT_INDENT + rcpt["address"]
        yield ""
    if not count:
        yield "Mail queue is empty"
        return
    yield f"-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}."


def json_lines(messages: Iterable[dict[str, Any]]) -> Iterator[str]:
    """postqueue -j output: one JSON object per message."""
    for msg in messages:
        yield json.dumps(msg)


# The client ---------------------------------------------------------------------------


def listing(cfg: Config) -> Iterator[dict[str, Any]]:
    """The running showq's listing, message by message. OSError from connect() when
    nothing answers (the caller tells "down" from "no permission" by its errno)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(socket_path(cfg))
    except OSError:
        sock.close()
        raise
    return _read_stream(sock)


def _read_stream(sock: socket.socket) -> Iterator[dict[str, Any]]:
    unpacker = msgpack.Unpacker(
        raw=False, max_buffer_size=MAX_RECORD, unicode_errors=UNICODE_ERRORS
    )
    hello = False
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise ShowqError("malformed showq server response")
            unpacker.feed(chunk)
            try:
                for obj in unpacker:
                    if not isinstance(obj, dict):
                        raise ShowqError("malformed showq server response")
                    if not hello:
                        if obj != HELLO:
                            raise ShowqError("malformed showq server response")
                        hello = True
                    elif obj == END:
                        return
                    else:
                        yield obj
            except (ValueError, msgpack.UnpackException):
                raise ShowqError("malformed showq server response") from None


# The service --------------------------------------------------------------------------


def _read_queue(cfg: Config, log: Any) -> list[bytes]:
    """The listing, packed (in a thread: the replay reads the whole spool)."""
    state = QueueState(cfg)
    try:
        for problem in state.problems:
            log.warning(problem)
        return [packb(obj) for obj in (HELLO, *records(state), END)]
    finally:
        state.close()


async def serve(ctx: ServiceContext, stop: asyncio.Event, drain: asyncio.Event) -> None:
    """Answer each client with the queue until stop (exit now), drain (postfix reload: the
    listings in progress finish first) or max_idle seconds without a client."""
    idle = runloop.Idle(ctx.cfg.get_time("max_idle"), drain)

    async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        idle.begin()
        try:
            for packed in await asyncio.to_thread(_read_queue, ctx.cfg, ctx.log):
                w.write(packed)
                await w.drain()
        except OSError:
            pass  # the client went away (mailq | head): nothing more to say
        finally:
            w.close()
            idle.end()

    assert ctx.listen_socket is not None
    await runloop.serve_unix(ctx.listen_socket, handle, stop, drain)
    idle.close()


def main(ctx: ServiceContext) -> int:
    """Entry point under master (the showq master.cf service)."""
    if ctx.listen_socket is None:
        ctx.log.fatal(f"{ctx.service.name}: no listening socket")

    async def run() -> None:
        stop, drain = runloop.stop_and_drain()
        await serve(ctx, stop, drain)

    runloop.run(run())
    return 0
