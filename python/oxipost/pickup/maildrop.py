"""The maildrop/ queue: one file per locally submitted message (sendmail → postdrop).

A maildrop file is one msgpack map: {"v": 1, "sender", "recipients", "extract" (sendmail
-t), "full_name", "time", "uid", "dsn_notify", "dsn_ret", "dsn_envid", "trace_flags"
(sendmail -bv: oxipost.envelope's TRACE_*), "body_type" (sendmail -B: "8BITMIME", "7BIT"
or ""), "verp_delims" (sendmail -XV's, or ""), "content"}. It is
written durably and atomically (oxipost.durable.write_atomically: temp file, fsync,
rename, fsync of the directory), then linked under a queue ID as Postfix's postdrop names
its files, so pickup sees a whole file or none, and mailq lists it under that ID (Postfix's
showq lists the maildrop queue) until pickup has queued it.

postsuper -r puts a queued message back here as Postfix's does, under its queue ID and
mail_owner's alone (`requeue`), with three more keys: "orig_id", "env" (its envelope as
queued, the recipients still to deliver) and "listed" (its showq record, which mailq shows
until pickup has given it a new queue ID).
"""

from __future__ import annotations

import email.utils
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from oxipost.config import Config
from oxipost.durable import write_atomically
from oxipost.envelope import envelope_to_dict
from oxipost.valid import queue_id_ok

if TYPE_CHECKING:
    from oxipost.qmgr.queue import QueueState

VERSION = 1
# A maildrop file whose owner may read, write and execute it is a whole message: Postfix's
# MAIL_QUEUE_STAT_READY, the mode postdrop finishes its files with and its queue files
# (which postsuper -r moves here) have. postsuper -d counts only these.
READY = 0o700
# The headers sendmail -t takes recipients from.
EXTRACT_HEADERS = ("to", "cc", "bcc")


class MaildropError(Exception):
    """A maildrop file that does not parse: pickup logs it and removes it."""


@dataclass(slots=True)
class Submission:
    sender: str
    recipients: list[str]
    content: bytes  # CRLF line ends
    extract: bool = False
    full_name: str = ""
    time: float = field(default_factory=time.time)
    uid: int = field(default_factory=os.getuid)
    dsn_notify: str = ""
    dsn_ret: str = ""
    dsn_envid: str = ""
    trace_flags: int = 0
    body_type: str = ""
    verp_delims: str = ""
    # postsuper -r's: the queue ID the message had, its envelope, its showq record.
    orig_id: str = ""
    env: dict[str, Any] | None = None
    listed: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return msgpack.packb(
            {
                "v": VERSION,
                "sender": self.sender,
                "recipients": list(self.recipients),
                "extract": self.extract,
                "full_name": self.full_name,
                "time": self.time,
                "uid": self.uid,
                "dsn_notify": self.dsn_notify,
                "dsn_ret": self.dsn_ret,
                "dsn_envid": self.dsn_envid,
                "trace_flags": self.trace_flags,
                "body_type": self.body_type,
                "verp_delims": self.verp_delims,
                "content": self.content,
                **(
                    {"orig_id": self.orig_id, "env": self.env, "listed": self.listed}
                    if self.orig_id
                    else {}
                ),
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, data: bytes) -> Submission:
        try:
            d = msgpack.unpackb(data, raw=False)
        except Exception as e:
            raise MaildropError(f"malformed maildrop file: {e}") from None
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise MaildropError("unexpected record type or version")
        try:
            return cls(
                sender=str(d["sender"]),
                recipients=[str(r) for r in d["recipients"]],
                content=bytes(d["content"]),
                extract=bool(d.get("extract", False)),
                full_name=str(d.get("full_name", "")),
                time=float(d.get("time", time.time())),
                uid=int(d.get("uid", -1)),
                dsn_notify=str(d.get("dsn_notify", "")),
                dsn_ret=str(d.get("dsn_ret", "")),
                dsn_envid=str(d.get("dsn_envid", "")),
                trace_flags=int(d.get("trace_flags", 0)),
                body_type=str(d.get("body_type", "")),
                verp_delims=str(d.get("verp_delims", "")),
                orig_id=str(d.get("orig_id", "")),
                env=d.get("env"),
                listed=d.get("listed"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MaildropError(f"malformed maildrop file: {e}") from None


def maildrop_dir(queue_directory: str) -> str:
    return os.path.join(queue_directory, "maildrop")


def drop(queue_directory: str, sub: Submission) -> str:
    """Write sub into maildrop/ durably; return its file name, a queue ID."""
    d = maildrop_dir(queue_directory)
    os.makedirs(d, exist_ok=True)
    # Readable by pickup, which runs as mail_owner whoever submitted, and READY: Postfix's
    # postdrop finishes its maildrop files 0744. Hidden (not a queue ID) until linked:
    # pickup, mailq and postsuper -d QID see only the whole file.
    hidden = os.path.join(d, f".{os.getpid()}.{os.urandom(6).hex()}")
    write_atomically(hidden, sub.encode(), mode=READY | 0o044)
    try:
        while True:
            sec, usec = divmod(time.time_ns() // 1000, 1_000_000)
            name = f"{sec & 0xFFFFF:05X}{usec:05X}"
            try:
                # Not rename: link refuses a name another submission took the same
                # microsecond (or a requeued message has), so none is replaced.
                os.link(hidden, os.path.join(d, name))
            except FileExistsError:
                continue
            return name
    finally:
        os.unlink(hidden)


def requeue(state: QueueState, qid: str) -> None:
    """postsuper -r (as the state writer): the message leaves the queue for maildrop/QID,
    from where pickup and cleanup queue it again under a new ID, rewritten again, as
    Postfix's postsuper moves the queue file there. Nobody wakes pickup: Postfix's
    postsuper does not, and its next scan (master.cf's wakeup) finds it."""
    # Not at the top: sendmail and postdrop import this module, and need neither.
    from oxipost.qmgr.queue import mail_owner
    from oxipost.qmgr.showq import record

    info = state.messages[qid]
    env, content = state.load(qid)
    env.recipients = [r for _, r in info.pending]
    env.canceled = []
    env.extracted = -1
    listed = record(info)
    listed["queue_name"] = "maildrop"
    owner = mail_owner(state.cfg)
    sub = Submission(
        sender=env.sender,
        recipients=[r.address for r in env.recipients],
        content=content,
        # Postfix's postsuper resets the file's time, which pickup's Received: header shows.
        time=time.time(),
        uid=owner[0] if owner else os.getuid(),
        orig_id=qid,
        env=envelope_to_dict(env),
        listed=listed,
    )
    d = maildrop_dir(state.cfg.path("queue_directory"))
    os.makedirs(d, exist_ok=True)
    # Not world-readable and mail_owner's: what pickup trusts as requeued, not submitted.
    # READY, as the queue file Postfix's postsuper moves here.
    write_atomically(os.path.join(d, qid), sub.encode(), mode=READY, owner=owner)
    state.remove(qid)


def header_recipients(content: bytes) -> list[str]:
    """sendmail -t's recipients, in header order and duplicates kept, as Postfix's
    sendmail writes them for cleanup: those of To:, Cc: and Bcc:, or of their Resent-
    forms alone when the message has any."""
    # Not at the top: sendmail and postdrop import this module, and need neither.
    from oxipost.cleanup.message import split_header

    fields: list[list[str]] = []
    for line in split_header(content)[0]:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text[:1] in (" ", "\t") and fields:
            fields[-1][1] += text
        else:
            name, _, value = text.partition(":")
            fields.append([name.strip().lower(), value])
    plain = [v for n, v in fields if n in EXTRACT_HEADERS]
    resent = [v for n, v in fields if n.startswith("resent-") and n[7:] in EXTRACT_HEADERS]
    return [addr for _, addr in email.utils.getaddresses(resent or plain) if addr]


def postdrop_size(sub: Submission, line_limit: int) -> int:
    """The bytes of the maildrop file Postfix 3.7's postdrop writes for sub, each record its
    type, its length and its data (rec_put()): its own arrival time, then what its sendmail
    sends (the DSN attributes, rewrite_context, the full name, the sender, the encoding, the
    trace flags, the VERP delimiters, each recipient with its notify_flags, the content
    records, the extracted recipients, the end). What postdrop's file size limit
    (message_size_limit) weighs."""
    # Not at the top: sendmail and postdrop need qmgr's record sizes, not its start-up.
    from oxipost.cleanup.records import ENCODING, NOTIFY_FLAGS, RET_FLAGS
    from oxipost.qmgr.queue import message_size, record_len

    notify = sum(NOTIFY_FLAGS.get(w, 0) for w in sub.dsn_notify.split(",") if w)
    per_rcpt = [f"notify_flags={notify}"] if notify else []
    records = [f"{int(sub.time)} {int(sub.time % 1 * 1_000_000)}"]
    if sub.dsn_envid:
        records.append(f"envelope_id={sub.dsn_envid}")
    if sub.dsn_ret in RET_FLAGS:
        records.append(f"ret_flags={RET_FLAGS[sub.dsn_ret]}")
    records.append("rewrite_context=local")
    if sub.full_name:
        records.append(sub.full_name)
    records.append(sub.sender)
    if sub.body_type in ENCODING:
        records.append(f"encoding={ENCODING[sub.body_type]}")
    if sub.trace_flags:
        records.append(f"trace_flags={sub.trace_flags}")
    if sub.verp_delims:
        records.append(sub.verp_delims)
    extracted = header_recipients(sub.content) if sub.extract else []
    for rcpt in [*sub.recipients, *extracted]:
        records += [*per_rcpt, rcpt]
    records += ["", "", ""]  # the M, X and E records
    size = 0
    for data in records:
        n = len(data.encode("utf-8", "surrogateescape"))
        size += n + record_len(n)
    return size + message_size(sub.content, line_limit)


def open_ok(d: str, name: str, warn: Callable[[str], object] | None = None) -> bool:
    """Whether maildrop/NAME is a whole message, as Postfix's mail_open_ok judges it: a
    regular file (lstat: not a symlink; anything else is warned of) and READY, as
    postdrop leaves it once it is done (one still being written, or left half-written
    by a postdrop that died, is 0600)."""
    try:
        st = os.lstat(os.path.join(d, name))
    except FileNotFoundError:
        return False
    except OSError as e:
        if warn is not None:
            warn(f"maildrop/{name}: {e.strerror}")
        return False
    if not stat.S_ISREG(st.st_mode):
        if warn is not None:
            warn(f"maildrop/{name}: uid {st.st_uid}: not a regular file")
        return False
    return st.st_mode & READY == READY


def maildrop_ids(cfg: Config, warn: Callable[[str], object] | None = None) -> list[str]:
    """The whole messages in maildrop/ (open_ok) named like a queue ID, in directory
    order: what pickup takes and mailq lists, as Postfix's; warn, if given, of what else
    by such a name is there (Postfix's pickup logs it at each scan)."""
    d = maildrop_dir(cfg.path("queue_directory"))
    try:
        names = os.listdir(d)
    except OSError:
        return []
    return [n for n in names if queue_id_ok(n) and open_ok(d, n, warn)]


def requeued(cfg: Config, st: os.stat_result, sub: Submission) -> bool:
    """Whether the maildrop file (its stat) is one postsuper -r wrote, not a local user's
    claiming to be: Postfix's MAIL_IS_REQUEUED, owned by mail_owner (this process's user
    when it is not root) and not readable by others (postdrop's files are 0744)."""
    from oxipost.qmgr.queue import mail_owner

    owner = mail_owner(cfg)
    uid = owner[0] if owner else os.geteuid()
    return bool(sub.orig_id) and st.st_uid == uid and not st.st_mode & 0o004


def wake_pickup(queue_directory: str) -> None:
    """Poke pickup through its public socket, as postdrop triggers public/pickup; a pickup
    that is not running finds the file at its next scan anyway."""
    path = os.path.join(queue_directory, "public", "pickup")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(path)
            s.sendall(b"W")
    except OSError:
        pass
