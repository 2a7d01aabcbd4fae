"""main.cf: parse Postfix's `name = value` syntax, and edit it in place for `postconf -e/-X/-#`.

Syntax (postconf(5)): a logical line starts in column one; a line that starts with
whitespace continues the previous logical line; blank lines and lines whose first non-blank
character is '#' are comments (and end nothing: a continuation may follow a comment). The
last definition of a name wins.

Diagnostics, worded as Postfix's: `fatal: FILE, line N: missing '=' after attribute name:
"TEXT"`, `fatal: FILE, line N: missing attribute name: "TEXT"`, `warning: FILE: logical line
must not start with whitespace: "TEXT"` (its first 30 characters, then "..."), `warning:
FILE, line N: overriding earlier entry: NAME=OLDVALUE` (a name defined again with another
value, as Postfix's dict_load_fp).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from oxipost.durable import write_atomically
from oxipost.printable import printable

# split_nameval: a name is anything up to white space or '=' (a transport's
# "scalemail-backend_destination_rate_delay" too); white space inside it is no name.
_NAME = re.compile(r"[^ \t\n\v\f\r=]+$")


class MainCfError(Exception):
    """A main.cf that Postfix would refuse (the message is Postfix's, without the prefix)."""


class Entry:
    """One logical line: a definition, or (name None) comment/blank text kept for editing.
    (A plain class: see mastercf.Service for why not a dataclass.)"""

    __slots__ = ("lineno", "lines", "name", "value")

    def __init__(self, name: str | None, value: str, lines: list[str], lineno: int) -> None:
        self.name = name
        self.value = value
        self.lines = lines  # the physical lines, with their newlines
        self.lineno = lineno

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, {self.value!r}, {self.lines!r}, {self.lineno!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.name, self.value, self.lines, self.lineno) == (
            other.name,
            other.value,
            other.lines,
            other.lineno,
        )


def parse_text(
    text: str, path: str, warn: list[str] | None = None, defined: Mapping[str, str] | None = None
) -> list[Entry]:
    """Split main.cf text into entries; raise MainCfError on a line Postfix refuses. The
    warnings go to warn, in the order Postfix gives them; defined: what the reader had set
    before (config_directory), which a definition with another value overrides too."""
    entries: list[Entry] = []
    current: Entry | None = None
    for lineno, line in enumerate(text.splitlines(keepends=True), start=1):
        body = line.rstrip("\r\n")
        if not body.strip() or body.lstrip().startswith("#"):
            entries.append(Entry(None, "", [line], lineno))
            continue
        if body[0] in " \t":
            if current is not None:
                current.lines.append(line)
                current.value += body
                continue
            # Postfix warns and ignores text that continues nothing, showing its first
            # 30 characters (readllines' "%.30s...").
            if warn is not None:
                shown = printable(body[:30]) + ("..." if len(body) > 30 else "")
                warn.append(f'{path}: logical line must not start with whitespace: "{shown}"')
            entries.append(Entry(None, "", [line], lineno))
            continue
        current = Entry(None, body, [line], lineno)
        entries.append(current)
        # A definition; its name is checked once the logical line is complete.
        current.name = ""
    seen = dict(defined or {})
    for e in entries:
        if e.name == "":
            e.name, e.value = _split_definition(e.value, path, e.lineno)
            if warn is None:
                continue
            # Postfix warns of a value it replaces, not of the same value again.
            old = seen.get(e.name)
            if old is not None and old != e.value:
                warn.append(f"{path}, line {e.lineno}: overriding earlier entry: {e.name}={old}")
            seen[e.name] = e.value
    return entries


def _split_definition(logical: str, path: str, lineno: int) -> tuple[str, str]:
    name, eq, value = logical.partition("=")
    name = name.strip()
    shown = printable(logical.strip())
    if not eq:
        raise MainCfError(f"{path}, line {lineno}: missing '=' after attribute name: \"{shown}\"")
    if not name:
        raise MainCfError(f'{path}, line {lineno}: missing attribute name: "{shown}"')
    if not _NAME.match(name):
        raise MainCfError(f"{path}, line {lineno}: missing '=' after attribute name: \"{shown}\"")
    return name, value.strip()


def read(
    path: str, warn: list[str] | None = None, defined: Mapping[str, str] | None = None
) -> list[Entry]:
    """Parse the main.cf at path (OSError propagates: the caller words it)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_text(f.read(), path, warn, defined)


def settings(entries: list[Entry]) -> dict[str, str]:
    """Definitions by name, last one winning, in first-definition order."""
    out: dict[str, str] = {}
    for e in entries:
        if e.name:
            out[e.name] = e.value
    return out


# What C's isspace() calls white space: a line that starts with it continues an entry.
SPACE = " \t\n\v\f\r"
# The name a main.cf line starts with, as Postfix's pcf_edit_main takes it.
_KEY = re.compile(r"[^ \t\n\v\f\r=]*")


def read_lines(path: str) -> list[str]:
    """path's lines as Postfix's vstring_get reads them, each ending in a newline;
    MainCfError `open PATH for reading: ...` if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except OSError as e:
        raise MainCfError(f"open {path} for reading: {e.strerror}") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line + "\n" for line in lines]


def is_content(line: str) -> bool:
    """Whether a line is content, not a comment or all white space."""
    body = line.lstrip(SPACE)
    return bool(body) and body[0] != "#"


def replace(path: str, lines: list[str]) -> None:
    """The file at path holds lines now, replaced atomically, its mode kept."""
    mode = os.stat(path).st_mode & 0o7777
    write_atomically(path, "".join(lines).encode("utf-8", "surrogateescape"), mode)


def edit(path: str, requests: dict[str, str | None], comment_out: bool = False) -> list[str]:
    """Change main.cf in place as `postconf -e`, `-X` and `-#` do (Postfix's
    pcf_edit_main); return the warnings. requests maps a name to its new value, or to
    None to remove it (to comment it out with comment_out). Every definition of a name
    is replaced ("name = value", Postfix's spacing), removed or commented out with its
    continuation lines, and a second one is warned of; comments and other lines stay as
    they are. Names not found are added at the end, sorted (Postfix 3.7 adds them in its
    hash table's order, which changes from one run to the next; later Postfix sorts)."""
    found = dict.fromkeys(requests, 0)
    warnings: list[str] = []
    out: list[str] = []
    interesting = False
    for line in read_lines(path):
        if not is_content(line):
            out.append(line)
        elif line[0] in SPACE:
            if not interesting:
                out.append(line)
            elif comment_out:
                out.append("#" + line)
        else:
            key = _KEY.match(line).group()  # type: ignore[union-attr]
            interesting = key in requests
            if not interesting:
                out.append(line)
                continue
            found[key] += 1
            if found[key] == 2:
                warnings.append(f'{path}: multiple entries for "{key}"')
            value = requests[key]
            if value is not None:
                out.append(f"{key} = {value}\n")
            elif comment_out:
                out.append("#" + line)
    for name in sorted(requests, key=lambda n: n.encode("utf-8", "surrogateescape")):
        value = requests[name]
        if value is not None and not found[name]:
            out.append(f"{name} = {value}\n")
    replace(path, out)
    return warnings
