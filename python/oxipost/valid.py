"""Postfix's syntax checks for host names, addresses and queue IDs (valid_hostname.c,
valid_mailhost_addr.c, mail_queue.c), where a command or the SMTP server must judge them
as Postfix does.

- valid_hostname(name): labels of letters, digits, "-" and "_" (Postfix accepts "_"), at
  most 63 bytes each and 255 in all, no empty label (so no trailing dot), no "-" at either
  end of a label, and not all digits and dots ("1.2.3.4" is an address, not a name).
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
