"""sqlite: tables, as Postfix 3.7's dict_sqlite (sqlite_table(5)) and db_common.

`sqlite:/path/file.cf` (a name that starts with / or .) reads its parameters from that
file, in main.cf's syntax without $name expansion; any other name is a prefix of main.cf
parameters (`sqlite:sq` reads sq_dbpath, sq_query, ...). Parameters: dbpath (required),
query (a template; without it the legacy select_field, table, where_field and
additional_conditions make "SELECT F FROM T WHERE W='%s' C"), result_format (default
%s), domain (a list of domains, /files and type:tables: only keys user@domain with such
a domain are looked up), expansion_limit (0: none).

The query's %s %u %d %S %U %D %1-%9 are the key and its parts, each quoted as SQL's
single-quoted text (a ' doubled, sqlite3_mprintf's %q); a key without what the query and
result templates need (a domain for %d %D %1-%9, a local part for %u %U) is not looked up,
as db_common_expand does. Only the first column of each row counts: NULL is skipped, an
empty value warns, each other value goes through result_format (%s %u %d of the value,
%S %U %D %1-%9 of the key) and the results are joined with commas. Keys are case folded
(DICT_FLAG_FOLD_FIX) and a key that is not UTF-8 is not looked up. The table is fixed
(dict_sqlite sets DICT_FLAG_FIXED whatever the templates use): address searches ask it
for partial keys too, which `domain` keeps out.

The database is opened read-only, where Postfix's sqlite3_open would create a file that
is missing: a table whose database is not there reads as an empty one (every query fails
as on Postfix's new empty file) and looks for the file again at each lookup.

Diagnostics, Postfix's words ("NAME" the table's name, "FILE: " before a message of a
configuration file's parameters): "open NAME: REASON" (the surrogate of a daemon),
"FILE: bad string length 0 < 1: dbpath = ", "FILE: bad numerical configuration:
expansion_limit = X", "db_common_parse: NAME: Invalid query template: Q" (or result),
"FILE, line N: missing '=' after attribute name: ..."; "sqlite:NAME: Can't open database:
REASON?". At lookup time "dict_sqlite_lookup: NAME: SQL prepare failed: REASON?", and a
query that fails while it runs warns "dict_sqlite_lookup: NAME: SQL step failed for query
'Q': REASON?" before "... SQL finalize failed for query 'Q': REASON?" (the ? is the newline
Postfix's message ends with, as its logging shows it). Those are fatal to a Postfix
process; here they are TableError, a command's fatal and a daemon's temporary failure,
the text logged as an error in a daemon where Postfix's would have died with it. More
results than expansion_limit warn "dict_sqlite_lookup: NAME: Expansion limit exceeded for
key 'KEY'" and fail with "table sqlite:NAME: query error: No such file or directory" (the
%m Postfix's message shows there, from SQLite's probe for a journal).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse

import oxipost.maps as maps
from oxipost import match_list
from oxipost.config import Config, ConfigError, maincf, params
from oxipost.maps import TableError, fold, utf8_checked, utf8_refused, warn
from oxipost.user_acl import string_patterns_match

# db_common.c's template flags.
_KEY_DOMAIN = 1
_KEY_USER = 2
_VALUE_DOMAIN = 4
_VALUE_USER = 8

# The errno Postfix's "query error: %m" shows after a lookup in SQLite (see above).
_QUERY_ERRNO_TEXT = "No such file or directory"


class _Parameters:
    """cfg_parser: a table's parameters, from its file or from main.cf."""

    def __init__(self, name: str, cfg: Config | None) -> None:
        self.name = name
        self.owner = 0
        self.values: dict[str, str] = {}
        self.cfg: Config | None = None
        if name.startswith(("/", ".")):
            warnings: list[str] = []
            try:
                with open(name, encoding="utf-8", errors="surrogateescape") as f:
                    self.owner = os.fstat(f.fileno()).st_uid
                    text = f.read()
            except OSError as e:
                raise TableError(f"open {name}: {maps.os_reason(e)}") from None
            try:
                entries = maincf.parse_text(text, name, warnings)
            except maincf.MainCfError as e:
                raise TableError(str(e)) from None
            self.values = maincf.settings(entries)
            # Postfix's cfg_parser loads the file again into the same dictionary for
            # each parameter it reads: a name set twice is warned of once more with what
            # the first load left.
            maincf.parse_text(text, name, warnings, self.values)
            for w in dict.fromkeys(warnings):
                warn(w)
            self.prefix = f"{name}: "
        else:
            self.cfg = cfg
            self.prefix = ""

    def _raw(self, param: str) -> tuple[str, str | None]:
        if self.cfg is None:
            return param, self.values.get(param)
        full = f"{self.name}_{param}"
        try:
            return full, self.cfg.get(full)
        except KeyError:
            return full, None
        except ConfigError as e:
            raise TableError(str(e)) from None

    def get_str(self, param: str, default: str | None, least: int = 0) -> str | None:
        """cfg_get_str: the value, or the default when unset; one shorter than `least`
        is fatal."""
        shown, value = self._raw(param)
        if value is None:
            value = default
        if value is not None and least and len(value) < least:
            raise TableError(
                f"{self.prefix}bad string length {len(value)} < {least}: {shown} = {value}"
            )
        return value

    def get_int(self, param: str, default: int) -> int:
        shown, value = self._raw(param)
        if value is None:
            return default
        try:
            return params.parse_int(shown, value)
        except ConfigError as e:
            raise TableError(f"{self.prefix}{e}") from None


def legacy_query(p: _Parameters) -> str:
    """db_common_sql_build_query: the query of select_field, table, where_field and
    additional_conditions."""
    table = p.get_str("table", "", 1)
    select_field = p.get_str("select_field", "", 1)
    where_field = p.get_str("where_field", "", 1)
    conditions = p.get_str("additional_conditions", "")
    return f"SELECT {select_field} FROM {table} WHERE {where_field}='%s' {conditions}"


class _Templates:
    """db_common's parse context: what the query and result templates need of a key
    and a value, shared by both as in Postfix."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.flags = 0
        self.nparts = 0

    def parse(self, template: str, query: bool) -> None:
        i = 0
        while i < len(template):
            if template[i] != "%":
                i += 1
                continue
            c = template[i + 1 : i + 2]
            i += 2
            if c == "%" or c in ("s", "S"):
                continue
            if c == "u":
                self.flags |= _KEY_USER if query else _VALUE_USER
            elif c == "d":
                self.flags |= _KEY_DOMAIN if query else _VALUE_DOMAIN
            elif c == "U":
                self.flags |= _KEY_USER
            elif c == "D" or (c and c in "123456789"):
                if c != "D":
                    self.nparts = max(self.nparts, int(c))
                self.flags |= _KEY_DOMAIN
            else:
                kind = "query" if query else "result"
                raise TableError(
                    f"db_common_parse: {self.name}: Invalid {kind} template: {template}"
                )

    def _parts(self, text: str, need_user: int, need_domain: int) -> tuple[str, str] | None:
        """(user, domain) of text as the flags need them: domain "" when not asked for,
        user text itself without an @; None when text lacks a part asked for."""
        at = text.rfind("@") if self.flags & (need_user | need_domain) else -1
        if at < 0:
            return None if self.flags & need_domain else (text, "")
        if (not text[at + 1 :] and self.flags & need_domain) or (
            at == 0 and self.flags & need_user
        ):
            return None
        return text[:at], text[at + 1 :]

    def _labels(self, domain: str) -> list[str] | None:
        # argv_split drops empty labels, so a domain with too few is not looked up.
        labels = [label for label in domain.split(".") if label]
        return labels if len(labels) >= self.nparts else None

    def expand_query(self, template: str, key: str) -> str | None:
        """The query for key, each part quoted; None when key lacks a part it needs."""
        split = self._parts(key, _KEY_USER, _KEY_DOMAIN)
        if split is None:
            return None
        labels = self._labels(split[1]) if self.nparts else []
        if labels is None:
            return None
        user, domain = split
        parts = {"s": key, "u": user, "d": domain, "S": key, "U": user, "D": domain}
        return self._fill(template, parts, labels, quote=True)

    def expand_result(self, template: str, value: str, key: str) -> str | None:
        """One result through result_format; None when value lacks a part it needs."""
        vsplit = self._parts(value, _VALUE_USER, _VALUE_DOMAIN)
        ksplit = self._parts(key, _KEY_USER, _KEY_DOMAIN)
        if vsplit is None or ksplit is None:
            # The key was checked before the query (the flags are shared).
            return None
        labels = self._labels(ksplit[1]) if self.nparts else []
        if labels is None:
            return None
        parts = {
            "s": value,
            "u": vsplit[0],
            "d": vsplit[1],
            "S": key,
            "U": ksplit[0],
            "D": ksplit[1],
        }
        return self._fill(template, parts, labels, quote=False)

    @staticmethod
    def _fill(template: str, parts: dict[str, str], labels: list[str], quote: bool) -> str:
        out: list[str] = []
        i = 0
        while i < len(template):
            c = template[i]
            if c != "%":
                out.append(c)
                i += 1
                continue
            c = template[i + 1]
            i += 2
            if c == "%":
                out.append("%")
                continue
            text = labels[-int(c)] if c.isdigit() else parts[c]
            out.append(text.replace("'", "''") if quote else text)
        return "".join(out)


def _first_statement(query: str) -> str:
    """The query up to its first ; outside quotes and comments: SQLite prepares only
    that, and Postfix ignores the rest."""
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in "'\"`[":
            close = "]" if c == "[" else c
            end = query.find(close, i + 1)
            # A doubled quote inside is two quoted runs back to back.
            i = n if end < 0 else end + 1
        elif query.startswith("--", i):
            end = query.find("\n", i)
            i = n if end < 0 else end + 1
        elif query.startswith("/*", i):
            end = query.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ";":
            return query[: i + 1]
        else:
            i += 1
    return query


def _daemon_error(text: str) -> None:
    """Log what would have been a Postfix daemon's fatal error, where a daemon goes on
    (a command says it as its own fatal error)."""
    # A daemon is where open errors are reported rather than raised (allow_surrogates).
    if maps._open_error is not None:
        maps.report_open_error(text)


class SqliteTable:
    """A sqlite: table (see above)."""

    fixed = True
    utf8_name: str | None = None

    def __init__(self, name: str, cfg: Config | None, fold_keys: bool = True) -> None:
        self.name = name
        self.fold_keys = fold_keys
        p = _Parameters(name, cfg)
        self.owner: int | None = p.owner
        self.dbpath = p.get_str("dbpath", "", 1) or ""
        # An empty query is none, as in Postfix: the legacy parameters make it.
        self.query = p.get_str("query", None) or legacy_query(p)
        self.result_format = p.get_str("result_format", "%s", 1) or "%s"
        self.expansion_limit = p.get_int("expansion_limit", 0)
        self.templates = _Templates(name)
        self.templates.parse(self.query, query=True)
        self.templates.parse(self.result_format, query=False)
        # Files in the list are read now, as Postfix's string_list_init does.
        self.domains = match_list.patterns(None, name, [p.get_str("domain", "") or ""])
        self.cfg = cfg
        self._lock = threading.Lock()
        self._missing = False
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(self.dbpath)}?mode=ro"
        self._missing = not os.path.lexists(self.dbpath) and os.path.isdir(
            os.path.dirname(self.dbpath) or "."
        )
        try:
            # timeout 0: no waiting for a writer's lock, as Postfix's (no busy handler).
            conn = sqlite3.connect(
                ":memory:" if self._missing else uri,
                uri=not self._missing,
                timeout=0,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as e:
            # A directory: what SQLite says when it may create the file (Postfix's
            # read-write open), where a read-only open meets an I/O error.
            reason = "unable to open database file" if os.path.isdir(self.dbpath) else e
            raise TableError(f"sqlite:{self.name}: Can't open database: {reason}?") from None
        conn.text_factory = bytes
        return conn

    def _in_domain(self, key: str) -> bool:
        """db_common_check_domain: key is user@domain with domain in the list."""
        if not self.domains:
            return True
        user, at, domain = key.rpartition("@")
        if not at or not user:
            return False
        return string_patterns_match(self.cfg, self.domains, domain, self.name)

    def lookup(self, key: str) -> str | None:
        try:
            key.encode()
        except UnicodeEncodeError:
            # dict_sqlite skips a key that is not UTF-8 (after dict_utf8's warning).
            utf8_refused(self, key)
            return None
        if self.fold_keys:
            key = fold(key, self.utf8_name is not None)
        if not self._in_domain(key):
            return None
        if not key:
            warn(f'table "sqlite:{self.name}": empty query string -- ignored')
            return None
        query = self.templates.expand_query(self.query, key)
        if query is None:
            return None
        with self._lock:
            rows = self._run(query, key)
        found: list[str] = []
        for value in rows:
            if value is None:
                continue
            if not value:
                warn(f'table "sqlite:{self.name}": empty lookup result for: "{key}" -- ignored')
                continue
            result = self.templates.expand_result(self.result_format, value, key)
            if result is None:
                continue
            found.append(result)
            if self.expansion_limit > 0 and len(found) > self.expansion_limit:
                warn(f"dict_sqlite_lookup: {self.name}: Expansion limit exceeded for key '{key}'")
                raise TableError(f"table sqlite:{self.name}: query error: {_QUERY_ERRNO_TEXT}")
        if not found:
            return None
        return utf8_checked(self, key, ",".join(found))

    def _run(self, query: str, key: str) -> list[str | None]:
        """The first column of every row, as sqlite3_column_text gives it."""
        if self._missing and os.path.lexists(self.dbpath):
            self._conn.close()
            self._conn = self._connect()
        statement = _first_statement(query)
        try:
            cursor = self._conn.execute(statement)
            rows = cursor.fetchall()
        except sqlite3.Error as e:
            raise self._failure(statement, query, e) from None
        return [self._text(row[0]) if row else None for row in rows]

    def _failure(self, statement: str, query: str, e: sqlite3.Error) -> TableError:
        """A query that did not prepare, or that failed as it ran (which Postfix's
        finalize then makes fatal): Python's sqlite3 does both in one call, so the
        statement is prepared again alone (EXPLAIN) to tell which."""
        try:
            self._conn.execute("EXPLAIN " + statement).fetchall()
        except sqlite3.Error:
            text = f"dict_sqlite_lookup: {self.name}: SQL prepare failed: {e}?"
        else:
            warn(f"dict_sqlite_lookup: {self.name}: SQL step failed for query '{query}': {e}?")
            text = f"dict_sqlite_lookup: {self.name}: SQL finalize failed for query '{query}': {e}?"
        _daemon_error(text)
        return TableError(text)

    def _text(self, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, bytes):
            # A C string: up to its first NUL.
            return value.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if isinstance(value, float):
            # SQLite's own rendering of a REAL (2.0, 1.0e+20), not Python's.
            text = self._conn.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]
            return bytes(text).decode()
        return str(value)
