"""Postfix's syntax checks for host names, addresses and queue IDs (valid_hostname.c,
valid_mailhost_addr.c, mail_queue.c), where a command or the SMTP server must judge them
as Postfix does.

- valid_hostname(name): labels of letters, digits, "-" and "_" (Postfix accepts "_"), at
  most 63 bytes each and 255 in all, no empty label (so no trailing dot), no "-" at either
  end of a label, and not all digits and dots ("1.2.3.4" is an address, not a name);
  hostname_problem(name) words what is wrong with one as Postfix's warning does.
- valid_hostaddr(addr): an IPv4 dotted quad (four decimal octets, the first not zero) or
  an IPv6 address.
- valid_mailhost_literal(text): "[ipv4]" or "[IPv6:ipv6]", as an SMTP address literal.
- queue_id_ok(qid): letters, digits and "_", 1 to 255 bytes.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_NUMERIC = re.compile(r"[0-9.]*\Z")
_IPV4 = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)\Z")
_QUEUE_ID = re.compile(r"[A-Za-z0-9_]{1,255}\Z")
_MAX_NAME = 255


def valid_hostname(name: str) -> bool:
    if not name or len(name.encode("utf-8", "surrogateescape")) > _MAX_NAME:
        return False
    if not all(_LABEL.match(label) for label in name.split(".")):
        return False
    return not _NUMERIC.match(name)


def valid_hostaddr(addr: str) -> bool:
    m = _IPV4.match(addr)
    if m:
        octets = [int(o) for o in m.groups()]
        return octets[0] != 0 and all(o <= 255 for o in octets)
    if ":" not in addr:
        return False
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


def valid_mailhost_literal(text: str) -> bool:
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    if inner[:5].lower() == "ipv6:":
        return ":" in inner[5:] and valid_hostaddr(inner[5:])
    return _IPV4.match(inner) is not None and valid_hostaddr(inner)


def queue_id_ok(qid: str) -> bool:
    return _QUEUE_ID.match(qid) is not None


def hostname_problem(name: str) -> str | None:
    """What Postfix's valid_hostname(name, DO_GRIPE) warns of a name it refuses, in its
    words ("valid_hostname: invalid character 32(decimal): a b"); None for a valid name.
    As Postfix's, the first fault found walking the name's bytes is the one named."""
    if valid_hostname(name):
        return None
    raw = name.encode("utf-8", "surrogateescape")
    shown = raw[:100].decode("utf-8", "surrogateescape")
    if not raw:
        return "valid_hostname: empty hostname"
    label = 0
    numeric = True
    for i, ch in enumerate(raw):
        after = raw[i + 1 : i + 2]
        if chr(ch).isascii() and (chr(ch).isalnum() or ch == 0x5F):
            label += 1
            if label > 63:
                return f"valid_hostname: hostname label too long: {shown}"
            numeric = numeric and chr(ch).isdigit()
        elif ch == 0x2E:
            if label == 0 or not after:
                return f"valid_hostname: misplaced delimiter: {shown}"
            label = 0
        elif ch == 0x2D:
            numeric = False
            label += 1
            if label == 1 or after in (b"", b"."):
                return f"valid_hostname: misplaced hyphen: {shown}"
        else:
            return f"valid_hostname: invalid character {ch}(decimal): {shown}"
    if numeric:
        return f"valid_hostname: numeric hostname: {shown}"
    return f"valid_hostname: bad length {len(raw)} for {shown}..."
