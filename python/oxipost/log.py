"""Logging in Postfix's format, so pflogsumm, fail2ban filters and log exporters keep working.

    Nov 25 02:19:53 mx postfix/qmgr[6663]: 15C5B160C79: removed

`get_logger(service, cfg)` returns a logger for one program ("smtpd", "master", ...). Lines
go to `maillog_file` when it is set, else to syslog with `syslog_facility`. The file is
written with O_APPEND and whole lines only, so processes sharing it never interleave inside
a line; the lines a process logs during one turn of its event loop go out in one write at
the end of the turn (a busy smtpd or qmgr logs several per message, and a write each cost
more than the formatting). The program tag
is `$syslog_name/service`; a master.cf `-o syslog_name=postfix/submission` gives
`postfix/submission/smtpd`, as in Postfix. Severity prefixes are Postfix's: `warning: `,
`error: `, `fatal: ` (then exit 1), `panic: ` (then abort).

A line's text is Postfix's msg_vprintf() output: printable() with `?` for each control
character (newline, CR, TAB included) and each byte that is not UTF-8, UTF-8 kept only
with smtputf8_enable = yes (util_utf8_enable); then, as msg_logger and msg_syslog write
it, cut to its first 2,000 bytes (MSG_LOGGER_RECLEN), the severity prefix not counted.
maillog_file lines are msg_logger's: `Mmm dd HH:MM:SS` with the day zero-padded
(strftime's %d) and the first label of myhostname.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import sys
import syslog
import time
import traceback
from collections.abc import Iterable
from typing import NoReturn, Protocol

from oxipost.printable import printable, truncate

# The ident syslog.openlog last set: one per process, switched when another program name logs.
_syslog_ident: str | None = None

_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


class _ConfigLike(Protocol):
    def get(self, name: str) -> str: ...

    def get_bool(self, name: str) -> bool: ...


# The stamp of the second last formatted: a busy service logs thousands of lines a second,
# and localtime() plus formatting cost more than the rest of a line.
_stamp_second = -1
_stamp = ""


# Postfix's msg_logger and msg_syslog cut a record's text (after the severity) to this
# many bytes: "unlimited logging is a liability".
RECORD_LIMIT = 2000


def format_line(when: float, host: str, tag: str, pid: int, text: str) -> str:
    """One log line: `Mon DD HH:MM:SS host tag[pid]: text` (the day zero-padded, as
    msg_logger's strftime("%b %d %H:%M:%S") writes maillog_file)."""
    global _stamp_second, _stamp
    second = int(when)
    if second != _stamp_second:
        t = time.localtime(second)
        _stamp = (
            f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _stamp_second = second
    return f"{_stamp} {host} {tag}[{pid}]: {text}"


_MILLION = 1_000_000
# The decimals shown at each resolution (in microseconds) format_tv() can arrive at.
_DECIMALS = {_MILLION // 10**k: k for k in range(7)}


def format_tv(seconds: float, sig_dig: int, max_dig: int) -> str:
    """A time span as Postfix's format_tv() writes the delays of its delivery lines: whole
    seconds from 10s up, one decimal below that, sig_dig significant digits below 1s but
    never more than max_dig decimals (delay_logging_resolution_limit), rounded half up,
    trailing zeros dropped: 0.037 is "0.04", 0.004 is "0", 1.25 is "1.3", 12.5 is "13"."""
    usec = round(seconds * _MILLION)
    if usec <= 0 and 0 <= max_dig <= 6:
        # Most delays of a local delivery (qmgr logs five a line).
        return "0"
    sec, usec = divmod(max(0, usec), _MILLION)
    ures = _MILLION // 10**max_dig
    wid = 10**sig_dig
    # The resolution drops for larger numbers, so that irrelevant digits are not shown.
    if ures < _MILLION:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (_MILLION // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= _MILLION:
            sec, usec = sec + 1, usec - _MILLION
    if usec < ures:
        return str(sec)
    decimals = _DECIMALS.get(ures)
    if decimals is not None:
        # The digits down to the resolution, trailing zeros dropped, as Postfix's loop
        # writes them one by one.
        return f"{sec}.{f'{usec:06d}'[:decimals].rstrip('0')}"
    digits = []
    rem, n = usec, _MILLION // 10
    while rem >= ures and n > 0:
        digits.append(str(rem // n))
        rem %= n
        n //= 10
    return f"{sec}." + "".join(digits)


# os.getpid() is a system call each time; the pid changes only in a forked child.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()
    _pending.clear()  # the parent writes its own


# Per maillog file: a descriptor of it and the lines of this loop turn not yet written, in
# the order they were logged whichever logger of this process logged them (qmgr's and the
# agents' it runs each have their own descriptor: an agent's fatal line comes before
# qmgr's warning about it, its delivery line before qmgr's "removed").
_pending: dict[str, tuple[int, list[bytes]]] = {}


def _write(fd: int, name: str, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError as e:
        # Logging must never take the service down; say so where someone may see it.
        print(f"cannot log to {name}: {e}", file=sys.stderr)


def flush() -> None:
    """Write the lines held for the end of the loop turn (at exit, before a fatal exit)."""
    while _pending:
        name, (fd, lines) = _pending.popitem()
        _write(fd, name, b"".join(lines))


atexit.register(flush)


os.register_at_fork(after_in_child=_forked)


class Logger:
    """A Postfix-style logger for one program."""

    def __init__(
        self,
        service: str,
        syslog_name: str = "postfix",
        maillog_file: str = "",
        host: str | None = None,
        facility: str = "mail",
        echo_stderr: bool = False,
        utf8: bool = True,
    ) -> None:
        self.service = service
        self.tag = f"{syslog_name}/{service}"
        self.maillog_file = maillog_file
        # msg_logger names the host by the first label of myhostname.
        self.host = (host or socket.gethostname()).split(".", 1)[0]
        self.echo_stderr = echo_stderr
        # Postfix's util_utf8_enable (smtputf8_enable): whether printable() keeps UTF-8.
        self.utf8 = utf8
        self._fd: int | None = None
        self._programs: dict[str, Logger] = {}
        self._facility = getattr(syslog, f"LOG_{facility.upper()}", syslog.LOG_MAIL)
        if not maillog_file:
            self._openlog()

    def _openlog(self, pid: int = 0) -> None:
        global _syslog_ident
        if pid:
            # syslog(3) stamps only the caller's own pid: another's goes in the ident.
            _syslog_ident = f"{self.tag}[{pid}]"
            syslog.openlog(_syslog_ident, 0, self._facility)
        else:
            _syslog_ident = self.tag
            syslog.openlog(self.tag, syslog.LOG_PID, self._facility)

    def for_program(self, service: str) -> Logger:
        """This process's log under another program's name: cleanup runs inside smtpd and
        pickup, and log tools (pflogsumm) find its lines by "postfix/cleanup[pid]"."""
        other = self._programs.get(service)
        if other is None:
            if self.maillog_file:
                # Open first so that both share one descriptor (a failure is reported when
                # a line is written, as for any line).
                with contextlib.suppress(OSError):
                    self.open()
            other = Logger.__new__(Logger)
            other.__dict__.update(self.__dict__)
            other.service = service
            other.tag = f"{self.tag.rsplit('/', 1)[0]}/{service}"
            other._programs = {}
            self._programs[service] = other
        return other

    def open(self) -> None:
        """Open maillog_file now (before a process gives up the rights to open it)."""
        if self.maillog_file and self._fd is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.maillog_file)), exist_ok=True)
            self._fd = os.open(
                self.maillog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )

    def _emit(self, priority: int, text: str, pid: int = 0, severity: str = "") -> None:
        if not (text.isascii() and text.isprintable()):
            # Control characters, newlines among them, and client bytes that are not UTF-8
            # (surrogate escapes, on which syslog() would raise) as `?`, as Postfix's
            # msg_vprintf() printable()s every line.
            text = printable(text, "?", self.utf8)
        if self.echo_stderr:
            # msg_vstream writes the whole text.
            print(f"{self.tag}: {severity}{text}", file=sys.stderr, flush=True)
        if len(text) > RECORD_LIMIT:
            text = self._cut(text)
        if not self.maillog_file:
            if _syslog_ident != (f"{self.tag}[{pid}]" if pid else self.tag):
                self._openlog(pid)
            syslog.syslog(priority, severity + text)
            return
        line = format_line(time.time(), self.host, self.tag, pid or _pid, severity + text) + "\n"
        try:
            self.open()
        except OSError as e:
            print(f"{self.tag}: cannot log to {self.maillog_file}: {e}", file=sys.stderr)
            return
        fd = self._fd
        assert fd is not None
        # A record cut inside a UTF-8 character ends with its first bytes, as Postfix's.
        data = line.encode("utf-8", "surrogateescape")
        # No loop runs in a process that never imported asyncio (sendmail, postqueue, ...),
        # which need not pay for importing it.
        aio = sys.modules.get("asyncio")
        loop = aio._get_running_loop() if aio is not None else None
        if loop is None:
            _write(fd, self.maillog_file, data)
            return
        held = _pending.get(self.maillog_file)
        if held is None:
            _pending[self.maillog_file] = (fd, [data])
            loop.call_soon(flush)
        else:
            held[1].append(data)

    def _cut(self, text: str) -> str:
        """The first RECORD_LIMIT bytes of text. syslog() takes only whole characters:
        there a character that the cut splits goes."""
        text = truncate(text, RECORD_LIMIT)
        if not self.maillog_file and not text.isascii():
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "ignore")
        return text

    def info(self, text: str, pid: int = 0) -> None:
        """Log text; with pid, as that process's line rather than this one's (the line
        qmgr writes for a delivery that an agent process of its own made)."""
        self._emit(syslog.LOG_INFO, text, pid)

    def warning(self, text: str) -> None:
        self._emit(syslog.LOG_WARNING, text, severity="warning: ")

    def error(self, text: str) -> None:
        self._emit(syslog.LOG_ERR, text, severity="error: ")

    def fatal_line(self, text: str) -> None:
        """The "fatal: " line alone: for a part that Postfix runs as a process of its own
        but that runs inside this one (an agent qmgr runs itself), which must go on."""
        self._emit(syslog.LOG_CRIT, text, severity="fatal: ")

    def fatal(self, text: str) -> NoReturn:
        self.fatal_line(text)
        flush()
        raise SystemExit(1)

    def panic_line(self, text: str) -> None:
        """The "panic: " line alone (postlog -p panic goes on)."""
        self._emit(syslog.LOG_EMERG, text, severity="panic: ")

    def panic(self, text: str) -> NoReturn:
        self.panic_line(text)
        flush()
        os.abort()

    def close(self) -> None:
        if self._fd is not None:
            flush()
            os.close(self._fd)
            self._fd = None


class _Records(logging.Handler):
    """Python logging's records as a program's lines: the delivery agents warn through
    logging ("oxipost.virtual"), and their lines are Postfix's (postfix/virtual[pid]:
    warning: ...) whichever process runs them. A record with an exception gets one line
    with its summary; the traceback goes to stderr."""

    def __init__(self, log: Logger, programs: frozenset[str]) -> None:
        super().__init__()
        self.log = log
        self.programs = programs

    def emit(self, record: logging.LogRecord) -> None:
        program = record.name.rsplit(".", 1)[-1]
        log = self.log.for_program(program) if program in self.programs else self.log
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            text += f": {type(err).__name__}: {err}"
            traceback.print_exception(err, file=sys.stderr)
        if record.levelno >= logging.CRITICAL:
            # What Postfix logs as fatal from a process of its own that oxipost does not
            # have (the child that would run a command): the line, without the exit.
            log.fatal_line(text)
        elif record.levelno >= logging.ERROR:
            log.error(text)
        elif record.levelno >= logging.WARNING:
            log.warning(text)
        else:
            log.info(text)


def capture_python_logging(log: Logger, programs: Iterable[str] = ()) -> logging.Handler:
    """Send the records of the "oxipost" loggers to `log`, under the name of the program
    in `programs` that a logger is named after (oxipost.virtual → virtual). Without this,
    they reached only stderr. Returns the handler (to remove it again)."""
    handler = _Records(log, frozenset(programs))
    root = logging.getLogger("oxipost")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    return handler


def command_message(cfg: _ConfigLike | None, prog: str, text: str, severity: str = "") -> None:
    """A Postfix command's msg_info, or with severity "warning" or "fatal" its msg_warn or
    msg_fatal's line: "PROG: [SEVERITY: ]TEXT" on stderr, and the same in the log under
    PROG once main.cf is read (cfg)."""
    print(f"{prog}: {severity + ': ' if severity else ''}{text}", file=sys.stderr)
    if cfg is None:
        return
    maillog = cfg.get("maillog_file")
    # A user's command cannot append to mail_owner's maillog_file (Postfix's go through
    # postlogd); syslog takes anyone's lines.
    if not maillog or os.access(maillog, os.W_OK):
        log = get_logger(prog, cfg)
        {"": log.info, "warning": log.warning, "fatal": log.fatal_line}[severity](text)
        log.close()


def maillog_file_refused(cfg: _ConfigLike) -> str | None:
    """The fatal error of Postfix's maillog_client_init() when maillog_file starts with none
    of maillog_file_prefixes (compared as written, a relative path too), else None. Every
    program that logs through postlogd makes this check as it reads main.cf (postfix(1),
    sendmail, postqueue, postsuper, postmap, postlog, ...; not postconf, postcat)."""
    maillog = cfg.get("maillog_file")
    if not maillog:
        return None
    prefixes = cfg.get("maillog_file_prefixes").replace(",", " ").split()
    if any(maillog.startswith(prefix) for prefix in prefixes):
        return None
    return f"maillog_file value '{maillog}' does not match any prefix in maillog_file_prefixes"


def refuse_maillog_file(cfg: _ConfigLike, prog: str, stderr: bool = True) -> bool:
    """Whether prog must stop on maillog_file_refused(cfg): then its fatal line has gone to
    stderr (when `stderr`: postfix(1) and postlog write there only on a terminal) and to
    syslog, where Postfix's goes, as it has not switched its logging to the file yet."""
    text = maillog_file_refused(cfg)
    if text is None:
        return False
    if stderr:
        print(f"{prog}: fatal: {text}", file=sys.stderr)
    get_logger(prog).fatal_line(text)
    return True


def get_logger(service: str, cfg: _ConfigLike | None = None, echo_stderr: bool = False) -> Logger:
    """A logger for `service` configured from cfg (syslog_name, maillog_file, myhostname)."""
    if cfg is None:
        return Logger(service, echo_stderr=echo_stderr)
    maillog = cfg.get("maillog_file")
    return Logger(
        service,
        syslog_name=cfg.get("syslog_name"),
        maillog_file=os.path.abspath(maillog) if maillog else "",
        host=cfg.get("myhostname"),
        facility=cfg.get("syslog_facility"),
        echo_stderr=echo_stderr,
        utf8=cfg.get_bool("smtputf8_enable"),
    )
