"""Address pieces the agents need: local part, domain, user, extension, quoting."""

from __future__ import annotations

import re
from dataclasses import dataclass

from oxipost.maps.search import split_extension

# 8-bit text stays unquoted, as Postfix's quote_822_local (QUOTE_FLAG_8BITCLEAN) leaves it:
# UTF-8, and bytes that are not (surrogate escapes).
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\x80-\U0010ffff-]+$")


@dataclass(slots=True, frozen=True)
class Parts:
    localpart: str  # ${mailbox}: everything left of the last @
    domain: str
    user: str  # local part without the extension
    extension: str


def split_address(address: str, delimiters: str) -> Parts:
    """Split address like Postfix's local/pipe: extension at the first delimiter char.

    An extension containing "/" is dropped (catalogue 49, local/recipient.c): it would
    otherwise reach .forward+ext file names.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    user, extension = split_extension(local, delimiters)
    ext = extension or ""
    if "/" in ext:
        ext = ""
    return Parts(local, domain, user, ext)


def is_dot_string(local: str) -> bool:
    """Whether a local part goes unquoted, as Postfix's is_822_dot_string says (8-bit clean)."""
    return bool(local and _ATOM.match(local) and ".." not in local and local[0] != "." != local[-1])


def quote_local(address: str) -> str:
    """RFC 5321 quoting of the local part when it is not a dot-atom (pipe's q flag)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if is_dot_string(local):
        return address
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted + ("@" + domain if at else "")


def log_form(address: str, external: bool) -> str:
    """An address as Postfix's log lines show it (info_log_addr_form): with
    info_log_address_format = external (`external`, the default) its local part quoted as
    quote_822_local does (`"a\\"b"@x` for the internal `a"b@x`), else as it is; the null
    address stays empty."""
    return quote_local(address) if external and address else address


def orig_to(address: str, original: str, external: bool) -> str:
    """The "orig_to=<ORIGINAL>, " of a delivery log line (log_adhoc), "" when the original
    recipient is none or the address itself in another case."""
    if not original or original.lower() == address.lower():
        return ""
    return f"orig_to=<{log_form(original, external)}>, "


def lf_lines(content: bytes) -> bytes:
    """CRLF → LF, as Postfix writes messages to files and commands."""
    return content.replace(b"\r\n", b"\n")
