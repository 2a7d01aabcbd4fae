"""pickup(8): move locally submitted mail from maildrop/ into the queue.

Each maildrop file (written by sendmail/postdrop) becomes a queued message: sendmail -t
recipients are taken from To:, Cc:, Bcc: (and the Resent- forms; Bcc: is then removed), a
"Received: by ... (Postfix, from userid N)" header is prepended, and cleanup qualifies the
sender and recipients with @$myorigin (an unqualified recipient stays the original one,
orig_to=<user>) and adds the missing Message-Id:, Date:, From: (with the sender's full
name: sendmail -F, $NAME or the passwd gecos) and To: headers after the others. The file
is removed only after the queue reports the message durable, so a crash between the two
repeats it rather than losing it. pickup scans at start, every wakeup seconds (master.cf),
and whenever a client connects to its public socket (postdrop's trigger). Each file costs
an in_flow_delay token (oxipost.flow), as its cleanup connection does in Postfix. A file
postsuper -r put there (oxipost.pickup.maildrop.requeue) is queued again under a new ID
with its envelope as it was, rewritten again by cleanup and seen by no Milter, logged as
Postfix's pickup logs it: "NEWID: uid=N from=<sender> orig_id=OLDID".

Diagnostics: a file that does not parse is logged ("warning: maildrop/NAME: ...") and
renamed NAME.corrupt, as is one without recipients, never silently dropped. A file that
is not READY (postdrop's 0600 while it writes) is left alone, and one that is not a
regular file is warned of at each scan ("warning: maildrop/NAME: uid N: not a regular
file"), as Postfix's pickup leaves both to the administrator. A message
cleanup rejects (header_checks, body_checks, hop count, a queue file past
message_size_limit that postdrop's smaller file was not) is returned to its sender with a
non-delivery notice, as Postfix's cleanup does for pickup; one cleanup cannot take now (a
table it cannot read) stays in maildrop/ for the next scan.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from oxipost import bounce
from oxipost.cleanup.message import cleanup_message, size_checked, split_header
from oxipost.cleanup.milter import non_smtpd_milters
from oxipost.cleanup.records import queue_file_cut
from oxipost.cleanup.state import Cleaned, open_cleanup_tables
from oxipost.config import Config
from oxipost.delivery.address import log_form, orig_to
from oxipost.envelope import Envelope, Outcome, Recipient, envelope_from_dict
from oxipost.flow import FlowGate
from oxipost.log import format_tv, get_logger
from oxipost.maildate import mail_date
from oxipost.milter import milter_conf
from oxipost.pickup.maildrop import (
    MaildropError,
    Submission,
    header_recipients,
    maildrop_dir,
    maildrop_ids,
    requeued,
)

# How long a wakeup may wait for a busy qmgr's reply; past it, its next scan finds the mail.
NOTIFY_TIMEOUT = 5.0

if TYPE_CHECKING:
    from oxipost.master.context import ServiceContext
    from oxipost.qmgr.queue import Queue


def _bare(addr: str) -> str:
    # As submitted: cleanup qualifies it (append_at_myorigin), keeping this as the
    # original recipient (orig_to=<user>, X-Original-To: user), as Postfix's does.
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    return addr


def _extract(content: bytes) -> tuple[list[str], bytes]:
    """Recipients from the header, each once (cleanup's duplicate filter keeps the first
    of what Postfix's sendmail writes); the content without its Bcc: header."""
    headers, body = split_header(content)
    found: list[str] = []
    kept: list[bytes] = []
    current = ""
    for line in headers:
        if line[:1] not in (b" ", b"\t"):
            current = line.split(b":", 1)[0].decode("ascii", "replace").strip().lower()
        if current != "bcc":
            kept.append(line)
    for addr in header_recipients(content):
        if addr not in found:
            found.append(addr)
    return found, b"".join(kept) + body


def _add_missing(cfg: Config) -> Config:
    # Locally submitted mail always gets the missing headers (cleanup for pickup).
    overrides = dict(cfg.overrides)
    overrides["always_add_missing_headers"] = "yes"
    return Config(cfg.config_dir, cfg.settings, cfg.services, overrides)


def build(cfg: Config, sub: Submission, queue_id: str) -> Cleaned | str:
    """The message pickup enqueues for one submission as `queue_id`, or why it cannot."""
    content = sub.content
    rcpts = [_bare(r) for r in sub.recipients]
    given = len(rcpts)
    if sub.extract:
        extracted, content = _extract(content)
        rcpts += [_bare(r) for r in extracted if _bare(r) not in rcpts]
    # An empty one stays: cleanup makes it $empty_address_recipient.
    if not rcpts:
        return "No recipient addresses found in message header"
    sender = _bare(sub.sender)
    notify: frozenset[str] = frozenset()
    if sub.dsn_notify:
        notify = frozenset(n.strip().upper() for n in sub.dsn_notify.split(",") if n.strip())
    env = Envelope(
        sender=sender,
        recipients=[Recipient(r, original=r, notify=notify) for r in rcpts],
        arrival_time=sub.time,
        envid=sub.dsn_envid,
        ret=sub.dsn_ret if sub.dsn_ret in ("FULL", "HDRS") else "",
        protocol="",
        body_type=sub.body_type,
        verp_delims=sub.verp_delims,
        attrs={"origin": "pickup", "uid": str(sub.uid)},
    )
    if len(rcpts) > given:
        env.extracted = given
    if sub.trace_flags:
        env.attrs["trace_flags"] = str(sub.trace_flags)
    if sub.full_name:
        # Kept as Postfix's sender_fullname record, which postcat shows.
        env.attrs["sender_fullname"] = sub.full_name
    return cleanup_message(
        env,
        content,
        _received(cfg, sub, queue_id),
        _add_missing(cfg),
        queue_id,
        full_name=sub.full_name,
        bounce=True,
    )


def _received(cfg: Config, sub: Submission, queue_id: str) -> str:
    """The header pickup prepends: the file's owner (not the login name) and time."""
    return (
        f"Received: by {cfg.get('myhostname')} ({cfg.get('mail_name')}, from userid "
        f"{sub.uid})\r\n\tid {queue_id}; {mail_date(sub.time)}\r\n"
    )


# What a requeued message's envelope loses, as Postfix's pickup drops the FILTER records
# (content_filter as passed, a FILTER action's), REDIRECT and the access(5) actions:
# cleanup decides them again, with today's content_filter.
_NOT_REQUEUED = ("content_filter", "filter", "redirect_to", "hold", "discard", "bcc")


def build_requeued(cfg: Config, sub: Submission, queue_id: str) -> Cleaned:
    """The message postsuper -r put in maildrop/, queued again as `queue_id`: its envelope
    as it was (arrival time, originals, DSN, the recipients still to deliver), rewritten
    and checked again by cleanup, with pickup's Received: header; no Milter sees it."""
    env = envelope_from_dict(sub.env or {})
    for name in _NOT_REQUEUED:
        env.attrs.pop(name, None)
    return cleanup_message(
        env, sub.content, _received(cfg, sub, queue_id), _add_missing(cfg), queue_id, bounce=True
    )


def pickup_once(cfg: Config, queue: Queue, log: object, flow: FlowGate | None = None) -> int:
    """Move every complete maildrop file into the queue; return how many. With `flow`,
    each file costs an in_flow_delay token, as its cleanup connection does in Postfix."""
    d = maildrop_dir(cfg.path("queue_directory"))
    moved = 0
    milters = milter_conf(cfg, "non_smtpd_milters")
    # A file still being written (not READY: a postdrop that died leaves it so), or one
    # set aside (NAME.corrupt, not named like a queue ID), stays for the administrator, as
    # Postfix's pickup leaves it: what mailq lists is what is taken here.
    for name in sorted(maildrop_ids(cfg, log.warning)):  # type: ignore[attr-defined]
        path = os.path.join(d, name)
        if flow is not None:
            flow.take_blocking()
        submitted = ""
        orig_id = ""
        qid = queue.new_id()
        try:
            with open(path, "rb") as f:
                data = f.read()
                st = os.fstat(f.fileno())
            sub = Submission.decode(data)
            submitted = sub.sender
            if requeued(cfg, st, sub):
                orig_id = sub.orig_id
                result: Cleaned | str = build_requeued(cfg, sub, qid)
            else:
                result = build(cfg, sub, qid)
        except FileNotFoundError:
            continue
        except (OSError, MaildropError) as e:
            result = str(e)
        if isinstance(result, Cleaned):
            result = size_checked(result, qid, cfg, bounce=True)
        # Postfix's pickup turns the Milters off for requeued mail: they saw it already.
        if (
            milters is not None
            and not orig_id
            and isinstance(result, Cleaned)
            and result.reply is None
        ):
            result = non_smtpd_milters(milters, cfg, result, qid)
        if isinstance(result, str):
            log.warning(f"maildrop/{name}: {result}")  # type: ignore[attr-defined]
            os.replace(path, path + ".corrupt")
            continue
        if result.reply is not None and result.reply.startswith("4"):
            result.log_notes(log, qid)
            continue  # a table could not be read: the file waits for the next scan
        # The sender as submitted, before cleanup qualifies it: Postfix's pickup logs
        # "uid=0 from=<root>" and qmgr then from=<root@$myorigin>; a requeued message's
        # old ID for tracking it (pickup.c's orig_id=), whether cleanup takes it or not.
        origin = f" orig_id={orig_id}" if orig_id else ""
        log.info(f"{qid}: uid={sub.uid} from=<{submitted}>{origin}")  # type: ignore[attr-defined]
        if result.reply is not None:
            _bounce_rejected(cfg, queue, log, result, qid)
            os.unlink(path)
            continue
        env, content = result.envelope, result.content
        if not result.discard:
            queue.enqueue_sync(env, content, qid)
            if flow is not None and "hold" in env.attrs:
                flow.give_back()
        result.log_notes(log, qid)
        os.unlink(path)
        moved += 1
        _notify_qmgr(cfg)
    return moved


def _bounce_rejected(cfg: Config, queue: Queue, log: Any, rejected: Cleaned, qid: str) -> None:
    """A submission cleanup rejected (header_checks, body_checks, too many hops, a queue
    file past message_size_limit) is returned to its sender, as Postfix's cleanup does
    for pickup (CLEANUP_FLAG_BOUNCE): cleanup logs each recipient bounced, with the
    reason its smtpd would say after "Error: " ("too many hops"), and nothing is logged
    as removed."""
    rejected.log_notes(log, qid)
    assert rejected.reply is not None
    status, _, text = rejected.reply.partition(" ")[2].partition(" ")
    text = text.removeprefix("Error: ")
    log = log.for_program("cleanup")
    env = rejected.envelope
    outcome = Outcome(status, text)
    # Postfix's log_adhoc() before any queue manager: the whole delay is before qmgr.
    delay = format_tv(
        time.time() - env.arrival_time, 2, cfg.get_int("delay_logging_resolution_limit")
    )
    external = cfg.get("info_log_address_format") == "external"
    for r in env.recipients:
        log.info(
            f"{qid}: to=<{log_form(r.address, external)}>, "
            f"{orig_to(r.address, r.original, external)}relay=none, delay={delay}, "
            f"delays={delay}/0/0/0, dsn={status}, status=bounced ({text})"
        )
    if rejected.reply.startswith("552 5.3.4"):
        limit = cfg.get_int("message_size_limit")
        # Postfix's cleanup reads the queue file its size limit cut back for the
        # recipients (cleanup_bounce.c), to the record the cut falls in; bounce(8) finds
        # no message size there and returns the headers alone (bounce_original()).
        cut = queue_file_cut(env, rejected.content, qid, cfg, limit)
        if cut:
            log.warning(f"incoming/{qid}: {cut}")
        if cfg.get_int("bounce_size_limit") > 0:
            env = dataclasses.replace(env, ret="HDRS")
    reports = [bounce.Report(r, outcome) for r in env.recipients]
    bounce_log = get_logger("bounce", cfg)
    try:
        msgs = bounce.notices(
            "failure", cfg, qid, env, rejected.content, reports, bounce_log.warning
        )
    except bounce.TemplateError as e:
        # Fatal to Postfix's bounce daemon (its template file): said as it says it.
        bounce_log.fatal_line(str(e))
        msgs = []
    for notice_env, notice in msgs:
        new, cleaned = bounce.queue_notice(cfg, queue, notice_env, notice)
        if bounce.cancelled(notice_env):
            cleaned.log_notes(bounce_log, new)
            continue
        if cleaned.reply is not None:
            log.warning(f"{qid}: cannot queue sender non-delivery notification: {cleaned.reply}")
            continue
        cleaned.log_notes(bounce_log, new)
        bounce_log.info(f"{qid}: sender non-delivery notification: {new}")
        _notify_qmgr(cfg)


def _notify_qmgr(cfg: Config) -> None:
    """Tell a running qmgr about the new message ({"op": "wakeup"} on public/qmgr), as
    Postfix's cleanup triggers qmgr; a qmgr that is not running finds it at its start."""
    from oxipost.qmgr import control

    try:
        control.request(cfg, {"op": "wakeup"}, timeout=NOTIFY_TIMEOUT)
    except control.QmgrDown:
        pass


def main(ctx: ServiceContext) -> int:
    from oxipost.qmgr.queue import Queue

    cfg = ctx.cfg
    queue = Queue.open(cfg, writer="pickup")
    open_cleanup_tables(cfg, ctx.log.for_program("cleanup"))
    wakeup = ctx.service.wakeup_seconds or 60
    flow = FlowGate(ctx.flow, cfg)
    sel = selectors.DefaultSelector()
    if ctx.listen_socket is not None:
        ctx.listen_socket.setblocking(False)
        sel.register(ctx.listen_socket, selectors.EVENT_READ)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    # A signal only runs its handler: select() then goes on waiting (PEP 475), up to the
    # wakeup time. Its byte on this socket ends the wait: SIGTERM stops pickup at once
    # (master kills what is still there 10 s on), SIGUSR1 (master's wakeup) scans now.
    signalled, signal_end = socket.socketpair()
    for end in (signalled, signal_end):
        end.setblocking(False)
    signal.set_wakeup_fd(signal_end.fileno())
    sel.register(signalled, selectors.EVENT_READ)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGUSR1, lambda _s, _f: None)
    try:
        while not stop:
            pickup_once(cfg, queue, ctx.log, flow)
            deadline = time.monotonic() + wakeup
            while not stop and time.monotonic() < deadline:
                events = sel.select(timeout=max(0.0, deadline - time.monotonic()))
                for key, _ in events:
                    try:
                        if key.fileobj is signalled:
                            signalled.recv(64)
                        else:
                            conn, _ = ctx.listen_socket.accept()  # type: ignore[union-attr]
                            conn.close()
                    except OSError:
                        pass
                if events:
                    break
    finally:
        signal.set_wakeup_fd(-1)
        queue.close()
    return 0


__all__ = ["build", "main", "pickup_once"]
