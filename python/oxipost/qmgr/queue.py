"""The queue: messages in group-committed segments, their states in a journal.

    queue_directory/
      segments/wNN-SEQ.seg   message records, appended by writer slot NN (smtpd, pickup, ...)
      journal/state-SEQ.seg  state records, appended by the one state writer (qmgr, or a CLI
                             while qmgr is not running), under journal/state.lock
      slots/NN.lock          one lock per live writer slot: queue IDs stay unique per spool
      maildrop/ pid/ public/ private/   as Postfix's

Postfix's queues are states here: incoming, active, deferred, hold, corrupt. A message is
`incoming` when its record is committed; the journal moves it on. Recovery replays segments
then journal; messages `active` at a crash go back to `incoming` (a delivery may repeat; none
is lost).

Damage is never dropped silently, by replay and by a refresh alike. A record that fails its
checks is logged, its bytes are copied to `corrupt/SEGMENT.OFFSET` (Postfix's corrupt queue:
kept for the administrator; a message whose record turns out damaged only when it is loaded
goes to the `corrupt` state) and its segment is kept while it holds live mail, then moved
whole to corrupt/, as Postfix moves a corrupt queue file there (left in segments/, it would
be reported and copied again at every start). That includes the damaged tail of a
segment whose writer is gone: the format cannot tell a torn write that was never
acknowledged from a committed record damaged since (the core's scan docs), so it is
reported, where it used to be dropped without a word. Damage in a segment a live writer
still appends to, at its tail or before records it has finished, is a commit in progress
seen by a read racing the write: nothing is reported, the read stops before it, and a later
refresh reads it whole (or reports it, once its writer is gone).

Records are msgpack maps inside the core's `[len][crc32c][payload]` frames:
    message  {"t": "m", "id", "env": {...}, "c": content}
    state    {"t": "s", "id", "q": queue}            (journal)
    done     {"t": "d", "id", "r": [recipient index]} (journal; crossed off)
    defer    {"t": "w", "id", "why", "next", "n": attempts, "o": [[index, status, text]]}
             (journal; "o", the pass's deferred recipients in order: Postfix's defer/QID
             logfile, which each pass writes anew)
    expire   {"t": "e", "id"}                         (journal; postsuper -e, -f)
    remove   {"t": "x", "id"}                         (journal; message finished)
    notice   {"t": "n", "id", "k": kind, "r": [[index, outcome, relay, transport]]}
             (journal; recipients crossed off whose notice could not be sent yet, Postfix's
             bounce/QID and trace/QID logfiles: the next pass sends the notice from it; an
             empty "r" says it was sent)
    drop log {"t": "c", "id", "k": "defer"|"bounce"|"trace"}  (journal; postsuper -d ALL
             defer|bounce|trace: the message's deferral reasons or its notice log of that
             kind are gone, as Postfix's logfiles there; the message stays)

A segment that cannot be read (EIO, not a regular file, no permission) is skipped, kept and
tried again by every refresh; the journal records of messages it may hold are kept until it
reads, so its mail comes back in the state it had.

A journal file that cannot be read, or a damaged journal record, loses the state changes it
held: the messages concerned come back as they were before them, and deliveries they record
may be made again (Postfix too redelivers rather than loses: a queue file whose recipients
were not yet marked done is delivered to them again). This is logged as a warning saying so.

Diagnostics: QueueWriteError (smtpd answers "451 4.3.0 Error: queue file write error"),
QueueBusy (a second state writer), and warnings, with queue_directory-relative names as
Postfix's:
    segments/SEG: corrupt record at offset N: WHY
    saving corrupt record at offset N of "segments/SEG" to "corrupt/SEG.N"
    saving corrupt file "SEG" from queue "segments" to queue "corrupt"
    journal/state-SEQ.seg: corrupt record at offset N: WHY; the deliveries it records may be
        made again
    PATH: STRERROR; skipping                  (an unreadable segment)
    PATH: STRERROR; skipping; the deliveries it records may be made again   (journal)
"""

from __future__ import annotations

import fcntl
import glob
import os
import pwd
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from oxipost import _core
from oxipost.config import Config
from oxipost.durable import write_atomically
from oxipost.envelope import (
    UNICODE_ERRORS,
    Envelope,
    Recipient,
    envelope_from_dict,
    envelope_to_dict,
    packb,
)
from oxipost.log import Logger

if TYPE_CHECKING:
    from oxipost import runloop

spool = _core.spool

# [u32 length][u32 crc32c] before each payload.
_FRAME_HEADER = len(spool.frame(b""))
QUEUES = ("incoming", "active", "deferred", "hold", "corrupt")
# Postfix's per-message logfile directories (postsuper takes them as queue names), each
# with the notice kinds whose log it holds; defer/ holds the deferral reasons.
LOGFILE_QUEUES: dict[str, tuple[str, ...]] = {
    "defer": (),
    "bounce": ("failure",),
    "trace": ("success",),
}


def in_queues(state: str, queues: list[str] | None) -> bool:
    """Whether a message in `state` is in one of the queues postsuper named (None: all)."""
    return queues is None or state in queues


SEGMENT_LIMIT = 64 << 20
# Segment name prefix of the records compact_forward copies (no writer slot uses it).
COMPACT_WRITER = "c"
MAX_SLOTS = 256
# In write-behind mode the journal commits at most this often: its records guard no
# acknowledgement, and at one fdatasync per record (what a qmgr delivering thousands of
# messages a second got) the disk flushes cost more CPU than the deliveries.
JOURNAL_LINGER = 0.01
# Messages read by a refresh are kept decoded, up to this many bytes of content, until they
# leave the active queue: new mail is usually activated and delivered within moments, and
# reading its record again for each of those steps cost a third of qmgr's time per message.
# The bound keeps qmgr's memory independent of the queue's size (catalogue 15).
CONTENT_CACHE_LIMIT = 32 << 20
_SEG = re.compile(r"^(?P<writer>[a-z0-9]+)-(?P<seq>\d{8})\.seg$")


class QueueError(Exception):
    """A queue operation failed."""


class QueueWriteError(QueueError):
    """A message could not be made durable; nothing of it is kept."""


class QueueBusy(QueueError):
    """Another process is the state writer (qmgr is running, or another tool)."""


class Deferral(NamedTuple):
    """One recipient's last deferral, as Postfix's defer logfile keeps it."""

    status: str
    text: str
    # The agent's Diagnostic-Code ("" for bounce's own).
    diagnostic: str = ""
    # The members of an alias or .forward that were deferred, each (address, original,
    # status, text, diagnostic): the logfile names them, not the recipient.
    members: tuple[tuple[str, str, str, str, str], ...] = ()


@dataclass
class MessageInfo:
    """What the queue knows of one message without reading its content."""

    queue_id: str
    segment: str  # file name under segments/
    offset: int
    size: int  # the content's length
    # Postfix's message_size (see message_size()), what qmgr logs as size= and showq
    # lists: found as replay reads the record, so neither reads the content again.
    message_size: int
    arrival_time: float
    sender: str
    recipients: list[Recipient]
    state: str = "incoming"
    # cleanup's HOLD (header_checks, smtpd's access(5) HOLD): Postfix's cleanup writes such
    # mail straight into the hold queue, so it is held from its record on, whether or not
    # a qmgr has seen it (mailq lists it with "!" at once).
    arrived_held: bool = False
    done: set[int] = field(default_factory=set)
    reason: str = ""  # the last deferral reason
    next_attempt: float = 0.0
    attempts: int = 0
    # Per notice kind ("failure", "success"), the recipients crossed off while their notice
    # is still to be sent, as NoticeLog records them; None for nearly every message.
    notices: dict[str, list[list[object]]] | None = None
    # The last pass's deferred recipients, in the order it deferred them, as Postfix's
    # defer logfile has them: mailq lists them so, each with its reason, and a
    # force-expired message's notice reports them; None until one is deferred.
    deferrals: dict[int, Deferral] | None = None
    # postsuper -e/-f: returned to the sender at its next delivery pass (mailq's '#').
    expired: bool = False

    @property
    def pending(self) -> list[tuple[int, Recipient]]:
        """Recipients not yet crossed off, with their indices."""
        return [(i, r) for i, r in enumerate(self.recipients) if i not in self.done]


# Lines of this many bytes or more need a second length byte in a queue file record.
_LONG_LINE = 128


def record_len(n: int) -> int:
    """Bytes of one queue file record of n bytes: its type, its length in 7-bit groups
    (Postfix's rec_put()), its data."""
    size = 2
    while n >= 128:
        n >>= 7
        size += 1
    return size


def message_size(content: bytes, line_limit: int) -> int:
    """Postfix's message_size, the bytes of the content records in its queue file: what
    qmgr logs as size= and showq lists (the SIZE record both read). Each line is a record
    of its own (its type and length where the CR LF was), a line longer than
    line_length_limit one record per piece of that length and one for the rest
    (smtp_get()); so a line of 128 bytes or more counts more than it takes with its
    CR LF."""
    size = len(content)
    lines = content.split(b"\n")
    # A scan of the lengths in C first: almost every message has no long line, and a regex
    # over the content cost more than the rest of the message's activation.
    if max(map(len, lines)) < _LONG_LINE:
        return size
    for line in lines:
        if len(line) < _LONG_LINE:
            continue
        # The line ends at its first CR too (a bare CR in it ends a record).
        cr = line.find(b"\r")
        n = len(line) if cr < 0 else cr
        if n < _LONG_LINE:
            continue
        pieces = [line_limit] * (n // line_limit) + [n % line_limit] if line_limit > 0 else [n]
        size += sum(p + record_len(p) for p in pieces) - (n + 2)
    return size


def _pack(obj: dict[str, object]) -> bytes:
    return packb(obj)


# The directories in queue_directory: the queues mail_owner's alone, as Postfix's
# active/incoming/deferred/corrupt... (postfix-files: mail_owner 0700).
PRIVATE_QUEUE_DIRS = ("segments", "journal", "slots", "corrupt", "private")
QUEUE_DIRS = (*PRIVATE_QUEUE_DIRS, "maildrop", "pid", "public")


def queue_dirs(cfg: Config) -> str:
    """Create the queue's directories; return queue_directory (absolute). postfix check
    makes them all, as root, since queue_directory is root's."""
    top = cfg.path("queue_directory")
    for sub in QUEUE_DIRS:
        os.makedirs(os.path.join(top, sub), exist_ok=True)
    return top


class QueueIdSource:
    """Postfix-looking queue IDs: 5 hex digits of seconds, 5 of microseconds, 2 of the writer
    slot; unique per spool because slots are locked and a slot's IDs strictly increase."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.last = 0

    def next(self) -> str:
        now = time.time_ns() // 1000
        now = max(now, self.last + 1)
        self.last = now
        sec, usec = divmod(now, 1_000_000)
        return f"{sec & 0xFFFFF:05X}{usec:05X}{self.slot:02X}"


def mail_owner(cfg: Config) -> tuple[int, int] | None:
    """mail_owner's (uid, gid) when this process is root and the user exists: what root
    creates in the queue must stay usable by the services that run as mail_owner."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(cfg.get("mail_owner"))
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _give_to_mail_owner(cfg: Config, fd: int) -> None:
    owner = mail_owner(cfg)
    if owner is not None:
        os.fchown(fd, *owner)


class Queue:
    """One process's handle on the queue: a writer slot for new messages, and (if asked)
    the state writer role."""

    def __init__(self, cfg: Config, writer: str, top: str, slot: int, lock_fd: int) -> None:
        self.cfg = cfg
        self.writer_name = writer
        self.top = top
        self.slot = slot
        self._slot_fd = lock_fd
        self._ids = QueueIdSource(slot)
        self._writer: spool.Writer | None = None
        self._completions: runloop.Completions | None = None

    # Opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, cfg: Config, writer: str = "smtpd") -> Queue:
        """Take a free writer slot in cfg's queue (creating directories as needed)."""
        top = queue_dirs(cfg)
        for slot in range(MAX_SLOTS):
            try:
                fd = os.open(
                    os.path.join(top, "slots", f"{slot:02x}.lock"),
                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                    0o600,
                )
            except PermissionError:
                continue  # another user's slot (a root process next to mail_owner ones)
            if os.geteuid() == 0:
                # Root's processes share the spool with mail_owner's (smtpd, pickup): a
                # slot root created must stay usable by them.
                _give_to_mail_owner(cfg, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {writer}\n".encode())
            return cls(cfg, writer, top, slot, fd)
        raise QueueError(f"no free writer slot in {top}/slots")

    @property
    def _segment_prefix(self) -> str:
        return f"w{self.slot:02x}"

    def _open_writer(self) -> spool.Writer:
        if self._writer is None:
            self._writer = spool.Writer(
                os.path.join(self.top, "segments"),
                self._segment_prefix,
                _newest_seqs(self.top).get(self._segment_prefix, 0) + 1,
                SEGMENT_LIMIT,
                mail_owner(self.cfg),
            )
            # Not at the top: runloop brings in asyncio, which sendmail, weighing a
            # submission with this module's record sizes, need not pay for.
            from oxipost import runloop

            self._completions = runloop.Completions(self._writer.fileno(), self._writer.poll)
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            if self._completions is not None:
                self._completions.close()
            self._writer.close()
            self._writer = None
        if self._slot_fd >= 0:
            os.close(self._slot_fd)
            self._slot_fd = -1

    # Enqueueing ---------------------------------------------------------------------------

    def new_id(self) -> str:
        """A queue ID, taken before the message is queued: where Postfix's smtpd and pickup
        open the queue file (the ID is in the Received: header, the Message-Id: cleanup
        adds and every log line of the transaction)."""
        return self._ids.next()

    def _record(self, envelope: Envelope, content: bytes, qid: str) -> tuple[str, bytes]:
        qid = qid or self._ids.next()
        payload = _pack({"t": "m", "id": qid, "env": envelope_to_dict(envelope), "c": content})
        return qid, payload

    async def enqueue(self, envelope: Envelope, content: bytes, qid: str = "") -> str:
        """Append one message, under `qid` (from new_id) or a new ID; resolve with its queue
        ID once it is on stable storage."""
        writer = self._open_writer()
        assert self._completions is not None
        qid, payload = self._record(envelope, content, qid)
        try:
            ticket = writer.submit(payload)
        except Exception as e:
            raise QueueWriteError(str(e)) from e
        _seq, _offset, err = await self._completions.wait_for(ticket)
        if err is not None:
            raise QueueWriteError(f"{err[1]}")
        return qid

    def enqueue_sync(self, envelope: Envelope, content: bytes, qid: str = "") -> str:
        """enqueue for code without an event loop (pickup, tools): blocks until durable."""
        writer = self._open_writer()
        qid, payload = self._record(envelope, content, qid)
        ticket = writer.submit(payload)
        for t, _seq, _off, err in writer.wait(ticket):
            if t == ticket and err is not None:
                raise QueueWriteError(f"{os.strerror(err[0])}: {err[1]}")
        return qid

    def free_space_ok(self, size: int = 0) -> bool:
        """False when accepting `size` more bytes would leave less than Postfix keeps free:
        queue_minfree, and at least 1.5 × message_size_limit."""
        st = os.statvfs(self.top)
        free = st.f_bavail * st.f_frsize
        need = max(
            self.cfg.get_int("queue_minfree"), int(1.5 * self.cfg.get_int("message_size_limit"))
        )
        return free - size >= need


def _strerror(e: OSError) -> str:
    return e.strerror or str(e)


def _segments(top: str) -> Iterator[re.Match[str]]:
    for name in sorted(os.listdir(os.path.join(top, "segments"))):
        m = _SEG.match(name)
        if m:
            yield m


class _Appended:
    """The segments live writers still append to, looked up once per pass and only when a
    scan meets damage (a look opens every slot's lock). Only the state writer asks: a
    read-only user (mailq) judges no damage (see _scan_segment)."""

    def __init__(self, state: QueueState) -> None:
        self._state = state
        self._names: set[str] | None = None

    def names(self) -> set[str]:
        if self._names is None:
            state = self._state
            self._names = state._still_appended(_newest_seqs(state.top))
        return self._names


def _newest_seqs(top: str) -> dict[str, int]:
    """Per writer, the sequence number of its newest segment."""
    newest: dict[str, int] = {}
    for m in _segments(top):
        newest[m.group("writer")] = max(newest.get(m.group("writer"), 0), int(m.group("seq")))
    return newest


def _apply_notice(info: MessageInfo, kind: str, logged: list[list[object]]) -> None:
    if logged:
        if info.notices is None:
            info.notices = {}
        info.notices.setdefault(kind, []).extend(logged)
    elif info.notices is not None:
        info.notices.pop(kind, None)
        if not info.notices:
            info.notices = None


def _apply_deferrals(info: MessageInfo, deferred: list[list[Any]]) -> None:
    # A pass's defer log replaces the one before (Postfix's qmgr removes it as it starts
    # the message); a record without one (written before it was kept) leaves it, and a
    # recipient without a Diagnostic-Code (likewise older) gets bounce's own.
    if deferred:
        info.deferrals = {}
        for idx, status, text, *rest in deferred:
            diagnostic = rest[0] if rest else ""
            members = tuple(tuple(m) for m in rest[1]) if len(rest) > 1 else ()
            info.deferrals[idx] = Deferral(status, text, diagnostic, members)


def _drop_log(info: MessageInfo, log: str) -> None:
    if log == "defer":
        info.reason, info.deferrals = "", None
    for kind in LOGFILE_QUEUES.get(log, ()):
        _apply_notice(info, kind, [])


class QueueState:
    """The queue as recovered by replay: every live message and its state.

    Read-only users (mailq, postcat) build one without any lock. The state writer (qmgr, or
    a CLI while qmgr is not running) opens it with `lock=True` and then may change states.
    """

    def __init__(self, cfg: Config, lock: bool = False, log: Logger | None = None) -> None:
        self.cfg = cfg
        self.top = queue_dirs(cfg)
        self._line_limit = cfg.get_int("line_length_limit")
        # Where a refresh reports what it skips; without one it goes to `problems`.
        self.log = log
        self.messages: dict[str, MessageInfo] = {}
        self.problems: list[str] = []
        # Segments holding a damaged record, with the offsets of those reported: moved to
        # corrupt/ instead of reclaimed; each record is reported once, though a refresh reads
        # again from the last good record.
        self.corrupt_segments: dict[str, set[int]] = {}
        # Segments the last attempt could not read, with the error reported: never reclaimed,
        # tried again by each refresh, reported again only when the error changes.
        self.unreadable: dict[str, str] = {}
        # While a segment is unreadable, the journal records of queue IDs no segment read so
        # far holds: the message may be in it, and without them it would come back as new
        # (delivered again, or its delivered recipients tried again) when it reads.
        self._orphans: dict[str, list[bytes]] = {}
        # Journal files replay could not read: not deleted by the compaction.
        self._unread_journals: set[str] = set()
        # Per segment, where the records not read yet start: a refresh reads only what
        # follows (and a message removed since must not come back as new).
        self._read_to: dict[str, int] = {}
        # Every queue ID replay found in a segment, live or finished: a compacted journal
        # must keep the tombstones of finished ones while their segments exist.
        self._stored: set[str] = set()
        self._cached: dict[str, tuple[Envelope, bytes]] = {}
        self._cached_bytes = 0
        self._lock_fd = -1
        self._journal: spool.Writer | None = None
        # The state writer's records, as _pack() makes them: msgpack.packb() builds a
        # Packer per call, which cost more than the packing (qmgr writes three a message).
        self._packer = msgpack.Packer(use_bin_type=True)
        self._behind = False
        if lock:
            self._take_lock()
        self._replay()
        if lock:
            self._compact_journal()

    # The state writer's lock ---------------------------------------------------------------

    def _take_lock(self) -> None:
        fd = os.open(
            os.path.join(self.top, "journal", "state.lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise QueueBusy(
                "the queue is being managed by another process (is qmgr running?)"
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # Recovery -----------------------------------------------------------------------------

    def _replay(self) -> None:
        seg_dir = os.path.join(self.top, "segments")
        appended = _Appended(self)
        for m in _segments(self.top):
            path = os.path.join(seg_dir, m.group(0))
            try:
                records = self._scan_segment(m.group(0), path, appended, self.problems.append)
            except OSError as e:
                self._skip_unreadable(m.group(0), path, e, self.problems.append)
                continue
            for offset, payload in records:
                self._apply_message(m.group(0), offset, payload, path, self.problems.append)
            self._mark_read(m.group(0), records)
        for path in self._journal_files():
            # The journal is written behind (write_behind): a state change lost with it costs
            # a repeated delivery, never a lost message, so redelivery is the outcome here.
            again = "the deliveries it records may be made again"
            try:
                records, tail, corrupt = spool.scan(path)
            except OSError as e:
                self.problems.append(f"{path}: {_strerror(e)}; skipping; {again}")
                self._unread_journals.add(path)
                continue
            # Its writer (a previous state writer: this process holds the lock) is gone, so
            # a damaged tail is final, as in a segment.
            for offset, length, why in [*corrupt, *([tail] if tail else [])]:
                rel = f"journal/{os.path.basename(path)}"
                self.problems.append(f"{rel}: corrupt record at offset {offset}: {why}; {again}")
                if self._lock_fd >= 0:
                    self.problems.append(self._save_damage(rel, path, offset, length))
            for _offset, payload in records:
                self._apply_journal(payload)
        for info in self.messages.values():
            if info.state == "active":
                # Active at a crash: schedule again (a delivery may repeat; none is lost).
                info.state = "incoming"

    def _scan_segment(
        self, name: str, path: str, appended: _Appended, report: Callable[[str], object]
    ) -> list[tuple[int, bytes]]:
        """The good records of a segment from where the last read stopped, its damage
        reported (OSError when it cannot be read)."""
        records, tail, corrupt = spool.scan(path, self._read_to.get(name, 0))
        damage = [*corrupt, *([tail] if tail else [])]
        if not damage or self._lock_fd < 0:
            return records  # a read-only user reports nothing and takes every good record
        first = damage[0][0]
        if name in appended.names():
            # A live writer's commit in progress: a read racing its write can see zeros where
            # the write has not yet reached and, in a later chunk, records it has finished.
            # Damage there is judged once the writer is gone; till then the read stops
            # before it and starts there next time.
            return [r for r in records if r[0] < first]
        reported = self.corrupt_segments.get(name, set())
        if any(offset not in reported for offset, _, _ in damage):
            # Its writer is gone, so nothing more is written; but a commit may have been
            # completed between the scan and the look at the writers: read it again.
            more, tail, corrupt = spool.scan(path, first)
            records = [r for r in records if r[0] < first] + more
            damage = [*corrupt, *([tail] if tail else [])]
        for offset, length, why in damage:
            self._damaged(name, path, offset, length, why, report)
        return records

    def _damaged(
        self,
        segment: str,
        path: str,
        offset: int,
        length: int,
        why: str,
        report: Callable[[str], object],
    ) -> None:
        """A damaged record: reported once, its bytes copied to the corrupt directory and its
        segment kept (Postfix moves a damaged queue file to the corrupt queue; a record whose
        queue ID cannot be trusted has no message to move)."""
        seen = self.corrupt_segments.setdefault(segment, set())
        if offset not in seen:
            seen.add(offset)
            rel = f"segments/{segment}"
            report(f"{rel}: corrupt record at offset {offset}: {why}")
            if self._lock_fd >= 0:
                report(self._save_damage(rel, path, offset, length))

    def _save_damage(self, rel: str, path: str, offset: int, length: int) -> str:
        """Copy damaged bytes to corrupt/ (durably: the segment may be reclaimed by a later
        version, or removed by hand); the line to log."""
        saved = f"corrupt/{os.path.basename(rel)}.{offset}"
        target = os.path.join(self.top, saved)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            write_atomically(target, data, 0o600)
        except OSError as e:
            return f'cannot save corrupt record at offset {offset} of "{rel}": {_strerror(e)}'
        return f'saving corrupt record at offset {offset} of "{rel}" to "{saved}"'

    def _apply_message(
        self,
        segment: str,
        offset: int,
        payload: bytes,
        path: str,
        report: Callable[[str], object],
        keep: bool = False,
    ) -> str | None:
        """Record a message found in a segment; its queue ID, or None when the record is
        damaged."""
        try:
            rec = msgpack.unpackb(payload, raw=False, unicode_errors=UNICODE_ERRORS)
            qid = rec["id"]
            env = envelope_from_dict(rec["env"])
            size = len(rec["c"])
            msg_size = message_size(rec["c"], self._line_limit)
        except Exception as e:
            length = _FRAME_HEADER + len(payload)
            self._damaged(segment, path, offset, length, type(e).__name__, report)
            return None
        held = bool(env.attrs.get("hold"))
        self.messages[qid] = MessageInfo(
            qid,
            segment,
            offset,
            size,
            msg_size,
            env.arrival_time,
            env.sender,
            env.recipients,
            state="hold" if held else "incoming",
            arrived_held=held,
        )
        self._stored.add(qid)
        if keep and self._cached_bytes + size <= CONTENT_CACHE_LIMIT:
            self._cached[qid] = (env, rec["c"])
            self._cached_bytes += size
        return qid

    def _uncache(self, qid: str) -> None:
        cached = self._cached.pop(qid, None)
        if cached is not None:
            self._cached_bytes -= len(cached[1])

    def _apply_journal(self, payload: bytes) -> None:
        try:
            rec = msgpack.unpackb(payload, raw=False, unicode_errors=UNICODE_ERRORS)
            kind, qid = rec["t"], rec["id"]
        except Exception:
            self.problems.append("journal: undecodable state record")
            return
        info = self.messages.get(qid)
        if info is None and self.unreadable:
            self._orphans.setdefault(qid, []).append(payload)
        if kind == "x":
            self.messages.pop(qid, None)
        elif info is None:
            return
        elif kind == "s":
            info.state = rec["q"]
        elif kind == "d":
            info.done.update(rec["r"])
        elif kind == "n":
            _apply_notice(info, rec["k"], rec["r"])
        elif kind == "w":
            info.state = "deferred"
            info.reason = rec.get("why", "")
            info.next_attempt = rec.get("next", 0.0)
            info.attempts = rec.get("n", info.attempts + 1)
            _apply_deferrals(info, rec.get("o", []))
        elif kind == "e":
            info.expired = True
        elif kind == "c":
            _drop_log(info, rec["k"])

    def _journal_files(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.top, "journal", "state-*.seg")))

    def _compact_journal(self) -> None:
        """Start a fresh journal holding only what live messages need; drop the old files
        and the segments no live message uses."""
        old = self._journal_files()
        seqs = [int(os.path.basename(p)[6:14]) for p in old]
        # mail_owner's, as the segments: postsuper as root is the state writer while qmgr is
        # down (a stop, a reload), and the qmgr after it must read what it wrote.
        self._journal = spool.Writer(
            os.path.join(self.top, "journal"),
            "state",
            max(seqs, default=0) + 1,
            SEGMENT_LIMIT,
            mail_owner(self.cfg),
        )
        last = 0
        # Finished messages whose records are still in a segment (it holds live mail too, or
        # the reclaim below has not run yet): without their tombstones the next replay
        # would bring them back and they would be delivered again.
        for qid in sorted(self._stored - self.messages.keys()):
            last = self._journal.submit(_pack({"t": "x", "id": qid}))
        for payloads in self._orphans.values():
            for payload in payloads:
                last = self._journal.submit(payload)
        for info in self.messages.values():
            if info.state != "incoming" or info.arrived_held:
                last = self._journal.submit(_pack({"t": "s", "id": info.queue_id, "q": info.state}))
            if info.done:
                last = self._journal.submit(
                    _pack({"t": "d", "id": info.queue_id, "r": sorted(info.done)})
                )
            if info.reason or info.attempts:
                # (attempts without a reason: postsuper -d ALL defer took it; the retry
                # time stays, as the queue file's time does in Postfix)
                last = self._journal.submit(
                    _pack(
                        {
                            "t": "w",
                            "id": info.queue_id,
                            "why": info.reason,
                            "next": info.next_attempt,
                            "n": info.attempts,
                            "o": [[i, *d] for i, d in (info.deferrals or {}).items()],
                        }
                    )
                )
                if info.state != "deferred":
                    last = self._journal.submit(
                        _pack({"t": "s", "id": info.queue_id, "q": info.state})
                    )
            for kind, logged in (info.notices or {}).items():
                last = self._journal.submit(
                    _pack({"t": "n", "id": info.queue_id, "k": kind, "r": logged})
                )
            if info.expired:
                last = self._journal.submit(_pack({"t": "e", "id": info.queue_id}))
        if last:
            self._check(self._journal.wait(last), last)
        for path in old:
            if path not in self._unread_journals:
                os.unlink(path)
        self.reclaim()

    def reclaim(self) -> list[str]:
        """Delete segments no live message is in, except ones a live writer still appends;
        one with damage goes to corrupt/ instead."""
        used = {info.segment for info in self.messages.values()}
        appended = self._still_appended(_newest_seqs(self.top))
        removed = []
        for m in _segments(self.top):
            name = m.group(0)
            if name in used or name in appended or name in self.unreadable:
                continue
            if name in self.corrupt_segments:
                self._retire_corrupt(name)
                continue
            os.unlink(os.path.join(self.top, "segments", name))
            removed.append(name)
        return removed

    def _retire_corrupt(self, name: str) -> None:
        """Move a damaged segment with no live mail left to corrupt/, whole, with Postfix's
        line for a queue file saved there (qmgr_active_corrupt)."""
        report = self.log.warning if self.log is not None else self.problems.append
        target = os.path.join(self.top, "corrupt", name)
        try:
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            os.rename(os.path.join(self.top, "segments", name), target)
        except OSError as e:
            report(f"save corrupt file queue segments id {name}: {_strerror(e)}")
            return
        del self.corrupt_segments[name]
        self._read_to.pop(name, None)
        report(f'saving corrupt file "{name}" from queue "segments" to queue "corrupt"')

    def compact_forward(self, min_age: float, max_live_fraction: float = 0.5) -> int:
        """Copy the few live messages of old, mostly finished segments into a fresh segment
        and reclaim the old ones, so a long-deferred message does not pin a whole segment
        on disk. Copies are durable before an old segment goes; a crash in between leaves
        two identical records under one queue ID, which replay reads as one message.
        Returns how many messages were moved (state writer only)."""
        if self._journal is None:
            raise QueueBusy("not the state writer: open the queue state with lock=True")
        seg_dir = os.path.join(self.top, "segments")
        newest = _newest_seqs(self.top)
        appended = self._still_appended(newest)
        by_segment: dict[str, list[MessageInfo]] = {}
        for info in self.messages.values():
            by_segment.setdefault(info.segment, []).append(info)
        now = time.time()
        victims: list[MessageInfo] = []
        for m in _segments(self.top):
            name = m.group(0)
            if name in self.corrupt_segments or name in self.unreadable:
                continue
            if name in appended or name not in by_segment:
                continue
            # An agent may be reading an active message where it is now.
            if any(i.state == "active" for i in by_segment[name]):
                continue
            try:
                st = os.stat(os.path.join(seg_dir, name))
            except FileNotFoundError:
                continue
            live = sum(i.size for i in by_segment[name])
            if now - st.st_mtime >= min_age and live <= max_live_fraction * st.st_size:
                victims.extend(by_segment[name])
        if not victims:
            return 0
        writer = spool.Writer(
            seg_dir,
            COMPACT_WRITER,
            newest.get(COMPACT_WRITER, 0) + 1,
            SEGMENT_LIMIT,
            mail_owner(self.cfg),
        )
        try:
            tickets: dict[int, tuple[MessageInfo, int]] = {}
            for info in victims:
                try:
                    payload = spool.read_record(os.path.join(seg_dir, info.segment), info.offset)
                except _core.CorruptError:
                    # Left where it is (its segment with it): activating it sends it to
                    # the corrupt queue with Postfix's warning.
                    continue
                tickets[writer.submit(payload)] = (info, len(payload))
            if not tickets:
                return 0
            placed: dict[int, tuple[int, int]] = {}
            last = max(tickets)
            while last not in placed:
                for ticket, seq, offset, err in writer.wait(last):
                    if err is not None:
                        raise QueueWriteError(f"compaction: {err[1]}")
                    placed[ticket] = (seq, offset)
        finally:
            writer.close()
        for ticket, (info, length) in tickets.items():
            seq, offset = placed[ticket]
            info.segment, info.offset = f"{COMPACT_WRITER}-{seq:08d}.seg", offset
            # This process wrote these records: a refresh must not read them as new mail.
            end = offset + _FRAME_HEADER + length
            self._read_to[info.segment] = max(self._read_to.get(info.segment, 0), end)
        self.reclaim()
        return len(tickets)

    def _still_appended(self, newest: dict[str, int]) -> set[str]:
        """The segment each live writer appends to: neither reclaimed nor compacted."""
        live = self._live_slots()
        return {f"{w}-{seq:08d}.seg" for w, seq in newest.items() if w in live}

    def _live_slots(self) -> set[str]:
        live = set()
        for path in glob.glob(os.path.join(self.top, "slots", "*.lock")):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                live.add("w" + os.path.basename(path)[:-5])
            finally:
                os.close(fd)
        return live

    # Reading ------------------------------------------------------------------------------

    def refresh(self) -> list[str]:
        """Pick up messages committed since the last replay (state writer only); returns
        their queue IDs in the order they were found."""
        seg_dir = os.path.join(self.top, "segments")
        found = []
        names = [m.group(0) for m in _segments(self.top)]
        for gone in self.unreadable.keys() - set(names):
            del self.unreadable[gone]
        report = self.log.warning if self.log is not None else self.problems.append
        appended = _Appended(self)
        for name in names:
            path = os.path.join(seg_dir, name)
            try:
                records = self._scan_segment(name, path, appended, report)
            except OSError as e:
                # The other segments' mail goes on; this one is tried again next pass.
                self._skip_unreadable(name, path, e, report)
                continue
            self.unreadable.pop(name, None)
            for offset, payload in records:
                qid = self._apply_message(name, offset, payload, path, report, keep=True)
                if qid is not None and self._orphans:
                    qid = self._apply_orphans(qid)
                if qid is not None:
                    found.append(qid)
            self._mark_read(name, records)
        if not self.unreadable:
            # Every segment has been read: what is left belongs to mail long finished.
            self._orphans.clear()
        return found

    def _skip_unreadable(
        self, name: str, path: str, e: OSError, report: Callable[[str], object]
    ) -> None:
        why = _strerror(e)
        if self.unreadable.get(name) != why:
            report(f"{path}: {why}; skipping")
        self.unreadable[name] = why

    def _apply_orphans(self, qid: str) -> str | None:
        """Give a message read from a segment that was unreadable the state the journal
        had for it; its queue ID, or None when the journal had finished it."""
        for payload in self._orphans.pop(qid, ()):
            self._apply_journal(payload)
        info = self.messages.get(qid)
        if info is None:
            return None
        if info.state == "active":
            # As replay does: active when the previous qmgr stopped.
            info.state = "incoming"
        if info.state != "incoming":
            self._uncache(qid)
        return qid

    def _mark_read(self, segment: str, records: list[tuple[int, bytes]]) -> None:
        if records:
            offset, payload = records[-1]
            self._read_to[segment] = offset + _FRAME_HEADER + len(payload)

    def load(self, qid: str) -> tuple[Envelope, bytes]:
        """The envelope and content of a queued message (CorruptError if damaged)."""
        cached = self._cached.get(qid)
        if cached is not None:
            return cached
        info = self.messages.get(qid)
        if info is None:
            raise KeyError(qid)
        payload = spool.read_record(os.path.join(self.top, "segments", info.segment), info.offset)
        rec = msgpack.unpackb(payload, raw=False, unicode_errors=UNICODE_ERRORS)
        return envelope_from_dict(rec["env"]), rec["c"]

    def in_queue(self, queue: str) -> list[MessageInfo]:
        return [i for i in self.messages.values() if i.state == queue]

    # State changes (state writer only) ----------------------------------------------------

    def _check(
        self, completions: list[tuple[int, int, int, tuple[int, str] | None]], ticket: int
    ) -> None:
        for t, _seq, _off, err in completions:
            if t == ticket and err is not None:
                raise QueueWriteError(f"journal: {err[1]}")

    def _write(self, records: list[dict[str, object]]) -> None:
        if self._journal is None:
            raise QueueBusy("not the state writer: open the queue state with lock=True")
        last = 0
        pack = self._packer.pack
        for rec in records:
            last = self._journal.submit(pack(rec))
        if last and not self._behind:
            self._check(self._journal.wait(last), last)

    def write_behind(self) -> int:
        """From now on a state change returns once submitted; the committer thread makes
        the records durable in order, many per fdatasync. Returns the descriptor that is
        readable when results wait in `journal_errors()`.

        For qmgr: none of its records guards an acknowledgement (mail is acknowledged when
        its message record is committed), and one lost in a crash costs at most a repeated
        delivery, as Postfix's unsynced rename/unlink of queue files do; waiting for each
        would stall every delivery behind a disk flush."""
        if self._journal is None:
            raise QueueBusy("not the state writer: open the queue state with lock=True")
        self._behind = True
        self._journal.set_linger(JOURNAL_LINGER)
        return self._journal.fileno()

    def journal_errors(self) -> list[str]:
        """The errors of records committed since the last call (write_behind mode)."""
        if self._journal is None:
            return []
        return [f"journal: {err[1]}" for _t, _s, _o, err in self._journal.poll() if err]

    def move(self, qid: str, queue: str) -> None:
        if queue not in QUEUES:
            raise ValueError(queue)
        self._write([{"t": "s", "id": qid, "q": queue}])
        self.messages[qid].state = queue
        if queue != "active":
            self._uncache(qid)

    def cross_off(self, qid: str, indices: list[int]) -> None:
        """Recipients delivered or bounced: never tried again."""
        self._write([{"t": "d", "id": qid, "r": sorted(indices)}])
        self.messages[qid].done.update(indices)

    def defer(
        self,
        qid: str,
        reason: str,
        next_attempt: float,
        deferred: Sequence[tuple[int, Deferral]] = (),
    ) -> None:
        """The message waits in the deferred queue: `reason` for mailq, `deferred` each
        recipient the pass deferred, for the notice should it expire."""
        info = self.messages[qid]
        info.attempts += 1
        logged = [[i, *d] for i, d in deferred]
        self._write(
            [
                {
                    "t": "w",
                    "id": qid,
                    "why": reason,
                    "next": next_attempt,
                    "n": info.attempts,
                    "o": logged,
                }
            ]
        )
        info.state, info.reason, info.next_attempt = "deferred", reason, next_attempt
        _apply_deferrals(info, logged)
        self._uncache(qid)

    def expire(self, qid: str) -> None:
        """postsuper -e: returned to its sender at the next pass, not delivered."""
        self._write([{"t": "e", "id": qid}])
        self.messages[qid].expired = True

    def log_notice(
        self, qid: str, kind: str, indices: list[int], logged: list[list[object]]
    ) -> None:
        """Recipients whose notice could not be sent: kept in the message's notice log of
        this kind ([index, outcome_to_list(), relay, transport] each) and crossed off in the
        same write, as Postfix's bounce(8) logfile holds them once the queue file has them
        done; the next pass sends the notice from the log, delivering to none again."""
        self._write(
            [
                {"t": "n", "id": qid, "k": kind, "r": logged},
                {"t": "d", "id": qid, "r": sorted(indices)},
            ]
        )
        info = self.messages[qid]
        _apply_notice(info, kind, logged)
        info.done.update(indices)

    def notice_sent(self, qid: str, kind: str) -> None:
        """The notice of this kind went out: its log is gone (Postfix's bounce(8) removes
        the logfile once the notice is queued)."""
        self._write([{"t": "n", "id": qid, "k": kind, "r": []}])
        _apply_notice(self.messages[qid], kind, [])

    def drop_log(self, qid: str, log: str) -> bool:
        """postsuper -d ALL with a logfile queue (LOGFILE_QUEUES): the message's log there
        is gone and the message stays; whether it had one."""
        info = self.messages[qid]
        had = bool(info.reason or info.deferrals) if log == "defer" else False
        had = had or any(k in (info.notices or {}) for k in LOGFILE_QUEUES[log])
        if had:
            self._write([{"t": "c", "id": qid, "k": log}])
            _drop_log(info, log)
        return had

    def remove(self, qid: str) -> None:
        """The message is finished (all recipients done, or postsuper -d)."""
        self._write([{"t": "x", "id": qid}])
        self.messages.pop(qid, None)
        self._uncache(qid)
