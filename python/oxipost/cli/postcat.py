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
from collections.abc import Sequence

from oxipost import _core
from oxipost.cleanup.records import ENCODING, envelope_records, recipient_records
from oxipost.config import ConfigError, load_config
from oxipost.qmgr.queue import QueueState

PROG = "postcat"


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
            if env.body_type in ENCODING:
                out.write(f"named_attribute: encoding={ENCODING[env.body_type]}\n".encode())
            out.write("".join(f"{line}\n" for line in extracted).encode())
            out.write(f"*** MESSAGE FILE END {name} ***\n".encode())
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
