"""main.cf: parse Postfix's `name = value` syntax, and edit it in place for `postconf -e/-X/-#`.

Syntax (postconf(5)): a logical line starts in column one; a line that starts with
whitespace continues the previous logical line; blank lines and lines whose first non-blank
character is '#' are comments (and end nothing: a continuation may follow a comment). The
last definition of a name wins.

Diagnostics, worded as Postfix's: `fatal: FILE, line N: missing '=' after attribute name:
"TEXT"`, `fatal: FILE, line N: missing attribute name: "TEXT"`, `warning: FILE: logical line
must not start with whitespace: "TEXT"`.
"""

from __future__ import annotations

import os
import re

from oxipost.durable import write_atomically

_NAME = re.compile(r"[A-Za-z0-9_]+$")


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


def printable(text: str) -> str:
    """Postfix's printable(): control characters become '?'."""
    return "".join(c if c.isprintable() or c == " " else "?" for c in text)


def parse_text(text: str, path: str, warn: list[str] | None = None) -> list[Entry]:
    """Split main.cf text into entries; raise MainCfError on a line Postfix refuses."""
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
            # Postfix warns and ignores text that continues nothing.
            if warn is not None:
                warn.append(
                    f'{path}: logical line must not start with whitespace: "{printable(body)}"'
                )
            entries.append(Entry(None, "", [line], lineno))
            continue
        current = Entry(None, body, [line], lineno)
        entries.append(current)
        # A definition; its name is checked once the logical line is complete.
        current.name = ""
    for e in entries:
        if e.name == "":
            e.name, e.value = _split_definition(e.value, path, e.lineno)
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


def read(path: str, warn: list[str] | None = None) -> list[Entry]:
    """Parse the main.cf at path (OSError propagates: the caller words it)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_text(f.read(), path, warn)


def settings(entries: list[Entry]) -> dict[str, str]:
    """Definitions by name, last one winning, in first-definition order."""
    out: dict[str, str] = {}
    for e in entries:
        if e.name:
            out[e.name] = e.value
    return out


def _render(name: str, value: str) -> str:
    return f"{name} = {value}\n" if value else f"{name} =\n"


def edit(
    path: str,
    set_values: dict[str, str] | None = None,
    remove: set[str] | None = None,
    comment_out: set[str] | None = None,
) -> None:
    """Change main.cf in place as `postconf -e`, `-X` and `-#` do, keeping comments and order.

    A changed parameter keeps its position (its first definition; later duplicates are
    dropped); a new one is appended. The file is replaced atomically.
    """
    set_values = dict(set_values or {})
    remove = remove or set()
    comment_out = comment_out or set()
    try:
        entries = read(path)
    except FileNotFoundError:
        entries = []
    out: list[str] = []
    done: set[str] = set()
    for e in entries:
        name = e.name
        if not name:
            out.extend(e.lines)
        elif name in set_values:
            if name not in done:
                out.append(_render(name, set_values[name]))
                done.add(name)
        elif name in remove:
            continue
        elif name in comment_out:
            out.extend("#" + line for line in e.lines)
        else:
            out.extend(e.lines)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    for name, value in set_values.items():
        if name not in done:
            out.append(_render(name, value))
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    write_atomically(path, "".join(out).encode("utf-8", "surrogateescape"), mode)
