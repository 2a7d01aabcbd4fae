"""match_list - the patterns of a Postfix match list, /file/name items read in

A match list (mydestination, relay_domains, mynetworks, debug_peer_list,
authorized_submit_users, an sqlite: table's domain, ...) is patterns separated by commas
and whitespace: a name or address, a type:table, or /file/name, which stands for the
patterns in that file. `patterns(cfg, pname, items)` expands such a list as Postfix 3.7's
match_list_parse does, once per Config (a daemon reads the files as it loads its
configuration, as Postfix's processes do as they start; never per lookup): each line of
the file that does not start with '#' is split as the list itself, a /file/name in it
read in turn; under !/file/name each of the file's patterns is negated (and one that is
negated there matches); any number of '!' toggles. A relative name is not a file: it is
matched as a name, as in Postfix. The result is `(result, pattern)` pairs, the first
pattern that matches giving its result.

DIAGNOSTICS
A word that starts with '#' ends the line: 'PNAME: comment at end of line is not
supported: #WORD REST' (REST as Postfix prints it, with the line's newline). A file that
does not open is the table non-existent:/file/name, whose every lookup fails ("error: open
file /file/name: REASON" once per process, then dict_surrogate's warning at each lookup;
`table` gives it to the matchers, `lookup_problem` words their warning). A '!' without a
pattern ("PNAME: no pattern after '!'") and a file that opens but cannot be read
("match_list_parse: read file FILE: REASON", a directory) are ConfigError: fatal to the
daemon that reads the list as it starts, as to Postfix's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from oxipost.config import Config, ConfigError
from oxipost.maps import (
    SurrogateTable,
    Table,
    open_table,
    os_reason,
    report_open_error,
    surrogate_registry,
    warn,
)

# Postfix's DICT_TYPE_NOFILE: the type of the table that stands for a file not opened.
NOFILE = "non-existent"
_DELIMITERS = " ,\t\r\n"

Pattern = tuple[bool, str]

# One per file, as dict_register keeps one per process: its error is logged once.
_nofile = surrogate_registry()


def patterns(cfg: Config | None, pname: str, items: Sequence[str]) -> tuple[Pattern, ...]:
    """The list `items` (of the parameter or table setting `pname`) with its files read
    in, as (result when matched, pattern) pairs; cached per Config."""
    key = (pname, tuple(items))
    # In the Config itself: a plain dict read per lookup (mynetworks is matched for
    # every connection), gone with it.
    cache: dict[tuple[str, tuple[str, ...]], tuple[Pattern, ...]] = {}
    if cfg is not None:
        cache = cfg.derived.setdefault("match_list", cache)  # type: ignore[assignment]
    found = cache.get(key)
    if found is None:
        out: list[Pattern] = []
        # Parsed as the value it was split from, so that a comment's warning shows the
        # rest of it.
        _parse(pname, " ".join(items), True, out)
        found = cache[key] = tuple(out)
    return found


def _words(text: str) -> Iterator[tuple[str, str]]:
    """mystrtokq: each word (a {...} group whole) and the text after the delimiter that
    ends it."""
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in _DELIMITERS:
            i += 1
        if i == n:
            return
        start, depth = i, 0
        while i < n and (depth or text[i] not in _DELIMITERS):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}" and depth:
                depth -= 1
            i += 1
        yield text[start:i], text[i + 1 :]
        i += 1


def _parse(pname: str, text: str, match: bool, out: list[Pattern]) -> None:
    for word, rest in _words(text):
        if word.startswith("#"):
            warn(f"{pname}: comment at end of line is not supported: {word} {rest}")
            return
        item = word.lstrip("!")
        result = match if (len(word) - len(item)) % 2 == 0 else not match
        if not item:
            raise ConfigError(f"{pname}: no pattern after '!'")
        if item.startswith("/"):
            _read_file(pname, item, result, out)
        else:
            out.append((result, item))


def _read_file(pname: str, path: str, match: bool, out: list[Pattern]) -> None:
    try:
        f = open(path, "rb")
    except IsADirectoryError as e:
        # C's open() takes a directory; its first read fails.
        raise ConfigError(f"match_list_parse: read file {path}: {os_reason(e)}") from None
    except OSError as e:
        spec = f"{NOFILE}:{path}"
        if spec not in _nofile:
            reason = f"open file {path}: {os_reason(e)}"
            report_open_error(reason)
            _nofile[spec] = SurrogateTable(spec, reason)
        # Postfix adds the pseudo table without the '!': its lookups fail either way.
        out.append((True, spec))
        return
    with f:
        try:
            data = f.read()
        except OSError as e:
            raise ConfigError(f"match_list_parse: read file {path}: {os_reason(e)}") from None
    text = data.decode("utf-8", "surrogateescape")
    # Lines as vstring_fgets reads them: each with its newline (a warning shows it).
    lines = text.split("\n")
    for n, line in enumerate(lines):
        if not line.startswith("#"):
            _parse(pname, line + "\n" if n < len(lines) - 1 else line, match, out)


def table(cfg: Config | None, spec: str) -> Table:
    """The table a type:table pattern names (a file that did not open: its surrogate)."""
    surrogate = _nofile.get(spec)
    if surrogate is not None:
        return surrogate
    return open_table(spec, cfg)


def lookup_problem(pname: str, spec: str) -> None:
    """match_ops' warning for a table in the list `pname` that could not be read."""
    warn(f"{pname}: {spec}: table lookup problem")
