"""postcat(1): show a queued message.

    postcat [-c config_dir] [-ehb] -q ID ...

The layout is Postfix's: `*** ENVELOPE RECORDS queue/ID ***` with one `name: value` per
envelope record, `*** MESSAGE CONTENTS queue/ID ***`, the content, and `*** MESSAGE FILE END
queue/ID ***`. -e shows only the envelope, -h only the header, -b only the body.
Diagnostics: `postcat: fatal: open queue file ID: No such file or directory` (exit 1).
"""

from __future__ import annotations

import getopt
import sys
import time
from collections.abc import Sequence

from oxipost import _core
from oxipost.config import ConfigError, load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import MessageInfo, QueueState

PROG = "postcat"


# Postfix's dsn_mask.h bits, as its queue file and postcat show RET= and NOTIFY=.
_RET_FLAGS = {"FULL": 1, "HDRS": 2}
_NOTIFY_FLAGS = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}


def envelope_records(info: MessageInfo, env: Envelope) -> list[str]:
    stamp = time.asctime(time.localtime(env.arrival_time))
    lines = [
        f"message_size: {info.size:>15} {0:>15} {env.rcpt_count:>15}",
        f"message_arrival_time: {stamp}",
        f"create_time: {stamp}",
    ]
    attrs = {
        "client_name": env.client_name,
        "client_address": env.client_addr,
        "helo_name": env.helo_name,
        "protocol_name": env.protocol,
        "sasl_method": env.sasl_method,
        "sasl_username": env.sasl_username,
        "sasl_sender": env.sasl_sender,
        "envelope_id": env.envid,
        **env.attrs,
    }
    lines += [f"named_attribute: {k}={v}" for k, v in attrs.items() if v]
    if env.ret:
        lines.append(f"named_attribute: ret_flags={_RET_FLAGS.get(env.ret, 0)}")
    lines.append(f"sender: {env.sender}")
    canceled = iter(env.canceled)
    pending = next(canceled, None)
    for i in range(len(env.recipients) + 1):
        # A recipient a Milter application deleted stays where it was, canceled.
        while pending is not None and pending[0] <= i:
            lines += _recipient_records(pending[1], "canceled_recipient")
            pending = next(canceled, None)
        if i < len(env.recipients):
            kind = "done_recipient" if i in info.done else "recipient"
            lines += _recipient_records(env.recipients[i], kind)
    return lines


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
        if "-e" in sections:
            out.write(f"*** ENVELOPE RECORDS {name} ***\n".encode())
            out.write(("\n".join(envelope_records(info, env)) + "\n").encode())
        if sections & {"-h", "-b"}:
            out.write(f"*** MESSAGE CONTENTS {name} ***\n".encode())
            if "-h" in sections:
                out.write(head.replace(b"\r\n", b"\n"))
            if "-b" in sections:
                if "-h" in sections:
                    out.write(b"\n")
                out.write(body.replace(b"\r\n", b"\n"))
        out.write(f"*** MESSAGE FILE END {name} ***\n".encode())
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
