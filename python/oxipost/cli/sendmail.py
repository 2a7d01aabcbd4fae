"""sendmail(1): the Sendmail-compatible submission command.

    sendmail [-t] [-i|-oi] [-f sender] [-F full_name] [-N dsn] [-R ret] [-V envid]
             [-B 8BITMIME|7BIT] [-C config_dir|main.cf] [-bm|-bp|-bi|-I|-q] [recipient ...]
    sendmail -bd|-bl [-qinterval] | -qRsite | -qIqueueid

The message is read from standard input (LF or CRLF; without -i a line with a single "."
ends it), handed to postdrop's writer (maildrop/, durable and atomic), and pickup is
woken; pickup feeds it through cleanup into the queue. -t takes the recipients from To:,
Cc: and Bcc: (Bcc: is removed) in addition to the command line. -bp lists the queue
(mailq), -q flushes it (postqueue -f), -qR and -qI one destination or message (postqueue
-s, -i), -bi / -I rebuild the aliases (newaliases). -bd starts the mail system (postfix
start) in the background and exits 0 without waiting for it, as Postfix's.
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
    postdrop: warning: uid=UID: File too large    (over message_size_limit, postdrop's file
    sendmail: warning: mail_stream_cleanup: close error     size limit: see oxipost.cli.
    sendmail: fatal: SENDER(UID): message file too big      postdrop)
    sendmail: warning: command "PATH -r" exited with status N
    sendmail: fatal: SENDER(UID): unable to execute PATH -r: Application error
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import subprocess
import sys

from oxipost import tok822, user_acl
from oxipost.cli.postdrop import (
    CLEANUP_STAT_SIZE,
    SETGID_PROGRAM,
    config_dir_allowed,
    file_too_large,
)
from oxipost.config import Config, ConfigError, load_config, sendmail_config_dir
from oxipost.envelope import NOTIFY_WORDS, TRACE_USR_VRFY, notify_ok
from oxipost.log import command_message, refuse_maillog_file
from oxipost.pickup.maildrop import (
    Submission,
    drop,
    header_recipients,
    maildrop_dir,
    wake_pickup,
)

EX_TEMPFAIL = 75


def _fatal(text: str, cfg: Config | None = None) -> int:
    """msg_fatal's line on stderr, and in the log once main.cf is read; EX_TEMPFAIL, the
    status Postfix's sendmail exits with after any fatal error (its msg_cleanup)."""
    command_message(cfg, "sendmail", text, "fatal")
    return EX_TEMPFAIL


def _option_fatal(text: str, config_dir: str | None) -> int:
    """A fatal error of the command line, logged as Postfix's, which reads main.cf first."""
    return _fatal(text, _config_quietly(config_dir))


def _config_quietly(config_dir: str | None) -> Config | None:
    try:
        return load_config(config_dir, master_cf=False)
    except ConfigError:
        return None


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


def _tool_argv(tool: str, config_dir: str | None, *args: str) -> list[str]:
    argv = [sys.executable, "-m", f"oxipost.cli.{tool}"]
    if config_dir:
        argv += ["-c", config_dir]
    return [*argv, *args]


def _exec_tool(tool: str, config_dir: str | None, *args: str) -> int:
    os.execv(sys.executable, _tool_argv(tool, config_dir, *args))
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
    if status in (0, CLEANUP_STAT_SIZE):
        return status
    if status < 0:
        print(f'sendmail: warning: command "{command}" killed by signal {-status}', file=sys.stderr)
    else:
        print(
            f'sendmail: warning: command "{command}" exited with status {status}', file=sys.stderr
        )
    uid = os.getuid()
    return _fatal(f"{sub.sender}({uid}): unable to execute {command}: Application error", cfg)


class _Usage(Exception):
    """A fatal error of the command line; its text, and the -C directory to log it under."""

    def __init__(self, text: str, config_dir: str | None) -> None:
        super().__init__(text)
        self.config_dir = config_dir


@dataclasses.dataclass
class _CommandLine:
    """sendmail's options as Postfix's main() reads them, and the arguments after them."""

    mode: str = "enqueue"
    flags: set[str] = dataclasses.field(default_factory=set)
    opts: dict[str, str] = dataclasses.field(default_factory=dict)
    verbose: int = 0
    site_to_flush: str | None = None
    id_to_flush: str | None = None
    queue_time: str | None = None
    rcpts: list[str] = dataclasses.field(default_factory=list)


# Postfix's GETOPT_LIST: a letter followed by ':' takes an argument.
_GETOPT_LIST = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"
_TAKES_ARG = frozenset(_GETOPT_LIST[i - 1] for i, c in enumerate(_GETOPT_LIST) if c == ":")
_LETTERS = frozenset(_GETOPT_LIST.replace(":", ""))
_B_MODES = {"d": "daemon", "l": "daemon", "h": "ignore", "H": "ignore", "i": "newaliases"}
_B_MODES |= {"m": "enqueue", "p": "mailq", "s": "user"}


def _getopt(args: list[str]) -> tuple[list[tuple[str, str]], int]:
    """(letter, argument) of each option as getopt with Postfix's "+" finds them, up to
    the first argument that is not one, or "--"; ("?", complaint) for one it does not
    know or that lacks its argument; ("-q", "") for a bare "-q", which Postfix takes
    aside; ("warn", text) before an old form taken as another. And the index of the
    first argument after the options."""
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return found, i + 1
        if not a.startswith("-") or a == "-":
            break
        i += 1
        if a == "-q":
            found.append(("-q", ""))
            continue
        # Sendmail's old VERP forms, taken as -XV: "-V xy" (its argument then stays a
        # recipient) and "-Vxy", lengths in bytes as the C strings'.
        if a == "-V" and i < len(args) and len(os.fsencode(args[i])) == 2:
            found.append(("warn", "option -V is deprecated with Postfix 2.3; specify -XV instead"))
            found.append(("X", "V"))
            continue
        if a.startswith("-V") and len(os.fsencode(a)) == 4:
            text = f"option {a} is deprecated with Postfix 2.3; specify -X{a[1:]} instead"
            found += [("warn", text), ("X", a[1:])]
            continue
        for j in range(1, len(a)):
            c = a[j]
            if c not in _LETTERS:
                found.append(("?", f"invalid option -- '{c}'"))
            elif c not in _TAKES_ARG:
                found.append((c, ""))
            else:
                # The rest of this argument is the option's, or else the next argument.
                if j + 1 < len(a):
                    found.append((c, a[j + 1 :]))
                elif i < len(args):
                    found.append((c, args[i]))
                    i += 1
                else:
                    found.append(("?", f"option requires an argument -- '{c}'"))
                break
    return found, i


def _command_line(args: list[str]) -> _CommandLine:
    """The command line as Postfix's sendmail main() takes it; _Usage for the fatal
    errors it finds there, in its order."""
    cl = _CommandLine()
    options, rest = _getopt(args)
    complaints = [text for letter, text in options if letter == "?"]
    cl.opts.update(
        (letter, sendmail_config_dir(value)) for letter, value in options if letter == "C"
    )
    config_dir = cl.opts.get("C")
    # Postfix scans the options twice (for -C first): getopt complains in both.
    for text in complaints:
        print(f"sendmail: {text}", file=sys.stderr)
    for letter, value in options:
        kind = value[:1]
        if letter == "?":
            print(f"sendmail: {value}", file=sys.stderr)
            raise _Usage("usage: sendmail [options]", config_dir)
        if letter == "warn":
            _warn(value, config_dir)
        elif letter == "-q":
            if cl.mode == "daemon":
                _warn("ignoring -q option in daemon mode", config_dir)
            else:
                cl.mode = "flush"
        elif letter == "b" and _B_MODES.get(kind) == "daemon":
            if cl.mode == "flush":
                _warn("ignoring -q option in daemon mode", config_dir)
            cl.mode = "daemon"
        elif letter == "n":
            raise _Usage("-n option not supported", config_dir)
        elif letter == "B" and value not in ("8BITMIME", "7BIT"):
            raise _Usage("-B option needs 8BITMIME or 7BIT", config_dir)
        elif letter == "X" and kind != "V":
            raise _Usage(f"unsupported: -X{kind}", config_dir)
        elif letter == "X":
            cl.opts["X"] = _verp_delimiters(value[1:], config_dir)
        elif letter in ("N", "R", "V"):
            checked = _dsn_option(letter, value, config_dir)
            if checked is not None:
                cl.opts[letter] = checked
        elif letter == "b" and kind == "v":
            cl.flags.add("bv")
        elif letter == "b":
            if kind not in _B_MODES:
                raise _Usage(f"unsupported: -b{kind}", config_dir)
            cl.mode = _B_MODES[kind]
        elif letter == "I":
            cl.mode = "newaliases"
        elif letter == "o" and value == "A":
            raise _Usage("-oA requires pathname", config_dir)
        elif letter == "i" or (letter == "o" and kind == "i"):
            cl.flags.add("i")
        elif letter == "q":
            if kind.isdigit():
                cl.queue_time = value
            elif kind in ("R", "I") and not value[1:]:
                raise _Usage(
                    f"specify: -q{kind}{'sitename' if kind == 'R' else 'queueid'}", config_dir
                )
            elif kind == "R":
                cl.site_to_flush = value[1:]
            elif kind == "I":
                cl.id_to_flush = value[1:]
            else:
                raise _Usage(f"-q{kind} is not implemented", config_dir)
        elif letter == "t":
            cl.flags.add("t")
        elif letter == "v":
            cl.verbose += 1
        elif letter in ("f", "r"):
            cl.opts["f"] = value
        elif letter in _TAKES_ARG and letter != "C":
            cl.opts[letter] = value
    cl.rcpts = args[rest:]
    for given, text in (
        ("t" in cl.flags, "-t"),
        (cl.site_to_flush, "-qR"),
        (cl.id_to_flush, "-qI"),
    ):
        if given and cl.mode != "enqueue":
            raise _Usage(f"{text} can be used only in delivery mode", config_dir)
    if "bv" in cl.flags:
        conflicts = {"-t": "t" in cl.flags, "-N": "N" in cl.opts, "-R": "R" in cl.opts}
        conflicts["-v"] = cl.verbose == 1
        for text, given in conflicts.items():
            if given:
                raise _Usage(f"{text} option cannot be used with -bv", config_dir)
    return cl


def _verp_delimiters(given: str, config_dir: str | None) -> str:
    """-XV's delimiters (default_verp_delimiters without any), as verp_delims_verify
    takes them: two of verp_delimiter_filter."""
    cfg = _config_quietly(config_dir)
    if not given:
        return cfg.get("default_verp_delimiters") if cfg is not None else "+="
    allowed = cfg.get("verp_delimiter_filter") if cfg is not None else "-=+"
    if len(given) != 2 or not all(c in allowed for c in given):
        raise _Usage(f"-V requires two characters from {allowed}", config_dir)
    return given


def _dsn_option(letter: str, value: str, config_dir: str | None) -> str | None:
    """-N's NOTIFY words (comma-separated), -R's RET or -V's ENVID as Postfix's sendmail
    takes them (dsn_notify_mask, dsn_ret_code, a printable ENVID of at most 100
    characters); None, with its warning, for a value it ignores."""
    if letter == "V":
        if len(os.fsencode(value)) > 100:
            _warn("too long -V option value -- ignored", config_dir)
        elif not all(" " <= c <= "~" for c in value):
            _warn("bad syntax in -V option value -- ignored", config_dir)
        else:
            return value
        return None
    if letter == "R":
        if value.upper() in ("FULL", "HDRS"):
            return value.upper()
    else:
        words = [w for w in re.split(r"[\s,]+", value) if w]
        unknown = [w for w in words if w.upper() not in NOTIFY_WORDS]
        if unknown:
            _warn(f'unknown DSN NOTIFY command value "{unknown[0]}" in "{value}"', config_dir)
        elif notify_ok({w.upper() for w in words}):
            return ",".join(dict.fromkeys(w.upper() for w in words))
    _warn(f"bad -{letter} option value -- ignored", config_dir)
    return None


def _warn(text: str, config_dir: str | None) -> None:
    command_message(_config_quietly(config_dir), "sendmail", text, "warning")


# The modes that run another command, and their refusal of recipients.
_NO_RECIPIENT = {
    "mailq": "display queue mode requires no recipient",
    "flush": "flush queue mode requires no recipient",
    "daemon": "daemon mode requires no recipient",
    "newaliases": "alias initialization mode requires no recipient",
    "user": "stand-alone mode requires no recipient",
}


def main(argv: list[str] | None = None) -> int:
    """Run sendmail with sys.argv; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cl = _command_line(args)
    except _Usage as e:
        usage: _Usage | None = e
        config_dir = e.config_dir
    else:
        usage = None
        config_dir = cl.opts.get("C")
    # Postfix's finds -C first and reads main.cf, which sets up its logging, before it
    # makes sense of the rest of the command line.
    early = _config_quietly(config_dir)
    if early is not None and refuse_maillog_file(early, "sendmail"):
        return EX_TEMPFAIL
    if usage is not None:
        return _fatal(str(usage), early)
    opts, flags, rcpts = cl.opts, cl.flags, cl.rcpts
    # RFC 1652's body type, MAIL FROM's BODY= (the queue file's encoding record).
    body_type = opts.get("B", "")
    # A queue run interval means something to the daemon mode only (Sendmail's -q30m).
    if cl.queue_time is not None and cl.mode != "daemon":
        return 0
    if cl.mode == "ignore":
        return 0
    if cl.mode in _NO_RECIPIENT and rcpts:
        return _option_fatal(_NO_RECIPIENT[cl.mode], config_dir)
    if cl.mode == "enqueue" and (cl.site_to_flush or cl.id_to_flush) and rcpts:
        what = "flush site" if cl.site_to_flush else "flush queue_id"
        return _option_fatal(f"{what} requires no recipient", config_dir)
    # Postfix's passes each -v on to the command it runs, but a lone -v in delivery mode
    # asks for a delivery report (-qR, -qI), not verbose logging.
    verbose = [] if cl.mode == "enqueue" and cl.verbose == 1 else ["-v"] * cl.verbose
    if cl.mode == "mailq":
        return _exec_tool("postqueue", config_dir, "-p", *verbose)
    if cl.mode == "flush":
        return _exec_tool("postqueue", config_dir, "-f", *verbose)
    if cl.mode == "enqueue" and cl.site_to_flush:
        return _exec_tool("postqueue", config_dir, "-s", cl.site_to_flush, *verbose)
    if cl.mode == "enqueue" and cl.id_to_flush:
        return _exec_tool("postqueue", config_dir, "-i", cl.id_to_flush, *verbose)
    if cl.mode == "newaliases":
        return _exec_tool("newaliases", config_dir, *verbose)
    if cl.mode == "daemon":
        # Postfix's mail_run_background(): `postfix start` is not waited for, and what it
        # says or exits with (the mail system runs already, or not as root) is not
        # sendmail's.
        try:
            os.posix_spawn(
                sys.executable, _tool_argv("postfix", config_dir, *verbose, "start"), os.environ
            )
        except OSError as e:
            command_message(early, "sendmail", f"fork {sys.executable}: {e.strerror}", "warning")
            return 1
        return 0
    try:
        cfg = load_config(config_dir, master_cf=False, stderr_as="sendmail")
    except ConfigError as e:
        return _fatal(str(e))
    who = user_acl.refused(cfg, "authorized_submit_users", os.getuid())
    if who is not None:
        user_acl.deny(cfg, "sendmail", f"User {who}({os.getuid()}) is not allowed to submit mail")
        return EX_TEMPFAIL
    if cl.mode == "user":
        # asyncio and smtpd only for -bs: every other submission starts without them.
        from oxipost.cli import sendmail_bs

        try:
            return sendmail_bs.run(cfg)
        except sendmail_bs.SmtpdRefused as e:
            return _fatal(str(e), cfg)
    sender = opts.get("f", opts.get("r"))
    if sender is None:
        sender = _login()
    else:
        given = _addresses(sender)
        if len(given) > 1:
            warning = f"-f option specified malformed sender: {sender}"
            command_message(cfg, "sendmail", warning, "warning")
        sender = given[0] if given else ""
    if "X" in opts and not sender:
        return _fatal(f"({os.getuid()}): -V option requires non-null sender address", cfg)
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
        dsn_notify=opts.get("N", ""),
        dsn_ret=opts.get("R", ""),
        dsn_envid=opts.get("V", ""),
        trace_flags=TRACE_USR_VRFY if verify else 0,
        body_type=body_type,
        verp_delims=opts.get("X", ""),
    )
    top = cfg.path("queue_directory")
    if os.getuid() != 0 and not os.access(maildrop_dir(top), os.W_OK | os.X_OK):
        status = _postdrop(cfg, sub)
    elif file_too_large(cfg, sub):
        status = CLEANUP_STAT_SIZE
    else:
        try:
            drop(top, sub)
        except OSError as e:
            return _fatal(f"cannot write maildrop file: {e.strerror or e}", cfg)
        wake_pickup(top)
        status = 0
    if status == CLEANUP_STAT_SIZE:
        command_message(cfg, "sendmail", "mail_stream_cleanup: close error", "warning")
        return _fatal(f"{sender}({os.getuid()}): message file too big", cfg)
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
