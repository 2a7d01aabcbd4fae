"""aliases(5) source files as postalias(1) reads them.

A logical line is `name: value`. Postfix scans it into RFC 822 tokens (atoms, quoted strings,
comments, domain literals, specials) and stores the value re-externalized from the tokens,
so `b,\\n   c` is stored as `b, c` and `\\\\root` as `"\\\\root"`; `postalias -q` shows
that stored form, and local(8) parses it again.
"""

from __future__ import annotations

from oxipost._core import maps as _core
from oxipost.maps import fold

SPECIALS = '()<>@,;:\\".[]'
ATOM, QSTRING, COMMENT, DOMLIT = "atom", "qstring", "comment", "domlit"
_WORDS = (ATOM, QSTRING, COMMENT, DOMLIT)


def scan(text: str) -> list[tuple[str, str]]:
    """RFC 822 tokens as (kind, text); a special's kind is the character itself. Quoted
    strings and comments keep their delimiters and escapes; an atom keeps escaped
    characters without the backslash, as Postfix's tok822_scan."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            tokens.append((QSTRING, text[i : j + 1]))
            i = j + 1
        elif ch == "(":
            depth, j = 0, i
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
                if depth == 0:
                    break
            tokens.append((COMMENT, text[i:j]))
            i = j
        elif ch == "[":
            j = text.find("]", i)
            j = n if j < 0 else j + 1
            tokens.append((DOMLIT, text[i:j]))
            i = j
        elif ch in SPECIALS and ch != "\\":
            tokens.append((ch, ch))
            i += 1
        else:
            atom = []
            while i < n and not text[i].isspace() and (text[i] not in SPECIALS or text[i] == "\\"):
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                atom.append(text[i])
                i += 1
            tokens.append((ATOM, "".join(atom)))
    return tokens


def _quote_atom(atom: str) -> str:
    if any(c in SPECIALS or c.isspace() or ord(c) < 32 for c in atom):
        escaped = atom.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return atom


def externalize(tokens: list[tuple[str, str]]) -> str:
    """Tokens back to text with Postfix's spacing: a blank between two words (atom, quoted
    string, comment, domain literal) and before `<` after a word, `, ` after a comma."""
    out: list[str] = []
    prev: str | None = None
    for kind, text in tokens:
        if prev is not None and (
            prev == "," or (prev in _WORDS and (kind in _WORDS or kind == "<"))
        ):
            out.append(" ")
        out.append(_quote_atom(text) if kind == ATOM else text)
        prev = kind
    return "".join(out)


def _plain(tokens: list[tuple[str, str]]) -> str:
    """The alias name: tokens joined without quoting or blanks (quotes removed)."""
    parts = []
    for kind, text in tokens:
        parts.append(text[1:-1] if kind == QSTRING else text)
    return "".join(parts)


def parse_aliases(
    text: bytes, name: str, fold_keys: bool = True, utf8: bool = False
) -> tuple[list[tuple[bytes, bytes, int]], list[tuple[int, str]]]:
    """(name, value, line) of each alias in order, and Postfix's warnings as (line, text).
    The entry `@: @` that Postfix appends (Sendmail's "database complete" mark) is last."""
    lines, warnings = _core.logical_lines(text, name)
    pairs: list[tuple[bytes, bytes, int]] = []
    for lineno, raw in lines:
        tokens = scan(raw.decode("utf-8", "surrogateescape"))
        colon = next((i for i, t in enumerate(tokens) if t[0] == ":"), None)
        if (
            colon is None
            or colon == 0
            or colon == len(tokens) - 1
            or any(t[0] == "," for t in tokens[:colon])
        ):
            warnings.append((lineno, f"{name}, line {lineno}: need name:value pair"))
            continue
        key = _plain(tokens[:colon])
        if fold_keys:
            key = fold(key, utf8)
        value = externalize(tokens[colon + 1 :])
        pairs.append(
            (
                key.encode("utf-8", "surrogateescape"),
                value.encode("utf-8", "surrogateescape"),
                lineno,
            )
        )
    pairs.append((b"@", b"@", len(text.split(b"\n")) + 1))
    return pairs, warnings
