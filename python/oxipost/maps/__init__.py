"""Lookup tables (Postfix's dict_* family): one entry point, `open_table("type:name")`.

Every table answers `lookup(key) -> str | None` and raises TableError when it cannot be
read (Postfix's daemons turn that into a temporary failure, never an accept), and has an
`owner`, Postfix's DICT_OWNER: 0 for a table root could only have written (a root-owned
file, or no file at all), the uid owning its file as opened, or None when unknown (tables
of different users combined by unionmap: or pipemap:). local(8) gives an alias's commands
and files its table owner's rights. Tables are
opened once per process and reopened when their file changes, as Postfix's daemons notice
a rebuilt table. Warnings about skipped lines go to the sink `set_warning_sink` installs
(stderr as `prog: warning: ...` by default, the maillog in daemons), once per open.

Tables whose results name a file, a command or a mailbox are opened with `no_regsub`
(Postfix's DICT_FLAG_NO_REGSUB, part of the DICT_FLAG_PARANOID of local(8)'s alias_maps
and mailbox_command_maps and virtual(8)'s maps; alone for transport_maps): a regexp: or
pcre: rule whose result has `$n` is skipped with "regexp map NAME, line N: regular
expression substitution is not allowed: skipping this rule", so that no part of an
address a client chose reaches such a result. Those PARANOID users open their tables
with `paranoid`, which adds DICT_FLAG_NO_UNAUTH: a table whose server is not
authenticated, tcp: or socketmap: (oxipost.maps.net), does not open, with Postfix's
"TYPE:NAME map is not allowed for security sensitive data" ("security-sensitive" for
socketmap:), what its daemons log as dict_surrogate's "TYPE:NAME is unavailable. REASON".
NO_PROXY changes nothing here: proxy: already opens its table directly, as Postfix 3.7's
dict_proxy_open does for DICT_FLAG_NO_PROXY. But only what proxymap(8) would serve: a
proxy:TYPE:NAME that proxy_read_maps does not list as such does not open, in Postfix's
client's words ('proxymap service is not configured for table "TYPE:NAME"'; fatal to
Postfix's daemons, a surrogate's reason in ours, so a temporary failure).

Every table also says whether it is `fixed`, Postfix's DICT_FLAG_FIXED: a table of exact
keys (hash:, cdb:, texthash:, inline:, static:, unix:, environ:) is fixed; a pattern table
(regexp:, pcre:, cidr:, fail:, randmap:, Postfix's DICT_FLAG_PATTERN) is not, and address
searches give it only the whole string being looked up, never a partial key such as
`@domain` or a parent domain (virtual(5), access(5), transport(5): "REGULAR EXPRESSION
TABLES"). unionmap: and pipemap: take their first table's kind, as dict_union_open does.
Tables without a file (unix:, environ:, randmap:) are in oxipost.maps.builtin.

Keys are text read off the wire, so they may hold bytes that are not UTF-8 (decoded with
surrogateescape: a header or body line of latin-1 mail, a header address). A table opened
with `utf8` (Postfix's DICT_FLAG_UTF8_REQUEST, which its daemons pass for every table but
header_checks and body_checks) while smtputf8_enable = yes does not look such a key up:
as dict_utf8 does, it answers "not found" and warns `TYPE:NAME: non-UTF-8 key "KEY":
malformed UTF-8 or invalid codepoint`, each such byte as `?`. Otherwise the key is matched
as bytes: hash:/cdb: look up the raw bytes and the in-memory tables the same text;
regexp:/pcre: match the bytes of every key, UTF-8 or not, against their rules' bytes, as
Postfix 3.7's C-locale regcomp and non-UTF PCRE do (`.` is one byte, case folds in ASCII
only; see rust/core/src/maps/regex_table.rs). Never an exception. With the same flag
and setting, texthash: leaves out each logical line of its file that is not UTF-8 as it
reads it (dict_thash: 'FILE, line N: non-UTF-8 input "LINE" -- ignoring this line'), and
an inline: table that is not UTF-8 does not open (dict_inline: 'bad UTF-8 syntax').

A table of exact keys folds them (unless opened without `fold_keys`, postmap -f) as
Postfix's casefold(): in ASCII only, or, opened with `utf8` while smtputf8_enable = yes
(dict_utf8's fold), in full Unicode as ICU folds them (`Straße` and `STRASSE` are
`strasse`, `ÉTÉ` is `été`), both as it stores and as it looks up; `fold()`, the one
function Rust's builders use too (rust/core/src/maps/casefold.rs). regexp: and pcre: keys
are never folded.

`lmdb:` reads `<name>.lmdb`, the file Postfix's dict_lmdb writes (oxipost.maps.lmdb).

`hash:` and `cdb:` both read `<name>.cdb` (the cdb format tinycdb and Postfix's cdb: use);
postmap(1) builds it. What they say of a file they cannot open names the file Postfix's
would open: `<name>.db` for hash:, `<name>.cdb` for cdb: ("open database /x/y.db: No such
file or directory"), so that a log reads the same whichever MTA wrote it. A hash: table
left as Postfix's own `<name>.db` (Berkeley DB, which we do not read) without a `.cdb` beside
it is "open database <name>.db: Invalid argument", Postfix's words for a .db its library
cannot read, whose remedy is the same: run postmap (or newaliases) again.

A daemon (`allow_surrogates`) goes on without a table that does not open, as Postfix's
dict_surrogate: "error: REASON" once, when it is opened (the daemons open their tables as
they start), then a table in its place whose every lookup warns "TYPE:NAME is
unavailable. REASON" and fails (TableUnavailable: the callers' temporary failure); the
cache keeps it until its file changes, so no message pays for a new attempt. Commands, and
a type:name that names no table type, still raise TableError at the open, as Postfix's
commands and dict_open's fatal errors stop there. A daemon's part that logs as another
program (cleanup in smtpd, pickup and qmgr) sends these lines to its own log
(`logging_to`). Key search orders of virtual(5), access(5), transport(5) and
aliases(5), and the one walk over keys and tables, are in `oxipost.maps.search`.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Protocol

from oxipost._core import CorruptError
from oxipost._core import maps as _core
from oxipost.config import Config, split_list
from oxipost.printable import printable

# Types whose name is a file postmap(1) indexes into <name>.cdb.
INDEXED_TYPES = ("hash", "cdb")
# Types postmap(1) and postalias(1) build from a source file (lmdb: into <name>.lmdb).
BUILT_TYPES = (*INDEXED_TYPES, "lmdb")
TABLE_TYPES = (
    *BUILT_TYPES,
    "texthash",
    "regexp",
    "pcre",
    "cidr",
    "inline",
    "static",
    "fail",
    "unionmap",
    "pipemap",
    "proxy",
    "tcp",
    "socketmap",
    "sqlite",
    "unix",
    "environ",
    "randmap",
)


class TableError(Exception):
    """A table cannot be opened or read; the text is Postfix's (without `fatal: `)."""


class TableSpecError(TableError):
    """A type:name that names no table (dict_open's fatal error): never a surrogate."""


class TableUnavailable(TableError):
    """A lookup in a table that did not open (a SurrogateTable); `spec` its type:name."""

    def __init__(self, reason: str, spec: str) -> None:
        super().__init__(reason)
        self.spec = spec


class TableConfigError(TableError):
    """A lookup that found what the table must not give (Postfix's DICT_ERR_CONFIG): a
    result that is not UTF-8. `table` is its type:name as Postfix's warnings name it,
    `key` the key that found it."""

    def __init__(self, text: str, table: str, key: str) -> None:
        super().__init__(text)
        self.table = table
        self.key = key


class Table(Protocol):
    owner: int | None
    # Set when the table checks its keys as dict_utf8 does (see above): its `type:name`.
    utf8_name: str | None
    # Postfix's DICT_FLAG_FIXED: asked for partial keys too (see above).
    fixed: bool

    def lookup(self, key: str) -> str | None: ...


class TableLog(Protocol):
    def warning(self, text: str) -> None: ...

    def error(self, text: str) -> None: ...


def _stderr_warning(text: str) -> None:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "oxipost"
    print(f"{prog}: warning: {text}", file=sys.stderr, flush=True)


_warn: Callable[[str], None] = _stderr_warning
# Set in daemons: where a table that did not open is reported (see above).
_open_error: Callable[[str], None] | None = None
# The log of the part of a daemon that runs now, when it is not the process's own.
_part_log: ContextVar[TableLog | None] = ContextVar("table_log", default=None)


def set_warning_sink(sink: Callable[[str], None]) -> Callable[[str], None]:
    """Send table warnings (text without `warning: `) to `sink`, e.g. a Logger.warning;
    the sink it replaces."""
    global _warn
    previous, _warn = _warn, sink
    return previous


def warn(text: str) -> None:
    """Report a table warning through the installed sink."""
    part = _part_log.get()
    if part is not None:
        part.warning(text)
    else:
        _warn(text)


def warn_lookup_error(e: Exception, key: str) -> None:
    """Postfix's maps_find 'TYPE:NAME lookup error for "KEY"' when `e` is the failure of a
    table that did not open (whose own warning came first)."""
    if isinstance(e, TableUnavailable):
        warn(f'{e.spec} lookup error for "{key}"')


def allow_surrogates(error: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Go on without a table that does not open, reporting its open failure through
    `error` (a Logger.error; None: raise TableError, as commands), as Postfix's daemons
    set dict_allow_surrogate; the sink it replaces. Tables that failed before are opened
    again, as by a new daemon process."""
    global _open_error
    previous, _open_error = _open_error, error
    with _cache_lock:
        for key in [k for k, (t, _) in _cache.items() if isinstance(t, SurrogateTable)]:
            del _cache[key]
        for registry in _registries:
            registry.clear()
    return previous


_registries: list[dict[str, SurrogateTable]] = []


def surrogate_registry() -> dict[str, SurrogateTable]:
    """A process's register of surrogates kept outside open_table's cache (a match list's
    file that did not open), emptied with it by allow_surrogates."""
    registry: dict[str, SurrogateTable] = {}
    _registries.append(registry)
    return registry


def report_open_error(text: str) -> None:
    """Log that a table did not open, as dict_surrogate does as it stands in: "error:
    TEXT" in a daemon (see above), on stderr in a command."""
    part = _part_log.get()
    if part is not None:
        part.error(text)
    elif _open_error is not None:
        _open_error(text)
    else:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "oxipost"
        print(f"{prog}: error: {text}", file=sys.stderr, flush=True)


class _LoggingTo:
    # A class, not a @contextmanager generator: cleanup enters one for every message, and
    # the generator's machinery cost several times its two ContextVar calls.
    __slots__ = ("log", "token")

    def __init__(self, log: TableLog) -> None:
        self.log = log

    def __enter__(self) -> None:
        self.token = _part_log.set(self.log)

    def __exit__(self, *exc: object) -> None:
        _part_log.reset(self.token)


def logging_to(log: TableLog) -> _LoggingTo:
    """Table warnings and open errors of the code run inside go to `log` (in this thread
    or task only)."""
    return _LoggingTo(log)


def fold(key: str, utf8: bool = False) -> str:
    """A table key folded as Postfix's casefold(): ASCII only, or, with `utf8` (a table
    that checks its keys as dict_utf8 does: smtputf8_enable = yes), in full Unicode
    (`Straße` is `strasse`), as the cdb builder folds (_core.maps.fold_key)."""
    if key.isascii():
        return key.lower()
    return _core.fold_key(raw_key(key), utf8).decode("utf-8", "surrogateescape")


def folds_utf8(cfg: Config | None) -> bool:
    """Whether names fold in Unicode where Postfix's casefold() folds them: table keys
    and match lists' names, with smtputf8_enable (as its default without a
    configuration)."""
    return cfg is None or cfg.get_bool("smtputf8_enable")


def raw_key(key: str) -> bytes:
    """The bytes of a key as they came in: the text, with each byte that was not UTF-8
    (a surrogate escape) as that byte."""
    return key.encode("utf-8", "surrogateescape")


def utf8_refused(table: Table, key: str) -> bool:
    """Whether `table` refuses `key` as Postfix's dict_utf8 does (see above), with its
    warning."""
    name = table.utf8_name
    if name is None or key.isascii():
        return False
    try:
        key.encode()
    except UnicodeEncodeError:
        shown = key.encode("utf-8", "replace").decode()
        warn(f'{name}: non-UTF-8 key "{shown}": malformed UTF-8 or invalid codepoint')
        return True
    return False


def utf8_checked(table: Table, key: str, value: str | None) -> str | None:
    """`value` as found for `key`, or, when `table` checks as dict_utf8 does and the
    value is not UTF-8 (a hash: value or a regexp: result with latin-1 bytes, a `$n` that
    ends inside a UTF-8 character), Postfix's warning and a query error (TableConfigError),
    never a result that is not UTF-8."""
    name = table.utf8_name
    if name is None or value is None or value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:
        shown_key, shown = (t.encode("utf-8", "replace").decode() for t in (key, value))
        warn(
            f'{name}: key "{shown_key}": non-UTF-8 value "{shown}": '
            "malformed UTF-8 or invalid codepoint"
        )
        raise TableConfigError(f"table {name}: query error", name, key) from None
    return value


def os_reason(e: OSError) -> str:
    """The C library's words for an error, as Postfix's %m prints them."""
    return os.strerror(e.errno) if e.errno else str(e)


def read_owned(path: str, action: str = "open database") -> tuple[bytes, int]:
    """A table's file and the uid owning what was read, or TableError in Postfix's words
    (`open database X: reason` for a table read at lookup time; postmap says `open X:
    reason` of a source it builds from)."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_uid
    except OSError as e:
        raise TableError(f"{action} {path}: {os_reason(e)}") from None


def read_file(path: str, action: str = "open database") -> bytes:
    return read_owned(path, action)[0]


def warn_if_older(name: str, path: str, shown: str | None = None) -> None:
    """The warning of Postfix's dict_db, dict_cdb and dict_lmdb as they open a table built
    before its source file last changed (but not in the last 100 seconds: a postmap may be
    still to come). `shown` is the file Postfix's table would be (hash:'s .db)."""
    try:
        source, table = os.stat(name).st_mtime, os.stat(path).st_mtime
    except OSError:
        return
    if int(source) > int(table) and source < time.time() - 100:
        warn(f"database {shown or path} is older than source file {name}")


# ------------------------------------------------------------------------ the table kinds


class CdbTable:
    """hash: and cdb: — `<name>.cdb`, memory-mapped."""

    fixed = True
    utf8_name: str | None = None

    def __init__(self, name: str, fold_keys: bool = True, kind: str = "cdb") -> None:
        self.path = name + ".cdb"
        # The file Postfix's table of this type opens, which its messages name.
        self.shown_path = name + (".db" if kind == "hash" else ".cdb")
        self.fold_keys = fold_keys
        try:
            self._cdb = _core.Cdb(self.path)
        except OSError as e:
            reason = os_reason(e)
            if kind == "hash" and e.errno == errno.ENOENT and os.path.exists(self.shown_path):
                # Postfix's own Berkeley DB file, which only its postmap reads: Postfix's
                # words for a .db its library cannot read, whose remedy (postmap, newaliases)
                # is the one that builds ours.
                reason = os.strerror(errno.EINVAL)
            raise TableError(f"open database {self.shown_path}: {reason}") from None
        except CorruptError:
            raise TableError(
                f"dict_cdbq_open: unable to init {self.path}: Protocol error"
            ) from None
        try:
            # By name, after the open: only a rename in between (postmap's own, which
            # keeps the owner) could make it another file's.
            self.owner: int | None = os.stat(self.path).st_uid
        except OSError as e:
            raise TableError(f"open database {self.shown_path}: {os_reason(e)}") from None
        warn_if_older(name, self.path, self.shown_path)

    def lookup(self, key: str) -> str | None:
        folded = fold(key, self.utf8_name is not None) if self.fold_keys else key
        try:
            raw = folded.encode()
        except UnicodeEncodeError:
            if utf8_refused(self, key):
                return None
            raw = raw_key(folded)
        value = self._cdb.get(raw)
        if value is None:
            return None
        text = value.decode("utf-8", "surrogateescape")
        return text if text.isascii() else utf8_checked(self, key, text)

    def query_lines(self, data: bytes, suffix: bytes = b"") -> tuple[bytes, int]:
        """`postmap -q -` in one call: `key<TAB>value` lines for the keys in `data`."""
        return self._cdb.query_lines(data, self.fold_keys, self.utf8_name is not None, suffix)

    def lookup_many(self, keys: Sequence[str]) -> list[str | None]:
        try:
            utf8 = self.utf8_name is not None
            raw = [(fold(k, utf8) if self.fold_keys else k).encode() for k in keys]
        except UnicodeEncodeError:
            return [self.lookup(k) for k in keys]
        found = self._cdb.get_many(raw)
        texts = [None if v is None else v.decode("utf-8", "surrogateescape") for v in found]
        if self.utf8_name is None or all(t is None or t.isascii() for t in texts):
            return texts
        return [utf8_checked(self, k, t) for k, t in zip(keys, texts, strict=True)]

    def items(self) -> list[tuple[str, str]]:
        return [
            (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
            for k, v in self._cdb.items()
        ]


class SurrogateTable:
    """Postfix's dict_surrogate: in a daemon, what stands for a table that did not open.
    Each lookup warns "TYPE:NAME is unavailable. REASON" and fails. A pattern table
    (DICT_FLAG_PATTERN), so asked the whole key only, and root's (DICT_OWNER_TRUSTED)."""

    fixed = False
    owner: int | None = 0
    utf8_name: str | None = None

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason

    def lookup(self, key: str) -> str | None:
        warn(f"{self.spec} is unavailable. {self.reason}")
        raise TableUnavailable(self.reason, self.spec)


class DictTable:
    """A table held in memory: texthash:, inline:, and what postmap -i/-d rewrite."""

    fixed = True
    utf8_name: str | None = None

    def __init__(
        self, entries: dict[str, str], fold_keys: bool = True, owner: int | None = 0
    ) -> None:
        self.entries = entries
        self.fold_keys = fold_keys
        self.owner = owner

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and utf8_refused(self, key):
            return None
        return self.entries.get(fold(key, self.utf8_name is not None) if self.fold_keys else key)

    def items(self) -> list[tuple[str, str]]:
        return list(self.entries.items())


def read_texthash(path: str, fold_keys: bool = True, utf8: bool = False) -> DictTable:
    """texthash: the postmap source format read directly, as Postfix's dict_thash does;
    with `utf8` (smtputf8_enable, as the daemons and postmap ask), a logical line that is
    not UTF-8 is skipped with its warning, before its format is looked at."""
    text, owner = read_owned(path)
    skipped: list[tuple[int, str]] = []
    if utf8:
        text, skipped = without_non_utf8_lines(text, path)
    entries, warnings = _core.parse_entries(
        text, path, "expected format: key whitespace value -- ignoring this line"
    )
    table: dict[str, str] = {}
    # Postfix warns as it reads, so the parser's warnings and ours interleave by line.
    by_line = list(warnings) + skipped
    for raw_key, raw_value, lineno in entries:
        key = raw_key.decode("utf-8", "surrogateescape")
        if key.endswith(":"):
            by_line.append(
                (
                    lineno,
                    f'{path}, line {lineno}: record is in "key: value" format; '
                    "is this an alias file?",
                )
            )
        folded = fold(key, utf8) if fold_keys else key
        if folded in table:
            by_line.append((lineno, f'{path}, line {lineno}: duplicate entry: "{key}"'))
            continue
        table[folded] = raw_value.decode("utf-8", "surrogateescape")
    for _, w in sorted(by_line, key=lambda lw: lw[0]):
        warn(w)
    return DictTable(table, fold_keys, owner)


def without_non_utf8_lines(text: bytes, path: str) -> tuple[bytes, list[tuple[int, str]]]:
    """`text` with each logical line that is not UTF-8 blanked out (its physical lines kept
    as empty ones, so that the others keep their numbers), and the warning of Postfix's
    dict_thash, postmap and postalias for each: (line, text)."""
    try:
        text.decode()
        return text, []
    except UnicodeDecodeError:
        pass
    physical = text.split(b"\n")
    logical, _ = _core.logical_lines(text, path)
    starts = [lineno for lineno, _ in logical] + [len(physical) + 1]
    skipped: list[tuple[int, str]] = []
    for (lineno, line), after in zip(logical, starts[1:], strict=False):
        try:
            line.decode()
        except UnicodeDecodeError:
            shown = printable(line.decode("utf-8", "surrogateescape"))
            skipped.append(
                (lineno, f'{path}, line {lineno}: non-UTF-8 input "{shown}" -- ignoring this line')
            )
            # The comments and blank lines up to the next logical line go too: harmless.
            physical[lineno - 1 : after - 1] = [b""] * (after - lineno)
    return b"\n".join(physical), skipped


class RegexpTable:
    """regexp: and pcre: — compiled once in Rust, one pass for a miss."""

    fixed = False
    utf8_name: str | None = None

    def __init__(
        self,
        text: bytes,
        dialect: str,
        name: str,
        owner: int | None = 0,
        no_regsub: bool = False,
    ) -> None:
        self.owner = owner
        self._table = _core.RegexTable(text, dialect, name, no_regsub=no_regsub)
        for w in self._table.warnings:
            warn(w)

    def lookup(self, key: str) -> str | None:
        try:
            value = self._table.lookup(key)
            return value if value is None else utf8_checked(self, key, value)
        except UnicodeEncodeError:
            # Only without the UTF-8 check: a key it would refuse is never looked up.
            return None if utf8_refused(self, key) else self._table.lookup_bytes(raw_key(key))

    def lookup_many(self, keys: Sequence[str]) -> list[str | None]:
        try:
            found = self._table.lookup_many(list(keys))
        except UnicodeEncodeError:
            return [self.lookup(k) for k in keys]
        if self.utf8_name is None:
            return found
        return [utf8_checked(self, k, v) for k, v in zip(keys, found, strict=True)]


class CidrTable:
    """cidr: first matching network, with `!` negation and if/endif, as cidr_table(5)."""

    fixed = False
    utf8_name: str | None = None

    def __init__(self, text: bytes, name: str, owner: int | None = 0) -> None:
        self.owner = owner
        lines, warnings = _core.logical_lines(text, name)
        for _, w in warnings:
            warn(w)
        # (network or None for endif, negate, result or None for if, index after endif)
        self.rules: list[
            tuple[ipaddress.IPv4Network | ipaddress.IPv6Network | None, bool, str | None, int]
        ] = []
        open_ifs: list[tuple[int, int]] = []
        for lineno, raw in lines:
            line = raw.decode("utf-8", "surrogateescape").strip()

            def warning(msg: str, lineno: int = lineno) -> None:
                warn(f"cidr map {name}, line {lineno}: {msg}")

            word = line.split(None, 1)[0].lower()
            if word == "endif":
                if open_ifs:
                    at, _ = open_ifs.pop()
                    self.rules.append((None, False, None, 0))
                    net, neg, _, _ = self.rules[at]
                    self.rules[at] = (net, neg, None, len(self.rules))
                else:
                    warning("ignoring ENDIF without matching IF")
                continue
            is_if = word == "if"
            rest = line[2:].strip() if is_if else line
            negate = rest.startswith("!")
            if negate:
                rest = rest[1:].lstrip()
            parts = rest.split(None, 1)
            pattern = parts[0] if parts else ""
            result = parts[1].strip() if len(parts) > 1 else ""
            net = self._network(pattern, warning)
            if net is None:
                continue
            if is_if:
                open_ifs.append((len(self.rules), lineno))
                self.rules.append((net, negate, None, 0))
                continue
            if not result:
                warning("no lookup result: skipping this rule")
                continue
            self.rules.append((net, negate, result, 0))
        for at, lineno in reversed(open_ifs):
            warn(f"cidr map {name}, line {lineno}: IF has no matching ENDIF")
            net, neg, _, _ = self.rules[at]
            self.rules[at] = (net, neg, None, len(self.rules))

    @staticmethod
    def _network(
        pattern: str, warning: Callable[[str], None]
    ) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        addr, slash, length = pattern.partition("/")
        if addr.startswith("[") and addr.endswith("]"):
            addr = addr[1:-1]
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            warning(f'bad address pattern: "{pattern}": skipping this rule')
            return None
        if not slash:
            return ipaddress.ip_network(ip)
        if not length.isdigit() or int(length) > ip.max_prefixlen:
            warning(f'bad mask length in "{pattern}": skipping this rule')
            return None
        try:
            return ipaddress.ip_network(f"{ip}/{length}")
        except ValueError:
            fixed = ipaddress.ip_network(f"{ip}/{length}", strict=False)
            warning(
                f'non-null host address bits in "{pattern}", perhaps you should use '
                f'"{fixed}" instead: skipping this rule'
            )
            return None

    def lookup(self, key: str) -> str | None:
        try:
            ip = ipaddress.ip_address(key.strip("[]"))
        except ValueError:
            utf8_refused(self, key)
            return None
        i = 0
        while i < len(self.rules):
            net, negate, result, after = self.rules[i]
            if net is None:
                i += 1
                continue
            hit = (ip.version == net.version and ip in net) != negate
            if result is None:
                i = i + 1 if hit else after
                continue
            if hit:
                return result
            i += 1
        return None


class StaticTable:
    owner: int | None = 0
    fixed = True
    utf8_name: str | None = None

    def __init__(self, value: str) -> None:
        self.value = value

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and utf8_refused(self, key):
            return None
        return self.value


class FailTable:
    owner: int | None = 0
    fixed = False
    utf8_name: str | None = None

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def lookup(self, key: str) -> str | None:
        if utf8_refused(self, key):
            return None
        raise TableError(f"table {self.spec}: query error: Application error")


def aggregate_owner(tables: Sequence[Table]) -> int | None:
    """The owner of tables combined, as Postfix's DICT_OWNER_AGGREGATE_UPDATE: trusted
    when all are, the one user when the others are trusted, unknown past that."""
    owner: int | None = 0
    for table in tables:
        if owner == 0 or table.owner is None:
            owner = table.owner
        elif table.owner not in (0, owner):
            owner = None
    return owner


class UnionTable:
    """unionmap: every table's result, comma-joined, in order."""

    utf8_name: str | None = None

    def __init__(self, tables: list[Table]) -> None:
        self.tables = tables
        self.owner = aggregate_owner(tables)
        self.fixed = tables[0].fixed

    def lookup(self, key: str) -> str | None:
        # Refused here, as dict_utf8 around the union does, before each table warns too.
        if not key.isascii() and utf8_refused(self, key):
            return None
        found = [v for v in (t.lookup(key) for t in self.tables) if v is not None]
        return ",".join(found) if found else None


class PipeTable:
    """pipemap: each table's result is the next table's key."""

    utf8_name: str | None = None

    def __init__(self, tables: list[Table]) -> None:
        self.tables = tables
        self.owner = aggregate_owner(tables)
        self.fixed = tables[0].fixed

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and utf8_refused(self, key):
            return None
        value = key
        for t in self.tables:
            found = t.lookup(value)
            if found is None:
                return None
            value = found
        return value


# ------------------------------------------------------------------------ parsing a spec


def split_braced(body: str, keep_braces: bool = False) -> list[str]:
    """The items of `{a, {b c}, d}` as Postfix's mystrtokq splits them (comma or space
    separated; braces keep an item whole and are removed, unless `keep_braces`, as
    dict_random keeps them)."""
    items: list[str] = []
    i, n = 0, len(body)
    while i < n:
        while i < n and (body[i] in ", \t\r\n"):
            i += 1
        if i >= n:
            break
        start, depth = i, 0
        while i < n and (depth > 0 or body[i] not in ", \t\r\n"):
            if body[i] == "{":
                depth += 1
            elif body[i] == "}":
                depth -= 1
            i += 1
        item = body[start:i]
        if not keep_braces and item.startswith("{") and item.endswith("}"):
            item = item[1:-1].strip()
        items.append(item)
    return items


def _braced(spec: str, kind: str, name: str, need: str) -> list[str]:
    if not (name.startswith("{") and name.endswith("}")):
        raise TableError(f'bad syntax: "{spec}"; need "{kind}:{need}"')
    items = split_braced(name[1:-1])
    if not items:
        raise TableError(f'bad syntax: "{spec}"; need "{kind}:{need}"')
    return items


def _inline(spec: str, name: str, utf8: bool) -> DictTable:
    if utf8 and not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:
            raise TableError(
                f'bad UTF-8 syntax: "{printable(spec)}"; need "inline:{{name=value...}}"'
            ) from None
    entries: dict[str, str] = {}
    for item in _braced(spec, "inline", name, "{name=value...}"):
        key, eq, value = item.partition("=")
        if not eq:
            raise TableError(
                f'missing \'=\' after attribute name: "{spec}"; need "inline:{{name=value...}}"'
            )
        # No duplicate check: dict_inline updates its dict_ht, the last one stays.
        entries[fold(key.strip(), utf8)] = value.strip()
    return DictTable(entries)


def _file_text(spec: str, kind: str, name: str) -> tuple[bytes, str, int]:
    """A file table's text, label and owner, or the rules of its inline
    `{{rule}, {rule}}` form (main.cf's, so root's)."""
    if name.startswith("{"):
        rules = _braced(spec, kind, name, "{{rule}, {rule}...}")
        return "\n".join(rules).encode() + b"\n", spec, 0
    # Postfix's dict_regexp, dict_pcre and dict_cidr say "open X: reason", not "open
    # database X: reason".
    text, owner = read_owned(name, "open")
    return text, name, owner


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _watched_file(kind: str, name: str) -> str | None:
    if name.startswith("{"):
        return None
    if kind in INDEXED_TYPES:
        return name + ".cdb"
    if kind == "lmdb":
        return name + ".lmdb"
    if kind in ("texthash", "regexp", "pcre", "cidr"):
        return name
    return None


def _open(
    spec: str, cfg: Config | None, fold_keys: bool, no_regsub: bool, utf8: bool, paranoid: bool
) -> Table:
    kind, colon, name = spec.partition(":")
    if not colon:
        raise TableSpecError(f'need dictionary type in "{spec}"')
    if not kind or not name:
        # dict_open3's fatal error, in daemons too.
        raise TableSpecError(f'open dictionary: expecting "type:name" form instead of "{spec}"')
    if kind == "proxy":
        return open_table(name, cfg, fold_keys, no_regsub, utf8, paranoid)
    table = _open_kind(spec, kind, name, cfg, fold_keys, no_regsub, utf8, paranoid)
    if utf8:
        # Postfix names an indexed table that opened by its file (hash:/etc/x.db).
        table.utf8_name = f"{kind}:{table.shown_path}" if isinstance(table, CdbTable) else spec
    return table


def _open_kind(
    spec: str,
    kind: str,
    name: str,
    cfg: Config | None,
    fold_keys: bool,
    no_regsub: bool,
    utf8: bool,
    paranoid: bool,
) -> Table:
    if kind in INDEXED_TYPES:
        return CdbTable(name, fold_keys, kind)
    if kind == "lmdb":
        # Imported here: only a process with an lmdb: table pays for the library.
        from oxipost.maps.lmdb import LmdbTable

        return LmdbTable(name, fold_keys)
    if kind == "texthash":
        if name.startswith("{"):
            raise TableError(f"open database {name}: No such file or directory")
        return read_texthash(name, fold_keys, utf8)
    if kind in ("regexp", "pcre"):
        text, label, owner = _file_text(spec, kind, name)
        return RegexpTable(text, kind, label, owner, no_regsub)
    if kind == "cidr":
        text, label, owner = _file_text(spec, kind, name)
        return CidrTable(text, label, owner)
    if kind == "inline":
        return _inline(spec, name, utf8)
    if kind == "static":
        value = name[1:-1].strip() if name.startswith("{") and name.endswith("}") else name
        return StaticTable(value)
    if kind == "fail":
        return FailTable(spec)
    if kind in ("unionmap", "pipemap"):
        parts = _braced(spec, kind, name, "{type:name...}")
        tables = [open_table(p, cfg, fold_keys, no_regsub, utf8, paranoid) for p in parts]
        return UnionTable(tables) if kind == "unionmap" else PipeTable(tables)
    if kind in ("tcp", "socketmap"):
        from oxipost.maps.net import open_net_table

        return open_net_table(spec, kind, name, paranoid)
    if kind == "sqlite":
        from oxipost.maps.sqlite import SqliteTable

        return SqliteTable(name, cfg, fold_keys)
    if kind in ("unix", "environ", "randmap"):
        from oxipost.maps.builtin import open_builtin_table

        return open_builtin_table(spec, kind, name, fold_keys)
    raise TableSpecError(f"unsupported dictionary type: {kind}")


_cache: dict[tuple[str, bool, bool, bool, bool], tuple[Table, tuple[int, int, int] | None]] = {}
_cache_lock = threading.Lock()


def open_table(
    spec: str,
    cfg: Config | None = None,
    fold_keys: bool = True,
    no_regsub: bool = False,
    utf8: bool = True,
    paranoid: bool = False,
) -> Table:
    """The table for `type:name`, opened once and reopened when its file has changed.
    Relative names are relative to the working directory, as in Postfix. `no_regsub`
    skips the `$n` rules of regexp: and pcre: (see above); the same file opened without
    it keeps them, as another Postfix program opening it without the flag does. `utf8`
    (off for header_checks and body_checks) refuses keys that are not UTF-8 when
    smtputf8_enable is on (see above; without a configuration, its default is).
    `paranoid` is Postfix's DICT_FLAG_PARANOID: `no_regsub`, and no tcp: or socketmap:
    table (see above)."""
    no_regsub = no_regsub or paranoid
    kind, _, name = spec.partition(":")
    denied = kind == "proxy" and cfg is not None and not _proxy_approved(cfg, name)
    if kind == "proxy" and name and not denied:
        # Cached as itself, so that a proxied file is reopened when it changes.
        return open_table(name, cfg, fold_keys, no_regsub, utf8, paranoid)
    watched = _watched_file(kind, name)
    stamp = _stamp(watched) if watched else None
    if utf8 and cfg is not None:
        utf8 = cfg.get_bool("smtputf8_enable")
    key = (spec, fold_keys, no_regsub, utf8, paranoid)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[1] == stamp:
            return hit[0]
    try:
        if denied and cfg is not None:
            service = cfg.get("proxymap_service_name")
            raise TableError(f'{service} service is not configured for table "{name}"')
        table: Table = _open(spec, cfg, fold_keys, no_regsub, utf8, paranoid)
    except TableSpecError:
        raise
    except TableError as e:
        if _open_error is None:
            raise
        report_open_error(str(e))
        table = SurrogateTable(spec, str(e))
    with _cache_lock:
        _cache[key] = (table, stamp)
    return table


_proxy_approvals: dict[str, frozenset[str]] = {}


def _proxy_approved(cfg: Config, name: str) -> bool:
    """Whether proxymap(8) serves `name` (a proxied type:name): proxy_read_maps lists it
    as proxy:NAME, braces around an item and its attributes allowed, as Postfix's
    proxymap reads that list."""
    value = cfg.get("proxy_read_maps")
    approved = _proxy_approvals.get(value)
    if approved is None:
        names = set()
        for item in split_list(value):
            if item.startswith("{"):
                words = split_braced(item[1:-1]) if item.endswith("}") else []
                item = words[0] if words else ""
            if item.startswith("proxy:") and ":" in _unproxied(item):
                names.add(_unproxied(item))
        approved = _proxy_approvals[value] = frozenset(names)
    return _unproxied(name) in approved


def _unproxied(name: str) -> str:
    # proxymap drops any number of proxy: prefixes, of its list's items and of the names
    # its clients ask for (which name the table after their first proxy:).
    while name.startswith("proxy:"):
        name = name.removeprefix("proxy:")
    return name


def open_at_start(cfg: Config, params: Sequence[str], opener: Callable[[str, str], object]) -> None:
    """Open the tables the list parameters `params` name, `opener(param, spec)` each, as
    Postfix's daemons open theirs when they start, so that one that does not open is
    reported then (see above) and not by the first client or message. An item names a
    table when its type is one (`!type:name` too; a restriction's table is an item of its
    own); a type:name that is none is left for its lookup to report."""
    for param in params:
        for item in cfg.get_list(param):
            spec = item.removeprefix("!")
            if spec.partition(":")[0] in TABLE_TYPES:
                with contextlib.suppress(TableError):
                    opener(param, spec)


def lookup_many(table: Table, keys: Sequence[str]) -> list[str | None]:
    """lookup() of every key; one call into Rust where the table supports it."""
    batch = getattr(table, "lookup_many", None)
    if batch is not None:
        result: list[str | None] = batch(keys)
        return result
    return [table.lookup(k) for k in keys]
