"""tok822 - Postfix's RFC 822 address list parser (src/global/tok822_parse.c)

An address header's value as Postfix's cleanup rebuilds it once it has rewritten one of
its addresses: tok822_scan() cuts the text into atoms, quoted strings, comments, domain
literals and operators (with Postfix's extra operators '%', '!' and '|'); tok822_parse()
groups them into addresses from right to left, moves each comment to the end of its
address, and adds the commas a list lacks ("John Smith" is two addresses); externalize()
writes the list back, a line break after each comma and, past 250 bytes of text that is
not address in one comma-separated element, that element reduced to "<address>" as
Postfix guards Sendmail's buffers (TOK822_STR_HEAD). fold() joins those lines as
cleanup_fold_header does, while a line stays under 70 bytes.

Diagnostics: externalize() warns "stripping too many comments from address: TEXT..." of
an element it reduces.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from oxipost.delivery.address import quote_local
from oxipost.printable import printable, truncate

ATOM = "atom"
QSTRING = "qstring"
COMMENT = "comment"
DOMLIT = "domlit"
ADDR = "addr"
STARTGRP = "startgrp"

# Single-character operators: RFC 822's specials and Postfix's '|', '%' and '!'.
_OPCHARS = frozenset('|%!()<>@,;:\\".[]')
_SPACE = frozenset(" \t\r\n")
_WORDS = frozenset({ATOM, QSTRING, DOMLIT})
_NON_OPERATORS = frozenset({ATOM, QSTRING, COMMENT, DOMLIT, ADDR})
_MAX_NONADDR_LENGTH = 250
FOLD_WIDTH = 70


class Tok:
    """One token, or an address (ADDR) whose tokens are its `head` list."""

    __slots__ = ("head", "next", "owned", "prev", "text", "type")

    def __init__(self, type: str, text: str = "") -> None:
        self.type = type
        self.text = text
        self.prev: Tok | None = None
        self.next: Tok | None = None
        self.head: Tok | None = None
        self.owned = False  # inside an address the parser grouped: no blanks added


def _collect(s: str, i: int, stop: Callable[[str], bool]) -> tuple[str, int]:
    """COLLECT: characters from s[i] until `stop` (a backslash takes the next one as it
    is), each blank as a space; the text and where it stopped."""
    out: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 1
            if i == n:
                break
            c = s[i]
        elif stop(c):
            break
        out.append(" " if c in _SPACE else c)
        i += 1
    return "".join(out), i


def _comment(s: str, i: int) -> tuple[str, int]:
    """A comment kept as written, nested ones too, from just after its '('."""
    level = 1
    out = ["("]
    n = len(s)
    while i < n:
        c = s[i]
        out.append(c)
        i += 1
        if c == "(":
            level += 1
        elif c == ")":
            level -= 1
            if not level:
                break
        elif c == "\\":
            if i == n:
                break
            out.append(s[i])
            i += 1
    return "".join(out), i


def _atom_end(c: str) -> bool:
    return c in _SPACE or c in _OPCHARS


# The runs most tokens are, without backslashes: scan() takes them whole.
_ATOM_RUN = re.compile(r'[^ \t\r\n|%!()<>@,;:\\".\[\]]+')
_QUOTED_RUN = re.compile(r'([^"\\]*)"')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BLANKS = str.maketrans("\t\r\n", "   ")


def scan(s: str, limit: int = 0) -> list[Tok]:
    """tok822_scan: the tokens of `s`, at most `limit` of them when it is not 0."""
    toks: list[Tok] = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        i += 1
        if c in _SPACE:
            continue
        if c == "(":
            tok = Tok(COMMENT)
            tok.text, i = _comment(s, i)
        elif c == "[":
            tok = Tok(DOMLIT)
            tok.text, i = _collect(s, i, "]".__eq__)
            i += i < n
        elif c == '"':
            tok = Tok(QSTRING)
            m = _QUOTED_RUN.match(s, i)
            if m is not None:
                tok.text, i = m.group(1).translate(_BLANKS), m.end()
            else:
                tok.text, i = _collect(s, i, '"'.__eq__)
                i += i < n
        elif c != "\\" and c in _OPCHARS:
            tok = Tok(c)
        else:
            m = _ATOM_RUN.match(s, i - 1)
            if m is not None and (m.end() == n or s[m.end()] != "\\"):
                text, i = m.group(), m.end()
            else:
                text, i = _collect(s, i - 1, _atom_end)
            # An atom with what RFC 822 must quote is written back quoted; 8-bit text is
            # left alone.
            quoted = " " in text or _CONTROL.search(text) is not None
            quoted = quoted or not _OPCHARS.isdisjoint(text)
            tok = Tok(QSTRING if quoted else ATOM, text)
        if toks:
            toks[-1].next = tok
            tok.prev = toks[-1]
        toks.append(tok)
        if limit > 0 and len(toks) >= limit:
            break
    return toks


def _unlink(tok: Tok) -> Tok:
    prev, nxt = tok.prev, tok.next
    assert prev is not None and nxt is not None  # the sentinels hold every token
    prev.next, nxt.prev = nxt, prev
    tok.prev = tok.next = None
    return prev


def _insert_after(left: Tok, tok: Tok) -> None:
    right = left.next
    left.next, tok.prev, tok.next = tok, left, right
    if right is not None:
        right.prev = tok


def _group(left: Tok, right: Tok, sync: bool) -> Tok:
    """tok822_group: the tokens between `left` and `right` made one address, a comma
    put before it when `sync`; `left`."""
    first = left.next
    if left is not right and first is not right and first is not None:
        group = Tok(ADDR)
        group.head = first
        last = right.prev
        assert last is not None
        first.prev = last.next = None
        tok: Tok | None = first
        while tok is not None:
            tok.owned = True
            tok = tok.next
        left.next, group.prev, group.next, right.prev = group, left, right, group
        if sync:
            _insert_after(left, Tok(","))
    return left


def parse(s: str, limit: int = 0) -> Tok | None:
    """tok822_parse: the address list `s` as a token list whose addresses are ADDR
    tokens; None when it has no tokens."""
    toks = scan(s, limit)
    if not toks:
        return None
    head, tail = Tok(""), Tok("")
    head.next, toks[0].prev = toks[0], head
    toks[-1].next, tail.prev = tail, toks[-1]
    do_word, do_group = True, False
    right = tail
    tp = tail.prev
    while tp.type:
        kind = tp.type
        if kind == COMMENT:  # to the end of its address
            prev = _unlink(tp)
            _insert_after(right.prev, tp)  # type: ignore[arg-type]
            right, tp = tp, prev
            continue
        if kind == ";":  # the end of a named group
            right = _group(tp, right, True)
            do_word, do_group = True, True
        elif kind == ":" and do_group:
            tp.type = STARTGRP
            _group(tp, right, False)
            while tp.type and tp.type != ",":
                tp = tp.prev  # type: ignore[assignment]
            right = tp
            continue
        elif kind == ">":  # the end of <route>
            right = _group(tp, right, True)
            while tp.type and tp.type != "<":
                if tp.type == COMMENT:
                    prev = _unlink(tp)
                    _insert_after(right.prev, tp)  # type: ignore[arg-type]
                    right, tp = tp, prev
                    continue
                tp = tp.prev  # type: ignore[assignment]
            _group(tp, right, False)
            while tp.type and (len(tp.type) > 1 or tp.type not in ">;,:"):
                tp = tp.prev  # type: ignore[assignment]
            right = tp
            do_word = True
            continue
        elif kind in _WORDS:
            if not do_word:
                right = _group(tp, right, True).next  # type: ignore[assignment]
            do_word = False
        elif kind == ",":
            right = _group(tp, right, False)
            do_word = True
        else:
            do_word = True
        tp = tp.prev  # type: ignore[assignment]
    _group(tp, right, False)
    first = head.next
    if first is tail:
        return None
    assert first is not None and tail.prev is not None
    first.prev = tail.prev.next = None
    return first


def _append_space(tok: Tok) -> bool:
    nxt = tok.next
    if nxt is None or tok.owned:
        return False
    if tok.type in (",", STARTGRP) or nxt.type == "<":
        return True
    return tok.type in _NON_OPERATORS and nxt.type in _NON_OPERATORS


def internalize(tok: Tok | None) -> str:
    """tok822_internalize: the tokens as one string, unquoted."""
    out: list[str] = []
    while tok is not None:
        kind = tok.type
        if kind == ",":
            out.append(",")
        elif kind == ADDR:
            out.append(internalize(tok.head))
        elif kind == DOMLIT:
            out.append("[" + tok.text + "]")
        elif kind == STARTGRP:
            out.append(":")
        elif kind in _NON_OPERATORS:
            out.append(tok.text)
        else:
            out.append(kind)
        if _append_space(tok):
            out.append(" ")
        tok = tok.next
    return "".join(out)


def operators_quoted(tok: Tok | None, internal: str) -> bool:
    """Whether the address these tokens spell (`internal` their internal form) has its
    '@', '!' and '%' only inside quotes ("a@b"): trivial-rewrite, which looks for them
    among the tokens, finds no domain there and appends @$myorigin ("a@b"@$myorigin)."""
    while tok is not None:
        if tok.type in ("@", "!", "%"):
            return False
        tok = tok.next
    return any(c in internal for c in "@!%")


def _quoted(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


def scan_addr(text: str) -> Tok:
    """tok822_scan_addr: `text` as one address, its tokens not parsed."""
    addr = Tok(ADDR)
    toks = scan(text)
    addr.head = toks[0] if toks else None
    return addr


def externalize(
    tok: Tok | None,
    line: bool = False,
    trunc: bool = False,
    warn: Callable[[str], None] | None = None,
) -> str:
    """tok822_externalize: the tokens in external form, addresses quoted as
    quote_822_local does; a line break after each comma when `line`; each
    comma-separated element with more than 250 bytes of text besides its address
    reduced to "<address>" when `trunc`, with a warning to `warn`."""
    out: list[str] = []
    start = 0  # where the element began, bytes
    size = 0
    addr: Tok | None = None
    addr_len = 0

    def add(text: str) -> None:
        nonlocal size
        out.append(text)
        size += _bytes(text)

    def enforce() -> None:
        nonlocal size
        if addr is not None and size - addr_len > start + _MAX_NONADDR_LENGTH:
            text = "".join(out)
            cut = _byte_offset(text, start)
            if warn is not None:
                shown = truncate(printable(text[cut:]), 100)
                warn(f"stripping too many comments from address: {shown}...")
            out[:] = [text[:cut]]
            size = start
            add("<" + (quote_local(internalize(addr.head)) if addr.head else "") + ">")

    while tok is not None:
        kind = tok.type
        if kind == ",":
            if trunc:
                enforce()
            add(",\n" if line else ", ")
            if trunc:
                start, addr, addr_len = size, None, 0
            tok = tok.next
            continue
        if kind == ADDR:
            addr = tok
            before = size
            add(quote_local(internalize(tok.head)))
            addr_len = size - before
        elif kind in (ATOM, COMMENT):
            add(tok.text)
        elif kind == QSTRING:
            add('"' + _quoted(tok.text, '"\\\r\n') + '"')
        elif kind == DOMLIT:
            add("[" + _quoted(tok.text, "\\\r\n") + "]")
        elif kind == STARTGRP:
            add(":")
        else:
            if kind == "<" and tok.next is not None and tok.next.type == ">":
                addr, addr_len = tok, 0
            add(kind)
        if _append_space(tok):
            add(" ")
        tok = tok.next
    if trunc:
        enforce()
    return "".join(out)


def _byte_offset(text: str, size: int) -> int:
    """The index in `text` of its byte offset `size`."""
    if text.isascii():
        return size
    return len(truncate(text, size))


def fold(header: str) -> str:
    """cleanup_fold_header and cleanup_out_header: the lines of a rebuilt address header
    joined with a space while the line stays under 70 bytes (a tab counts one), each
    other line after the first begun with a tab."""
    lines = header.split("\n")
    out = [lines[0]]
    width = _bytes(lines[0])
    for text in lines[1:]:
        size = _bytes(text)
        if width + 1 + size < FOLD_WIDTH:
            out[-1] += " " + text
            width += 1 + size
        else:
            out.append(text if text[:1] in (" ", "\t") else "\t" + text)
            width = size
    return "\n".join(out)


def _bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))
