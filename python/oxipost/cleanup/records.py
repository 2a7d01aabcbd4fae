"""The records of Postfix 3.7's queue file for a message, as its cleanup writes them: what
postcat shows, and what cleanup's file size limit (message_size_limit) weighs. Ours keeps a
message as an envelope and its content (qmgr.queue); these render that as Postfix's records,
in the order and form of its smtpd, pickup and cleanup."""

from __future__ import annotations

import time

from oxipost.config import Config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import MessageInfo, message_size, record_len

# Postfix's dsn_mask.h bits, as its queue file and postcat show RET= and NOTIFY=.
RET_FLAGS = {"FULL": 1, "HDRS": 2}
NOTIFY_FLAGS = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}
# MAIL FROM's BODY= as smtpd's "encoding" attribute (mail_proto.h MAIL_ATTR_ENC_*).
ENCODING = {"8BITMIME": "8bit", "7BIT": "7bit"}


# What smtpd and pickup write of the client and the message origin, shown in its own place
# (the client_* ones are the client that talked to us when XFORWARD gave another), and
# what Postfix's queue file has no record for.
_PLACED = frozenset(
    {
        "log_ident",
        "rewrite_context",
        "log_message_origin",
        "log_protocol_name",
        "client_name",
        "client_address",
        "client_port",
        "helo_name",
        "protocol_name",
        "sender_fullname",
        "redirect_to",
        "filter",
        "content_filter",
        # Ours only: who queued the message (pickup) and as which user, and the encoding
        # declared when cleanup made it 8bit (shown as the envelope's encoding).
        "origin",
        "uid",
        "declared_body",
    }
)


def envelope_records(info: MessageInfo, env: Envelope, qid: str, cfg: Config) -> list[str]:
    """The envelope records of a queue file up to its recipients, in the order and form of
    Postfix 3.7's, which depend on who queued it: smtpd's client records, or pickup's."""
    stamp = time.asctime(time.localtime(env.arrival_time))
    # qmgr's read options: the NOTIFY= words any recipient gave (qmgr_user.h).
    opts = 0
    for rcpt in env.recipients:
        for word in rcpt.notify:
            opts |= NOTIFY_FLAGS.get(word, 0) << 1
    # The content offset in Postfix's file has no counterpart in ours.
    sizes = (info.size, 0, env.rcpt_count, opts, info.size, int(env.smtputf8))
    lines = [
        "message_size: " + " ".join(f"{n:>15}" for n in sizes),
        f"message_arrival_time: {stamp}",
        f"create_time: {stamp}",
    ]
    attrs = env.attrs
    if attrs.get("content_filter"):
        lines.append(f"content_filter: {attrs['content_filter']}")
    smtpd = bool(env.protocol)
    named: list[tuple[str, object]] = []
    dsn = [("envelope_id", env.envid), ("ret_flags", RET_FLAGS.get(env.ret, 0))]
    # Not at the top: the header pass brings in smtpd's checks and asyncio, which sendmail,
    # weighing a submission with this module's tables, need not pay for.
    from oxipost.cleanup.header import local_client

    context = attrs.get("rewrite_context") or ("local" if local_client(env, cfg) else "remote")
    if smtpd:
        named += [("log_ident", attrs.get("log_ident") or qid), ("rewrite_context", context)]
        named += [("sasl_method", env.sasl_method), ("sasl_username", env.sasl_username)]
        named += [("sasl_sender", env.sasl_sender), *dsn]
    else:
        named += [*dsn, ("rewrite_context", context)]
    lines += [f"named_attribute: {k}={v}" for k, v in named if v]
    if attrs.get("sender_fullname"):
        lines.append(f"sender_fullname: {attrs['sender_fullname']}")
    lines.append(f"sender: {env.sender}")
    named = [("encoding", ENCODING.get(attrs.get("declared_body", env.body_type), ""))]
    if smtpd:
        named += _client_records(env)
    named += [(k, v) for k, v in attrs.items() if k not in _PLACED]
    lines += [f"named_attribute: {k}={v}" for k, v in named if v]
    if env.verp_delims:
        lines.append(f"verp_delimiters: {env.verp_delims}")
    return lines


def recipient_records(info: MessageInfo, env: Envelope) -> tuple[list[str], list[str]]:
    """The recipient records of the envelope segment and of the extracted one (sendmail
    -t's, the BCC ones), each a Milter application deleted where it was, canceled."""
    at = env.extracted if env.extracted >= 0 else len(env.recipients)
    segments: tuple[list[str], list[str]] = ([], [])
    canceled = iter(env.canceled)
    pending = next(canceled, None)
    for i in range(len(env.recipients) + 1):
        while pending is not None and pending[0] <= i:
            segments[i > at].extend(_recipient_records(pending[1], "canceled_recipient"))
            pending = next(canceled, None)
        if i < len(env.recipients):
            kind = "done_recipient" if i in info.done else "recipient"
            segments[i >= at].extend(_recipient_records(env.recipients[i], kind))
    return segments


def _client_records(env: Envelope) -> list[tuple[str, object]]:
    """smtpd's client attributes: the client for logging and XFORWARD (log_*, XFORWARD's
    when it gave one), then the one that talked to us, as smtpd's mail_open_stream()."""
    attrs = env.attrs
    addr = attrs.get("client_address", env.client_addr)
    origin = attrs.get("log_message_origin") or f"{env.client_name}[{env.client_addr}]"
    return [
        ("log_client_name", env.client_name),
        ("log_client_address", env.client_addr),
        ("log_client_port", env.client_port),
        ("log_message_origin", origin),
        ("log_helo_name", env.helo_name),
        ("log_protocol_name", attrs.get("log_protocol_name") or env.protocol),
        ("client_name", attrs.get("client_name", env.client_name)),
        ("reverse_client_name", env.reverse_name),
        ("client_address", addr),
        ("client_port", attrs.get("client_port", env.client_port)),
        ("server_address", env.server_addr),
        ("server_port", env.server_port),
        ("helo_name", attrs.get("helo_name", env.helo_name)),
        ("protocol_name", attrs.get("protocol_name", env.protocol)),
        ("client_address_type", 10 if ":" in addr else 2),
    ]


def _recipient_records(rcpt: Recipient, kind: str) -> list[str]:
    """A recipient's records: its DSN attributes, its original address, then it as `kind`."""
    lines = []
    if rcpt.notify:
        flags = sum(NOTIFY_FLAGS.get(word, 0) for word in rcpt.notify)
        lines.append(f"named_attribute: notify_flags={flags}")
    if rcpt.orcpt:
        lines.append(f"named_attribute: dsn_orig_rcpt={rcpt.orcpt}")
    lines.append(f"original_recipient: {rcpt.original or rcpt.address}")
    lines.append(f"{kind}: {rcpt.address}")
    return lines


# Postfix's rec_type.h types of the records postcat shows with these labels.
_TYPES = {
    "message_size": "C",
    "message_arrival_time": "T",
    "create_time": "A",
    "content_filter": "L",
    "named_attribute": "A",
    "sender_fullname": "F",
    "sender": "S",
    "verp_delimiters": "V",
    "recipient": "R",
    "original_recipient": "O",
    "done_recipient": "D",
    "canceled_recipient": "@",
}


def _segments(
    env: Envelope, qid: str, cfg: Config
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The (type, data length) of each record of the envelope segment and of the extracted
    one, as Postfix 3.7's cleanup writes them."""
    info = MessageInfo(qid, "", 0, 0, 0, env.arrival_time, env.sender, env.recipients)
    given, extracted = recipient_records(info, env)
    seconds, fraction = divmod(env.arrival_time, 1)
    segments: tuple[list[tuple[str, int]], list[tuple[str, int]]] = ([], [])
    for segment, lines in zip(
        segments, ([*envelope_records(info, env, qid, cfg), *given], extracted), strict=True
    ):
        for line in lines:
            label, _, value = line.partition(": ")
            if label == "message_size":
                n = 6 * 15 + 5  # REC_TYPE_SIZE_FORMAT: six %15ld
            elif label == "message_arrival_time":
                n = len(f"{int(seconds)} {int(fraction * 1_000_000)}")
            elif label == "create_time":
                n = len(f"create_time={int(seconds)}")
            else:
                n = len(value.encode("utf-8", "surrogateescape"))
            segment.append((_TYPES[label], n))
    return segments


def queue_file_size(env: Envelope, content: bytes, qid: str, cfg: Config) -> int:
    """The bytes of the queue file Postfix 3.7's cleanup writes for this message, each
    record its type, its length (rec_put()) and its data: the envelope records as shown
    above (the arrival time as "SECONDS MICROSECONDS", create_time as an attribute), the
    content's (message_size()) between its M and X records, the extracted segment's and
    the end record. What cleanup's file size limit (message_size_limit) weighs."""
    given, extracted = _segments(env, qid, cfg)
    size = sum(n + record_len(n) for _, n in [*given, *extracted])
    # The M, X and E records, empty.
    return size + 3 * 2 + message_size(content, cfg.get_int("line_length_limit"))


def queue_file_cut(env: Envelope, content: bytes, qid: str, cfg: Config, limit: int) -> str:
    """What Postfix's rec_get() warns reading back the queue file for this message that its
    cleanup's file size limit cut at `limit` bytes: the record the cut falls in ("" when
    it falls between two)."""
    given, extracted = _segments(env, qid, cfg)
    line_limit = cfg.get_int("line_length_limit")
    lines = content.split(b"\r\n")
    if not lines[-1]:
        lines.pop()
    body: list[tuple[str, int]] = []
    for line in lines:
        # As message_size(): a long line one record per piece, the last one N, the others L.
        n = len(line)
        pieces = n // line_limit if line_limit > 0 and n >= line_limit else 0
        body += [("L", line_limit)] * pieces + [("N", n - pieces * line_limit)]
    offset = 0
    for kind, n in [*given, ("M", 0), *body, ("X", 0), *extracted, ("E", 0)]:
        end = offset + record_len(n) + n
        if end > limit:
            if offset >= limit:
                return ""
            if offset + record_len(n) > limit:
                return f"unexpected EOF reading length, record type {ord(kind)}"
            return f"unexpected EOF in data, record type {ord(kind)} length {n}"
        offset = end
    return ""
