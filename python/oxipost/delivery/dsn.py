"""Shared DSN helpers: Postfix's dsn_split(), the sysexits.h table (sys_exits.c), and RFC
3461 xtext (xtext.c), in which ENVID= and ORCPT= travel: smtpd decodes them and keeps the
decoded text, as Postfix's queue file does; the smtp client encodes them again."""

from __future__ import annotations

import re

_XTEXT_ESCAPE = re.compile(r"\+([0-9A-Fa-f]{2})")
_UXTEXT_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")

_DSN = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """Split an optional leading "X.YYY.ZZZ " status off text (Postfix's dsn_split)."""
    m = _DSN.match(text)
    if m:
        return m.group(0).strip(), text[m.end() :]
    return default, text


# exit status → (dsn, text), soft (4.x) or hard (5.x) as Postfix's sys_exits table has it.
SYSEXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}


def xtext_decode(value: str) -> str | None:
    """value with each "+XX" made the character XX (xtext_unquote); None when a "+" is not
    followed by two hex digits."""
    if value.count("+") != len(_XTEXT_ESCAPE.findall(value)):
        return None
    return _XTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    """value with "+", "=" and each character outside "!" to "~" as "+XX" (xtext_quote)."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


def orcpt_decode(value: str) -> str | None:
    """An ORCPT= value, "type;xtext", as smtpd keeps it: "type;address" decoded (utf-8
    addresses are unitext: "\\x{HEX}"); None when the ";" or the type is missing or the
    address does not decode (an empty address is taken, as Postfix 3.7 takes it)."""
    kind, sep, coded = value.partition(";")
    if not sep or not kind:
        return None
    if kind.lower() == "utf-8":
        try:
            address: str | None = _UXTEXT_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), coded)
        except ValueError:  # beyond U+10FFFF
            return None
    else:
        address = xtext_decode(coded)
    return None if address is None else f"{kind};{address}"
