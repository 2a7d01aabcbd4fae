"""sendmail(1): the Sendmail-compatible submission command.

    sendmail [-t] [-i|-oi] [-f sender] [-F full_name] [-N dsn] [-R ret] [-V envid]
             [-C config_dir] [-bm|-bp|-bi|-I|-q] [recipient ...]

The message is read from standard input (LF or CRLF; without -i a line with a single "."
ends it), handed to postdrop's writer (maildrop/, durable and atomic), and pickup is
woken; pickup feeds it through cleanup into the queue. -t takes the recipients from To:,
Cc: and Bcc: (Bcc: is removed) in addition to the command line. -bp lists the queue
(mailq), -q flushes it (postqueue -f), -bi / -I rebuild the aliases (newaliases).
-bs (SMTP on stdin) and -bv (address verification) are not supported yet.

Diagnostics, as Postfix: "sendmail: fatal: Recipient addresses must be specified on the
command line or via the -t option" (exit 64, EX_USAGE); a maildrop write error exits 75
(EX_TEMPFAIL) so the caller keeps the message.
"""

from __future__ import annotations

import os
import pwd
import sys

from oxipost.config import ConfigError, load_config
from oxipost.pickup.maildrop import Submission, drop, wake_pickup

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

_WITH_ARG = {"f", "F", "N", "R", "V", "C", "B", "h", "L", "O", "X", "r"}


def _fatal(text: str, code: int) -> int:
    print(f"sendmail: fatal: {text}", file=sys.stderr)
    return code


def _read_message(stream: object, dot_ends: bool) -> bytes:
    data = sys.stdin.buffer.read() if stream is None else stream.read()  # type: ignore[attr-defined]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        line = line.removesuffix(b"\r")
        if dot_ends and line == b".":
            break
        out.append(line + b"\r\n")
    return b"".join(out)


def _exec_tool(tool: str, config_dir: str | None, *args: str) -> int:
    argv = [sys.executable, "-m", f"oxipost.cli.{tool}"]
    if config_dir:
        argv += ["-c", config_dir]
    os.execv(sys.executable, [*argv, *args])
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    """Run sendmail with sys.argv; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    opts: dict[str, str] = {}
    flags: set[str] = set()
    rcpts: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            rcpts.extend(args[i:])
            break
        if not a.startswith("-") or a == "-":
            rcpts.append(a)
            continue
        if a in ("-oi", "-i"):
            flags.add("i")
        elif a.startswith("-o"):
            continue  # Sendmail options: accepted and ignored, as Postfix does
        elif a.startswith("-b"):
            flags.add(a[1:])
        elif a == "-I":
            flags.add("bi")
        elif a.startswith("-q"):
            flags.add("q")
        elif a in ("-t", "-v", "-n", "-U", "-G"):
            flags.add(a[1])
        elif a[1] in _WITH_ARG:
            if len(a) > 2:
                opts[a[1]] = a[2:]
            elif i < len(args):
                opts[a[1]] = args[i]
                i += 1
            else:
                return _fatal(f"option requires an argument -- '{a[1]}'", EX_USAGE)
        else:
            return _fatal(f"invalid option -- '{a[1:]}'", EX_USAGE)
    config_dir = opts.get("C")
    if "bp" in flags:
        return _exec_tool("postqueue", config_dir, "-p")
    if "q" in flags:
        return _exec_tool("postqueue", config_dir, "-f")
    if "bi" in flags:
        return _exec_tool("newaliases", config_dir)
    if "bs" in flags or "bv" in flags:
        return _fatal("-bs and -bv are not supported", EX_UNAVAILABLE)
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        return _fatal(str(e), EX_TEMPFAIL)
    if not rcpts and "t" not in flags:
        return _fatal(
            "Recipient addresses must be specified on the command line or via the -t option",
            EX_USAGE,
        )
    sender = opts.get("f", opts.get("r"))
    if sender is None:
        try:
            sender = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            sender = f"#{os.getuid()}"
    sender = sender.strip()
    if sender in ("<>", ""):
        sender = ""
    elif sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    content = _read_message(None, dot_ends="i" not in flags)
    sub = Submission(
        sender=sender,
        recipients=rcpts,
        content=content,
        extract="t" in flags,
        full_name=opts.get("F", ""),
        dsn_notify=opts.get("N", "").upper(),
        dsn_ret=opts.get("R", "").upper(),
        dsn_envid=opts.get("V", ""),
    )
    top = cfg.path("queue_directory")
    try:
        drop(top, sub)
    except OSError as e:
        return _fatal(f"cannot write maildrop file: {e.strerror or e}", EX_TEMPFAIL)
    wake_pickup(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
