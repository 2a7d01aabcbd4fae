"""postcat(1): show a queued message.

    postcat [-c config_dir] [-ehb] -q ID ...

The layout is Postfix 3.7's: `*** ENVELOPE RECORDS queue/ID ***` with one `name: value` per
envelope record in the order Postfix's smtpd, pickup and cleanup write them, `*** MESSAGE
CONTENTS queue/ID ***`, the content, `*** HEADER EXTRACTED queue/ID ***` with the records
cleanup writes after the content (sendmail -t's recipients, the BCC ones), and `*** MESSAGE
FILE END queue/ID ***`. -e shows only the envelope (with the markers), -h only the header,
-b only the body (without them).
Diagnostics: `postcat: fatal: open queue file ID: No such file or directory` (exit 1).
"""

from __future__ import annotations

import getopt
import sys
import time
from collections.abc import Sequence

from oxipost import _core
from oxipost.cleanup.header import local_client
from oxipost.config import Config, ConfigError, load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import MessageInfo, QueueState, message_size, record_len

PROG = "postcat"


# Postfix's dsn_mask.h bits, as its queue file and postcat show RET= and NOTIFY=.
_RET_FLAGS = {"FULL": 1, "HDRS": 2}
_NOTIFY_FLAGS = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}
# MAIL FROM's BODY= as smtpd's "encoding" attribute (mail_proto.h MAIL_ATTR_ENC_*).
_ENCODING = {"8BITMIME": "8bit", "7BIT": "7bit"}


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
            opts |= _NOTIFY_FLAGS.get(word, 0) << 1
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
    dsn = [("envelope_id", env.envid), ("ret_flags", _RET_FLAGS.get(env.ret, 0))]
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
    named = [("encoding", _ENCODING.get(attrs.get("declared_body", env.body_type), ""))]
    if smtpd:
        named += _client_records(env)
    named += [(k, v) for k, v in attrs.items() if k not in _PLACED]
    lines += [f"named_attribute: {k}={v}" for k, v in named if v]
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
        flags = sum(_NOTIFY_FLAGS.get(word, 0) for word in rcpt.notify)
        lines.append(f"named_attribute: notify_flags={flags}")
    if rcpt.orcpt:
        lines.append(f"named_attribute: dsn_orig_rcpt={rcpt.orcpt}")
    lines.append(f"original_recipient: {rcpt.original or rcpt.address}")
    lines.append(f"{kind}: {rcpt.address}")
    return lines


def queue_file_size(env: Envelope, content: bytes, qid: str, cfg: Config) -> int:
    """The bytes of the queue file Postfix 3.7's cleanup writes for this message, each
    record its type, its length (rec_put()) and its data: the envelope records as shown
    above (the arrival time as "SECONDS MICROSECONDS", create_time as an attribute), the
    content's (message_size()) between its M and X records, the extracted segment's and
    the end record. What cleanup's file size limit (message_size_limit) weighs."""
    info = MessageInfo(qid, "", 0, 0, 0, env.arrival_time, env.sender, env.recipients)
    given, extracted = recipient_records(info, env)
    seconds, fraction = divmod(env.arrival_time, 1)
    size = 0
    for line in [*envelope_records(info, env, qid, cfg), *given, *extracted]:
        label, _, value = line.partition(": ")
        if label == "message_size":
            n = 6 * 15 + 5  # REC_TYPE_SIZE_FORMAT: six %15ld
        elif label == "message_arrival_time":
            n = len(f"{int(seconds)} {int(fraction * 1_000_000)}")
        elif label == "create_time":
            n = len(f"create_time={int(seconds)}")
        else:
            n = len(value.encode("utf-8", "surrogateescape"))
        size += n + record_len(n)
    # The M, X and E records, empty.
    return size + 3 * 2 + message_size(content, cfg.get_int("line_length_limit"))


def split_content(content: bytes) -> tuple[bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = content.partition(sep)
        if found:
            return head + sep[: len(sep) // 2], body
    return content, b""


def main(argv: Sequence[str] | None = None) -> int:
    """Run postcat with argv (default sys.argv[1:]); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts, ids = getopt.getopt(args, "bc:ehoqrsv")
    except getopt.GetoptError as e:
        print(f"{PROG}: fatal: usage: {PROG} [-bcehoqv] -q id ({e})", file=sys.stderr)
        return 1
    flags = {f for f, _ in opts}
    config_dir = next((v for f, v in opts if f == "-c"), None)
    if "-q" not in flags or not ids:
        print(f"{PROG}: fatal: usage: {PROG} [-bcehoqv] -q id", file=sys.stderr)
        return 1
    sections = flags & {"-e", "-h", "-b"} or {"-e", "-h", "-b"}
    try:
        state = QueueState(load_config(config_dir, master_cf=False, stderr_as=PROG))
    except ConfigError as e:
        print(f"{PROG}: fatal: {e}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    for qid in ids:
        info = state.messages.get(qid)
        if info is None:
            print(
                f"{PROG}: fatal: open queue file {qid}: No such file or directory", file=sys.stderr
            )
            return 1
        try:
            env, content = state.load(qid)
        except _core.CorruptError as e:
            print(f"{PROG}: fatal: {qid}: corrupt queue file: {e}", file=sys.stderr)
            return 1
        except OSError as e:
            print(f"{PROG}: fatal: open queue file {qid}: {e.strerror}", file=sys.stderr)
            return 1
        name = f"{info.state}/{qid}"
        head, body = split_content(content)
        # The section markers come with the envelope only, as Postfix's postcat prints
        # them: -h or -b alone is the bare content.
        envelope = "-e" in sections
        if envelope:
            records = envelope_records(info, env, qid, state.cfg)
            given, extracted = recipient_records(info, env)
            out.write(f"*** ENVELOPE RECORDS {name} ***\n".encode())
            out.write("".join(f"{line}\n" for line in records + given).encode())
            out.write(f"*** MESSAGE CONTENTS {name} ***\n".encode())
        if "-h" in sections:
            out.write(head.replace(b"\r\n", b"\n"))
        if "-b" in sections:
            if len(head) < len(content):
                # The empty line after the header is the body's first record in Postfix's
                # queue file: -b shows it, -h does not.
                out.write(b"\n")
            out.write(body.replace(b"\r\n", b"\n"))
        if envelope:
            out.write(f"*** HEADER EXTRACTED {name} ***\n".encode())
            # Postfix's cleanup writes the FILTER action and REDIRECT it kept first there
            # (cleanup_extracted_process()).
            if env.attrs.get("filter"):
                out.write(f"content_filter: {env.attrs['filter']}\n".encode())
            if env.attrs.get("redirect_to"):
                out.write(f"redirect_to: {env.attrs['redirect_to']}\n".encode())
            # What cleanup writes at the start of the extracted segment (its encoding
            # again), as Postfix's cleanup_extracted_process().
            if env.body_type in _ENCODING:
                out.write(f"named_attribute: encoding={_ENCODING[env.body_type]}\n".encode())
            out.write("".join(f"{line}\n" for line in extracted).encode())
            out.write(f"*** MESSAGE FILE END {name} ***\n".encode())
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
