"""master.cf: one service per logical line, eight columns, then the command's arguments.

Columns (master(5)): service, type (inet, unix, unix-dgram, fifo, pass), private, unpriv,
chroot, wakeup, maxproc, command + args. "-" means the default. Continuation lines start with
whitespace; "#" lines are comments. An argument with white space is written in "{" and "}"
(Postfix 3.0): `argv=/bin/sh -c { echo hi }` gives the words "argv=/bin/sh" "-c" "echo hi".
`-o name=value`, or `-o { name = value }` whose value may hold white space, among the leading
options overrides a main.cf parameter for that service only (`-o name=` clears it).
Service.args holds the arguments as postconf normalizes them (groups without their braces,
`-o { name = value }` as "name=value"), which postconf -M, -F and -P show.

Diagnostics, worded as Postfix's. postconf (and so postfix check/start/reload, which run it
first) and master judge the columns each in its own way:
- postconf: `fatal: file FILE: line N: bad field count` for fewer than eight, then `fatal:
  invalid type field "X" in "LINE"` (also private, unprivileged, chroot, wakeup and
  process_limit), LINE being the logical line as read. A wakeup is digits with an optional
  trailing "?" ("?" alone too), a process limit digits.
- master: `fatal: FILE: line N: missing "transport type" field` (private, unprivileged,
  chroot, wakeup_time, max_proc, command), `... bad transport type: X`, `... field
  "private": bad value: "X"`, `... inet service cannot be private`, `... field "command"
  has no default value`. A wakeup or process limit need only start with a digit: master
  reads "1x" as 1 (atoi), so wakeup_seconds and process_limit do too.
A "{" without its "}", or text after the "}", is `warning: master.cf: missing '}' in "{ text"`
/ `... syntax error after '}' in "{ text }x"` to postconf, and `fatal: FILE: line N: ...` to
master; a long-form -o that is not name = value is `warning: master.cf: missing '=' after
attribute name: "text"` (or `missing attribute name`) to postconf, and kills the service
that gets it (option_error).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from oxipost.printable import printable

SERVICE_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})
# What separates master.cf fields (Postfix's master_blanks), and what C's isspace() calls
# white space: a continuation line starts with it, "{ }" strips it.
BLANKS = " \t\r\n"
_SPACE = " \t\n\v\f\r"
WORD = re.compile(r"[^ \t\r\n]+")
_NAME = re.compile(r"[^ \t\n\v\f\r=]+")
# How postconf names the file in its warnings (MASTER_CONF_FILE, without the directory).
MASTER_CF = "master.cf"
BAD_FIELD_COUNT = "bad field count"


class MasterCfError(Exception):
    """A master.cf that Postfix would refuse (Postfix's message, without the prefix)."""


class Service(NamedTuple):
    """One master.cf entry. Columns keep their text ("-" for default) for `postconf -M`.
    (A NamedTuple, not a dataclass: every command reads master.cf, and importing
    dataclasses costs a short command like `postmap -q` a tenth of its run time.)"""

    name: str
    type: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: list[str]
    overrides: dict[str, str]
    lineno: int = 0

    @property
    def key(self) -> str:
        """ "name/type", how postconf -M and -P name a service."""
        return f"{self.name}/{self.type}"

    @property
    def endpoint(self) -> str:
        """The name Postfix's master knows a service by: `[host]:port` or the port of an
        inet service, private/NAME or public/NAME of the others."""
        if self.type == "inet":
            host, sep, port = self.name.rpartition(":")
            return f"[{host.strip('[]')}]:{port}" if sep else self.name
        return f"{'private' if self.is_private else 'public'}/{self.name}"

    @property
    def ident(self) -> str:
        """ "endpoint/type": what makes an entry a service of its own to master, so that
        `x unix - ...` (private/x) and `x unix n ...` (public/x) are two, and an entry
        that repeats another's ident replaces it (master's duplicate)."""
        return f"{self.endpoint}/{self.type}"

    @property
    def is_private(self) -> bool:
        return self.private != "n"

    @property
    def command_args(self) -> list[str]:
        """The arguments after the leading daemon options (-o name=value, -v, ...): what
        the command itself reads, as pipe's and spawn's attributes."""
        return self.args[_options_end(self.args) :]

    @property
    def is_unprivileged(self) -> bool:
        return self.unpriv != "n"

    @property
    def wakeup_seconds(self) -> int:
        """0 means never; a trailing '?' (wake only if used) is ignored."""
        return 0 if self.wakeup == "-" else _atoi(self.wakeup)

    def process_limit(self, default: int) -> int:
        """maxproc, with '-' meaning default_process_limit; 0 means no limit."""
        return default if self.maxproc == "-" else _atoi(self.maxproc)

    def option_error(self) -> str | None:
        """What a Postfix daemon dies of when started with this entry's arguments: the
        first -o among the leading options that is not name=value (getopt hands each to
        split_nameval in turn), or None."""
        for option, value in _leading_options(self.args):
            if option == "-o" and value is not None:
                try:
                    split_nameval(value)
                except ValueError as e:
                    return printable(f'invalid "-o {value}" option value: {e}')
        return None

    def columns(self) -> list[str]:
        return [
            self.name,
            self.type,
            self.private,
            self.unpriv,
            self.chroot,
            self.wakeup,
            self.maxproc,
            self.command,
            *self.args,
        ]


def parse_text(text: str, path: str, warn: list[str] | None = None) -> list[Service]:
    """All services in file order; raise MasterCfError where Postfix's master would.

    With a warn list, a "{" without its "}" (or text after the "}") and a `-o { ... }` that
    is not name = value are warned about there, as postconf does, and the entry is kept;
    without one, the first brace error is fatal, as it is to master.
    """
    logical: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        body = line.lstrip(_SPACE)
        if not body or body[0] == "#":
            continue
        if line[0] in _SPACE and logical:
            # Postfix joins a continuation line as it is, whitespace and all, without the
            # newline: inside "{ }" that whitespace is kept.
            start, prev = logical[-1]
            logical[-1] = (start, prev + line)
        else:
            logical.append((lineno, line))
    return [_service(line, path, lineno, warn) for lineno, line in logical]


def parse_entry(text: str, path: str, lineno: int, warn: list[str]) -> Service:
    """One entry (its line and continuation lines, joined) as postconf judges it, for an
    edit; MasterCfError with postconf's complaint, without the file and line."""
    line = "".join(text.split("\n"))
    if len(_split(line)) < 8:
        raise MasterCfError(BAD_FIELD_COUNT)
    return _service(line, path, lineno, warn)


def check_columns(words: list[str], value: str) -> None:
    """postconf's judgement of an entry's columns after `postconf -F` set one to value
    (its complaint quotes the value, not the line)."""
    _postconf_check(words, value, "")


def _split(line: str) -> list[str]:
    """Words separated by BLANKS, where blanks inside "{ }" do not separate (Postfix's
    mystrtokq: an unbalanced "{" takes the rest of the line, a stray "}" is text)."""
    if "{" not in line:
        return WORD.findall(line)
    words: list[str] = []
    i, end = 0, len(line)
    while True:
        while i < end and line[i] in BLANKS:
            i += 1
        if i == end:
            return words
        start, level = i, 0
        while i < end:
            ch = line[i]
            if ch == "{":
                level += 1
            elif ch == "}" and level:
                level -= 1
            elif ch in BLANKS and not level:
                break
            i += 1
        words.append(line[start:i])


def _ungroup(word: str) -> tuple[str, str]:
    """The text inside a word's outer "{ }" without the white space at either end, and
    Postfix's complaint (extpar) when the "}" is missing or text follows it ("" if none)."""
    level = 0
    for i, ch in enumerate(word):
        if ch == "{":
            level += 1
        elif ch == "}":
            level -= 1
            if not level:
                inner = word[1:i].strip(_SPACE)
                if i + 1 < len(word):
                    return inner, f"syntax error after '}}' in \"{word}\""
                return inner, ""
    return word[1:].strip(_SPACE), f"missing '}}' in \"{word}\""


def split_nameval(text: str) -> tuple[str, str]:
    """ "name = value" → (name, value) with the white space around each removed, as
    Postfix's split_nameval; ValueError with its complaint for anything else."""
    body = text.lstrip(_SPACE)
    name = _NAME.match(body)
    if name is None:
        raise ValueError("missing attribute name")
    rest = body[name.end() :].lstrip(_SPACE)
    if not rest.startswith("="):
        raise ValueError("missing '=' after attribute name")
    return name.group(), rest[1:].strip(_SPACE)


def expects_value(arg: str) -> bool:
    """Whether daemon option arg takes the next word as its value. ("-" does too: Postfix
    looks up its second character, the string's end, in "o" with strchr, which finds it.)"""
    return arg[1:2] in ("o", "")


def _args(words: list[str], where: str, warn: list[str] | None) -> list[str]:
    """The command's arguments as postconf normalizes them: "-vo x" is "-v" "-o" "x",
    "-oname=value" is "-o" "name=value", a "{ }" group is one argument without its braces,
    and `-o { name = value }` is "name=value"."""
    args = list(words)

    def ungroup(i: int) -> None:
        args[i], error = _ungroup(args[i])
        if error:
            if warn is None:
                raise MasterCfError(f"{where}: {error}")
            warn.append(f"{MASTER_CF}: {error}")

    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        arg = args[i]
        # The first "o" after the option letter starts a new option, wherever it is
        # (Postfix scans the whole word, braces included).
        cut = arg.find("o", 2)
        if cut > 0:
            args[i : i + 1] = [arg[:cut], "-" + arg[cut:]]
            arg = args[i]
        if not expects_value(arg):
            i += 1
            continue
        if len(arg) > 2:
            args[i : i + 1] = [arg[:2], arg[2:]]
        elif i + 1 == len(args):
            break
        i += 1
        if args[i].startswith("{"):
            ungroup(i)
            if args[i - 1][1:2] == "o":
                try:
                    name, value = split_nameval(args[i])
                except ValueError as e:
                    if warn is not None:
                        warn.append(f'{MASTER_CF}: {e}: "{args[i]}"')
                else:
                    args[i] = f"{name}={value}"
        i += 1
    for j in range(i, len(args)):
        if args[j].startswith("{"):
            ungroup(j)
    return args


def _leading_options(args: list[str]) -> list[tuple[str, str | None]]:
    """The daemon options that lead the arguments, (option, value or None): daemons stop
    at the first other argument, as getopt with "+" does."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        if expects_value(args[i]) and i + 1 < len(args):
            out.append((args[i], args[i + 1]))
            i += 2
        else:
            out.append((args[i], None))
            i += 1
    return out


def _options_end(args: list[str]) -> int:
    return sum(1 if value is None else 2 for _, value in _leading_options(args))


def _overrides(args: list[str]) -> dict[str, str]:
    """The -o name=value pairs among the leading options; a value that is not name=value
    sets nothing."""
    overrides: dict[str, str] = {}
    for option, value in _leading_options(args):
        if option == "-o" and value is not None:
            try:
                name, setting = split_nameval(value)
            except ValueError:
                continue
            overrides[name] = setting
    return overrides


def _atoi(text: str) -> int:
    """C's atoi: the leading digits, 0 without any."""
    digits = re.match(r"\d*", text)
    assert digits is not None
    return int(digits.group() or 0)


def _postconf_check(words: list[str], line: str, where: str) -> None:
    """postconf's judgement of the columns (pcf_check_master_entry)."""
    if len(words) < 8:
        raise MasterCfError(f"file {where}: {BAD_FIELD_COUNT}")
    shown = printable(line)

    def invalid(what: str, value: str) -> MasterCfError:
        return MasterCfError(printable(f'invalid {what} field "{value}" in "{shown}"'))

    if words[1] not in SERVICE_TYPES:
        raise invalid("type", words[1])
    for what, value in zip(("private", "unprivileged", "chroot"), words[2:5], strict=True):
        if value not in ("-", "y", "n"):
            raise invalid(what, value)
    wakeup = words[5].removesuffix("?")
    if wakeup != "-" and not ((wakeup.isascii() and wakeup.isdigit()) or not wakeup):
        raise invalid("wakeup", words[5])
    if words[6] != "-" and not (words[6].isascii() and words[6].isdigit()):
        raise invalid("process_limit", words[6])


# master's names for the columns after the service name, and what each must be ("" for
# any text); "-" is the default of all but the two that have none.
_MASTER_FIELDS = (
    ("transport type", ""),
    ("private", "bool"),
    ("unprivileged", "bool"),
    ("chroot", "bool"),
    ("wakeup_time", "int"),
    ("max_proc", "int"),
    ("command", ""),
)


def _master_check(words: list[str], where: str) -> None:
    """master's judgement of the columns (get_master_ent), field by field."""
    for i, (name, kind) in enumerate(_MASTER_FIELDS, start=1):
        if i == len(words):
            raise MasterCfError(f'{where}: missing "{name}" field')
        value = words[i]
        if value == "-":
            if not kind:
                raise MasterCfError(f'{where}: field "{name}" has no default value')
        elif i == 1 and value not in SERVICE_TYPES:
            raise MasterCfError(printable(f"{where}: bad transport type: {value}"))
        elif (kind == "bool" and value not in ("y", "n")) or (
            kind == "int" and not "0" <= value[0] <= "9"
        ):
            raise MasterCfError(printable(f'{where}: field "{name}": bad value: "{value}"'))
        if name == "private" and words[1] == "inet" and value != "n":
            raise MasterCfError(f"{where}: inet service cannot be private")


def _service(line: str, path: str, lineno: int, warn: list[str] | None) -> Service:
    words = _split(line)
    where = f"{path}: line {lineno}"
    if warn is None:
        _master_check(words, where)
    else:
        _postconf_check(words, line, where)
    name, typ, private, unpriv, chroot, wakeup, maxproc, command, *rest = words
    args = _args(rest, where, warn)
    return Service(
        name,
        typ,
        private,
        unpriv,
        chroot,
        wakeup,
        maxproc,
        command,
        args,
        _overrides(args),
        lineno,
    )
