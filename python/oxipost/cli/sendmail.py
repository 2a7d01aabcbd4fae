"""sendmail(1): the Sendmail-compatible submission command.

    sendmail [-t] [-i|-oi] [-f sender] [-F full_name] [-N dsn] [-R ret] [-V envid]
             [-B 8BITMIME|7BIT] [-C config_dir] [-bm|-bp|-bi|-I|-q] [recipient ...]

The message is read from standard input (LF or CRLF; without -i a line with a single "."
ends it), handed to postdrop's writer (maildrop/, durable and atomic), and pickup is
woken; pickup feeds it through cleanup into the queue. -t takes the recipients from To:,
Cc: and Bcc: (Bcc: is removed) in addition to the command line. -bp lists the queue
(mailq), -q flushes it (postqueue -f), -bi / -I rebuild the aliases (newaliases).
-bs speaks SMTP on stdin/stdout through oxipost's smtpd (the client is
localhost[127.0.0.1], as Postfix's stand-alone mode), straight into the queue. -bv reads
no message: it queues a probe (From: the sender, "Subject: probe", To: the recipients) with
the TRACE_USR_VRFY flag, which the delivery agents do not deliver: each says what it would
do, and the sender is mailed a "Mail Delivery Status Report" (oxipost.bounce); sendmail
says "Mail Delivery Status Report will be mailed to <SENDER>." as Postfix's does.

A user who may not write maildrop/ itself (anyone but root and the queue's owner) hands
the maildrop record to the set-gid postdrop door on its standard input, as Postfix's
sendmail runs `$command_directory/postdrop -r` (see oxipost.cli.postdrop); a -C or
$MAIL_CONFIG directory is then passed on as -c, and must be one such a user may name
(alternate_config_directories of the default main.cf), as in Postfix.

Diagnostics, as Postfix 3.7's sendmail, which exits 75 (EX_TEMPFAIL) after every fatal
error, so the caller keeps the message, and logs each once main.cf is read:
    sendmail: fatal: SENDER(UID): Recipient addresses must be specified on the command
        line or via the -t option      (after the message is read; SENDER is -f's address
        or the login name)
    sendmail: fatal: SENDER(UID): No recipient addresses found in message header  (-t)
    sendmail: warning: -f option specified malformed sender: ARG   (more than one address:
        the first is the sender)
    sendmail: invalid option -- 'x'  (twice: Postfix's getopt runs twice) then
    sendmail: fatal: usage: sendmail [options]     (also for a missing option argument)
    sendmail: fatal: -n option not supported
    sendmail: fatal: -B option needs 8BITMIME or 7BIT
    sendmail: fatal: -t option cannot be used with -bv
    sendmail: fatal: User NAME(UID) is not allowed to submit mail  (authorized_submit_users)
    sendmail: fatal: cannot write maildrop file: STRERROR
    sendmail: warning: command "PATH -r" exited with status N
    sendmail: fatal: SENDER(UID): unable to execute PATH -r: Application error
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import stat
import subprocess
import sys
import threading
import typing

from oxipost import tok822, user_acl
from oxipost.cli.postdrop import SETGID_PROGRAM, config_dir_allowed
from oxipost.config import Config, ConfigError, load_config
from oxipost.envelope import TRACE_USR_VRFY
from oxipost.log import command_message
from oxipost.pickup.maildrop import (
    Submission,
    drop,
    header_recipients,
    maildrop_dir,
    wake_pickup,
)
from oxipost.smtpd.listener import Connection

EX_TEMPFAIL = 75

_WITH_ARG = {"f", "F", "N", "R", "V", "C", "B", "h", "L", "O", "X", "r"}


def _fatal(text: str, cfg: Config | None = None) -> int:
    """msg_fatal's line on stderr, and in the log once main.cf is read; EX_TEMPFAIL, the
    status Postfix's sendmail exits with after any fatal error (its msg_cleanup)."""
    if cfg is None:
        print(f"sendmail: fatal: {text}", file=sys.stderr)
    else:
        command_message(cfg, "sendmail", text, "fatal")
    return EX_TEMPFAIL


def _option_fatal(text: str, config_dir: str | None) -> int:
    """A fatal error of the options, logged as Postfix's, which reads main.cf first."""
    try:
        cfg = load_config(config_dir, master_cf=False)
    except ConfigError:
        return _fatal(text)
    return _fatal(text, cfg)


def _addresses(arg: str) -> list[str]:
    """The addresses of a command-line argument parsed as an address header, internal
    form, as Postfix's sendmail reads -f and each recipient ("a, b", "Name <a>")."""
    found = []
    tok = tok822.parse(arg)
    while tok is not None:
        if tok.type == tok822.ADDR:
            found.append(tok822.internalize(tok.head))
        tok = tok.next
    return found


def _usage(text: str, config_dir: str | None) -> int:
    """getopt's complaint, twice as Postfix's sendmail scans its options twice (for -C,
    then for the rest), then its usage fatal error."""
    print(f"sendmail: {text}\nsendmail: {text}", file=sys.stderr)
    return _option_fatal("usage: sendmail [options]", config_dir)


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


def _fullname() -> str:
    """The submitter's full name when sendmail -F gives none, as Postfix's fullname():
    $NAME, else the passwd gecos up to its first ',', ';' or '%', each '&' the login name
    with its first letter in upper case."""
    name = os.environ.get("NAME")
    if name is not None:
        return name
    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:
        return ""
    gecos = pw.pw_gecos
    for stop in ",;%":
        gecos = gecos.partition(stop)[0]
    return gecos.replace("&", pw.pw_name[:1].upper() + pw.pw_name[1:])


def _login() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"#{os.getuid()}"


def _postdrop(cfg: Config, sub: Submission) -> int:
    """Hand sub to the set-gid postdrop, as Postfix's sendmail does for every user."""
    config_dir = cfg.config_dir if cfg.explicit_dir else None
    refused = config_dir_allowed("sendmail", config_dir)
    if refused:
        print(refused, file=sys.stderr)
        return EX_TEMPFAIL
    argv = [SETGID_PROGRAM, "-r", *(["-c", config_dir] if config_dir else [])]
    command = " ".join(argv)
    try:
        status = subprocess.run(argv, input=sub.encode(), stdout=subprocess.DEVNULL).returncode
    except OSError as e:
        print(f"sendmail: fatal: execvp {SETGID_PROGRAM}: {e.strerror}", file=sys.stderr)
        status = 1
    if status == 0:
        return 0
    if status < 0:
        print(f'sendmail: warning: command "{command}" killed by signal {-status}', file=sys.stderr)
    else:
        print(
            f'sendmail: warning: command "{command}" exited with status {status}', file=sys.stderr
        )
    uid = os.getuid()
    return _fatal(f"{sub.sender}({uid}): unable to execute {command}: Application error", cfg)


class _StdioConnection(Connection):
    """stdin and stdout as the connection of a client on the local host, as Postfix's
    smtpd in stand-alone mode takes a non-socket client to be localhost[127.0.0.1]."""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 0) if name == "peername" else default

    def connection_lost(self, exc: Exception | None) -> None:
        # stdin's end: the client said all it will; replies still go to stdout.
        self.input_lost(exc)


class _Stdout(asyncio.Protocol):
    """stdout's side of a _StdioConnection: its flow control and its end."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = conn.loop.create_future()

    def pause_writing(self) -> None:
        self.conn.pause_writing()

    def resume_writing(self) -> None:
        self.conn.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.output_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


def _pipe_end(fd: int, mode: str) -> typing.IO[bytes]:
    """fd itself when asyncio can watch it (pipe, socket, tty); else a pipe that a thread
    copies to or from it (a regular file given as stdin or stdout)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return os.fdopen(os.dup(fd), mode + "b", buffering=0)
    rfd, wfd = os.pipe()

    def copy(src: int, dst: int) -> None:
        try:
            while chunk := os.read(src, 65536):
                os.write(dst, chunk)
        finally:
            os.close(src if src not in (fd,) else dst)

    if mode == "r":
        threading.Thread(target=copy, args=(fd, wfd), daemon=True).start()
        return os.fdopen(rfd, "rb", buffering=0)
    threading.Thread(target=copy, args=(rfd, fd), daemon=True).start()
    return os.fdopen(wfd, "wb", buffering=0)


async def _smtp_on_stdio(cfg: Config) -> int:
    """sendmail -bs: one SMTP session on stdin/stdout with oxipost's smtpd, straight into
    the queue (Postfix runs smtpd in stand-alone mode for this)."""
    from oxipost.qmgr.queue import Queue
    from oxipost.smtpd.server import Session
    from oxipost.smtpd.service import build_server

    # A local user piping a whole dialogue is not a smuggling client: no sync check.
    cfg = Config(
        cfg.config_dir,
        cfg.settings,
        cfg.services,
        {**cfg.overrides, "smtpd_forbid_unauth_pipelining": "no"},
    )
    loop = asyncio.get_running_loop()
    conn = _StdioConnection()
    await loop.connect_read_pipe(lambda: conn, _pipe_end(sys.stdin.fileno(), "r"))
    stdout = _Stdout(conn)
    conn.out, _ = await loop.connect_write_pipe(lambda: stdout, _pipe_end(sys.stdout.fileno(), "w"))
    queue = Queue.open(cfg, writer=f"sendmail-{os.getpid()}")
    try:
        try:
            server = build_server(cfg, queue)
        except Exception as e:  # smtpd refuses its configuration: say so, as Postfix's would
            return _fatal(str(e), cfg)
        server.anvil = None  # a stand-alone session is never counted, as Postfix's
        await Session(server, conn).run()
        # The session closed stdout: its last replies are out when the pipe says so.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdout.closed, 30)
    finally:
        queue.close()
    return 0


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
                return _usage(f"option requires an argument -- '{a[1]}'", opts.get("C"))
        else:
            return _usage(f"invalid option -- '{a[1]}'", opts.get("C"))
        if a == "-n":
            return _option_fatal("-n option not supported", opts.get("C"))
    # RFC 1652's body types, MAIL FROM's BODY= (the queue file's encoding record), judged
    # with the options as Postfix's getopt loop does, before any mode.
    body_type = opts.get("B", "")
    if body_type not in ("", "8BITMIME", "7BIT"):
        return _option_fatal("-B option needs 8BITMIME or 7BIT", opts.get("C"))
    config_dir = opts.get("C")
    if "bp" in flags:
        return _exec_tool("postqueue", config_dir, "-p")
    if "q" in flags:
        return _exec_tool("postqueue", config_dir, "-f")
    if "bi" in flags:
        return _exec_tool("newaliases", config_dir)
    try:
        cfg = load_config(config_dir, master_cf=False, stderr_as="sendmail")
    except ConfigError as e:
        return _fatal(str(e))
    if "bv" in flags and "t" in flags:
        return _fatal("-t option cannot be used with -bv", cfg)
    if "bs" in flags:
        return asyncio.run(_smtp_on_stdio(cfg))
    who = user_acl.refused(cfg, "authorized_submit_users", os.getuid())
    if who is not None:
        user_acl.deny(cfg, "sendmail", f"User {who}({os.getuid()}) is not allowed to submit mail")
        return EX_TEMPFAIL
    sender = opts.get("f", opts.get("r"))
    if sender is None:
        sender = _login()
    else:
        given = _addresses(sender)
        if len(given) > 1:
            warning = f"-f option specified malformed sender: {sender}"
            command_message(cfg, "sendmail", warning, "warning")
        sender = given[0] if given else ""
    # Each argument as an address list; one without an address is an empty recipient
    # (cleanup's $empty_address_recipient).
    envelope_rcpts = [addr for arg in rcpts for addr in (_addresses(arg) or [""])]
    verify = "bv" in flags
    if verify:
        content = _probe(sender, rcpts)
    else:
        content = _read_message(None, dot_ends="i" not in flags)
    # Judged once the message is read, as Postfix's sendmail counts what it wrote.
    if not envelope_rcpts and "t" not in flags:
        text = "Recipient addresses must be specified on the command line or via the -t option"
        return _fatal(f"{sender}({os.getuid()}): {text}", cfg)
    if not envelope_rcpts and not header_recipients(content):
        text = "No recipient addresses found in message header"
        return _fatal(f"{sender}({os.getuid()}): {text}", cfg)
    sub = Submission(
        sender=sender,
        recipients=envelope_rcpts,
        content=content,
        extract="t" in flags,
        full_name=opts["F"] if "F" in opts else _fullname(),
        dsn_notify=opts.get("N", "").upper(),
        dsn_ret=opts.get("R", "").upper(),
        dsn_envid=opts.get("V", ""),
        trace_flags=TRACE_USR_VRFY if verify else 0,
        body_type=body_type,
    )
    top = cfg.path("queue_directory")
    if os.getuid() != 0 and not os.access(maildrop_dir(top), os.W_OK | os.X_OK):
        status = _postdrop(cfg, sub)
    else:
        try:
            drop(top, sub)
        except OSError as e:
            return _fatal(f"cannot write maildrop file: {e.strerror or e}", cfg)
        wake_pickup(top)
        status = 0
    if status == 0 and verify:
        # Postfix's "don't leave them in the dark".
        print(f"Mail Delivery Status Report will be mailed to <{sender}>.", flush=True)
    return status


def _probe(sender: str, rcpts: list[str]) -> bytes:
    """What Postfix's sendmail -bv queues instead of a message: a From: (none for the null
    sender), "Subject: probe" and a To: listing the recipients as given, one a line."""
    lines = [f"From: {sender}"] if sender else []
    lines.append("Subject: probe")
    for i, r in enumerate(rcpts):
        lines.append(("To:\t" if i == 0 else "\t") + r + ("," if i < len(rcpts) - 1 else ""))
    return "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")


if __name__ == "__main__":
    sys.exit(main())
