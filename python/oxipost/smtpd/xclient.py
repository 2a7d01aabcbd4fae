"""smtpd_xclient, smtpd_xforward - XCLIENT and XFORWARD attribute parsing (Postfix 3.7)

XCLIENT (XCLIENT_README) lets a client in smtpd_authorized_xclient_hosts replace the
client's identity (NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT), after
which the session starts over with a new greeting; XFORWARD (XFORWARD_README) lets a
client in smtpd_authorized_xforward_hosts name the up-stream client for logging and the
queue file (NAME ADDR PROTO HELO SOURCE PORT IDENT), until the transaction ends.

Each value is xtext (a value that does not decode is taken as it is, for clients older
than Postfix 2.3), at most 255 characters before decoding; non-printable characters become
'?' and, where a value ends up in headers, so do Postfix's NEUTER_CHARACTERS.
"[UNAVAILABLE]" (and for XCLIENT NAME and REVERSE_NAME "[TEMPUNAVAIL]") says the
attribute is not known.

Diagnostics: each refused attribute is a 501 reply with Postfix's text ("Bad NAME
syntax: value", "Bad XCLIENT attribute name: NAME", "Error: attribute=value expected",
"Error: attribute value too long"); nothing is changed then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from oxipost.delivery.dsn import xtext_decode
from oxipost.printable import printable
from oxipost.smtpd import replies as R
from oxipost.smtpd.check import NAME_NOT_FOUND, NAME_OK, NAME_TEMPORARY
from oxipost.valid import valid_hostaddr, valid_hostname

XCLIENT_ATTRS = "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"
XFORWARD_ATTRS = "NAME ADDR PROTO HELO SOURCE PORT IDENT"
UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"
UNKNOWN = "unknown"
# Characters that could mess up message headers or log lines (Postfix's smtpd.h).
_NEUTER = str.maketrans({c: "?" for c in ' <>()\\";@'})
_MAX_VALUE = 255
_MAX_PROTO = 64


class XError(Exception):
    """An attribute refused: the reply says why."""


def neuter(text: str) -> str:
    return text.translate(_NEUTER)


def mailhost_addr(value: str, ipv6: bool) -> str | None:
    """Postfix's valid_mailhost_addr: an IPv4 address, or an IPv6 one written "IPv6:..."
    (only when inet_protocols has IPv6); the address without its prefix, None if bad."""
    if value[:5].lower() == "ipv6:":
        bare = value[5:]
        return bare if ipv6 and ":" in bare and valid_hostaddr(bare) else None
    return value if ":" not in value and valid_hostaddr(value) else None


def _port_ok(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 5


def attributes(words: list[str]) -> list[tuple[str, str]]:
    """The command's (upper-cased name, value) pairs, values decoded and printable."""
    pairs = []
    for word in words:
        name, eq, raw = word.partition("=")
        if not eq or not raw:
            raise XError(R.X_ATTR_EXPECTED)
        if len(raw) > _MAX_VALUE:
            raise XError(R.X_TOO_LONG)
        value = xtext_decode(raw)
        pairs.append((name, printable(raw if value is None else value)))
    return pairs


@dataclass
class Identity:
    """The client as XCLIENT leaves it (Postfix's state->name, addr, ...). The `got_*`
    flags say which of HELO, PROTO and LOGIN were given: the others are reset."""

    name: str
    name_status: str
    reverse_name: str
    reverse_name_status: str
    addr: str
    port: str
    helo: str
    protocol: str
    login: str = ""
    got_helo: bool = False
    got_proto: bool = False
    got_login: bool = False
    namaddr_changed: bool = False


_NAME_STATUS = {UNAVAILABLE: NAME_NOT_FOUND, TEMPUNAVAIL: NAME_TEMPORARY}


def apply_xclient(ident: Identity, words: list[str], ipv6: bool) -> Identity:
    """xclient_cmd's attribute loop on a copy of the identity; XError for the first
    attribute refused."""
    new = dataclasses.replace(ident)
    for name, value in attributes(words):
        key = name.upper()
        if key in ("NAME", "REVERSE_NAME"):
            status = _NAME_STATUS.get(value.upper(), NAME_OK)
            if status != NAME_OK:
                value = UNKNOWN
            elif not valid_hostname(value):
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            if key == "NAME":
                new.name, new.name_status = value, status
                new.namaddr_changed = True
            if key == "REVERSE_NAME" or status == NAME_OK:
                new.reverse_name, new.reverse_name_status = value, status
        elif key in ("ADDR", "DESTADDR"):
            if value.upper() == UNAVAILABLE:
                bare = UNKNOWN
            elif (found := mailhost_addr(value, ipv6)) is None:
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            else:
                bare = found
            if key == "ADDR":
                new.addr = bare
                new.namaddr_changed = True
        elif key in ("PORT", "DESTPORT"):
            if value.upper() == UNAVAILABLE:
                value = UNKNOWN
            elif not _port_ok(value):
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            if key == "PORT":
                new.port = value
        elif key == "HELO":
            new.helo = "" if value.upper() == UNAVAILABLE else neuter(value)
            new.got_helo = True
        elif key == "PROTO":
            if value.upper() not in ("SMTP", "ESMTP"):
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            new.protocol = value.upper()
            new.got_proto = True
        elif key == "LOGIN":
            if value.upper() != UNAVAILABLE:
                new.login = value
                new.got_login = True
        else:
            raise XError(R.X_BAD_NAME.format(cmd="XCLIENT", name=name))
    return new


@dataclass
class Forwarded:
    """XFORWARD's attributes for the transaction (Postfix's state->xforward), starting as
    smtpd_xforward_preset() has them: an unknown client, no HELO, IDENT or SOURCE."""

    name: str = UNKNOWN
    addr: str = UNKNOWN
    port: str = UNKNOWN
    protocol: str = UNKNOWN
    helo: str = ""
    ident: str = ""
    source: str = ""  # "local" or "remote" once SOURCE was given
    # Which attributes were given: NAME, ADDR, PORT, PROTO and HELO make the client
    # a forwarded one ("orig_client=" in the log, log_client_* in the queue file).
    given: set[str] = field(default_factory=set)

    @property
    def client(self) -> bool:
        return bool(self.given & {"NAME", "ADDR", "PORT", "PROTO", "HELO"})

    @property
    def namaddr(self) -> str:
        if self.addr == UNKNOWN:
            return self.name
        return f"{self.name}[{self.addr}]"


def apply_xforward(current: Forwarded | None, words: list[str], ipv6: bool) -> Forwarded:
    """xforward_cmd's attribute loop on a copy of what earlier XFORWARD commands of the
    transaction gave; XError for the first attribute refused."""
    new = Forwarded() if current is None else dataclasses.replace(current, given=set(current.given))
    for name, value in attributes(words):
        key = name.upper()
        unavailable = value.upper() == UNAVAILABLE
        if key == "NAME":
            if not unavailable:
                value = neuter(value)
                if not valid_hostname(value):
                    raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            new.name = UNKNOWN if unavailable else value
        elif key == "ADDR":
            if unavailable:
                new.addr = UNKNOWN
            else:
                value = neuter(value)
                bare = mailhost_addr(value, ipv6)
                if bare is None:
                    raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
                new.addr = bare
        elif key == "PORT":
            if not unavailable and not _port_ok(value):
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            new.port = UNKNOWN if unavailable else value
        elif key == "HELO":
            new.helo = "" if unavailable else neuter(value)
        elif key == "PROTO":
            if not unavailable and len(value) > _MAX_PROTO:
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            new.protocol = UNKNOWN if unavailable else neuter(value)
        elif key == "IDENT":
            new.ident = "" if unavailable else neuter(value)
        elif key == "SOURCE":
            source = "LOCAL" if unavailable else value.upper()
            if source not in ("LOCAL", "REMOTE"):
                raise XError(R.X_BAD_VALUE.format(attr=key, value=value))
            new.source = source.lower()
        else:
            raise XError(R.X_BAD_NAME.format(cmd="XFORWARD", name=name))
        new.given.add(key)
    return new
