"""smtp(8) and lmtp(8): deliver over (E)SMTP or LMTP, with asyncio.

Destinations: `domain` (MX lookup: preference order, random among equals, implicit MX from
A/AAAA, null MX per RFC 7505), `[host]` / `[host]:port` (no MX), `host:port`, and for LMTP
`inet:host:port` and `unix:/path`. An empty nexthop means relayhost, else the recipient's
domain. smtp(8) then tries the smtp_fallback_relay destinations, in order, while every
recipient is still undelivered and unbounced (the destination not found, no host reachable,
or every recipient soft-failed at its last host), unless this host is one of the
destination's MX hosts. The session speaks EHLO (LHLO), STARTTLS per the destination's
smtp_tls_policy_maps entry or smtp_tls_security_level (none, may, encrypt; verify and secure
check the server certificate against smtp_tls_CAfile/CApath and
smtp_tls_verify_cert_match/smtp_tls_secure_cert_match, "Server certificate not verified"
(4.7.5) when it fails; fingerprint matches the certificate's or its public key's digest;
dane and dane-only require TLS but check nothing), AUTH PLAIN/LOGIN when the server offers
AUTH and smtp_sasl_password_maps has credentials (keyed by the sender with
smtp_sender_dependent_authentication, then the host's name, then the destination) and
smtp_sasl_security_options allows them (Postfix's default, noplaintext, does not), with
smtp_send_xforward_command the client attributes the server's XFORWARD announces (the
commands refused: a warning, and the mail goes on), MAIL FROM with SIZE, BODY=8BITMIME and
the DSN parameters, one RCPT per recipient with ORCPT (the original recipient when none was
given) and NOTIFY, PIPELINING when offered, and DATA. To a server without 8BITMIME, a message
not declared 7BIT goes with each entity declared 8bit or binary converted to quoted-printable
(a multipart or message one relabelled 7bit) and no SIZE, as Postfix's MIME downgrade does,
unless disable_mime_output_conversion = yes.
The content checks (smtp_header_checks, smtp_mime_header_checks, smtp_nested_header_checks,
smtp_body_checks; lmtp_* for lmtp(8)) are header_checks(5)'s restricted ones, through the
MIME walk whatever disable_mime_input_processing says: REPLACE, PREPEND, STRIP, IGNORE,
WARN, INFO, DUNNO, OK, anything else "unsupported command in PARAM map: VALUE"; each action
logged as "QID: action: header|body LINE[: text]" when the message is sent. Then
smtp_generic_maps rewrites the envelope sender, the recipients and the primary
sender/recipient headers' addresses on the way out (what the checks leave of a header that
was one, not what they prepend; a table that cannot be read is fatal:
"smtp_generic_maps map lookup problem for ADDR"). An idle session is kept for
smtp_connection_cache_time_limit and reused (after RSET) for the next message to the same
destination.

Diagnostics, in Postfix's words: "connect to H[A]:P: Connection refused" (4.4.1);
"conversation with H[A] timed out while <stage>" and "lost connection with H[A] while
<stage>" (4.4.2; after "." with "-- message may be sent more than once"); "host H[A] said:
<reply> (in reply to <COMMAND> command)" with the reply's status, 4xx deferred and 5xx
bounced; "mail for D loops back to myself" (5.4.6); null MX "Domain D does not accept mail
(nullMX)" (5.1.10); "TLS is required, but was not offered by host H[A]" (4.7.4); with
smtp_tls_loglevel 1 and up each TLS session's "Verified (Untrusted, Anonymous) TLS connection
established to H[A]:P: TLSv1.3 with cipher ..." (oxipost.tls), and at the levels that check
the certificate, whatever the loglevel, tls_log_verify_error's "server certificate
verification failed for H[A]:P: num=N:TEXT" when it fails; a password
table that cannot be read: "warning: QID: smtp_sasl_password_maps lookup error" and "local
data error while talking to H[A]" (4.3.0), and the same for a content checks table that
cannot be opened or read, found as the message is sent after DATA (what the checks gave
back before it sent, no "."), after dict_surrogate's "TABLE is unavailable. REASON",
'TABLE lookup error for "LINE"' and "warning: QID: smtp header checks lookup error"
(body). A host that soft-fails every recipient is left for the next host or fallback
relay with "QID: host H[A] said: ..." (once, or for each recipient RCPT TO refused), as
Postfix logs it for a host that is not the last to try. The connection goes out from
smtp_bind_address (smtp_bind_address6), else from inet_interfaces' only non-loopback
address: "warning: smtp_connect_addr: bind A: REASON" when that fails (then unbound, or
4.4.0 "server configuration error" with smtp_bind_address_enforce). An unusable TLS policy
('smtp_tls_policy_maps, next-hop destination "D": invalid security level "L"') skips the
destination's hosts ("TLS policy lookup for D/H: client TLS configuration problem", 4.7.5).
A fallback relay or the relayhost that is not found (or loops back here) defers the mail
with 4.3.5 and "warning: smtp_fallback_relay configuration problem" ("relayhost ...").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import ipaddress
import logging
import os
import random
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from oxipost import tls
from oxipost.bounce import double_bounce, post_notice, transcript
from oxipost.cleanup.header import (
    ADDRESS_HEADERS,
    MULTIPART,
    NESTED,
    PRIMARY,
    ChecksLookupError,
    RestrictedWalker,
    header_name,
    local_client,
    rewrite_header_text,
)
from oxipost.delivery.address import quote_local
from oxipost.delivery.dsn import xtext_encode
from oxipost.envelope import Outcome
from oxipost.printable import printable
from oxipost.valid import valid_hostaddr

if TYPE_CHECKING:
    from collections.abc import Callable

    import dns.resolver

    from oxipost.config import Config
    from oxipost.delivery import DeliveryRequest
    from oxipost.maps.search import SearchKey
    from oxipost.qmgr.queue import Queue

log = logging.getLogger("oxipost.smtp")
cleanup_log = logging.getLogger("oxipost.cleanup")

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


class SessionError(Exception):
    """The session cannot go on: (status, text) for every recipient not yet done."""

    def __init__(self, status: str, text: str, next_host: bool = True) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        # True when the next MX host may still be tried (before any RCPT was accepted).
        self.next_host = next_host
        # relay= of the host it happened with once connected ("none" before), as Postfix
        # logs the session's host for a greeting or handshake that fails.
        self.relay = ""
        # Raised before a session was set up (Outcome.site).
        self.site = False


@dataclass(slots=True)
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        """The reply as Postfix quotes it: lines joined by a space, the code once."""
        parts = [ln[4:] for ln in self.lines]
        # A bare code ("550") is quoted as it is, not with a blank after it.
        return f"{self.code} {' '.join(parts)}".rstrip(" ")

    def status(self) -> str:
        first = self.lines[0][4:] if self.lines else ""
        m = _ENHANCED.match(first)
        if m and m.group(1) == str(self.code)[0]:
            return m.group(0)
        return f"{str(self.code)[0]}.0.0"


# What one read takes from the socket at most.
_READ_CHUNK = 65536


@dataclass(slots=True)
class Host:
    name: str
    address: str  # IP address, or a unix socket path
    port: int
    family: int = socket.AF_INET

    @property
    def label(self) -> str:
        # A unix socket is named after this host (myhostname), as Postfix's
        # lmtp_connect_unix: "mx.example.com[private/dovecot-lmtp]".
        return f"{self.name}[{self.address}]"

    @property
    def relay(self) -> str:
        """relay= as Postfix logs it."""
        if self.family == socket.AF_UNIX:
            return self.label
        return f"{self.name}[{self.address}]:{self.port}"


@dataclass
class Session:
    host: Host
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    lmtp: bool
    features: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    reuse_count: int = 0
    # When it was ready for this delivery: connected, greeted, EHLO (TLS, AUTH) done, or
    # taken from the cache (Postfix's conn_setup_done, the third of delays=).
    setup_done: float = 0.0
    idle_handle: asyncio.TimerHandle | None = None
    # Taken from the cache: RSET goes first, pipelined with the next MAIL FROM.
    rset_first: bool = False
    buf: bytearray = field(default_factory=bytearray)
    # Of a longer reply line, Postfix's client keeps line_length_limit bytes and skips the
    # rest.
    line_limit: int = 2048
    # The "In:"/"Out:" lines for the postmaster (smtp_chat_notify), kept only when
    # notify_classes has protocol; whether the server's replies showed a protocol error.
    history: list[str] | None = None
    protocol_error: bool = False

    async def _fill(self, timeout: float, stage: str) -> None:
        try:
            # asyncio.timeout, not wait_for: no task per read. Only a read that has to wait
            # pays for one: the lines of a multi-line or pipelined reply mostly arrive in
            # one segment, and are taken from the buffer.
            async with asyncio.timeout(timeout or None):
                data = await self.reader.read(_READ_CHUNK)
        except TimeoutError:
            raise SessionError(
                "4.4.2", f"conversation with {self.host.label} timed out while {stage}"
            ) from None
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            raise SessionError("4.4.2", f"lost connection with {self.host.label} while {stage}")
        self.buf += data

    async def _line(self, timeout: float, stage: str) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                raw = bytes(self.buf[:end])
                del self.buf[: end + 1]
                return raw[: self.line_limit]
            if len(self.buf) > self.line_limit:
                # An over-long line: keep its start, drop the rest as it arrives.
                raw = bytes(self.buf[: self.line_limit])
                while (end := self.buf.find(b"\n")) < 0:
                    self.buf.clear()
                    await self._fill(timeout, stage)
                del self.buf[: end + 1]
                return raw
            await self._fill(timeout, stage)

    async def read_reply(self, timeout: float, stage: str) -> Reply:
        lines: list[str] = []
        while True:
            raw = await self._line(timeout, stage)
            # smtp_chat_resp() printable()s each line: a tab, another control or a byte
            # that is no UTF-8 is '?'.
            line = printable(raw.decode("utf-8", "surrogateescape").rstrip("\r"))
            if self.history is not None:
                # Bytes that are no UTF-8 kept as such: printable() makes each a "?".
                self.history.append("In:  " + raw.decode("utf-8", "surrogateescape").rstrip("\r"))
            if len(line) < 3 or not line[:3].isdigit():
                self.protocol_error = True
                raise SessionError(
                    "4.5.0",
                    f"host {self.host.label} said: {line} (malformed reply while {stage})",
                )
            lines.append(line)
            if len(line) == 3 or line[3] != "-":
                return Reply(int(line[:3]), lines)

    async def send(self, data: bytes, timeout: float, stage: str, body: bool = False) -> None:
        """Send commands (a line each), or message content (`body`: not in the history)."""
        if self.history is not None and not body:
            text = data.decode("utf-8", "replace")
            self.history += [f"Out: {c}" for c in text.split("\r\n")[:-1]]
        try:
            self.writer.write(data)
            # Nothing left in the transport's buffer (a command, a small message): no wait,
            # and no timer to arm.
            if self.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeout or None):
                    await self.writer.drain()
            elif self.writer.transport.is_closing():
                raise OSError("connection closed")
        except TimeoutError:
            raise SessionError(
                "4.4.2", f"conversation with {self.host.label} timed out while {stage}"
            ) from None
        except (OSError, ssl.SSLError):
            raise SessionError(
                "4.4.2", f"lost connection with {self.host.label} while {stage}"
            ) from None

    def close(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()


# Idle sessions by (transport, destination), for reuse between messages.
_CACHE: dict[tuple[str, ...], list[Session]] = {}
# QUITs in flight, kept so the loop does not drop them half way.
_TASKS: set[asyncio.Task[None]] = set()


def _spawn_quit(s: Session, p: Params) -> None:
    task = asyncio.ensure_future(_quit(s, p))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


class Params:
    """smtp_* or lmtp_* parameters of the service's config view."""

    def __init__(self, cfg: Config, lmtp: bool) -> None:
        self.cfg = cfg
        self.lmtp = lmtp
        self.prefix = "lmtp_" if lmtp else "smtp_"

    def name(self, base: str) -> str:
        if self.lmtp and base == "helo_timeout":
            return "lmtp_lhlo_timeout"
        if self.lmtp and base == "helo_name":
            return "lmtp_lhlo_name"
        return self.prefix + base

    def get(self, base: str) -> str:
        try:
            return self.cfg.get(self.name(base))
        except KeyError:
            return self.cfg.get("smtp_" + base)

    def time(self, base: str) -> float:
        try:
            return self.cfg.get_time(self.name(base))
        except KeyError:
            return self.cfg.get_time("smtp_" + base)

    def bool(self, base: str) -> bool:
        try:
            return self.cfg.get_bool(self.name(base))
        except KeyError:
            return self.cfg.get_bool("smtp_" + base)


# ---------------------------------------------------------------------------- destinations

# The resolver for MX/A/AAAA lookups: None means the system's (/etc/resolv.conf). Tests
# point it at a DNS server of their own on 127.0.0.1.
RESOLVER: object | None = None


async def _dns(name: str, rtype: str) -> dns.resolver.Answer:
    import dns.asyncresolver

    resolver = RESOLVER
    if resolver is None:
        resolver = dns.asyncresolver.get_default_resolver()
    return await resolver.resolve(name, rtype)  # type: ignore[attr-defined]


def parse_nexthop(nexthop: str, default_port: int) -> tuple[str, int, bool, bool]:
    """→ (host or domain, port, suppress MX?, unix socket?)."""
    if nexthop.startswith("unix:"):
        return nexthop[5:], 0, True, True
    if nexthop.startswith("inet:"):
        nexthop = nexthop[5:]
    port = default_port
    if nexthop.startswith("["):
        end = nexthop.find("]")
        host = nexthop[1:end]
        rest = nexthop[end + 1 :]
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
        return host, port, True, False
    host, sep, p = nexthop.rpartition(":")
    if sep and p.isdigit() and ":" not in host:
        return host, int(p), False, False
    return nexthop, port, False, False


def _port(value: str, default: int) -> int:
    if value.isdigit():
        return int(value)
    try:
        return socket.getservbyname(value, "tcp")
    except OSError:
        return default


async def _addresses(name: str, port: int, p: Params) -> list[tuple[int, str]]:
    """A/AAAA of name (or the literal itself) → [(family, address)]."""
    literal = name[5:] if name.lower().startswith("ipv6:") else name
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, literal)
            return [(fam, literal)]
        except OSError:
            pass
    use_dns = "dns" in p.get("host_lookup") and not p.cfg.get_bool("disable_dns_lookups")
    result: list[tuple[int, str]] = []
    if use_dns:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        protocols = p.cfg.get("inet_protocols")
        kinds = []
        if protocols in ("all", "ipv4") or "ipv4" in protocols:
            kinds.append(("A", socket.AF_INET))
        if protocols in ("all", "ipv6") or "ipv6" in protocols:
            kinds.append(("AAAA", socket.AF_INET6))
        for rtype, fam in kinds:
            try:
                ans = await _dns(name, rtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException:
                continue
            result.extend((fam, r.to_text()) for r in ans)
        if result or "native" not in p.get("host_lookup"):
            return result
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    seen: list[tuple[int, str]] = []
    for fam, _t, _p, _c, sa in infos:
        # An AF_INET or AF_INET6 sockaddr: its address is a str.
        if (fam, str(sa[0])) not in seen:
            seen.append((fam, str(sa[0])))
    return seen


def _own_addresses(cfg: Config) -> set[str]:
    own = {"127.0.0.1", "::1"}
    for param in ("inet_interfaces", "proxy_interfaces"):
        for item in cfg.get_list(param):
            if item not in ("all", "loopback-only", "localhost"):
                own.add(item)
    return own


async def resolve(nexthop: str, p: Params) -> list[Host]:
    """The hosts to try, best first; SessionError when there are none."""
    return (await _resolve(nexthop, p))[0]


async def _resolve(nexthop: str, p: Params) -> tuple[list[Host], bool]:
    """(hosts, whether this host is one of the destination's MX hosts, which rules out the
    fallback relays); SessionError when there are none, with next_host False when mail for
    it loops back to this host."""
    default_port = (
        p.cfg.get_int("lmtp_tcp_port") if p.lmtp else _port(p.cfg.get("smtp_tcp_port"), 25)
    )
    host, port, no_mx, unix = parse_nexthop(nexthop, default_port)
    if unix:
        return [Host(p.cfg.get("myhostname"), host, 0, socket.AF_UNIX)], False
    if (
        no_mx
        or p.lmtp
        or "dns" not in p.get("host_lookup")
        or p.cfg.get_bool("disable_dns_lookups")
    ):
        addrs = await _addresses(host, port, p)
        if not addrs:
            raise SessionError(
                "4.4.4" if not no_mx else "5.4.4",
                f"Host or domain name not found. Name service error for name={host} type=A: "
                "Host not found",
            )
        return [Host(host, a, port, fam) for fam, a in addrs], False
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    try:
        ans = await _dns(host, "MX")
        mxs = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in ans]  # type: ignore[attr-defined]
    except dns.resolver.NXDOMAIN:
        raise SessionError(
            "5.4.4",
            f"Host or domain name not found. Name service error for name={host} type=MX: "
            "Host not found",
        ) from None
    except dns.resolver.NoAnswer:
        mxs = []
    except dns.exception.DNSException:
        raise SessionError(
            "4.4.3",
            f"Host or domain name not found. Name service error for name={host} type=MX: "
            "Host not found, try again",
        ) from None
    if len(mxs) == 1 and mxs[0][1] in ("", "."):
        raise SessionError("5.1.10", f"Domain {host} does not accept mail (nullMX)")
    if not mxs:
        mxs = [(0, host)]  # implicit MX: the domain's own A/AAAA records
    random.shuffle(mxs)
    mxs.sort(key=lambda m: m[0])  # stable: equal preferences stay shuffled
    own_names = {p.cfg.get("myhostname").lower()}
    own_addrs = _own_addresses(p.cfg)
    hosts: list[tuple[int, Host]] = []
    mx_self = False
    for pref, name in mxs:
        addrs = await _addresses(name, port, p)
        if name.lower() in own_names or any(a in own_addrs for _f, a in addrs):
            # We are an MX for it: only better MX hosts may be used (smtp_addr.c).
            hosts = [(hp, h) for hp, h in hosts if hp < pref]
            if not hosts:
                raise SessionError("5.4.6", f"mail for {host} loops back to myself", False)
            mx_self = True
            break
        hosts.extend((pref, Host(name, a, port, fam)) for fam, a in addrs)
    if not hosts:
        raise SessionError(
            "4.4.4",
            f"Host or domain name not found. Name service error for name={host} type=A: "
            "Host not found",
        )
    return [h for _pref, h in hosts], mx_self


# ---------------------------------------------------------------------------- the session

# smtp_sasl_type's values (postconf -A): Postfix's "cyrus" client, whose PLAIN and LOGIN
# and security options this one speaks.
SASL_CLIENT_TYPES = ("cyrus",)


def _sasl_credentials(
    p: Params, req: DeliveryRequest, nexthop: str, host: Host
) -> tuple[str, str] | None:
    """smtp_sasl_password_maps' username:password for this session, as Postfix's
    smtp_sasl_passwd_lookup(): with smtp_sender_dependent_authentication (smtp(8) only)
    the envelope sender in mail_addr_find order (the address, without its extension, a
    local domain's bare user, @domain), then the remote host's name, then the destination
    as the transport or relayhost gave it ("[host]:port" stays so); every table asked for
    one key before the next key. None when no table answers. Raises TableError."""
    specs = p.cfg.get_list(p.name("sasl_password_maps"))
    if not specs:
        return None
    from oxipost.maps import open_table
    from oxipost.maps.search import maps_find, virtual_keys
    from oxipost.rewrite.resolve import is_local_domain, split_address

    keys: list[SearchKey | str] = []
    sender = req.envelope.sender
    if not p.lmtp and p.bool("sender_dependent_authentication") and sender:
        local = is_local_domain(p.cfg, split_address(sender)[1])
        keys += virtual_keys(sender, p.cfg.get("recipient_delimiter"), local)
    # lmtp(8) names its destination without the unix:/inet: prefix (smtp_connect.c).
    dest = nexthop
    if p.lmtp and nexthop.startswith(("unix:", "inet:")):
        dest = nexthop[5:]
    keys += [host.name, dest]
    found = maps_find([open_table(spec, p.cfg) for spec in specs], keys)
    if found is None:
        return None
    user, _, password = found[0].partition(":")
    return user, password


async def _login(s: Session, p: Params, req: DeliveryRequest, nexthop: str) -> None:
    """AUTH with the session's credentials when the server offers it and the tables have
    some (Postfix looks them up only then); SessionError when that fails."""
    if not p.bool("sasl_auth_enable") or "AUTH" not in s.features:
        return
    from oxipost.maps import TableError

    mechs = _offered_mechanisms(s, p)
    try:
        creds = _sasl_credentials(p, req, nexthop, s.host)
    except TableError as e:
        log.warning("%s", e)
        log.warning("%s: %s lookup error", req.queue_id, p.name("sasl_password_maps"))
        raise SessionError("4.3.0", f"local data error while talking to {s.host.label}") from None
    if creds is not None:
        await _auth(s, creds, mechs, p)


# Postfix's TLS security levels (tls_level_lookup), weakest first; every one above "may"
# makes TLS mandatory (dane and dane-only without checking the certificate here).
_TLS_LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure")
# The attributes a policy may give (smtp_tls_policy.c); of them only match= is applied.
_TLS_ATTRIBUTES = (
    "ciphers",
    "protocols",
    "match",
    "exclude",
    "tafile",
    "connection_reuse",
    "servername",
)


class _TlsPolicyError(Exception):
    """smtp_tls_policy_maps gave no usable policy: Postfix's MARK_INVALID."""


def _tls_level(p: Params, nexthop: str) -> tuple[str, list[str]]:
    """The TLS security level for a destination, as Postfix's tls_policy_lookup(): the
    smtp_tls_policy_maps entry for the destination as given ("[host]:port", "host:port",
    "domain"; lmtp's without unix:/inet:), a domain then each parent domain as
    ".parent", every table asked for each key; else smtp_tls_security_level (smtp_use_tls,
    smtp_enforce_tls when it is empty). An entry is "level [name=value ...]"; an unknown
    level or attribute, or a table that cannot answer, is a warning and _TlsPolicyError.
    → (level, the entry's match= names, split at ":", or "|" for fingerprints). The
    fingerprint level with no fingerprint to match is unusable too."""
    level, match = _tls_policy(p, nexthop)
    if level == "fingerprint" and not (
        match or p.cfg.get_list(p.name("tls_fingerprint_cert_match"))
    ):
        log.warning(
            "nexthop domain %s: configured at fingerprint security level, but with no "
            "fingerprints to match.",
            _tls_dest(p, nexthop),
        )
        raise _TlsPolicyError
    return level, match


def _tls_dest(p: Params, nexthop: str) -> str:
    """The destination as TLS policies name it: lmtp's without unix:/inet:."""
    return nexthop[5:] if p.lmtp and nexthop.startswith(("unix:", "inet:")) else nexthop


def _tls_policy(p: Params, nexthop: str) -> tuple[str, list[str]]:
    """_tls_level's lookup: the policy table's entry, else the global level."""
    param = p.name("tls_policy_maps")
    specs = p.cfg.get_list(param)
    if specs:
        from oxipost.maps import TableError, open_table
        from oxipost.maps.search import maps_find
        from oxipost.valid import valid_hostname

        dest = _tls_dest(p, nexthop)
        keys = [dest]
        if valid_hostname(dest):
            parts = dest.split(".")
            keys += ["." + ".".join(parts[i:]) for i in range(1, len(parts))]
        where = f'{param}, next-hop destination "{dest}"'
        try:
            # Without the UTF-8 check, as smtp_tls_list_init opens the table (no
            # DICT_FLAG_UTF8_REQUEST): a destination that is not UTF-8 is looked up as is.
            tables = [open_table(spec, p.cfg, utf8=False) for spec in specs]
            found = maps_find(tables, keys)
        except TableError as e:
            log.warning("%s", e)
            log.warning("%s: TLS policy lookup error", where)
            raise _TlsPolicyError from None
        if found is not None:
            words = found[0].replace(",", " ").split()
            if not words:
                log.warning("%s: empty policy", where)
                raise _TlsPolicyError
            level = words[0].lower()
            if level not in _TLS_LEVELS:
                log.warning('%s: invalid security level "%s"', where, words[0])
                raise _TlsPolicyError
            match: list[str] = []
            for word in words[1:]:
                name, eq, value = word.partition("=")
                if level == "none":
                    log.warning('%s: ignoring attribute "%s" with TLS disabled', where, word)
                elif not eq:
                    why = "missing '=' after attribute name"
                    log.warning('%s: malformed attribute/value pair "%s": %s', where, word, why)
                    raise _TlsPolicyError
                elif name.lower() not in _TLS_ATTRIBUTES:
                    log.warning('%s: invalid attribute name: "%s"', where, name)
                    raise _TlsPolicyError
                elif name.lower() == "match":
                    # Fingerprints hold colons: they are separated by "|".
                    match += [m for m in value.split("|" if level == "fingerprint" else ":") if m]
            return level, match
    level = p.get("tls_security_level")
    if not level:
        level = "encrypt" if p.bool("enforce_tls") else "may" if p.bool("use_tls") else "none"
    return level, []


class _ClientContext(ssl.SSLContext):
    """A client context that keeps the SSLObject it made: start_tls hands back none when
    the handshake fails at the server's certificate, whose cipher Postfix still logs."""

    ssl_object: ssl.SSLObject | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        self.ssl_object = super().wrap_bio(
            incoming, outgoing, server_side, server_hostname, session
        )
        return self.ssl_object


def _tls_context(p: Params, level: str) -> _ClientContext:
    """The client TLS context for a level: "verify" and "secure" trust the CAs of
    smtp_tls_CAfile and smtp_tls_CApath (and the system's only with
    tls_append_default_CA, Postfix's default being no); below them no certificate is
    checked (opportunistic or mandatory encryption without authentication)."""
    ctx = _ClientContext(ssl.PROTOCOL_TLS_CLIENT)
    # Names are matched by _cert_matches, by Postfix's rules, not the library's.
    ctx.check_hostname = False
    if level not in ("verify", "secure"):
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    cafile, capath = p.get("tls_CAfile"), p.get("tls_CApath")
    if cafile or capath:
        try:
            ctx.load_verify_locations(cafile or None, capath or None)
        except (OSError, ssl.SSLError) as e:
            # Nothing trusted then: every certificate fails, as with Postfix.
            log.warning("cannot load Certification Authority data: %s", e)
    if p.cfg.get_bool("tls_append_default_CA"):
        ctx.load_default_certs()
    return ctx


def _fingerprint_matches(p: Params, der: bytes, match: list[str]) -> bool:
    """The "fingerprint" level's check: the digest (smtp_tls_fingerprint_digest) of the
    server certificate or of its public key is one of the policy's match= values, else of
    smtp_tls_fingerprint_cert_match; colons optional, case ignored."""
    import hashlib

    wanted = match or p.cfg.get_list(p.name("tls_fingerprint_cert_match"))
    wanted_hex = {w.replace(":", "").lower() for w in wanted}
    try:
        digest = p.get("tls_fingerprint_digest").strip().lower()
        found = {hashlib.new(digest, der).hexdigest()}
        spki = _subject_public_key_info(der)
        if spki:
            found.add(hashlib.new(digest, spki).hexdigest())
    except ValueError:
        log.warning("unsupported smtp_tls_fingerprint_digest: %s", p.get("tls_fingerprint_digest"))
        return False
    return bool(found & wanted_hex)


def _fingerprint_error(p: Params, match: list[str]) -> tuple[int, str]:
    """The X509_V_ERR code and text OpenSSL gives Postfix for a certificate that no
    fingerprint matched: with none of the digest's length (each "unusable TLSA RR"),
    nothing was there to match at all."""
    import hashlib

    wanted = match or p.cfg.get_list(p.name("tls_fingerprint_cert_match"))
    try:
        size = hashlib.new(p.get("tls_fingerprint_digest").strip().lower()).digest_size
    except ValueError:
        size = 0
    if any(len(w.replace(":", "")) == 2 * size for w in wanted):
        return 65, "no matching DANE TLSA records"
    return 1, "unspecified certificate verification error"


def _der_item(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end) of the DER item at `at`."""
    tag, length = data[at], data[at + 1]
    start = at + 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[start : start + n], "big")
        start += n
    return tag, start, start + length


def _subject_public_key_info(der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of an X.509 certificate (b"" when it cannot be
    found): the seventh field of tbsCertificate, the sixth without a version."""
    try:
        _tag, cert_start, _end = _der_item(der, 0)
        _tag, at, _tbs_end = _der_item(der, cert_start)
        fields: list[tuple[int, int, int]] = []
        while len(fields) < 7:
            tag, _start, end = _der_item(der, at)
            fields.append((tag, at, end))
            at = end
        if fields[0][0] != 0xA0:  # no [0] version: v1, one field less before
            fields.insert(0, (0xA0, 0, 0))
        _tag, spki_at, spki_end = fields[6]
        return der[spki_at:spki_end]
    except IndexError:
        return b""


def _cert_names(p: Params, level: str, host: Host, domain: str, match: list[str]) -> list[str]:
    """The names the server certificate must hold one of: the TLS policy's match= names,
    else smtp_tls_verify_cert_match (default: the host's name) for "verify",
    smtp_tls_secure_cert_match (default: the next-hop domain or a subdomain) for
    "secure"; a name starting with "." means any subdomain of it."""
    param = p.name("tls_verify_cert_match" if level == "verify" else "tls_secure_cert_match")
    words = {"hostname": host.name, "nexthop": domain, "dot-nexthop": "." + domain}
    return [words.get(w.lower(), w) for w in match or p.cfg.get_list(param)]


def _cert_matches(cert: dict[str, object], wanted: list[str]) -> bool:
    """Whether the certificate's DNS names (its subjectAltName, else its CN) or IP
    addresses hold one of the wanted names; "*.d" stands for one label under d."""
    alt = cert.get("subjectAltName") or ()
    dns_names = [v for k, v in alt if k == "DNS"]  # type: ignore[attr-defined]
    ips = {v for k, v in alt if k == "IP Address"}  # type: ignore[attr-defined]
    if not dns_names:
        for rdn in cert.get("subject") or ():  # type: ignore[attr-defined]
            dns_names += [v for k, v in rdn if k == "commonName"]
    for want in wanted:
        want = want.lower().rstrip(".")
        try:
            ipaddress.ip_address(want)
        except ValueError:
            pass
        else:
            if want in ips:
                return True
            continue
        for name in dns_names:
            name = name.lower().rstrip(".")
            if want.startswith("."):
                if name.endswith(want) and len(name) > len(want):
                    return True
            elif name.startswith("*."):
                if want.partition(".")[2] == name[2:]:
                    return True
            elif name == want:
                return True
    return False


def _bound_socket(family: int, p: Params) -> socket.socket:
    """A TCP socket bound as Postfix's smtp_connect_addr binds it: to smtp_bind_address
    (smtp_bind_address6 for IPv6; brackets allowed), else to the one address inet_interfaces
    gives for the family when that is not a loopback address. A bind that fails is a
    warning, and the connection goes out unbound, unless smtp_bind_address_enforce: then
    SessionError 4.4.0 "server configuration error". A value that is no numerical address
    is fatal (AgentFatal)."""
    var = p.name("bind_address6" if family == socket.AF_INET6 else "bind_address")
    value = p.cfg.get(var).strip()
    addr = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if addr:
        try:
            socket.getaddrinfo(addr, None, flags=socket.AI_NUMERICHOST)
        except socket.gaierror as e:
            from oxipost.delivery import AgentFatal

            raise AgentFatal(
                f"smtp_connect_addr: bad {var} parameter: {value}: {e.strerror}"
            ) from None
    else:
        addr = _own_interface(p.cfg, family)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    if addr:
        try:
            sock.bind((addr, 0))
        except OSError as e:
            log.warning("smtp_connect_addr: bind %s: %s", addr, os.strerror(e.errno or 0))
            if value and p.bool("bind_address_enforce"):
                sock.close()
                raise SessionError("4.4.0", "server configuration error") from None
    return sock


def _own_interface(cfg: Config, family: int) -> str:
    """The address of inet_interfaces to send from: its only one of this family, when
    that is no loopback address ("all" and "loopback-only" name several, or a loopback
    one)."""
    found = []
    for item in cfg.get_list("inet_interfaces"):
        if item in ("all", "loopback-only"):
            return ""
        try:
            ip = ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            continue
        if (ip.version == 6) == (family == socket.AF_INET6):
            found.append(ip)
    if len(found) != 1 or found[0].is_loopback:
        return ""
    return str(found[0])


async def _connect(
    host: Host,
    p: Params,
    helo: str,
    level: str = "none",
    domain: str = "",
    match: list[str] | None = None,
) -> Session:
    """A session with host, greeted and (per the TLS level) encrypted; `domain`: the
    next-hop domain, for the "secure" level's certificate match; `match`: the TLS policy's
    match= names."""
    timeout = p.time("connect_timeout") or None
    where = host.label if host.family == socket.AF_UNIX else f"{host.label}:{host.port}"
    try:
        if host.family == socket.AF_UNIX:
            # A relative path is the queue directory's ("unix:private/dovecot-lmtp"), where
            # Postfix's delivery agents run.
            path = os.path.join(p.cfg.path("queue_directory"), host.address)
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        else:
            sock = _bound_socket(host.family, p)
            try:
                loop = asyncio.get_running_loop()
                await asyncio.wait_for(loop.sock_connect(sock, (host.address, host.port)), timeout)
                reader, writer = await asyncio.open_connection(sock=sock)
            except BaseException:
                sock.close()
                raise
    except TimeoutError:
        raise SessionError("4.4.1", f"connect to {where}: Connection timed out") from None
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        error = SessionError("4.4.1", f"connect to {where}: {why}")
        error.site = True
        raise error from None
    s = Session(host, reader, writer, p.lmtp, line_limit=p.cfg.get_int("line_length_limit"))
    if "protocol" in p.cfg.get_list("notify_classes"):
        s.history = []
    try:
        greet = await s.read_reply(p.time("helo_timeout"), "receiving the initial server greeting")
        if greet.code != 220:
            status = greet.status()
            if status[0] == "5" and p.bool("skip_5xx_greeting"):
                # smtp_helo(): the greeting's status is made a 4 (the text kept), so the
                # next host is tried and the last one only defers.
                status = "4" + status[1:]
            # smtp_connect: a failed smtp_helo() on a stream still good says QUIT.
            await _quit(s, p)
            raise SessionError(status, f"host {host.label} refused to talk to me: {greet.text}")
        await _ehlo(s, p, helo)
        if (level in _TLS_LEVELS[1:] and not p.lmtp) or (p.lmtp and level in ("may", "encrypt")):
            if "STARTTLS" in s.features:
                stage = "receiving the STARTTLS response"
                await s.send(b"STARTTLS\r\n", p.time("helo_timeout"), stage)
                r = await s.read_reply(p.time("helo_timeout"), stage)
                if r.code != 220:
                    if level != "may":
                        raise SessionError(
                            "4.7.5",
                            f"host {host.label} said: {r.text} (in reply to STARTTLS command)",
                        )
                else:
                    ctx = _tls_context(p, level)
                    loglevel = p.cfg.get_int(p.name("tls_loglevel"))
                    try:
                        await asyncio.wait_for(
                            s.writer.start_tls(ctx, server_hostname=host.name),
                            p.time("helo_timeout") or None,
                        )
                    except ssl.SSLCertVerificationError as e:
                        log.info(tls.verify_error(host.relay, e.verify_code, e.verify_message))
                        _log_tls_session(loglevel, "Untrusted", host, ctx.ssl_object)
                        raise SessionError("4.7.5", "Server certificate not verified") from None
                    except (OSError, ssl.SSLError, TimeoutError) as e:
                        raise SessionError(
                            "4.7.5", f"Cannot start TLS: handshake failure with {host.label}: {e}"
                        ) from None
                    ssl_object = s.writer.get_extra_info("ssl_object")
                    der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                    failed = (0, "")
                    if level == "fingerprint":
                        verified = _fingerprint_matches(p, der, match or []) if der else False
                        if not verified:
                            failed = _fingerprint_error(p, match or [])
                    elif ctx.verify_mode == ssl.CERT_REQUIRED:
                        cert = ssl_object.getpeercert() if ssl_object else None
                        names = _cert_names(p, level, host, domain, match or [])
                        verified = _cert_matches(cert, names) if cert else False
                        if not verified:
                            # OpenSSL checks the names Postfix gives it, the host names
                            # before the one IP address.
                            failed = (
                                (64, "IP address mismatch")
                                if all(valid_hostaddr(n) for n in names)
                                else (62, "hostname mismatch")
                            )
                    else:
                        verified = True
                    # Postfix's "Trusted" (smtp_tls_CAfile's CAs vouch for the certificate
                    # at a level that does not require them) is not told: Python's ssl
                    # gives no verify result of a session that did not require one.
                    if failed[0]:
                        # Whatever smtp_tls_loglevel says: Postfix's tls_client_start logs
                        # them at the levels that require a trusted certificate.
                        log.info(tls.verify_error(host.relay, *failed))
                        trust = "Untrusted"
                    elif level == "fingerprint" or ctx.verify_mode == ssl.CERT_REQUIRED:
                        trust = "Verified"
                    else:
                        trust = "Untrusted" if der else "Anonymous"
                    _log_tls_session(loglevel, trust, host, ssl_object)
                    if not verified:
                        # Dropped at once: a TLS shutdown would outlive the session.
                        s.writer.transport.abort()
                        raise SessionError("4.7.5", "Server certificate not verified")
                    s.tls = True
                    await _ehlo(s, p, helo)
            elif level != "may":
                raise SessionError(
                    "4.7.4", f"TLS is required, but was not offered by host {host.label}"
                )
    except SessionError as e:
        s.close()
        e.relay = host.relay
        e.site = True
        raise
    except BaseException:
        s.close()
        raise
    return s


def _log_tls_session(loglevel: int, trust: str, host: Host, ssl_object: object) -> None:
    """tls_log_summary()'s line for a new session, with smtp_tls_loglevel 1 and up."""
    if loglevel >= 1:
        summary = tls.summary(ssl_object)
        log.info("%s TLS connection established to %s: %s", trust, host.relay, summary)


async def _ehlo(s: Session, p: Params, helo: str) -> None:
    verb = "LHLO" if p.lmtp else "EHLO"
    # Postfix's smtp_helo names the phase, whether sending or receiving failed.
    stage = f"performing the {verb} handshake"
    await s.send(f"{verb} {helo}\r\n".encode(), p.time("helo_timeout"), stage)
    r = await s.read_reply(p.time("helo_timeout"), stage)
    # 421 to EHLO ends it there, as in Postfix's smtp_helo; any other refusal tries HELO.
    if r.code // 100 != 2 and r.code != 421 and not p.lmtp:
        stage = "performing the HELO handshake"
        await s.send(f"HELO {helo}\r\n".encode(), p.time("helo_timeout"), stage)
        r = await s.read_reply(p.time("helo_timeout"), stage)
        verb = "HELO"
    if r.code // 100 != 2:
        await _quit(s, p)
        raise SessionError(r.status(), f"host {s.host.label} refused to talk to me: {r.text}")
    s.features = {}
    for line in r.lines[1:]:
        word, _, arg = line[4:].partition(" ")
        s.features[word.upper()] = arg
    if "SMTPUTF8" in s.features and "8BITMIME" not in s.features:
        # smtp_helo(): RFC 6531 has SMTPUTF8 imply 8BITMIME.
        log.info("host %s offers SMTPUTF8 support, but not 8BITMIME", s.host.label)
        s.features["8BITMIME"] = ""


# Security options that PLAIN and LOGIN do not meet (Cyrus SASL's flags for them).
_PLAINTEXT_EXCLUDED = frozenset({"noplaintext", "noactive", "nodictionary", "mutual_auth"})


def _offered_mechanisms(s: Session, p: Params) -> list[str]:
    """The server's AUTH mechanisms that smtp_sasl_mechanism_filter lets through (all when
    it is empty), as Postfix's smtp_sasl_helo_auth; none left is a warning (and, when
    there are credentials, a failed authentication)."""
    offered = s.features.get("AUTH", "").upper().split()
    wanted = {m.upper() for m in p.cfg.get_list(p.name("sasl_mechanism_filter"))}
    if not wanted:
        return offered
    kept = [m for m in offered if m in wanted]
    if not kept:
        log.warning(
            "%s offered no supported AUTH mechanisms: '%s'",
            s.host.relay,
            s.features.get("AUTH", ""),
        )
    return kept


async def _auth(s: Session, creds: tuple[str, str], mechs: list[str], p: Params) -> None:
    if not mechs:
        raise SessionError(
            "4.7.0",
            f"SASL authentication failed: server {s.host.label} offered no compatible "
            "authentication mechanisms for this type of connection security",
        )
    # smtp_sasl_security_options (smtp_sasl_tls_security_options over TLS): Postfix's
    # default, noplaintext, rules out PLAIN and LOGIN, the mechanisms spoken here.
    options = p.cfg.get_keywords(
        p.name("sasl_tls_security_options" if s.tls else "sasl_security_options")
    )
    if options & _PLAINTEXT_EXCLUDED:
        mechs = []
    user, password = creds
    t = p.time("helo_timeout")
    if "PLAIN" in mechs:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await s.send(f"AUTH PLAIN {token}\r\n".encode(), t, "sending AUTH")
        r = await s.read_reply(t, "receiving the AUTH response")
    elif "LOGIN" in mechs:
        await s.send(b"AUTH LOGIN\r\n", t, "sending AUTH")
        r = await s.read_reply(t, "receiving the AUTH response")
        for item in (user, password):
            if r.code != 334:
                break
            await s.send(base64.b64encode(item.encode()) + b"\r\n", t, "sending AUTH")
            r = await s.read_reply(t, "receiving the AUTH response")
    else:
        # Cyrus SASL's words for it, as Postfix logs them.
        log.warning("SASL authentication failure: No worthy mechs found")
        raise SessionError(
            "4.7.0",
            f"SASL authentication failed; cannot authenticate to server {s.host.label}: "
            "no mechanism available",
        )
    if r.code // 100 != 2:
        status = r.status()
        if status.startswith("5") and p.bool("sasl_auth_soft_bounce"):
            # smtp_sasl_auth_soft_bounce: the server's 5xx defers, its detail kept.
            status = "4" + status[1:]
        raise SessionError(
            status, f"SASL authentication failed; server {s.host.label} said: {r.text}"
        )


def _generic_map(p: Params) -> Callable[..., str] | None:
    """smtp_generic_maps' mapping of one address (Postfix's smtp_map11 calls in
    smtp_proto.c), None without tables: looked up as canonical(5) (a pattern table sees
    the whole address only), the result's first address out; the null address stays.
    It raises AgentFatal when a table cannot be read, as Postfix's smtp dies of it."""
    param = p.name("generic_maps")
    specs = p.cfg.get_list(param)
    if not specs:
        return None
    from oxipost.cleanup.addr import mail_addr_map, propagate_extension
    from oxipost.delivery import AgentFatal
    from oxipost.maps import TableError, open_table

    tables = [open_table(spec, p.cfg) for spec in specs]
    propagate = propagate_extension(p.cfg, "generic")

    def one(address: str, domainless: bool = False) -> str:
        # The address is looked up as it is, quoted '@' or not: smtp's mapping has no
        # trivial-rewrite step that would add a domain (`domainless` changes nothing).
        if not address:
            return address
        try:
            result = mail_addr_map(p.cfg, tables, address, propagate)
        except TableError:
            raise AgentFatal(f"{param} map lookup problem for {address}") from None
        if not result:
            return address
        if len(result) > 1:
            log.warning("multi-valued %s result for %s", param, address)
        return result[0]

    return one


def _generic_envelope(req: DeliveryRequest, generic: Callable[[str], str]) -> DeliveryRequest:
    """The request with its envelope sender and each recipient as smtp_generic_maps has
    them go out; the ORCPT and what the queue logs stay as they were."""
    envelope = dataclasses.replace(req.envelope, sender=generic(req.envelope.sender))
    recipients = [dataclasses.replace(r, address=generic(r.address)) for r in req.recipients]
    return dataclasses.replace(req, envelope=envelope, recipients=recipients)


def _needs_smtputf8(req: DeliveryRequest) -> bool:
    """Whether the message needs SMTPUTF8 where it was sent with it, as Postfix's cleanup
    flags one: a non-ASCII sender, recipient or primary header."""
    env = req.envelope
    if not env.sender.isascii() or not all(r.address.isascii() for r in req.recipients):
        return True
    return not all(h.isascii() for h in _split_headers(req.content)[0])


def _split_headers(content: bytes) -> tuple[list[str], bytes]:
    """(the primary headers, each folded one with its newlines, the rest of the message
    from its blank line on), LF line ends."""
    text = content.replace(b"\r\n", b"\n")
    end = text.find(b"\n\n")
    head, rest = (text[: end + 1], text[end + 1 :]) if end >= 0 else (text, b"")
    lines = head.decode("utf-8", "surrogateescape").split("\n")
    headers: list[str] = []
    for n, line in enumerate(lines):
        if line[:1] in (" ", "\t") and headers:
            headers[-1] += "\n" + line
        elif _HEADER_LINE.match(line):
            headers.append(line)
        else:
            # The headers end here (a body without a blank line before it).
            rest = "\n".join(lines[n:]).encode("utf-8", "surrogateescape") + rest
            break
    return headers, rest


class _ChecksError(Exception):
    """A content checks table could not be opened or read; args: "header" or "body"
    (which checks), and the content the checks gave back before it (sent by then)."""


def _checks_tables(p: Params) -> dict[str, list[str]]:
    """The table specs of each of smtp_header_checks, smtp_mime_header_checks,
    smtp_nested_header_checks and smtp_body_checks (lmtp_*) that has any, worked out once
    per Config: with none, a message costs a dict lookup."""
    key = "lmtp_checks" if p.lmtp else "smtp_checks"
    found = p.cfg.derived.get(key)
    if not isinstance(found, dict):
        names = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")
        found = {p.name(n): p.cfg.get_list(p.name(n)) for n in names}
        found = p.cfg.derived[key] = {param: specs for param, specs in found.items() if specs}
    return found


def _content_checks(
    req: DeliveryRequest,
    p: Params,
    notes: list[tuple[int, str]],
    generic: Callable[[str], str] | None,
    downgrade: bool = False,
) -> DeliveryRequest:
    """The message as smtp_header_rewrite and smtp_body_rewrite have it go out, through
    Postfix's MIME walk: the content checks, the restricted header_checks(5) of
    oxipost.cleanup.header.RestrictedWalker, each action's line (as smtp_hbc_logger
    writes it, "QID: action: header|body LINE(60 bytes)[: text]") and each warning added
    to `notes` as (level, text); then `generic` (smtp_generic_maps) on the addresses of
    what they leave of each primary sender or recipient header. Raises _ChecksError when
    a checks table cannot be opened or read, as the first line is looked up in it. With
    `downgrade` (a server without 8BITMIME), the walk converts what is declared 8-bit
    (MimeWalker.downgrade); a message that declares no encoding at all needs no walk."""
    specs = _checks_tables(p)
    convert = downgrade and _DECLARES_ENCODING.search(req.content) is not None
    if not specs and not convert:
        if generic is None:
            return req
        headers, rest = _split_headers(req.content)
        out = [_generic_header(generic, h) for h in headers]
        return dataclasses.replace(req, content=_lines_bytes(out) + rest)
    from oxipost.maps import Table, TableError, open_table

    body_param = p.name("body_checks")
    opened: dict[str, Table | TableError] = {}
    for spec in {spec for param_specs in specs.values() for spec in param_specs}:
        try:
            # As Postfix's smtp_hbc: the checks match bytes that are not UTF-8 too.
            opened[spec] = open_table(spec, p.cfg, utf8=False)
        except TableError as e:
            opened[spec] = e

    def open_one(spec: str) -> Table:
        # A table that did not open fails its first lookup, as Postfix's dict_surrogate.
        table = opened[spec]
        if isinstance(table, TableError):
            raise table
        return table

    def logger(action: str, where: str, line: str, text: str) -> None:
        # %.60s of the line, its newlines and tabs shown as '?' as Postfix's log writer
        # shows them.
        shown = _CONTROL.sub("?", _cut(line, 60))
        note = f"{req.queue_id}: {action}: {where} {shown}" + (f": {text}" if text else "")
        notes.append((logging.INFO, note))

    def warn(text: str) -> None:
        notes.append((logging.WARNING, text))

    classes = {
        PRIMARY: p.name("header_checks"),
        MULTIPART: p.name("mime_header_checks"),
        NESTED: p.name("nested_header_checks"),
    }
    rewrite = partial(rewrite_header_text, rewrite=generic) if generic else None
    line_limit = p.cfg.get_int("line_length_limit")
    walker = _SmtpChecks(
        classes,
        body_param,
        specs,
        open_one,
        logger,
        warn,
        rewrite,
        line_limit,
        p.cfg.get_int("mime_boundary_length_limit"),
    )
    walker.watch(int(p.get("line_length_limit")), _break_note(req.queue_id, p), notes)
    walker.downgrade = convert
    headers, rest = _split_headers(req.content)
    try:
        # Only the body's MIME parts and lines need the walk through the body.
        if convert or specs.keys() - {classes[PRIMARY]}:
            separator = rest.startswith(b"\n")
            lines = rest[separator:].decode("utf-8", "surrogateescape").split("\n")
            if lines[-1] == "":
                lines.pop()
            head, body = walker.walk(headers, lines)
            rest = (b"\n" if separator else b"") + _lines_bytes(body)
        else:
            head = walker.headers(headers, PRIMARY, walker.given_head)
    except ChecksLookupError as e:
        given = _lines_bytes(walker.given_head)
        if walker.given_body is not None:
            given += b"\n" + _lines_bytes(walker.given_body)
        raise _ChecksError("body" if e.args[0] == body_param else "header", given) from None
    return dataclasses.replace(req, content=_lines_bytes(head) + rest)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DECLARES_ENCODING = re.compile(rb"(?i)content-transfer-encoding")


class _SmtpChecks(RestrictedWalker):
    """The content checks with smtp_text_out's one line about long lines where Postfix
    writes it: as it sends the first line longer than smtp_line_length_limit, after
    the actions on what came before it."""

    def watch(self, limit: int, note: str, notes: list[tuple[int, str]]) -> None:
        self.break_limit, self.break_note, self.notes = limit, note, notes
        self.broken = limit <= 0

    def sent(self, lines: list[str]) -> None:
        if self.broken:
            return
        limit = self.break_limit
        for line in lines:
            # A line of n characters has at most 4n bytes.
            if len(line) * 4 > limit and any(
                len(physical.encode("utf-8", "surrogateescape")) > limit
                for physical in line.split("\n")
            ):
                self.notes.append((logging.INFO, self.break_note))
                self.broken = True
                return


def _break_note(queue_id: str, p: Params) -> str:
    return f"{queue_id}: breaking line > {p.get('line_length_limit')} bytes with <CR><LF>SPACE"


def _generic_header(generic: Callable[..., str], text: str) -> str:
    """A primary header with smtp_generic_maps applied when it is a sender or recipient
    header."""
    if header_name(text) in ADDRESS_HEADERS:
        return rewrite_header_text(text, generic)
    return text


def _cut(text: str, size: int) -> str:
    """The first `size` bytes of `text` (as C's %.60s cuts)."""
    if len(text) <= size // 4:
        return text
    return text.encode("utf-8", "surrogateescape")[:size].decode("utf-8", "surrogateescape")


def _lines_bytes(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")


_HEADER_LINE = re.compile(r"[!-9;-~]+:")


# NOTIFY keywords in the order Postfix's dsn_notify_str() writes them.
_NOTIFY_ORDER = ("NEVER", "SUCCESS", "FAILURE", "DELAY")


def _break_long_lines(text: bytes, limit: int) -> bytes:
    """Lines longer than limit broken as Postfix's smtp_text_out() breaks them: after limit
    bytes, then after every limit - 1, each piece after the first starting with a space
    (<CR><LF>SPACE); text has LF line ends."""
    out = []
    for line in text.split(b"\n"):
        if len(line) > limit:
            pieces = [line[:limit]]
            pieces += [line[i : i + limit - 1] for i in range(limit, len(line), limit - 1)]
            line = b"\n ".join(pieces)
        out.append(line)
    return b"\n".join(out)


def _data_bytes(content: bytes, limit: int = 0, note: str = "") -> bytes:
    """Normalise to CRLF, break lines longer than limit (smtp_line_length_limit; 0: none;
    `note` logged when it does, as Postfix's smtp does once) and dot-stuff; the
    terminating "." is added by the caller."""
    text = content.replace(b"\r\n", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    # Anchored at line starts: unanchored, the regex engine tries each position of every
    # short line again.
    if limit > 0 and re.search(rb"(?m)^[^\n]{%d}" % (limit + 1), text):
        if note:
            log.info("%s", note)
        text = _break_long_lines(text, limit)
    # Whole-buffer replaces: a loop over the lines cost more than the rest of the DATA.
    text = text.replace(b"\n.", b"\n..")
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\n", b"\r\n")


def _known(value: str) -> bool:
    return bool(value) and value.lower() != "unknown"


def _xforward(s: Session, req: DeliveryRequest, p: Params) -> list[tuple[str, str, str]]:
    """The XFORWARD commands for this message and what each is called in a warning, as
    Postfix 3.7's smtp(8) with smtp_send_xforward_command = yes sends them when the EHLO
    reply announces XFORWARD: an attribute only when announced and known (no NAME for an
    "unknown" client), name/address/port in one command, protocol/helo/ident/source in a
    second, each command only when it has an attribute. IDENT is smtpd's queue ID (none for
    local submissions); SOURCE is how the client was rewritten, LOCAL or REMOTE. Each comes
    with its names in Postfix's warning and its timeout's stage."""
    if not p.bool("send_xforward_command") or "XFORWARD" not in s.features:
        return []
    offered = set(s.features["XFORWARD"].upper().split())
    env = req.envelope
    ident = env.attrs.get("log_ident") or (req.queue_id if env.protocol else "")
    context = env.attrs.get("rewrite_context") or (
        "local" if local_client(env, p.cfg) else "remote"
    )
    groups = [
        (
            "name/address",
            "name/address",
            [
                ("NAME", env.client_name if _known(env.client_name) else ""),
                ("ADDR", env.client_addr if _known(env.client_addr) else ""),
                ("PORT", str(env.client_port) if env.client_port else ""),
            ],
        ),
        (
            "helo/protocol",
            "protocol/helo_name",
            [
                ("PROTO", env.protocol if _known(env.protocol) else ""),
                ("HELO", env.helo_name),
                ("IDENT", ident),
                ("SOURCE", context.upper()),
            ],
        ),
    ]
    out = []
    for request, state, attrs in groups:
        words = [f"{k}={xtext_encode(v)}" for k, v in attrs if v and k in offered]
        if words:
            out.append(("XFORWARD " + " ".join(words), request, state))
    return out


async def _transaction(
    s: Session, req: DeliveryRequest, p: Params, generic: Callable[[str], str] | None
) -> list[Outcome]:
    """One mail transaction. The content checks and smtp_generic_maps' header rewriting
    run once DATA is accepted, each time the message is sent, their lines logged then, as
    Postfix's smtp applies them while it sends the message; a checks table that cannot be
    opened or read ends the session there, what went before it sent, no "." (4.3.0 "local
    data error while talking to H[A]", after "warning: QID: smtp header|body checks lookup
    error")."""
    env = req.envelope
    label = s.host.label
    if env.smtputf8 and "SMTPUTF8" not in s.features and _needs_smtputf8(req):
        # smtp_proto.c's smtp_helo(): a message sent with SMTPUTF8 whose envelope or
        # headers are not ASCII is not downgraded; it bounces before MAIL FROM.
        text = f"SMTPUTF8 is required, but was not offered by host {label}"
        return [Outcome("5.6.7", text)] * len(req.recipients)
    limit = s.features.get("SIZE", "").partition(" ")[0]
    if limit.isdigit() and 0 < int(limit) < len(req.content):
        # smtp_xfer(): the server's EHLO SIZE is below the message; it is not sent at all
        # (the client's own 5.3.4, no MAIL FROM) and the session is dropped without QUIT.
        text = f"message size {len(req.content)} exceeds size limit {limit} of server {label}"
        raise _Partial([Outcome("5.3.4", text)] * len(req.recipients))
    xforward = _xforward(s, req, p)
    # smtp_quote_rfc821_envelope: a local part that is no dot-atom goes out quoted.
    quote = quote_local if p.bool("quote_rfc821_envelope") else str
    mail = f"MAIL FROM:<{quote(env.sender) if env.sender else ''}>"
    eight_bit_mime = "8BITMIME" in s.features
    # Not announced when the message is to be MIME-downgraded (SMTP_MIME_DOWNGRADE: no
    # 8BITMIME and not declared 7BIT): its size would change.
    downgrade = (
        not eight_bit_mime
        and env.body_type != "7BIT"
        and not p.cfg.get_bool("disable_mime_output_conversion")
    )
    if "SIZE" in s.features and not downgrade:
        mail += f" SIZE={len(req.content)}"
    if eight_bit_mime and env.body_type in ("8BITMIME", "7BIT"):
        mail += f" BODY={env.body_type}"
    dsn = "DSN" in s.features
    # ENVID before RET, ORCPT before NOTIFY: Postfix's order.
    if dsn and env.envid:
        mail += f" ENVID={xtext_encode(env.envid)}"
    if dsn and env.ret:
        mail += f" RET={env.ret}"
    if env.smtputf8 and "SMTPUTF8" in s.features:
        mail += " SMTPUTF8"
    rcpt_cmds = []
    for rcpt in req.recipients:
        cmd = f"RCPT TO:<{quote(rcpt.address)}>"
        if dsn and rcpt.orcpt:
            kind, _, addr = rcpt.orcpt.partition(";")
            cmd += f" ORCPT={kind};{xtext_encode(addr)}"
        elif dsn and rcpt.original:
            # No ORCPT was given: the original recipient is sent as one (smtp_proto.c).
            cmd += f" ORCPT=rfc822;{xtext_encode(quote_local(rcpt.original))}"
        if dsn and rcpt.notify:
            cmd += " NOTIFY=" + ",".join(n for n in _NOTIFY_ORDER if n in rcpt.notify)
        rcpt_cmds.append(cmd)
    pipelining = "PIPELINING" in s.features
    results: list[Outcome | None] = [None] * len(req.recipients)
    # A probe goes as far as RCPT TO, then ends the transaction: no DATA (smtp_proto.c's
    # DEL_REQ_TRACE_ONLY).
    probe = env.trace_only

    def said(r: Reply, command: str) -> Outcome:
        # smtp_check_code(): a reply RFC 821 calls a syntax error, or no failure code at all.
        if r.code < 400 or r.code > 599 or r.code == 555 or 500 <= r.code < 510:
            s.protocol_error = True
        return Outcome(r.status(), f"host {label} said: {r.text} (in reply to {command} command)")

    def done(r: Reply) -> Outcome:
        if r.code // 100 != 2:
            return said(r, "end of DATA")
        # smtp_rcpt_done() reports the reply as it came, each line with its code.
        return Outcome(r.status(), " ".join(r.lines))

    t_mail, t_rcpt, t_data = (
        p.time("mail_timeout"),
        p.time("rcpt_timeout"),
        p.time("data_init_timeout"),
    )
    t_xforward = p.time("xforward_timeout")
    if pipelining:
        rset = ["RSET"] if s.rset_first else []
        data_cmd = [] if probe else ["DATA"]
        commands = [*rset, *(c for c, _, _ in xforward), mail, *rcpt_cmds, *data_cmd]
        batch = "".join(c + "\r\n" for c in commands).encode()
        await s.send(batch, t_mail, "sending MAIL FROM")
        if s.rset_first:
            s.rset_first = False
            rr = await s.read_reply(p.time("rset_timeout"), "sending RSET probe")
            if rr.code != 250:
                raise SessionError("4.4.2", f"host {label} refused to reset: {rr.text}")
    for command, request, state in xforward:
        stage = f"sending XFORWARD {state}"
        if not pipelining:
            await s.send(command.encode() + b"\r\n", t_xforward, stage)
        xr = await s.read_reply(t_xforward, stage)
        if xr.code // 100 != 2:
            # Not fatal: the message goes on without the attributes, as in Postfix.
            log.warning(
                "host %s said: %s (in reply to XFORWARD %s command)", s.host.relay, xr.text, request
            )
    if not pipelining:
        await s.send(mail.encode() + b"\r\n", t_mail, "sending MAIL FROM")
    # Postfix's smtp_loop reports a reply lost with its command's sending state.
    r = await s.read_reply(t_mail, "sending MAIL FROM")
    # Any 2xx accepts MAIL and RCPT, any 3xx DATA and any 2xx the message (smtp_loop's
    # code / 100 tests): a 251 is as good as a 250.
    mail_failed = r.code // 100 != 2
    if mail_failed and not pipelining:
        o = said(r, "MAIL FROM")
        await _rset_or_close(s, p)
        return [o] * len(req.recipients)
    accepted: list[int] = []
    rcpt_replies: dict[int, Reply] = {}

    async def reply(timeout: float, stage: str) -> Reply:
        try:
            return await s.read_reply(timeout, stage)
        except SessionError as e:
            # smtp_stream_except() fails only the recipients not done yet (smtp_bulk_fail):
            # those refused at RCPT, or all when MAIL was, keep their reason.
            if mail_failed:
                raise _Partial([said(r, "MAIL FROM")] * len(results)) from None
            if any(x is not None for x in results):
                raise _Partial([x or Outcome(e.status, e.text) for x in results]) from None
            raise

    for i, cmd in enumerate(rcpt_cmds):
        if not pipelining:
            await s.send(cmd.encode() + b"\r\n", t_rcpt, "sending RCPT TO")
        rr = await reply(t_rcpt, "sending RCPT TO")
        if mail_failed:
            continue
        if rr.code // 100 == 2:
            accepted.append(i)
            rcpt_replies[i] = rr
        else:
            results[i] = said(rr, "RCPT TO")
    if mail_failed:
        if not probe:
            # The pipelined DATA is answered too (503); read it and give MAIL's reason. A
            # server that answers 354 all the same gets the empty message one with no
            # recipient gets (smtp_loop has none accepted either way).
            dr = await reply(t_data, "sending DATA command")
            if dr.code // 100 == 3:
                await s.send(b".\r\n", t_data, "sending end of data")
                await reply(t_data, "sending end of data")
            # smtp_loop's SMTP_STATE_ABORT: the transaction is reset.
            await _rset_or_close(s, p)
        o = said(r, "MAIL FROM")
        return [o] * len(req.recipients)
    if probe:
        # An accepted recipient is reported with the server's reply as it stands.
        for i in accepted:
            results[i] = Outcome(rcpt_replies[i].status(), rcpt_replies[i].text)
        await _rset_or_close(s, p)
        return [o or Outcome("4.3.0", "no recipient") for o in results]
    if not pipelining and accepted:
        await s.send(b"DATA\r\n", t_data, "sending DATA command")
    if pipelining or accepted:
        dr = await reply(t_data, "sending DATA command")
    else:
        await _rset_or_close(s, p)
        return [o or Outcome("4.3.0", "no recipient") for o in results]
    if not accepted:
        if dr.code == 354:
            # Pipelined DATA went through with no recipient: end it with an empty message.
            await s.send(b".\r\n", t_data, "sending end of data")
            await s.read_reply(t_data, "sending end of data")
        await _rset_or_close(s, p)
        return [o or Outcome("4.3.0", "no recipient") for o in results]
    if dr.code // 100 != 3:
        await _rset_or_close(s, p)
        o = said(dr, "DATA")
        for i in accepted:
            results[i] = o
        return [x or o for x in results]
    stage_xfer = "sending message body"
    notes: list[tuple[int, str]] = []
    try:
        req = _content_checks(req, p, notes, generic, downgrade)
        failed = ""
    except _ChecksError as e:
        failed, given = e.args
        req = dataclasses.replace(req, content=given)
    for level, text in notes:
        log.log(level, text)
    if failed:
        log.warning("%s: smtp %s checks lookup error", req.queue_id, failed)
        # What went before it is in the stream's buffer, flushed as the session closes.
        with contextlib.suppress(SessionError):
            data = _data_bytes(req.content, int(p.get("line_length_limit")))
            await s.send(data, p.time("data_xfer_timeout"), stage_xfer, body=True)
        o = Outcome("4.3.0", f"local data error while talking to {label}")
        raise _Partial([x or o for x in results])
    # Body and the final dot in one write (one segment for a small message, as Postfix's
    # buffered stream sends them).
    note = _break_note(req.queue_id, p)
    # Unless the content checks logged it in its place among their lines.
    if (logging.INFO, note) in notes:
        note = ""
    data = _data_bytes(req.content, int(p.get("line_length_limit")), note)
    if s.history is not None:
        s.history.append("Out: .")
    await s.send(data + b".\r\n", p.time("data_xfer_timeout"), stage_xfer, body=True)
    t_done = p.time("data_done_timeout")
    try:
        if s.lmtp:
            for i in accepted:
                er = await s.read_reply(t_done, "sending end of data")
                results[i] = done(er)
        else:
            er = await s.read_reply(t_done, "sending end of data")
            o = done(er)
            for i in accepted:
                results[i] = o
    except SessionError as e:
        e.text += " -- message may be sent more than once"
        e.next_host = False
        for i in accepted:
            if results[i] is None:
                results[i] = Outcome(e.status, e.text)
        raise _Partial([x or Outcome(e.status, e.text) for x in results]) from None
    return [x or Outcome("4.3.0", "no response") for x in results]


class _Partial(Exception):
    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__("partial")
        self.outcomes = outcomes


async def _rset_or_close(s: Session, p: Params) -> None:
    with contextlib.suppress(SessionError):
        await s.send(b"RSET\r\n", p.time("rset_timeout"), "sending final RSET")
        await s.read_reply(p.time("rset_timeout"), "sending final RSET")


async def _quit(s: Session, p: Params) -> None:
    with contextlib.suppress(SessionError):
        await s.send(b"QUIT\r\n", p.time("quit_timeout"), "sending QUIT")
        await s.read_reply(min(p.time("quit_timeout"), 5), "sending QUIT")
    s.close()


# Where the postmaster's transcripts are queued (opened at the first).
_queue: Queue | None = None


async def _chat_notify(s: Session, req: DeliveryRequest, p: Params) -> None:
    """smtp_chat_notify(): the session's transcript to error_notice_recipient when the
    server's replies showed a protocol error (notify_classes = protocol), as Postfix's
    smtp_cleanup_session sends it at the end of a delivery's session; never for a
    notice's own delivery (a null or double-bounce sender)."""
    global _queue
    sender = req.envelope.sender.lower()
    if s.history is None or not s.protocol_error or sender in ("", double_bounce(p.cfg).lower()):
        return
    from oxipost.qmgr import control
    from oxipost.qmgr.queue import Queue as QueueFile

    where = s.host.relay
    env, content = transcript(
        p.cfg,
        f"{'LMTP' if s.lmtp else 'SMTP'} client: errors from {where}",
        [f"Unexpected response from {where}.", ""],
        s.history,
        ["", "For other details, see the local mail logfile"],
    )
    if _queue is None:
        _queue = QueueFile.open(p.cfg, writer="smtp")
    await post_notice(p.cfg, _queue, env, content, cleanup_log)
    await control.wakeup(p.cfg)


async def _quit_notify(s: Session, req: DeliveryRequest, p: Params) -> None:
    """End a session that went wrong: QUIT, its reply not waited for (the transcript's
    last line, as in Postfix's), and the transcript; such a session is not reused."""
    with contextlib.suppress(SessionError):
        await s.send(b"QUIT\r\n", p.time("quit_timeout"), "sending QUIT")
    s.close()
    await _chat_notify(s, req, p)


async def _cached(key: tuple[str, ...], p: Params) -> Session | None:
    while _CACHE.get(key):
        s = _CACHE[key].pop()
        if s.idle_handle is not None:
            s.idle_handle.cancel()
        if "PIPELINING" in s.features:
            # The RSET that checks the session is still usable rides with the next MAIL
            # FROM (RFC 2920 lets it open a pipelined group): one round trip fewer per
            # message. A session found dead then is replaced as one found dead here.
            s.rset_first = True
            return s
        try:
            await s.send(b"RSET\r\n", p.time("rset_timeout"), "sending RSET probe")
            r = await s.read_reply(p.time("rset_timeout"), "sending RSET probe")
        except SessionError:
            s.close()
            continue
        if r.code == 250:
            return s
        s.close()
    return None


def _park(key: tuple[str, ...], s: Session, p: Params) -> None:
    limit = p.time("connection_cache_time_limit")
    if limit <= 0:
        _spawn_quit(s, p)
        return
    s.reuse_count += 1
    if s.history:
        # The next delivery's transcript starts afresh (smtp_cleanup_session resets it).
        s.history.clear()
    _CACHE.setdefault(key, []).append(s)

    def expire() -> None:
        if s in _CACHE.get(key, []):
            _CACHE[key].remove(s)
            _spawn_quit(s, p)

    s.idle_handle = asyncio.get_running_loop().call_later(limit, expire)


async def close_cached() -> None:
    """Close every cached session (at shutdown)."""
    sessions = [s for group in _CACHE.values() for s in group]
    _CACHE.clear()
    for s in sessions:
        s.close()
        with contextlib.suppress(Exception):
            await s.writer.wait_closed()
    if _TASKS:
        await asyncio.gather(*_TASKS, return_exceptions=True)


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    lmtp = req.cfg.service(req.transport).command.rsplit("/", 1)[-1] == "lmtp"
    p = Params(req.cfg, lmtp)
    nexthop = req.nexthop
    if not nexthop:
        nexthop = req.cfg.get("relayhost") or req.recipients[0].address.rpartition("@")[2]
    # smtp(8) tries the smtp_fallback_relay destinations in order once the next hop's own
    # hosts cannot take the mail (smtp_connect.c); lmtp(8) has none.
    sites = [nexthop]
    if not lmtp:
        sites += [d for d in re.split(r"[,\s]+", req.cfg.get("smtp_fallback_relay")) if d]
    generic = _generic_map(p)
    wire = _generic_envelope(req, generic) if generic else req
    tried = 0
    while True:
        final = tried + 1 == len(sites)
        outcomes, again, unresolved = await _deliver_site(
            req, wire, generic, p, sites[tried], final
        )
        tried += 1
        if not again or tried == len(sites):
            break
    if lmtp or not unresolved or not outcomes[0].permanent:
        return outcomes
    # A next hop that does not resolve (or loops back here) is taken for a configuration
    # problem, deferred rather than bounced, when it is a fallback relay or the relayhost.
    if tried > 1:
        log.warning("smtp_fallback_relay configuration problem")
    elif nexthop == req.cfg.get("relayhost"):
        log.warning("relayhost configuration problem")
    else:
        return outcomes
    return [dataclasses.replace(o, status="4.3.5") for o in outcomes]


async def _deliver_site(
    req: DeliveryRequest,
    wire: DeliveryRequest,
    generic: Callable[[str], str] | None,
    p: Params,
    nexthop: str,
    final: bool = True,
) -> _SiteResult:
    """Delivery to one destination's hosts (`wire`: the request with its envelope as it
    goes out, after smtp_generic_maps; `generic` for its headers; `final` when no
    fallback relay follows); says whether the next destination (a fallback relay) may be
    tried: every recipient is still to be delivered, none bounced, after the last host,
    and this host is none of the destination's MX hosts."""
    key: tuple[str, ...] = (req.transport, nexthop)
    if p.bool("sasl_auth_enable") and p.bool("sender_dependent_authentication"):
        # A session logged in for one sender is not another's (Postfix's connection
        # cache key then holds the sender, smtp_key.c).
        key += (req.envelope.sender,)
    helo = p.get("helo_name")
    n = len(req.recipients)
    s = await _cached(key, p)
    if s is not None:
        s.setup_done = time.time()
    hosts: list[Host] = []
    mx_self = False
    last: SessionError | None = None
    # The destination's TLS level, looked up before its first connection ("": unusable).
    level: str | None = None
    match: list[str] = []
    if s is None:
        try:
            hosts, mx_self = await _resolve(nexthop, p)
        except SessionError as e:
            return _SiteResult([Outcome(e.status, e.text)] * n, e.next_host, True)
    attempt = 0
    while True:
        if s is None:
            if attempt >= len(hosts):
                assert last is not None
                out = Outcome(last.status, last.text, last.relay, site=last.site)
                return _SiteResult([out] * n, not mx_self)
            host = hosts[attempt]
            attempt += 1
            if level is None:
                try:
                    level, match = _tls_level(p, nexthop)
                except _TlsPolicyError:
                    level = ""
            if not level:
                # Postfix skips every host of a destination whose policy is unusable.
                log.warning(
                    "TLS policy lookup for %s/%s: client TLS configuration problem",
                    nexthop,
                    host.name,
                )
                last = SessionError("4.7.5", "client TLS configuration problem")
                continue
            try:
                domain = parse_nexthop(nexthop, 0)[0]
                s = await _connect(host, p, helo, level, domain, match)
            except SessionError as e:
                last = e
                if not e.relay:
                    # No connection: Postfix's smtp logs why before it tries the next host.
                    log.info(e.text)
                # smtp_skip_5xx_greeting: a 5xx greeting from one MX is not final.
                continue
            try:
                await _login(s, p, req, nexthop)
            except SessionError as e:
                s.close()
                return _SiteResult([Outcome(e.status, e.text, s.host.relay)] * n)
            s.setup_done = time.time()
        relay = s.host.relay
        try:
            outcomes = [_used(o, s) for o in await _transaction(s, wire, p, generic)]
        except _Partial as pe:
            s.close()
            await _chat_notify(s, req, p)
            return _SiteResult([_used(o, s) for o in pe.outcomes])
        except SessionError as e:
            s.close()
            await _chat_notify(s, req, p)
            s = None
            last = e
            if e.next_host and not hosts:
                # A cached session that died between messages: start afresh.
                try:
                    hosts, mx_self = await _resolve(nexthop, p)
                except SessionError as re:
                    return _SiteResult([Outcome(re.status, re.text)] * n, re.next_host, True)
                continue
            if e.next_host and attempt < len(hosts):
                continue
            return _SiteResult([Outcome(e.status, e.text, relay)] * n, e.next_host and not mx_self)
        soft = bool(outcomes) and all(o.status.startswith("4") for o in outcomes)
        if soft and attempt < len(hosts):
            # Every recipient soft-failed at this host: the next MX may do better.
            _log_skipped(req.queue_id, outcomes)
            await (_quit_notify(s, req, p) if s.protocol_error else _quit(s, p))
            s = None
            last = SessionError(outcomes[0].status, outcomes[0].text)
            continue
        if s.protocol_error:
            await _quit_notify(s, req, p)
        elif req.envelope.trace_only:
            # A probe's session ends with it: Postfix's keeps a session only for mail
            # waiting for its destination, and a probe leaves none.
            await _quit(s, p)
        else:
            _park(key, s, p)
        if soft and not mx_self and not final:
            _log_skipped(req.queue_id, outcomes)
        return _SiteResult(outcomes, soft and not mx_self)


def _log_skipped(queue_id: str, outcomes: list[Outcome]) -> None:
    """Why a host that soft-failed every recipient is left for the next host or fallback
    relay: Postfix's smtp_bulk_fail logs it once ("QID: host H[A] said: ... (in reply to
    end of DATA command)"), smtp_rcpt_fail for each recipient a RCPT TO refused, when
    the host is not the last one to try (SMTP_MISC_FLAG_FINAL_SERVER)."""
    said: set[str] = set()
    for o in outcomes:
        if o.text not in said or o.text.endswith("(in reply to RCPT TO command)"):
            log.info("%s: %s", queue_id, o.text)
            said.add(o.text)


def _used(o: Outcome, s: Session) -> Outcome:
    """An outcome with the session it went through: its relay, when it was ready and, from
    its second delivery on, its use count (Postfix's conn_use=)."""
    use = s.reuse_count + 1 if s.reuse_count else 0
    passed = "DSN" in s.features
    return dataclasses.replace(
        o, relay=s.host.relay, setup=s.setup_done, conn_use=use, dsn_passed=passed
    )


class _SiteResult(NamedTuple):
    outcomes: list[Outcome]
    # The next destination may be tried.
    again: bool = False
    # No host was found for the destination.
    unresolved: bool = False
