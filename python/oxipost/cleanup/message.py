"""cleanup - header and envelope processing before a message is queued

cleanup_message(env, content, received, cfg) is what Postfix's cleanup(8) does to a
message, called in process by smtpd, pickup and the agents that resubmit mail:
- the envelope: addresses put in standard form (append_at_myorigin, append_dot_mydomain),
  canonical mapping and masquerading, virtual alias expansion (oxipost.cleanup.addr);
  automatic BCC recipients (NOTIFY=NEVER): the sender_bcc_maps copy after the sender, each
  recipient's recipient_bcc_maps copy after it, always_bcc last, all through the message's
  duplicate filter, and none for internal mail or with no_address_mappings;
- the content: the caller's Received: header first, hopcount_limit ("554 5.4.0 Error: too
  many hops"), header_size_limit (the excess header is discarded), stray <CR>/<LF> replaced
  by a space (cleanup_replace_stray_cr_lf), header_checks / mime_header_checks /
  nested_header_checks / body_checks and header address rewriting
  (oxipost.cleanup.header), and for clients in local_header_rewrite_clients, any client
  when remote_header_rewrite_domain is set (or with always_add_missing_headers) the
  missing Message-Id:, Date: and From: (their Resent- forms when the message has Resent-
  headers) and $undisclosed_recipients_header when it has no To: or Cc:;
- the queue file's size: one that would grow past message_size_limit, envelope records
  and added headers included, is refused (size_checked, "552 5.3.4 Error: message file too
  big", as Postfix's cleanup under its file size limit);
- what the checks decided: BCC recipients, REDIRECT (the attribute "redirect_to", which
  qmgr applies), HOLD (the envelope attribute "hold"), FILTER (the attribute "filter"),
  DISCARD.
Internal mail (resubmitted by local(8), notices) skips the content checks, but notices
when internal_mail_filter_classes names bounce; receive_override_options
no_address_mappings and no_header_body_checks turn those parts off.

Diagnostics: the returned Cleaned carries the SMTP reply when the message is refused
(4xx: try again later, 5xx: rejected) and the log lines, which the caller writes with
the queue ID (NOQUEUE when nothing was queued); among them, without the queue ID, a
table's own lines, as Postfix's cleanup logs them: "error: REASON" for one that did not
open (the daemons open cleanup's tables as they start: open_cleanup_tables), then at each
lookup "TYPE:NAME is unavailable. REASON" and 'TYPE:NAME lookup error for "KEY"' before
cleanup's "QID: PARAM map lookup problem ..." (451 4.3.0 Error: queue file write error).
"""

from __future__ import annotations

import dataclasses
import operator
import os
import re
import time
from typing import Any

from oxipost.cleanup.addr import (
    WRITE_ERROR,
    CleanupDefer,
    add_bcc,
    bcc_lookup,
    process_recipients,
    process_sender,
)
from oxipost.cleanup.header import RESENT_HEADERS, Walker, header_rewrite_context
from oxipost.cleanup.records import queue_file_size
from oxipost.cleanup.state import Cleaned, CleanupState, TableNotes, cleanup_config
from oxipost.delivery.address import quote_local
from oxipost.envelope import Envelope, Recipient
from oxipost.maildate import mail_date
from oxipost.maps import logging_to

_STRAY = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_HOPS = "554 5.4.0 Error: too many hops"
_TOO_BIG = "552 5.3.4 Error: message file too big"
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_NEVER = frozenset({"NEVER"})
# An envelope's fields in the order its constructor takes them: copied this way it costs a
# quarter of dataclasses.replace.
_ENVELOPE_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(Envelope)))


def _has_stray(data: bytes) -> bool:
    # Three counts (memchr-fast) instead of the lookbehind regex, ten times slower on a
    # 64-KiB body that, sent by almost every client, has nothing to replace.
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def split_header(content: bytes) -> tuple[list[bytes], bytes]:
    """(header lines with their CRLF, body including the empty separator line)."""
    lines: list[bytes] = []
    pos = 0
    while pos < len(content):
        end = content.find(b"\r\n", pos)
        if end < 0:
            end = len(content)
            line = content[pos:end]
            nxt = end
        else:
            line = content[pos : end + 2]
            nxt = end + 2
        if line in (b"\r\n", b""):
            break
        is_header = bool(_HEADER_LINE.match(line))
        if not is_header and not (line[:1] in (b" ", b"\t") and lines):
            break
        lines.append(line)
        pos = nxt
    return lines, content[pos:]


def _decode(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape")


def _encode(lines: list[str]) -> bytes:
    text = "".join(line.replace("\n", "\r\n") + "\r\n" for line in lines)
    return text.encode("utf-8", "surrogateescape")


# RFC 822 specials and the legacy %! address operators: a full name with any of them is
# quoted in a From: header cleanup adds (cleanup_header_done_callback).
_PHRASE_SPECIALS = re.compile(r'[%!()<>@,;:\\".\[\]]')
_WORDS = re.compile(r"[^ \t\n\r\v\f]+")


def from_header(cfg: Any, address: str, full_name: str) -> str:
    """The From: header Postfix writes for `address` (quoted already) with `full_name`:
    header_from_format standard, "From: phrase <address>" (the phrase a quoted string when
    it has specials, else its words one space apart), or obsolete, "From: address (name)";
    "From: address" without a name."""
    name = full_name.replace("\r", " ").replace("\n", " ")
    if not name:
        return f"From: {address}"
    if cfg.get("header_from_format").strip().lower() == "obsolete":
        return f"From: {address} ({name})"
    if _PHRASE_SPECIALS.search(name):
        phrase = '"' + re.sub(r'(["\\])', r"\\\1", name) + '"'
    else:
        phrase = " ".join(_WORDS.findall(name))
    return f"From: {phrase} <{address}>" if phrase else f"From: <{address}>"


def _missing_headers(state: CleanupState, names: set[str]) -> list[str]:
    env, cfg = state.env, state.cfg
    extra: list[str] = []
    # Postfix's test is its header rewriting context: a remote client's mail has one too
    # when remote_header_rewrite_domain is set.
    if not (cfg.get_bool("always_add_missing_headers") or header_rewrite_context(state)):
        return extra
    host = cfg.get("myhostname")
    # With any Resent- header, the Resent- forms are the ones that must be there.
    resent = "Resent-" if names & RESENT_HEADERS else ""
    if f"{resent}message-id".lower() not in names:
        # Postfix's form: the time cleanup adds it and the queue ID, unique per host. Mail
        # resubmitted without an ID yet gets random digits in its place.
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        unique = state.queue_id or os.urandom(6).hex().upper()
        msgid = f"<{stamp}.{unique}@{host}>"
        extra.append(f"{resent}Message-Id: {msgid}")
        state.info(f"{resent.lower()}message-id={msgid}")
    if f"{resent}date".lower() not in names:
        extra.append(f"{resent}Date: {mail_date(env.arrival_time)}")
    if f"{resent}from".lower() not in names:
        # The sender after rewriting and canonical mapping, as Postfix's state->sender.
        sender = quote_local(state.sender) if state.sender else "MAILER-DAEMON"
        extra.append(resent + from_header(cfg, sender, state.full_name if state.sender else ""))
    undisclosed = cfg.get("undisclosed_recipients_header")
    if undisclosed and not names & {"to", "cc", "resent-to", "resent-cc"}:
        extra.append(undisclosed)
    return extra


def cleanup_message(
    env: Envelope,
    content: bytes,
    received: str,
    cfg: Any,
    queue_id: str = "",
    internal: bool = False,
    full_name: str = "",
    mail_class: str = "",
    bounce: bool = False,
) -> Cleaned:
    """Process one message, to be queued as `queue_id` (Queue.new_id: the Message-Id
    cleanup adds carries it); `internal` for mail Postfix itself resubmits (no content
    checks, unless internal_mail_filter_classes names its `mail_class`: "bounce" for
    notices); `full_name` the sender's (sendmail -F, $NAME or the passwd gecos) for a From:
    header cleanup adds; `bounce` for pickup's mail, which cleanup returns to its sender
    when it refuses it (CLEANUP_FLAG_BOUNCE)."""
    opts = cleanup_config(cfg)
    overrides = opts.overrides
    state = CleanupState(
        cfg,
        env,
        queue_id,
        map_ok="no_address_mappings" not in overrides,
        # bounce(8) asks for the checks by its class alone (int_filt_flags), not through
        # receive_override_options, which is the receiving daemons'.
        filtering=mail_class in opts.internal_filter_classes
        if internal
        else "no_header_body_checks" not in overrides,
        bcc_ok=not internal and "no_address_mappings" not in overrides,
        # smtpd's access(5) HOLD, DISCARD and BCC actions reach cleanup as attributes.
        hold="hold" in env.attrs,
        discard="discard" in env.attrs,
        full_name=full_name,
    )
    # Postfix's cleanup logs a table's own warnings without a queue ID, among its lines.
    with logging_to(TableNotes(state)):
        return _cleanup(state, env, content, received, internal, bounce)


def _cleanup(
    state: CleanupState,
    env: Envelope,
    content: bytes,
    received: str,
    internal: bool,
    bounce: bool,
) -> Cleaned:
    cfg = state.cfg
    opts = state.opts
    headers, body = split_header(content)
    limit = opts.header_size_limit
    kept: list[bytes] = []
    size = 0
    for line in headers:
        size += len(line)
        if size > limit:
            break  # Postfix discards the excess header and goes on.
        kept.append(line)
    headers = kept
    if cfg.get_bool("cleanup_replace_stray_cr_lf"):
        # Counted over the lines together (each ends with CR LF but the last may not),
        # none has a stray CR or LF when the counts agree.
        if _has_stray(b"".join(headers)):
            headers = [
                _STRAY.sub(b" ", h[:-2]) + h[-2:] if h.endswith(b"\r\n") else h for h in headers
            ]
        if _has_stray(body):
            body = _STRAY.sub(b" ", body)
    try:
        sender = process_sender(state, env.sender)
        state.sender = sender
        recipients: list[Recipient] = []
        if state.bcc_ok:
            # Postfix queues the sender's BCC copy right after the sender record.
            recipients += add_bcc(state, bcc_lookup(state, "sender_bcc_maps", sender))
        if state.reply is not None:
            # A sender table that failed: cleanup_envelope reads no further record.
            return Cleaned(env, content, state.reply, notes=state.notes)
        given = env.recipients
        if env.extracted < 0:
            recipients += process_recipients(state, given, bcc=state.bcc_ok, envelope=True)
            extracted = len(recipients)
        else:
            # sendmail -t: Postfix's cleanup takes these from the header after the envelope.
            at = env.extracted
            recipients += process_recipients(state, given[:at], bcc=state.bcc_ok, envelope=True)
            extracted = len(recipients)
            recipients += process_recipients(state, given[at:], bcc=state.bcc_ok, envelope=True)
    except CleanupDefer as e:
        state.warn(e.warning)
        return Cleaned(env, content, state.reply or e.reply, notes=state.notes)
    walker = Walker(state)
    # The lines without their CR LF; none has one inside (split_header split there).
    header_text = received.split("\r\n")
    if header_text[-1] == "":
        header_text.pop()
    header_text += _decode(b"".join(headers)).split("\r\n")
    if header_text and header_text[-1] == "":
        header_text.pop()
    # Postfix's cleanup looks no further into smtpd's message than the header that makes
    # it one to refuse or discard (too many hops, REJECT, DISCARD): later headers, the
    # header's end (the Message-Id: it would add) and the body go unchecked. What it
    # returns to its sender itself it walks to the end.
    walker.stop_early = not (bounce or internal)
    try:
        if opts.wants_body and state.filtering and body:
            separator = body.startswith(b"\r\n")
            text = _decode(body[2:] if separator else body)
            body_lines = text.split("\r\n")
            trailing = body_lines and body_lines[-1] == ""
            if trailing:
                body_lines.pop()
            out_head, out_body = walker.walk(header_text, body_lines)
            body = (b"\r\n" if separator or headers else b"") + _encode(out_body)
            if not trailing and body.endswith(b"\r\n"):
                body = body[:-2]
        else:
            out_head = walker.headers(header_text, "primary")
            if (
                "content-type" in walker.names
                and walker.mime
                and body
                and not state.eight_bit
                and not walker.stopped
            ):
                walker.part_encodings(header_text, body)
    except CleanupDefer as e:
        state.warn(e.warning)
        return _refused(state, env, sender, recipients, content, e.reply)
    if walker.too_many_hops:
        # Only a flag to Postfix's cleanup, which checks the header and the body to the
        # end; a REJECT's reason is the one its bounce gives, before or after it. smtpd
        # names too many hops before any content's reason (a REJECT on that Received:
        # header, a MIME error before it), not before a table's failure.
        if walker.stop_early and state.reply != WRITE_ERROR:
            state.reply = _HOPS
        else:
            state.refuse(_HOPS)
    if state.reply is not None:
        # Postfix's cleanup ends the header of a submitted message as for any (the
        # Message-Id: it adds is logged) before it refuses it; not of a notice bounce(8)
        # queues (compared in test_failed_notice_defers_as_postfix[bounce_rejected]).
        if not internal and not walker.stopped:
            _missing_headers(state, walker.names)
        return _refused(state, env, sender, recipients, content, state.reply)
    if not walker.stopped:
        out_head += _missing_headers(state, walker.names)
    if state.reply is None and not state.discard:
        if not any(text.startswith("message-id=") for _, text in state.notes):
            # Postfix logs a message-id line for every message it keeps, empty for none.
            state.info("message-id=<>")
    out = _encode(out_head)
    if not headers and body and not body.startswith(b"\r\n"):
        out += b"\r\n"
    new_env = _final_envelope(state, env, sender, recipients, internal, extracted)
    if isinstance(new_env, str):
        return Cleaned(env, content, new_env, notes=state.notes)
    return Cleaned(new_env, out + body, discard=state.discard, notes=state.notes)


def size_checked(cleaned: Cleaned, queue_id: str, cfg: Any, bounce: bool = False) -> Cleaned:
    """cleanup's own size limit. Postfix's cleanup writes with message_size_limit as its
    file size limit (set_file_limit), so a queue file that would grow past it fails to be
    written: the envelope, smtpd's Received: header and the headers cleanup adds count,
    which smtpd's own count of the content leaves out. Refused with 552 5.3.4 and the
    warnings of cleanup's write and of its client's close; with `bounce` (pickup's
    CLEANUP_FLAG_BOUNCE) cleanup returns the message itself, its client sees no error."""
    limit = cfg.get_int("message_size_limit")
    if cleaned.reply is not None or cleaned.discard or limit <= 0:
        return cleaned
    # Far below the limit (nearly every message) the records need not be counted: the
    # content's cost at most twice its bytes, an envelope record (a name, an address)
    # under a line's length.
    env = cleaned.envelope
    if 2 * len(cleaned.content) + 8 * 2048 * (len(env.recipients) + len(env.attrs) + 24) < limit:
        return cleaned
    if queue_file_size(env, cleaned.content, queue_id, cfg) <= limit:
        return cleaned
    notes = [*cleaned.notes, ("warning", "queue file size limit exceeded")]
    if not bounce:
        notes.append(("table warning", "mail_stream_cleanup: close error"))
    return Cleaned(env, cleaned.content, _TOO_BIG, notes=notes)


def _refused(
    state: CleanupState,
    env: Envelope,
    sender: str,
    recipients: list[Recipient],
    content: bytes,
    reply: str,
) -> Cleaned:
    """A message refused once its envelope was processed: returned (to pickup) with the
    envelope as cleanup wrote it before the content, the recipients qualified, each with
    its original (a copy made only then, not for every message)."""
    written = Envelope(*_ENVELOPE_FIELDS(env))
    written.sender, written.recipients = sender, recipients
    return Cleaned(written, content, reply, notes=state.notes)


def _final_envelope(
    state: CleanupState,
    env: Envelope,
    sender: str,
    recipients: list[Recipient],
    internal: bool,
    extracted: int,
) -> Envelope | str:
    """The envelope with what the content checks decided; the recipients from `extracted`
    on, and the BCC ones added here, are the extracted segment's."""
    try:
        if env.recipients:
            # smtpd's access(5) BCC recipients (one a line, in order) come in the extracted
            # segment as recipients like any other, each with its own ORCPT; as Postfix 3.7
            # queues them (postcat -e), the first has the default NOTIFY and the others
            # NEVER, so a repeated one is no duplicate of the first. Postfix then adds
            # always_bcc and the header_checks BCC addresses as it ends that segment, and
            # only to mail that had a recipient.
            smtpd_bcc = env.attrs.get("bcc", "")
            if smtpd_bcc:
                bccs = [
                    Recipient(addr, orcpt=f"rfc822;{addr}", notify=_NEVER if i else frozenset())
                    for i, addr in enumerate(smtpd_bcc.split("\n"))
                ]
                recipients = recipients + process_recipients(state, bccs, bcc=state.bcc_ok)
            if state.bcc_ok:
                recipients = recipients + add_bcc(state, state.cfg.get("always_bcc"))
            for address in state.bcc:
                recipients = recipients + add_bcc(state, address)
    except CleanupDefer as e:
        state.warn(e.warning)
        return e.reply
    attrs = dict(env.attrs)
    attrs.pop("bcc", None)
    if state.hold:
        attrs.setdefault("hold", "header_checks")
    if state.redirect:
        # As Postfix's queue file has it: the recipients stay, qmgr redirects (one).
        attrs["redirect_to"] = state.redirect
    # smtpd and pickup pass their content_filter (so a master.cf -o content_filter= on the
    # re-injection smtpd turns it off), which Postfix's queue file keeps in its envelope
    # segment; a FILTER action overrides it from the extracted one (qmgr reads the last):
    # smtpd's access(5) one, which comes as the attribute, and a header_checks one over it.
    passed = "" if internal else state.cfg.get("content_filter")
    if passed:
        attrs["content_filter"] = passed
    if state.filter:
        attrs["filter"] = state.filter
    new = Envelope(*_ENVELOPE_FIELDS(env))
    new.sender, new.recipients, new.attrs = sender, recipients, attrs
    if state.eight_bit:
        # Postfix's queue file keeps the declared encoding in its envelope segment (what
        # postcat shows there) and cleanup's in the extracted one, which qmgr reads last.
        attrs["declared_body"] = env.body_type
        new.body_type = "8BITMIME"
    new.extracted = extracted if len(recipients) > extracted else -1
    return new
