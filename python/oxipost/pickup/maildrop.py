"""The maildrop/ queue: one file per locally submitted message (sendmail → postdrop).

A maildrop file is one msgpack map: {"v": 1, "sender", "recipients", "extract" (sendmail
-t), "full_name", "time", "uid", "dsn_notify", "dsn_ret", "dsn_envid", "trace_flags"
(sendmail -bv: oxipost.envelope's TRACE_*), "body_type" (sendmail -B: "8BITMIME", "7BIT"
or ""), "content"}. It is
written durably and atomically (oxipost.durable.write_atomically: temp file, fsync,
rename, fsync of the directory) under a unique name, so pickup sees a whole file or none.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import msgpack

from oxipost.durable import write_atomically

VERSION = 1


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
                "content": self.content,
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
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MaildropError(f"malformed maildrop file: {e}") from None


_seq = 0


def maildrop_dir(queue_directory: str) -> str:
    return os.path.join(queue_directory, "maildrop")


def drop(queue_directory: str, sub: Submission) -> str:
    """Write sub into maildrop/ durably; return its file name."""
    global _seq
    _seq += 1
    d = maildrop_dir(queue_directory)
    os.makedirs(d, exist_ok=True)
    now = time.time_ns() // 1000
    name = f"{now:x}.{os.getpid()}.{_seq}.{socket.gethostname()}"
    # Readable by pickup, which runs as mail_owner whoever submitted (Postfix's postdrop
    # creates its maildrop files 0444 for the same reason).
    write_atomically(os.path.join(d, name), sub.encode(), mode=0o444)
    return name


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
