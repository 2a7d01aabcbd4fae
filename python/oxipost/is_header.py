"""is_header - Postfix's is_header() (src/global/is_header.c)

Whether text starts with a message header label: printable ASCII up to a colon, blanks
allowed between the label and the colon. Used on bounce template headers and access(5)
PREPEND text.
"""

from __future__ import annotations


def header_length(line: str) -> int:
    """The length of a header label at the start of line, 0 if there is none."""
    length = 0
    blanks = False
    for ch in line:
        if ch == ":":
            return length
        if ch in " \t":
            if not length:
                return 0
            blanks = True
        elif not ch.isascii() or not ch.isprintable() or blanks:
            return 0
        else:
            length += 1
    return 0
