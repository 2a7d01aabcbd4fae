"""Shared agent helpers: Postfix's dsn_split() and the sysexits.h table (sys_exits.c)."""

from __future__ import annotations

import re

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
