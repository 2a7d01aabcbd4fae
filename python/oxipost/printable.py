"""printable - Postfix's printable() (src/util/printable.c) and escape() (src/util/escape.c)

Text from clients and tables reaches replies, headers and logs through it: each byte
that is not printable ASCII becomes a replacement character, except that, where UTF-8 is
allowed (Postfix's util_utf8_enable: smtputf8_enable in smtpd), a byte from 0xC2 to 0xFE
and the continuation bytes (0x80 to 0xBF) after it stay as one character, as Postfix's
loose test keeps them. Bytes that came in as something other than UTF-8 are surrogate
escapes in our text and are judged as those bytes.

escape() shows bytes as C does: printable ASCII as is (a backslash doubled), \\t, \\r,
\\n and the other named controls by name, every other byte as a 3-digit octal escape
(smtpd's "non-SMTP command" warning).
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")
_UNPRINTABLE_UTF8 = re.compile(rb"([\xc2-\xfe][\x80-\xbf]+)|[^\x20-\x7e]")


def printable(text: str, replacement: str = "?", utf8: bool = True) -> str:
    """`text` with each byte that is not printable ASCII as `replacement` (one ASCII
    character), UTF-8 characters kept when `utf8`."""
    if text.isascii() and text.isprintable():
        return text
    raw = text.encode("utf-8", "surrogateescape")
    rep = replacement.encode()
    if utf8:
        out = _UNPRINTABLE_UTF8.sub(lambda m: m.group(1) or rep, raw)
    else:
        out = _UNPRINTABLE.sub(rep, raw)
    return out.decode("utf-8", "surrogateescape")


def truncate(text: str, limit: int) -> str:
    """The first `limit` bytes of `text`, as C's "%.*s" cuts a string: a UTF-8 character
    that the cut splits keeps its first bytes (surrogate escapes, which printable() shows
    as the bytes they are)."""
    if text.isascii():
        return text[:limit]
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "surrogateescape")


_C_NAMES = {7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r", 92: "\\\\"}
_ESCAPED = [_C_NAMES.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}") for b in range(256)]


def escape(data: bytes) -> str:
    """`data` as Postfix's escape() writes it (see above)."""
    return "".join(map(_ESCAPED.__getitem__, data))
