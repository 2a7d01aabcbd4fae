"""smtpd_check - Postfix SMTP server access restrictions

Evaluates smtpd_{client,helo,sender,relay,recipient,data,end_of_data,etrn}_restrictions
as Postfix's src/smtpd/smtpd_check.c does: each list in order, the first permit ends that
list (the next list still runs), the first reject ends the request; warn_if_reject turns the
next reject into a log line. defer_if_permit (the restriction, an access(5) or policy result,
or a *_tempfail_action after a lookup that failed for now) turns the permit, explicit or
implicit, that ends RCPT, DATA or END-OF-DATA into its 4xx reply, also when raised at an
earlier stage; defer_if_reject turns the stage's next 5xx reject into its own. With
smtpd_delay_reject=yes the client, helo and sender lists run at RCPT time. access(5) tables
answer OK, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, DUNNO, HOLD, DISCARD, numeric
codes with text, another restriction, or a restriction class (smtpd_restriction_classes).

Diagnostics: an access(5) table that cannot be opened or read answers "451 4.3.5 Server
configuration error" as its result ("<addr>: Recipient address rejected: Server configuration
error"), after Postfix's "TABLE is unavailable. REASON" and 'TABLE lookup error for "KEY"'
warnings; another table that cannot be read (mynetworks, a rcpt map) gives "451 4.3.0
<addr>: Temporary lookup failure"; a relay list without reject, defer or
reject_unauth_destination is fatal at start (CheckConfigError), as Postfix refuses to run an
open relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oxipost import match_list
from oxipost.config.params import compat_breaks
from oxipost.config.registry import host_default
from oxipost.delivery.address import log_form
from oxipost.is_header import header_length
from oxipost.maps import TableConfigError, TableError, open_at_start, open_table
from oxipost.maps.net import NET_TABLE_TYPES
from oxipost.maps.search import (
    SearchKey,
    access_address_keys,
    access_client_keys,
    access_domain_keys,
    maps_find_warned,
    virtual_keys,
)
from oxipost.printable import printable
from oxipost.rewrite.resolve import (
    RESOLVE_CLASS_ALIAS,
    RESOLVE_CLASS_DEFAULT,
    RESOLVE_CLASS_LOCAL,
    RESOLVE_CLASS_RELAY,
    RESOLVE_CLASS_VIRTUAL,
    Resolution,
    domain_list_match,
    match_domain,
    resolve,
    split_internal,
)
from oxipost.rewrite.rewrite import rewrite_address
from oxipost.smtpd.policy import PolicyClient
from oxipost.valid import valid_hostaddr, valid_hostname, valid_mailhost_literal
from oxipost.verify import client as verify_client

if TYPE_CHECKING:
    from oxipost.config import Config


class CheckConfigError(Exception):
    """A restriction configuration Postfix refuses to run with (message without 'fatal: ')."""


class LookupFailure(Exception):
    """A table could not be read: the request gets a temporary failure, or with `config`
    (a table that gave what it must not, Postfix's DICT_ERR_CONFIG) a server error."""

    def __init__(self, reason: str, config: bool = False) -> None:
        super().__init__(reason)
        self.config = config


def _failure(e: Exception) -> LookupFailure:
    return LookupFailure(str(e), isinstance(e, TableConfigError))


def _lookup_failed(name: str, e: LookupFailure) -> Reply:
    """Postfix's reject_dict_retry ("<NAME>: Temporary lookup failure") or, for a
    DICT_ERR_CONFIG, reject_server_error."""
    if e.config:
        return _server_error()
    return Reply(451, "4.3.0", f"<{name}>: Temporary lookup failure")


@dataclass
class Reply:
    code: int
    dsn: str
    text: str
    # Postfix's MAIL_ERROR_SOFTWARE (reject_server_error): warn_if_reject cannot make it
    # a warning.
    software: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # As Postfix's smtpd_check_reject, "in any case": the DSN class follows the reply
        # code (unknown_client_reject_code = 550 with 4.7.25 replies 5.7.25).
        if 400 <= self.code <= 599:
            self.dsn = str(self.code // 100) + self.dsn[1:]

    def __str__(self) -> str:
        return f"{self.code} {self.dsn} {self.text}"


@dataclass
class DeferIf:
    """A restriction's answer that decides nothing now (Postfix's defer_if()): with
    `permit`, defer_if_permit (the stage's permit, explicit or implicit, becomes this
    reply); else defer_if_reject (the stage's next 5xx reject becomes this reply)."""

    permit: bool
    reply: Reply


# How a client name lookup ended (Postfix's SMTPD_PEER_CODE_OK, _TEMP, and _PERM or _FORGED).
NAME_OK = "ok"
NAME_TEMPORARY = "temporary"
NAME_NOT_FOUND = "not found"


@dataclass
class ClientState:
    """What the restrictions look at: the session as smtpd knows it."""

    addr: str
    # Postfix's client_name (verified: the reverse name resolves back to addr) and
    # reverse_client_name (the address->name lookup alone); "unknown" when not found, or
    # when the lookup failed for now (the status tells which).
    name: str = "unknown"
    reverse_name: str = "unknown"
    name_status: str = NAME_NOT_FOUND
    reverse_name_status: str = NAME_NOT_FOUND
    helo: str = ""
    sender: str | None = None
    # info_log_address_format = external: log lines quote the addresses again.
    log_external: bool = True
    sasl_username: str = ""
    pipelined: bool = False
    esmtp: bool = False
    # Actions access tables asked for (HOLD, DISCARD, ...), kept for the transaction.
    actions: dict[str, str] = field(default_factory=dict)
    # For the log lines, as Postfix's state->where, ->protocol (ESMTP once an EHLO was
    # accepted) and ->queue_id (once the queue file is open; NOQUEUE before).
    where: str = "CONNECT"
    protocol: str = "SMTP"
    queue_id: str = ""
    # What a policy request tells of the session beyond the above (client_port, size,
    # instance, the TLS attributes...), filled by smtpd before a check that may ask one.
    policy_attrs: dict[str, str] = field(default_factory=dict)
    # The transaction's accepted recipients and whether the session is under TLS, as
    # smtpd knew them when it asked (reject_multi_recipient_bounce, _plaintext_session).
    rcpt_count: int = 0
    encrypted: bool = False
    # Postfix's defer_if_permit: one reason, kept while the flag is up, and the flag each
    # stage leaves for the next (the client's for HELO, theirs for MAIL, the sender's
    # for RCPT). defer_if_reject lives for one stage only: a reply or None.
    dip_reply: Reply | None = None
    dip_active: bool = False
    dip_client: bool = False
    dip_helo: bool = False
    dip_sender: bool = False
    dir_reply: Reply | None = None
    # A line Postfix logs after the refusal's (an older default's use), for smtpd to log.
    compat_notice: str = ""

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.addr}]"

    def whatsup(self, action: str, text: str, recipient: str = "") -> str:
        """Postfix's log_whatsup() line: "QID: reject: RCPT from name[addr]: text; from=<..>
        to=<..> proto=ESMTP helo=<..>", each attribute only when the session has it."""
        line = f"{self.queue_id or 'NOQUEUE'}: {action}: {self.where} from {self.namaddr}: {text};"
        if self.sender is not None:
            line += f" from=<{log_form(self.sender, self.log_external)}>"
        # At ETRN our checks carry the domain as the recipient; Postfix's has none.
        if recipient and self.where != "ETRN":
            line += f" to=<{log_form(recipient, self.log_external)}>"
        line += f" proto={self.protocol}"
        if self.helo:
            line += f" helo=<{self.helo}>"
        return line


_STAGES = {
    "client": ("smtpd_client_restrictions", "Client host"),
    "helo": ("smtpd_helo_restrictions", "Helo command"),
    "sender": ("smtpd_sender_restrictions", "Sender address"),
    "relay": ("smtpd_relay_restrictions", "Recipient address"),
    "recipient": ("smtpd_recipient_restrictions", "Recipient address"),
    "data": ("smtpd_data_restrictions", "Data command"),
    "end_of_data": ("smtpd_end_of_data_restrictions", "End-of-data command"),
    "etrn": ("smtpd_etrn_restrictions", "Etrn command"),
}
# reject_unknown_*client*: which name's lookup must have found it, the DSN code, what was
# not found.
_UNKNOWN_CLIENT = {
    "reject_unknown_client_hostname": ("name_status", "4.7.25", "hostname"),
    "reject_unknown_client": ("name_status", "4.7.25", "hostname"),
    "reject_unknown_reverse_client_hostname": (
        "reverse_name_status",
        "4.7.1",
        "reverse hostname",
    ),
}
_RELAY_SAFE = {
    "reject_unauth_destination",
    "defer_unauth_destination",
    "reject",
    "defer",
    "defer_if_permit",
    "check_relay_domains",
}

PERMIT = "permit"
# Postfix's sender/login restrictions; reject_sender_login_mismatch is the first two together.
SENDER_LOGIN_CHECKS = (
    "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch",
    "reject_known_sender_login_mismatch",
)
# What Postfix's generic_checks runs for reject_sender_login_mismatch.
_SENDER_LOGIN_PARTS = {
    "reject_sender_login_mismatch": (
        "reject_authenticated_sender_login_mismatch",
        "reject_unauthenticated_sender_login_mismatch",
    )
}
DUNNO = "dunno"
# A policy request's attributes in Postfix 3.7's order (smtpd_check.c check_policy_service);
# 3.8 added compatibility_level and mail_version after policy_context.
POLICY_ATTRIBUTES = (
    "request",
    "protocol_state",
    "protocol_name",
    "client_address",
    "client_name",
    "client_port",
    "reverse_client_name",
    "server_address",
    "server_port",
    "helo_name",
    "sender",
    "recipient",
    "recipient_count",
    "queue_id",
    "instance",
    "size",
    "etrn_domain",
    "stress",
    "sasl_method",
    "sasl_username",
    "sasl_sender",
    "ccert_subject",
    "ccert_issuer",
    "ccert_fingerprint",
    "ccert_pubkey_fingerprint",
    "encryption_protocol",
    "encryption_cipher",
    "encryption_keysize",
    "policy_context",
)

# The resolver for DNSBL/DNSWL lookups: None means the system's (/etc/resolv.conf). Tests
# point it at a DNS server of their own on 127.0.0.1.
RESOLVER: Any = None
# The restrictions that name a DNS list (the next item in the restriction list): which
# name they look up, and the reply class in their replies (smtpd_check.c generic_checks).
_DNSXL = {
    "reject_rbl_client": ("addr", "Client host"),
    "reject_rbl": ("addr", "Client host"),
    "permit_dnswl_client": ("addr", "Client host"),
    "reject_rhsbl_client": ("name", "Client host"),
    "permit_rhswl_client": ("name", "Client host"),
    "reject_rhsbl_reverse_client": ("reverse_name", "Unverified Client host"),
    "reject_rhsbl_helo": ("helo", "Helo command"),
    "reject_rhsbl_sender": ("sender", "Sender address"),
    "reject_rhsbl_recipient": ("recipient", "Recipient address"),
}
# find_dnsxl_*'s answer when the DNS gave no definitive reply (Postfix's dnsxl_stat_soft).
_DNSXL_SOFT = "soft"
# The restrictions that may wait (on a server, a resolver, a clock): a configuration that
# names one runs the checks off the event loop, so that one slow DNS list or policy server
# holds up its own session only.
_BLOCKING = frozenset(
    {
        "check_policy_service",
        "sleep",
        "reject_unknown_helo_hostname",
        "reject_unknown_hostname",
        "reject_unknown_sender_domain",
        "reject_unknown_recipient_domain",
        "reject_unverified_recipient",
        "reject_unverified_sender",
        "reject_maps_rbl",
        *_DNSXL,
    }
)
# rbl_pagein's limit on the TXT records' text, joined with " / ".
_RBL_TXT_LIMIT = 500


def _table(spec: str, cfg: Config) -> Any:
    return open_table(spec, cfg)


_TABLE_ERRORS = (TableError, OSError)
# check_rcpt_maps' first tables, in its order (sender_canonical_maps for a sender only).
_KNOWN_MAPS = (
    "recipient_canonical_maps",
    "sender_canonical_maps",
    "canonical_maps",
    "virtual_alias_maps",
)

# What smtpd asks tables of besides its restrictions, in smtpd_check_init's order.
_TABLE_PARAMS = (
    "mynetworks",
    "relay_domains",
    "local_recipient_maps",
    "sender_canonical_maps",
    "recipient_canonical_maps",
    "canonical_maps",
    "virtual_alias_maps",
    "virtual_mailbox_maps",
    "relay_recipient_maps",
    "smtpd_sender_login_maps",
    "relocated_maps",
)


# The match lists smtpd reads as it starts (smtpd_init, smtpd_check_init, and what
# trivial-rewrite's resolve_init reads, resolve being in process here).
_LIST_PARAMS = (
    "smtpd_client_event_limit_exceptions",
    "smtpd_forbid_bare_newline_exclusions",
    "mynetworks",
    "relay_domains",
    "permit_mx_backup_networks",
    "smtpd_authorized_xclient_hosts",
    "smtpd_authorized_xforward_hosts",
    "debug_peer_list",
    "fast_flush_domains",
    "mydestination",
    "virtual_alias_domains",
    "virtual_mailbox_domains",
)


def open_smtpd_tables(cfg: Config) -> None:
    """Open smtpd's tables (the lists it matches, the recipient tables, the restrictions'
    and their classes' tables) as Postfix's smtpd_check_init does as smtpd starts: one
    that does not open is logged then (oxipost.maps.open_at_start); the files its match
    lists name are read then too."""
    for param in _LIST_PARAMS:
        if cfg.is_known(param):
            with contextlib.suppress(TableError):
                match_list.patterns(cfg, param, cfg.get_list(param))
    restrictions = [param for param, _ in _STAGES.values()]
    classes = cfg.get_list("smtpd_restriction_classes")
    params = [*_TABLE_PARAMS, *restrictions, *classes]
    open_at_start(cfg, params, lambda _param, spec: _table(spec, cfg))


def _asks_a_server(word: str) -> bool:
    """Whether a restriction's word is a table each lookup of which waits on a server."""
    return word.removeprefix("proxy:").partition(":")[0] in NET_TABLE_TYPES


@functools.lru_cache(maxsize=4096)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    # Parsed once: smtpd matches the same few lists (mynetworks, ...) on every session.
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # A client's address is matched against several lists per session, sessions repeat.
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def match_networks(cfg: Config, items: list[str], addr: str, pname: str = "mynetworks") -> bool:
    """Postfix's network match list `pname` (its value `items`): CIDR, plain IPs,
    [ipv6]/len, type:table, !negation, /file/name (oxipost.match_list). TableError
    propagates, after match_ops' warning."""
    ip = _address(addr)
    if ip is None:
        return False
    for result, item in match_list.patterns(cfg, pname, items):
        hit = False
        if ":" in item and not item.startswith("[") and "/" not in item.split(":", 1)[0]:
            if _network(item.strip("[]").replace("]/", "/")) is None:
                try:
                    hit = match_list.table(cfg, item).lookup(addr) is not None
                except TableError:
                    match_list.lookup_problem(pname, item)
                    raise
        if not hit:
            net = _network(item.replace("[", "").replace("]", ""))
            hit = net is not None and ip in net
        if hit:
            return result
    return False


def match_namadr(cfg: Config, param: str, name: str, addr: str) -> bool:
    """Postfix's namadr_list_match on the list `param`: each pattern in turn, an address
    or network against the client's address, a host name or .domain against its name
    (parent domains too when parent_domain_matches_subdomains names `param`), a
    type:table asked for the name then the address; !negation, /file/name. TableError
    propagates."""
    items = cfg.get_list(param)
    if not items:
        return False  # the usual case, asked on every connection
    subdomains = param in cfg.get_list("parent_domain_matches_subdomains")
    for result, item in match_list.patterns(cfg, param, items):
        if _network(item.strip("[]").replace("]/", "/")) is not None:
            hit = match_networks(cfg, [item], addr, param)
        else:
            hit = match_domain(cfg, [item], name, subdomains, param) or (
                ":" in item and match_networks(cfg, [item], addr, param)
            )
        if hit:
            return result
    return False


def mynetworks(cfg: Config) -> list[str]:
    """mynetworks, or what mynetworks_style computes from this host's interfaces."""
    return cfg.get_list("mynetworks")


def validate(cfg: Config) -> None:
    """Refuse a configuration that would make an open relay (smtpd_check.c)."""
    relay = cfg.get_list("smtpd_relay_restrictions")
    rcpt = cfg.get_list("smtpd_recipient_restrictions")
    if not any(r in _RELAY_SAFE for r in relay + rcpt) and not _class_has_safe(cfg, relay + rcpt):
        raise CheckConfigError(
            "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, "
            "specify at least one working instance of: reject_unauth_destination, "
            "defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains"
        )


def _class_has_safe(cfg: Config, names: list[str]) -> bool:
    classes = set(cfg.get_list("smtpd_restriction_classes"))
    for name in names:
        if name in classes and any(r in _RELAY_SAFE for r in cfg.get_list(name)):
            return True
    return False


class Checker:
    """The restriction engine for one smtpd process."""

    def __init__(self, cfg: Config, log: Any = None) -> None:
        self.cfg = cfg
        self.log = log
        self.classes = set(cfg.get_list("smtpd_restriction_classes"))
        self.delay_reject = cfg.get_bool("smtpd_delay_reject")
        self.unlisted_sender = cfg.get_bool("smtpd_reject_unlisted_sender")
        self.sasl = cfg.get_bool("smtpd_sasl_auth_enable")
        self.untrusted_routing = cfg.get_bool("allow_untrusted_routing")
        self.utf8 = cfg.get_bool("smtputf8_enable")
        # What Postfix logs of an older default it keeps (compatibility_level below 3.6).
        self.compat = compat_breaks(cfg)
        self.obsolete_warned: set[str] = set()
        self.policy_clients: dict[str, PolicyClient] = {}
        # The tables check_rcpt_maps asks before the mailbox tables, for a recipient and
        # for a sender (sender_canonical_maps too): only the parameters that name one, so
        # that a configuration without them costs nothing per address.
        self.known_maps = {
            sender: tuple(
                p
                for p in _KNOWN_MAPS
                if (sender or p != "sender_canonical_maps") and cfg.get_list(p)
            )
            for sender in (False, True)
        }
        # A policy query, sleep, a DNS list or a domain's DNS lookup blocks: smtpd then
        # runs the checks in a worker thread.
        self.threaded = any(
            not _BLOCKING.isdisjoint(words) or any(_asks_a_server(w) for w in words)
            for words in (
                cfg.get_list(param)
                for param in [p for p, _ in _STAGES.values()] + sorted(self.classes)
            )
        )

    async def run(self, check: Callable[..., Reply | None], *args: Any) -> Reply | None:
        """One entry point's answer, off the event loop when it may block."""
        if self.threaded:
            return await asyncio.to_thread(check, *args)
        return check(*args)

    # Entry points per SMTP command ----------------------------------------------------

    def at_client(self, st: ClientState) -> Reply | None:
        return None if self.delay_reject else self._client(st)

    def at_helo(self, st: ClientState) -> Reply | None:
        return None if self.delay_reject else self._helo(st)

    def at_mail(self, st: ClientState) -> Reply | None:
        return None if self.delay_reject else self._mail(st)

    def at_rcpt(self, st: ClientState, rcpt: str) -> Reply | None:
        if len(rcpt) == 10 and rcpt.lower() == "postmaster":
            return None  # RFC 5321 4.5.1: Postfix's smtpd_check_rcpt takes it unchecked
        if self.delay_reject:
            # With the recipient: an access(5) action's log line names it, and a
            # check_recipient_access in these lists has one to look up (Postfix runs them
            # inside smtpd_check_rcpt).
            for check in (self._client, self._helo, self._mail):
                reply = check(st, rcpt)
                if reply is not None:
                    return reply
        if self.cfg.get_bool("smtpd_relay_before_recipient_restrictions"):
            stages = ("relay", "recipient")
        else:
            stages = ("recipient", "relay")
        # As smtpd_check_rcpt: the sender stage's defer_if_permit, one defer_if_reject for
        # both lists.
        st.dip_active = st.dip_sender
        st.dir_reply = None
        for name in stages:
            reply = self.stage(name, st, rcpt)
            if reply is not None:
                if name == "recipient" and self.compat:
                    self._compat_rejected(st, rcpt)
                return reply
        if self.compat:
            self._compat_relayed(st, rcpt)
        if st.dip_active:
            return self._deferred(st)
        if "DISCARD" in st.actions:
            return None  # smtpd_check_rcpt: a discarded message's recipients are not looked up
        reply = self.unlisted(rcpt)
        return None if reply is None else self._reject(st, reply)

    def _compat_rejected(self, st: ClientState, rcpt: str) -> None:
        """A recipient smtpd_recipient_restrictions refused, judged before the relay
        restrictions only by the older default: Postfix says so after the refusal's line."""
        if "smtpd_relay_before_recipient_restrictions" in self.compat:
            st.compat_notice = (
                "using backwards-compatible default setting"
                " smtpd_relay_before_recipient_restrictions=no to reject recipient"
                f' "{rcpt}" from client "{st.namaddr}"'
            )

    def _compat_relayed(self, st: ClientState, rcpt: str) -> None:
        """A recipient taken that compatibility_level 1's smtpd_relay_restrictions
        (permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination) would
        have refused: Postfix logs that the empty older default let it through."""
        if (
            "smtpd_relay_restrictions" not in self.compat
            or self.cfg.get_list("smtpd_relay_restrictions")
            or self._permit_mynetworks(st)
            or st.sasl_username
        ):
            return
        try:
            if self.auth_destination(rcpt):
                return
        except LookupFailure:
            return
        if self.log is not None:
            self.log.info(
                'using backwards-compatible default setting "smtpd_relay_restrictions = (empty)"'
                f' to avoid "Relay access denied" error for recipient "{rcpt}" from client'
                f' "{st.namaddr}"'
            )

    def at_etrn(self, st: ClientState, domain: str) -> Reply | None:
        """Postfix's smtpd_check_etrn: the pending client and HELO restrictions, then
        smtpd_etrn_restrictions with the flags those left."""
        if self.delay_reject:
            for check in (self._client, self._helo):
                reply = check(st)
                if reply is not None:
                    return reply
        st.dip_active = st.dip_client or st.dip_helo
        st.dir_reply = None
        reply = self.stage("etrn", st, domain)
        if reply is None and st.dip_active:
            return self._deferred(st)
        return reply

    def at_data(self, st: ClientState) -> Reply | None:
        return self._last_stage("data", st)

    def at_end_of_data(self, st: ClientState) -> Reply | None:
        return self._last_stage("end_of_data", st)

    # Stages as Postfix's smtpd_check_client, _helo, _mail: each starts from the
    # defer_if_permit flag the stages before it left, and leaves its own; none of them
    # turns a permit into the deferral (RCPT, DATA and END-OF-DATA do).

    def _client(self, st: ClientState, rcpt: str | None = None) -> Reply | None:
        st.dip_active = False
        st.dir_reply = None
        reply = self.stage("client", st, rcpt)
        st.dip_client = st.dip_active
        return reply

    def _helo(self, st: ClientState, rcpt: str | None = None) -> Reply | None:
        if not st.helo:
            return None  # no HELO: Postfix skips the list, and its flag stays
        st.dip_active = st.dip_client
        st.dir_reply = None
        reply = self.stage("helo", st, rcpt)
        st.dip_helo = st.dip_active
        return reply

    def _mail(self, st: ClientState, rcpt: str | None = None) -> Reply | None:
        if st.sender is None:
            return None  # VRFY outside a transaction: Postfix skips the list, as for HELO
        st.dip_active = st.dip_client or st.dip_helo
        st.dir_reply = None
        reply = self.stage("sender", st, rcpt)
        st.dip_sender = st.dip_active
        if reply is None and self.unlisted_sender and st.sender and "DISCARD" not in st.actions:
            # As Postfix's smtpd_check_mail, after the sender list: at MAIL FROM with
            # smtpd_delay_reject = no, else at RCPT before the recipient lists.
            try:
                reply = self.unlisted_address(st.sender, "Sender address")
            except LookupFailure as e:
                reply = _lookup_failed(st.sender, e)
            if reply is not None:
                return self._reject(st, reply)
        return reply

    def _last_stage(self, name: str, st: ClientState) -> Reply | None:
        # Postfix starts DATA's flag afresh: some recipients were accepted, the last
        # one may have been deferred.
        st.dip_active = False
        st.dir_reply = None
        reply = self.stage(name, st, None)
        if reply is None and st.dip_active:
            return self._deferred(st)
        return reply

    def _deferred(self, st: ClientState) -> Reply:
        """A stage that would permit while defer_if_permit is up: its reply instead."""
        assert st.dip_reply is not None
        return self._reject(st, st.dip_reply)

    def _reject(self, st: ClientState, reply: Reply) -> Reply:
        """smtpd_check_reject: a 5xx reply while defer_if_reject is up becomes that
        deferral (once); made RFC compliant."""
        if st.dir_reply is not None and reply.code >= 500:
            reply, st.dir_reply = st.dir_reply, None
        return self._rfc_reply(reply)

    def _rfc_reply(self, reply: Reply) -> Reply:
        """The reply as Postfix's smtpd_check_reject sends and logs it: printable() with
        ' ' (a table's or a client's control characters, and 8-bit bytes that are not
        UTF-8 or, without smtputf8_enable, any 8-bit byte). Not cut to any length: Postfix
        3.7 sends a 3,000-byte access(5) text as one line."""
        if reply.text.isascii() and reply.text.isprintable():
            return reply
        return dataclasses.replace(reply, text=printable(reply.text, " ", self.utf8))

    # Evaluation -------------------------------------------------------------------------

    def stage(self, name: str, st: ClientState, rcpt: str | None) -> Reply | None:
        param, reply_class = _STAGES[name]
        items = self.cfg.get_list(param)
        if not items:
            return None  # most stages, on most sites
        try:
            result = self.run_list(items, name, reply_class, st, rcpt, 0)
        except LookupFailure as e:
            return self._rfc_reply(_lookup_failed(self._reply_name(name, st, rcpt), e))
        return result if isinstance(result, Reply) else None

    def _reply_name(self, stage: str, st: ClientState, rcpt: str | None) -> str:
        if stage == "client":
            return st.namaddr
        if stage == "helo":
            return st.helo
        if stage == "sender":
            return st.sender or ""
        if stage in ("relay", "recipient", "etrn"):
            return rcpt or ""
        if stage == "end_of_data":
            return "END-OF-MESSAGE"
        return "DATA"

    def run_list(
        self,
        items: list[str],
        stage: str,
        reply_class: str,
        st: ClientState,
        rcpt: str | None,
        depth: int,
    ) -> Reply | str:
        if "DISCARD" in st.actions:
            # generic_checks: nothing more is judged once the message is to be discarded
            # (DISCARD ends the list it is in as a permit), until the transaction ends.
            return DUNNO
        warn = False
        it = iter(items)
        for item in it:
            name = item.lower() if ":" not in item else item
            result: Reply | DeferIf | str
            if name == "warn_if_reject":
                warn = True
                continue
            if name.startswith("check_") and name.endswith("_access") and ":" not in name:
                table = next(it, "")
                result = self.access(name, table, stage, reply_class, st, rcpt, depth)
            elif name in _DNSXL:
                result = self.dnsxl(name, next(it, None), st, rcpt)
            elif name == "check_policy_service":
                server = next(it, "")
                result = self.policy_service(server, stage, reply_class, st, rcpt, depth)
            elif name == "sleep":
                result = self.sleep(next(it, ""))
            elif name in ("reject_multi_recipient_bounce", "reject_plaintext_session"):
                result = self.session_check(name, stage, reply_class, st, rcpt)
            elif name in ("reject_unknown_helo_hostname", "reject_unknown_hostname"):
                result = self.unknown_helo(st)
            else:
                result = self.restriction(name, stage, reply_class, st, rcpt, depth)
            if isinstance(result, Reply):
                if warn and not result.software:
                    self._warn(st, result, rcpt)
                    warn = False
                    continue
                return self._reject(st, result)
            if isinstance(result, DeferIf):
                if not result.permit:
                    # Raised under warn_if_reject too: else a warning could lose mail.
                    if st.dir_reply is None:
                        st.dir_reply = result.reply
                elif warn:
                    # As Postfix's DEFER_IF_PERMIT macros: under warn_if_reject the
                    # deferral is logged as a warning, not kept.
                    self._warn(st, result.reply, rcpt)
                elif not st.dip_active:
                    st.dip_active, st.dip_reply = True, result.reply
                result = DUNNO
            warn = False
            if result == PERMIT:
                return PERMIT
            if st.dip_active and st.dir_reply is not None:
                break  # nothing later can change the outcome (generic_checks)
        return DUNNO

    def _warn(self, st: ClientState, reply: Reply, rcpt: str | None) -> None:
        if self.log is not None:
            self.log.info(st.whatsup("reject_warning", str(self._rfc_reply(reply)), rcpt or ""))

    def restriction(
        self,
        name: str,
        stage: str,
        reply_class: str,
        st: ClientState,
        rcpt: str | None,
        depth: int,
    ) -> Reply | DeferIf | str:
        cfg = self.cfg
        rname = self._reply_name(stage, st, rcpt)
        if name in ("permit",):
            return PERMIT
        if name in ("dunno",):
            return DUNNO
        if name == "reject":
            return Reply(
                cfg.get_int("reject_code"),
                "5.7.1",
                f"<{rname}>: {reply_class} rejected: Access denied",
            )
        if name == "defer":
            return Reply(
                cfg.get_int("defer_code"),
                "4.3.2",
                f"<{rname}>: {reply_class} rejected: Try again later",
            )
        if name in ("defer_if_permit", "defer_if_reject"):
            return DeferIf(
                name == "defer_if_permit",
                Reply(450, "4.7.0", f"<{rname}>: {reply_class} rejected: {name} requested"),
            )
        if name == "permit_mynetworks":
            return PERMIT if self._permit_mynetworks(st) else DUNNO
        if name == "permit_sasl_authenticated":
            return PERMIT if st.sasl_username else DUNNO
        if name == "check_relay_domains":
            return self._check_relay_domains(st, rcpt, rname, reply_class) if rcpt else DUNNO
        if name in ("reject_unauth_destination", "defer_unauth_destination"):
            if rcpt is None:
                return DUNNO
            if self.auth_destination(rcpt):
                return DUNNO
            if name == "defer_unauth_destination":
                return Reply(
                    cfg.get_int("relay_domains_reject_code") - 100,
                    "4.7.1",
                    f"<{rcpt}>: Relay access denied",
                )
            return Reply(
                cfg.get_int("relay_domains_reject_code"), "5.7.1", f"<{rcpt}>: Relay access denied"
            )
        if name in ("permit_auth_destination",):
            return PERMIT if rcpt and self.auth_destination(rcpt) else DUNNO
        if name == "reject_unauth_pipelining":
            if stage in ("data", "end_of_data") and st.pipelined:
                return Reply(
                    503,
                    "5.5.0",
                    f"<{rname}>: {reply_class} rejected: Improper use of SMTP command pipelining",
                )
            return DUNNO
        if name == "reject_non_fqdn_helo_hostname" or name == "reject_non_fqdn_hostname":
            if st.helo.startswith("["):
                # As Postfix's generic_checks: an address literal is judged as an address.
                return self._invalid_helo_literal(st.helo) or DUNNO
            if st.helo and not _fqdn_helo(st.helo):
                return Reply(
                    cfg.get_int("non_fqdn_reject_code"),
                    "5.5.2",
                    f"<{st.helo}>: Helo command rejected: need fully-qualified hostname",
                )
            return DUNNO
        if name in ("reject_invalid_helo_hostname", "reject_invalid_hostname"):
            if st.helo.startswith("["):
                return self._invalid_helo_literal(st.helo) or DUNNO
            if st.helo and not valid_helo(st.helo):
                return Reply(
                    cfg.get_int("invalid_hostname_reject_code"),
                    "5.5.2",
                    f"<{st.helo}>: Helo command rejected: Invalid name",
                )
            return DUNNO
        if name == "reject_non_fqdn_sender":
            if st.sender and not _fqdn(split_internal(st.sender)[1]):
                return Reply(
                    cfg.get_int("non_fqdn_reject_code"),
                    "5.5.2",
                    f"<{st.sender}>: Sender address rejected: need fully-qualified address",
                )
            return DUNNO
        if name == "reject_non_fqdn_recipient":
            if rcpt and not _fqdn(split_internal(rcpt)[1]):
                return Reply(
                    cfg.get_int("non_fqdn_reject_code"),
                    "5.5.2",
                    f"<{rcpt}>: Recipient address rejected: need fully-qualified address",
                )
            return DUNNO
        if name in _UNKNOWN_CLIENT:
            # Postfix 3.7's words, whatever the stage ("Client host" even at RCPT).
            status_field, dsn, what = _UNKNOWN_CLIENT[name]
            status = getattr(st, status_field)
            if status == NAME_OK:
                return DUNNO
            # postconf(5): "The reply is always 450 in case the address->name lookup failed
            # due to a temporary problem" (the name->address one too, in smtpd_peer.c).
            code = 450 if status == NAME_TEMPORARY else cfg.get_int("unknown_client_reject_code")
            return Reply(code, dsn, f"Client host rejected: cannot find your {what}, [{st.addr}]")
        if name == "reject_unknown_sender_domain":
            if st.sender:
                return self.unknown_domain(st.sender, "Sender address", "4.1.8") or DUNNO
            return DUNNO
        if name == "reject_unknown_recipient_domain":
            if rcpt:
                return self.unknown_domain(rcpt, "Recipient address", "4.1.2") or DUNNO
            return DUNNO
        if name == "reject_unlisted_recipient":
            return (self.unlisted_recipient(rcpt) if rcpt else None) or DUNNO
        if name == "reject_unverified_recipient":
            return (self.unverified(rcpt, "recipient") if rcpt else None) or DUNNO
        if name == "reject_unverified_sender":
            return (self.unverified(st.sender, "sender") if st.sender else None) or DUNNO
        if name == "reject_unlisted_sender":
            return (
                self.unlisted_address(st.sender, "Sender address") if st.sender else None
            ) or DUNNO
        if name in SENDER_LOGIN_CHECKS:
            return self.sender_login(name, st) or DUNNO
        if name == "reject_maps_rbl":
            return self.reject_maps_rbl(st, rcpt)
        if name in self.classes:
            if depth > 100:
                return DUNNO
            return self.run_list(cfg.get_list(name), stage, reply_class, st, rcpt, depth + 1)
        if self.log is not None:
            self.log.warning(f'unknown smtpd restriction: "{name}"')
        return _server_error()

    # Individual checks --------------------------------------------------------------------

    def _invalid_helo_literal(self, helo: str) -> Reply | None:
        """Postfix's reject_invalid_hostaddr: an address literal, its brackets (when both
        are there) and "IPv6:" off, must be the address."""
        inner = helo[1:-1] if helo.endswith("]") else helo
        if valid_mailhost_literal(f"[{inner}]"):
            return None
        return Reply(
            self.cfg.get_int("invalid_hostname_reject_code"),
            "5.5.2",
            f"<{helo}>: Helo command rejected: invalid ip address",
        )

    def unknown_helo(self, st: ClientState) -> Reply | DeferIf | str:
        """reject_unknown_helo_hostname (Postfix's reject_unknown_hostname): a HELO name
        with no A, AAAA or MX record (a null MX will do); an address literal is not looked
        up. A lookup that fails for now is unknown_helo_hostname_tempfail_action's."""
        import dns.exception
        import dns.resolver

        if not st.helo or st.helo.startswith("["):
            return DUNNO
        resolver = RESOLVER if RESOLVER is not None else dns.resolver.get_default_resolver()
        soft = False
        for rdtype in ("A", "AAAA", "MX"):
            try:
                resolver.resolve(st.helo, rdtype)
                return DUNNO
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException:
                soft = True
        if soft:
            return self._tempfail(
                "unknown_helo_hostname_tempfail_action",
                Reply(450, "4.7.1", f"<{st.helo}>: Helo command rejected: Host not found"),
            )
        code = self.cfg.get_int("unknown_hostname_reject_code")
        return Reply(code, "4.7.1", f"<{st.helo}>: Helo command rejected: Host not found")

    def _tempfail(self, param: str, reply: Reply) -> Reply | DeferIf:
        """A reject-type restriction that failed for now: as the *_tempfail_action
        `param` says, deferred at once ("defer") or if the request would be permitted
        ("defer_if_permit", the default)."""
        if self.cfg.get(param).strip().lower() == "defer":
            return reply
        return DeferIf(True, reply)

    def unverified(self, addr: str, role: str) -> Reply | DeferIf | None:
        """reject_unverified_recipient and reject_unverified_sender (Postfix's
        reject_unverified_address): verify(8) is asked about the address, again every
        address_verify_poll_delay while its probe is in progress, address_verify_poll_count
        times in all. In progress or deferred: unverified_ROLE_defer_code ("unverified
        address: REASON", or unverified_ROLE_reject_reason), as unverified_ROLE_tempfail_action
        says; bounced: unverified_ROLE_reject_code, "undeliverable address: REASON" for a
        5xx. A server that cannot be asked: "address verification problem", warned of."""
        cfg = self.cfg
        what = "Sender address" if role == "sender" else "Recipient address"
        dsn = "4.1.7" if role == "sender" else "4.1.1"
        tempfail = f"unverified_{role}_tempfail_action"
        polls = cfg.get_int("address_verify_poll_count")
        count = 0
        while True:
            # Checks that may wait run in a thread of their own (see run()): no loop here.
            answer = asyncio.run(verify_client.query(cfg, addr))
            count += 1
            if answer is None or answer[0] != verify_client.STAT_TODO or count >= polls:
                break
            time.sleep(cfg.get_time("address_verify_poll_delay"))
        if answer is None:
            if self.log is not None:
                self.log.warning(f"{cfg.get('address_verify_service_name')} service failure")
            problem = f"<{addr}>: {what} rejected: address verification problem"
            return self._tempfail(tempfail, Reply(450, dsn, problem))
        status, why = answer
        code = 0
        if status in (verify_client.STAT_TODO, verify_client.STAT_DEFER):
            code = cfg.get_int(f"unverified_{role}_defer_code")
        elif status == verify_client.STAT_BOUNCE:
            code = cfg.get_int(f"unverified_{role}_reject_code")
        alt_reply = cfg.get(f"unverified_{role}_reject_reason")
        if code >= 400 and alt_reply:
            why = alt_reply
        if code // 100 == 4:
            text = f"<{addr}>: {what} rejected: unverified address: {why[:250]}"
            return self._tempfail(tempfail, Reply(code, dsn, text))
        if code // 100 == 5:
            return Reply(code, dsn, f"<{addr}>: {what} rejected: undeliverable address: {why}")
        return None

    def sleep(self, seconds: str) -> str | Reply:
        """sleep N: pause, then the next restriction (a tarpit for clients that talk
        before their turn)."""
        if not seconds.isdigit():
            if self.log is not None:
                self.log.warning("restriction sleep must be followed by number")
            return _server_error()
        time.sleep(int(seconds))
        return DUNNO

    def session_check(
        self, name: str, stage: str, reply_class: str, st: ClientState, rcpt: str | None
    ) -> Reply | str:
        """reject_multi_recipient_bounce (a null sender with more than one recipient: at
        RCPT, one already accepted) and reject_plaintext_session (no TLS)."""
        rname = self._reply_name(stage, st, rcpt)
        if name == "reject_multi_recipient_bounce":
            if st.sender == "" and st.rcpt_count > (st.where != "RCPT"):
                return Reply(
                    self.cfg.get_int("multi_recipient_bounce_reject_code"),
                    "5.5.3",
                    f"<{rname}>: {reply_class} rejected: Multi-recipient bounce",
                )
            return DUNNO
        if not st.encrypted:
            # Postfix's reject_plaintext names neither the request nor its class.
            return Reply(
                self.cfg.get_int("plaintext_reject_code"), "4.7.1", "Session encryption is required"
            )
        return DUNNO

    def policy_service(
        self,
        server: str,
        stage: str,
        reply_class: str,
        st: ClientState,
        rcpt: str | None,
        depth: int,
    ) -> Reply | DeferIf | str:
        """check_policy_service: the server's action (else smtpd_policy_service_default_action)
        judged as an access table's result for this stage's name and class."""
        if not server:
            return _server_error()
        client = self.policy_clients.get(server)
        if client is None:
            client = self.policy_clients.setdefault(
                server, PolicyClient(self.cfg, server, self.log)
            )
        session = st.policy_attrs
        given = {
            "request": "smtpd_access_policy",
            "protocol_state": st.where,
            "protocol_name": st.protocol,
            "client_address": st.addr,
            "client_name": st.name,
            "reverse_client_name": st.reverse_name,
            "helo_name": st.helo,
            "sender": st.sender or "",
            "recipient": rcpt or session.get("recipient", ""),
            "queue_id": st.queue_id,
            "stress": self.cfg.get("stress"),
            "sasl_username": st.sasl_username,
            "policy_context": client.policy_context,
        }
        attrs = [(name, given.get(name, session.get(name, ""))) for name in POLICY_ATTRIBUTES]
        action = client.query(attrs)
        if action is None:
            action = client.default_action
        if not action.strip():
            if self.log is not None:
                self.log.warning(f"access table {server} entry  has empty value")
            return DUNNO
        rname = self._reply_name(stage, st, rcpt)
        return self._access_result(
            server,
            action.strip(),
            "policy query",
            reply_class,
            rname,
            stage,
            reply_class,
            st,
            rcpt,
            depth,
            rname,
        )

    def sender_login(self, name: str, st: ClientState) -> Reply | None:
        """smtpd_sender_login_maps: the SASL logins that own each MAIL FROM address.
        Without smtpd_sasl_auth_enable each check is skipped with Postfix's warning."""
        if not self.sasl:
            if self.log is not None:
                parts = _SENDER_LOGIN_PARTS.get(name, (name,))
                for part in parts:
                    self.log.warning(f"restriction `{part}' ignored: no SASL support")
            return None
        if not st.sender or not self.cfg.get_list("smtpd_sender_login_maps"):
            return None
        try:
            keys = virtual_keys(
                st.sender, self.cfg.get("recipient_delimiter"), self._is_local(st.sender)
            )
            owners = self._find(self.cfg.get_list("smtpd_sender_login_maps"), keys)
        except LookupFailure as e:
            return _lookup_failed(st.sender, e)
        authenticated = name != "reject_unauthenticated_sender_login_mismatch" and bool(
            st.sasl_username
        )
        if name == "reject_known_sender_login_mismatch" and owners is None:
            return None
        if authenticated:
            logins = {o.lower() for o in re.split(r"[\s,]+", owners or "") if o}
            if st.sasl_username.lower() not in logins:
                return Reply(
                    553,
                    "5.7.1",
                    f"<{st.sender}>: Sender address rejected: not owned by user {st.sasl_username}",
                )
            return None
        if name == "reject_authenticated_sender_login_mismatch":
            return None
        if owners is not None and not st.sasl_username:
            return Reply(553, "5.7.1", f"<{st.sender}>: Sender address rejected: not logged in")
        return None

    # DNS block and allow lists (smtpd_check.c reject_rbl_addr ... permit_dnswl_domain) ----

    def dnsxl(
        self, name: str, domain: str | None, st: ClientState, rcpt: str | None
    ) -> Reply | DeferIf | str:
        """reject_rbl_client, reject_rhsbl_*, permit_dnswl_client and permit_rhswl_client
        with their DNS domain (and optional =reply filter). Listed: the rbl reply for a
        reject_*, PERMIT for a permit_*; a DNS failure counts as not listed."""
        if domain is None:
            # Postfix warns and goes on with the next restriction.
            if self.log is not None:
                self.log.warning(f"restriction {name} requires domain name argument")
            return DUNNO
        kind, reply_class = _DNSXL[name]
        what = {
            "addr": st.addr,
            "name": st.name,
            "reverse_name": st.reverse_name,
            "helo": st.helo,
            "sender": st.sender or "",
            "recipient": rcpt or "",
        }[kind]
        if not what or (kind in ("name", "reverse_name") and what.lower() == "unknown"):
            return DUNNO
        if name.startswith("permit_"):
            # Postfix's safety: a DNS allow list never lets an unauthorized recipient relay.
            if st.where == "RCPT" and rcpt and not self.auth_destination(rcpt):
                return DUNNO
        try:
            found = self._dnsxl_find(domain, what, kind == "addr")
        except ValueError as e:
            # Postfix's "fatal: RBL reply error": this smtpd cannot go on with the list.
            if self.log is not None:
                self.log.warning(f"RBL reply error: {e}")
            return _server_error()
        if found == _DNSXL_SOFT and name.startswith("permit_"):
            # An allow list that fails for now defers a later reject (a block list that
            # fails is as not listed: mail is not held up by a list's outage).
            return DeferIf(
                False, Reply(450, "4.7.1", f"<{what}>: {reply_class} rejected: Service unavailable")
            )
        if found is None or isinstance(found, str):  # not listed, or _DNSXL_SOFT
            return DUNNO
        if name.startswith("permit_"):
            return PERMIT
        return self.rbl_reply(found, domain, what, reply_class, st, rcpt)

    def _check_relay_domains(
        self, st: ClientState, rcpt: str, rname: str, reply_class: str
    ) -> Reply | str:
        """The obsolete check_relay_domains: a client whose name relay_domains lists may
        send anywhere, any client to a destination we serve; others are refused."""
        self._obsolete("check_relay_domains", '"reject_unauth_destination"')
        try:
            client_listed = domain_list_match(self.cfg, "relay_domains", st.name)
        except _TABLE_ERRORS as e:
            raise _failure(e) from None
        if client_listed:
            self._compat_relay_domains(f'to permit request from client "{st.name}"')
            return PERMIT
        if self.auth_destination(rcpt):
            return PERMIT
        return Reply(
            self.cfg.get_int("relay_domains_reject_code"),
            "5.7.1",
            f"<{rname}>: {reply_class} rejected: Relay access denied",
        )

    def _obsolete(self, name: str, instead: str) -> None:
        """An obsolete restriction's warning, once a process as Postfix's smtpd gives it."""
        if name not in self.obsolete_warned and self.log is not None:
            self.obsolete_warned.add(name)
            self.log.warning(
                f'support for restriction "{name}" will be removed from Postfix; use {instead}'
                " instead"
            )

    def _compat_relay_domains(self, what: str) -> None:
        """A use of relay_domains' older default ($mydestination), below compatibility
        level 2 with relay_domains unset: logged as Postfix's smtpd logs each one."""
        if "relay_domains" in self.compat and self.log is not None:
            self.log.info(
                f"using backwards-compatible default setting relay_domains=$mydestination {what}"
            )

    def reject_maps_rbl(self, st: ClientState, rcpt: str | None) -> Reply | DeferIf | str:
        """The obsolete reject_maps_rbl: reject_rbl_client for each of maps_rbl_domains."""
        self._obsolete("reject_maps_rbl", '"reject_rbl_client domain-name"')
        for domain in self.cfg.get_list("maps_rbl_domains"):
            result = self.dnsxl("reject_rbl_client", domain, st, rcpt)
            if result != DUNNO:
                return result
        return DUNNO

    def _dnsxl_find(self, domain: str, what: str, is_addr: bool) -> tuple[str, ...] | str | None:
        """find_dnsxl_addr / find_dnsxl_domain: the TXT text (first) and A records of the
        listing, None when not listed (or the A records miss the =filter), _DNSXL_SOFT when
        the DNS gave no definitive reply. ValueError for a bad =filter."""
        zone, eq, pattern = domain.partition("=")
        if is_addr:
            ip = _address(what)
            if ip is None:
                return None
            prefix = ip.reverse_pointer.rsplit(".", 2)[0]
        else:
            name = what.rpartition("@")[2] if "@" in what else what
            # Postfix skips address literals, bad names and names ending in a numerical
            # label: some RHSBLs refuse anything that looks like an IP query.
            if not name or name.startswith("[") or not valid_hostname(name):
                return None
            if name.rpartition(".")[2].isdigit():
                return None
            prefix = name
        query = f"{prefix}.{zone}"
        codes = _ip_match_parse(pattern) if eq else None
        found = self._rbl_lookup(query)
        if found is None or found == _DNSXL_SOFT:
            return found
        if codes is not None and not any(_ip_match(codes, a) for a in found[1:]):
            return None
        return found

    def _rbl_lookup(self, query: str) -> tuple[str, ...] | str | None:
        """rbl_pagein: the A records of `query` and its TXT records' text."""
        import dns.exception
        import dns.resolver

        resolver = RESOLVER if RESOLVER is not None else dns.resolver.get_default_resolver()
        try:
            answer = resolver.resolve(query, "A")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException:
            if self.log is not None:
                self.log.warning(
                    f"{query}: RBL lookup error: Host or domain name not found. "
                    f"Name service error for name={query} type=A: Host not found, try again"
                )
            return _DNSXL_SOFT
        addrs = [r.address for r in answer]
        try:
            texts = [
                b"".join(r.strings).decode("utf-8", "replace")
                for r in resolver.resolve(query, "TXT")
            ]
        except dns.exception.DNSException:
            texts = []
        txt = ""
        for i, text in enumerate(texts):
            space = _RBL_TXT_LIMIT - len(txt)
            if space <= 0:
                break
            txt += text[:space]
            if i + 1 < len(texts) and _RBL_TXT_LIMIT - len(txt) > 3:
                txt += " / "
        return (txt, *addrs)

    def rbl_reply(
        self,
        found: tuple[str, ...],
        domain: str,
        what: str,
        reply_class: str,
        st: ClientState,
        rcpt: str | None,
    ) -> Reply:
        """rbl_reject_reply: rbl_reply_maps' template for the domain, else default_rbl_reply,
        with the $rbl_* and client/sender/recipient macros; a result that is not a 4xx/5xx
        reply is logged and becomes 450 4.7.1 Service unavailable."""
        template = None
        specs = self.cfg.get_list("rbl_reply_maps")
        if specs:
            try:
                template = self._find(specs, [domain])
            except LookupFailure:
                return _server_error()
        allowed = set(
            (self.cfg.raw("smtpd_expansion_filter") or "").encode().decode("unicode_escape")
        )
        sender_name, sender_domain = split_internal(st.sender or "")
        recipient_name, recipient_domain = split_internal(rcpt or "")
        macros = {
            "rbl_code": self.cfg.get("maps_rbl_reject_code"),
            "rbl_domain": domain.partition("=")[0],
            "rbl_reason": found[0],
            "rbl_txt": found[0],
            "rbl_what": what,
            "rbl_class": reply_class,
            "client_address": st.addr,
            "client_name": st.name,
            "reverse_client_name": st.reverse_name,
            "helo_name": st.helo,
            "sender": st.sender or "",
            "sender_name": sender_name,
            "sender_domain": sender_domain,
            "recipient": rcpt or "",
            "recipient_name": recipient_name,
            "recipient_domain": recipient_domain,
        }

        def lookup(key: str) -> str | None:
            value = macros.get(key)
            if value is None:
                return None
            # A value is text, not a template: smtpd_expansion_filter's outsiders become
            # "_", and a "$" in it stays a "$".
            return "".join(c if c in allowed else "_" for c in value).replace("$", "$$")

        from oxipost.config.expand import Expander, ExpandError

        default = self.cfg.raw("default_rbl_reply") or ""
        for candidate in (template, default):
            if candidate is None:
                continue
            expander = Expander(lookup)
            try:
                text = expander.expand(candidate)
            except ExpandError:
                text = None
            if text is not None and not expander.used_undefined:
                break
            if self.log is not None:
                for unknown in expander.used_undefined:
                    self.log.warning(f'unknown macro name "{unknown}" in expansion request')
                self.log.warning(
                    f"rbl_reject_reply: bad rbl reply template for domain {domain}: {candidate}"
                )
        if not re.match(r"[45]\d\d ", text or ""):
            if self.log is not None:
                self.log.warning(f"rbl response code configuration error: {text}")
            return Reply(450, "4.7.1", "Service unavailable")
        assert text is not None
        dsn, reply_text = _dsn_text(text[4:], "4.7.1", "", "Service unavailable")
        return Reply(int(text[:3]), self._dsn_fix(dsn, reply_class), reply_text)

    def _permit_mynetworks(self, st: ClientState) -> bool:
        """permit_mynetworks: whether the client is in mynetworks; Postfix logs a client
        that only mynetworks_style's older default (subnet) puts there."""
        if not self.in_mynetworks(st.addr):
            return False
        if "mynetworks_style" in self.compat and self.log is not None:
            if not match_networks(self.cfg, self._host_networks, st.addr):
                self.log.info(
                    "using backwards-compatible default setting mynetworks_style="
                    f"{self.cfg.get('mynetworks_style')} to permit request from client"
                    f' "{st.namaddr}"'
                )
        return True

    @functools.cached_property
    def _host_networks(self) -> list[str]:
        """mynetworks as compatibility level 2's mynetworks_style (host) makes it."""
        inputs = {"mynetworks_style": "host"}
        inputs.update((n, self.cfg.get(n)) for n in ("inet_protocols", "inet_interfaces"))
        return host_default("mynetworks", inputs).split()

    def in_mynetworks(self, addr: str) -> bool:
        try:
            return match_networks(self.cfg, mynetworks(self.cfg), addr)
        except _TABLE_ERRORS as e:
            raise _failure(e) from None

    def _resolved(self, addr: str) -> Resolution:
        """trivial-rewrite's answer for an envelope address; a table it cannot read is
        this check's failure."""
        try:
            return resolve(_canonical(self.cfg, addr), self.cfg)
        except _TABLE_ERRORS as e:
            raise _failure(e) from None

    def auth_destination(self, rcpt: str) -> bool:
        """Postfix's permit_auth_destination: a domain we serve, with no routing
        operator left in the local part (unless allow_untrusted_routing = yes)."""
        res = self._resolved(rcpt)
        if res.routed and not self.untrusted_routing:
            return False
        if res.addr_class == RESOLVE_CLASS_RELAY:
            domain = split_internal(res.recipient)[1]
            self._compat_relay_domains(f'to accept mail for domain "{domain}"')
        return res.addr_class != RESOLVE_CLASS_DEFAULT

    def unknown_domain(self, addr: str, what: str, dsn: str) -> Reply | DeferIf | None:
        _, domain = split_internal(addr)
        if not domain or domain.startswith("["):
            return None
        res = self._resolved(addr)
        if res.addr_class not in (RESOLVE_CLASS_DEFAULT, RESOLVE_CLASS_RELAY):
            return None  # Postfix's RESOLVE_CLASS_FINAL: relay_domains are looked up too
        import dns.exception
        import dns.name
        import dns.resolver

        try:
            for rdtype in ("MX", "A", "AAAA"):
                try:
                    answer = dns.resolver.resolve(domain, rdtype, lifetime=5.0)
                except dns.resolver.NoAnswer:
                    continue
                if rdtype == "MX" and len(answer) == 1 and answer[0].exchange == dns.name.root:
                    # RFC 7505's null MX: the domain says it takes no mail.
                    sender = what == "Sender address"
                    return Reply(
                        550 if sender else 556,
                        "4.7.27" if sender else "4.1.10",
                        f"<{addr}>: {what} rejected: Domain {domain} does not accept mail (nullMX)",
                    )
                return None
        except dns.resolver.NXDOMAIN:
            return Reply(
                self.cfg.get_int("unknown_address_reject_code"),
                dsn,
                f"<{addr}>: {what} rejected: Domain not found",
            )
        except dns.exception.DNSException:
            return self._tempfail(
                "unknown_address_tempfail_action",
                Reply(450, dsn, f"<{addr}>: {what} rejected: Domain not found"),
            )
        return Reply(
            self.cfg.get_int("unknown_address_reject_code"),
            dsn,
            f"<{addr}>: {what} rejected: Domain not found",
        )

    def unlisted(self, rcpt: str) -> Reply | None:
        """smtpd_reject_unlisted_recipient and relocated_maps, after the lists."""
        try:
            reply = self.relocated(rcpt)
            if reply is not None:
                return reply
            if self.cfg.get_bool("smtpd_reject_unlisted_recipient"):
                return self.unlisted_recipient(rcpt)
        except LookupFailure as e:
            return _lookup_failed(rcpt, e)
        return None

    def relocated(self, rcpt: str) -> Reply | None:
        specs = self.cfg.get_list("relocated_maps")
        if not specs:
            return None
        addr = _canonical(self.cfg, rcpt)
        keys = virtual_keys(addr, self.cfg.get("recipient_delimiter"), self._is_local(addr))
        value = self._find(specs, keys)
        if value is None:
            return None
        return Reply(
            550, "5.1.6", f"<{rcpt}>: Recipient address rejected: User has moved to {value}"
        )

    def _is_local(self, addr: str) -> bool:
        try:
            return resolve(addr, self.cfg).addr_class == RESOLVE_CLASS_LOCAL
        except _TABLE_ERRORS as e:
            raise _failure(e) from None

    def _find(self, specs: list[str], keys: Sequence[SearchKey | str]) -> str | None:
        """The first value `specs`' tables give for `keys` (maps_find: a pattern table
        sees only the FULL keys); LookupFailure when a table cannot be opened or read, after
        Postfix's warnings (maps_find_warned)."""
        try:
            found = maps_find_warned(
                specs, keys, lambda spec: _table(spec, self.cfg), self._warn_table
            )
        except _TABLE_ERRORS as e:
            raise _failure(e) from None
        return None if found is None else found[0]

    def _warn_table(self, text: str) -> None:
        if self.log is not None:
            self.log.warning(text)

    def _in_maps(self, param: str, keys: list[SearchKey]) -> bool | None:
        """True/False for a lookup in a maps parameter; None when the parameter is empty."""
        specs = self.cfg.get_list(param)
        if not specs:
            return None
        return self._find(specs, keys) is not None

    def unlisted_recipient(self, rcpt: str) -> Reply | None:
        return self.unlisted_address(rcpt, "Recipient address")

    def unlisted_address(self, address: str, what: str) -> Reply | None:
        cfg = self.cfg
        addr = _canonical(cfg, address)
        try:
            res = resolve(addr, cfg)
        except _TABLE_ERRORS as e:
            raise _failure(e) from None
        # Postfix's check_rcpt_maps asks each table through mail_addr_find().
        keys = virtual_keys(
            res.recipient, cfg.get("recipient_delimiter"), res.addr_class == RESOLVE_CLASS_LOCAL
        )
        # An address a canonical table or virtual_alias_maps knows is taken as known
        # (check_rcpt_maps: sender_canonical_maps for a sender only); one that fails is
        # a temporary failure there.
        for param in self.known_maps[what.startswith("Sender")]:
            if self._in_maps(param, keys):
                return None
        if res.transport in ("error", "retry"):
            return self._undeliverable(address, what, res)
        if res.addr_class == RESOLVE_CLASS_LOCAL:
            if self._in_maps("local_recipient_maps", keys) is False:
                return self._user_unknown(address, what, "local recipient")
        elif res.addr_class == RESOLVE_CLASS_VIRTUAL:
            if self._in_maps("virtual_mailbox_maps", keys) is not True:
                return self._user_unknown(address, what, "virtual mailbox")
        elif res.addr_class == RESOLVE_CLASS_ALIAS:
            return self._user_unknown(address, what, "virtual alias")
        elif res.addr_class == RESOLVE_CLASS_RELAY:
            if self._in_maps("relay_recipient_maps", keys) is False:
                return self._user_unknown(address, what, "relay recipient")
            self._compat_relay_domains(f'to accept mail for address "{address}"')
        _ = RESOLVE_CLASS_VIRTUAL
        return None

    def _user_unknown(self, address: str, what: str, table: str) -> Reply:
        """check_rcpt_maps' "User unknown in TABLE table" with that table's
        unknown_*_reject_code; the status is X.1.0 for a sender, X.1.1 for a recipient,
        but X.1.7 for a sender in a virtual alias domain (Postfix finds that one through
        the error transport's "5.1.1 User unknown ...", as _undeliverable)."""
        code = self.cfg.get_int(f"unknown_{table.replace(' ', '_')}_reject_code")
        if not what.startswith("Sender"):
            detail = ".1.1"
        else:
            detail = ".1.7" if table == "virtual alias" else ".1.0"
        return Reply(
            code,
            ("5" if code >= 500 else "4") + detail,
            f"<{address}>: {what} rejected: User unknown in {table} table",
        )

    # access(5) ----------------------------------------------------------------------------

    def access(
        self,
        name: str,
        spec: str,
        stage: str,
        reply_class: str,
        st: ClientState,
        rcpt: str | None,
        depth: int,
    ) -> Reply | DeferIf | str:
        if not spec:
            return _server_error()
        if name == "check_client_access":
            keys = access_client_keys(st.name, st.addr, self.cfg)
            cls = "Client host"
            shown = st.namaddr
        elif name == "check_helo_access":
            keys = access_domain_keys(st.helo, self.cfg)
            cls, shown = "Helo command", st.helo
        elif name in ("check_sender_access", "check_recipient_access"):
            # Postfix's check_mail_access: the table asked for the address as
            # trivial-rewrite resolves it (user!host, user%host, a local domain's routed
            # local part as the address they route to: an OK for a@b.example is one for
            # b.example!a@ourdomain too, whatever allow_untrusted_routing says), the reply
            # naming it as given.
            address = st.sender if name == "check_sender_access" else rcpt
            if address is None:
                return DUNNO
            cls = "Sender address" if name == "check_sender_access" else "Recipient address"
            shown = address
            if address:
                address = self._resolved(address).recipient
            keys = access_address_keys(address, self.cfg)
        elif name == "check_etrn_access" and stage == "etrn" and rcpt:
            keys = access_domain_keys(rcpt, self.cfg)  # the ETRN domain
            cls, shown = "Etrn command", rcpt
        else:
            return _server_error()
        found = self._access_lookup(spec, keys)
        if found is None:
            return DUNNO
        rname = self._reply_name(stage, st, rcpt)
        value, key = found
        return self._access_result(
            spec, value.strip(), key, cls, shown, stage, reply_class, st, rcpt, depth, rname
        )

    def _access_lookup(self, spec: str, keys: list[SearchKey]) -> tuple[str, str] | None:
        """An access table's answer for `keys` and the key that found it. A table that
        cannot be opened or read answers as Postfix 3.7's check_access takes a lookup
        error: "451 4.3.5 Server configuration error", after maps_find_warned's warnings."""
        try:
            found = maps_find_warned(
                [spec], keys, lambda spec: _table(spec, self.cfg), self._warn_table
            )
        except _TABLE_ERRORS:
            return "451 4.3.5 Server configuration error", ""
        return None if found is None else found[:2]

    def _access_result(
        self,
        table: str,
        value: str,
        key: str,
        cls: str,
        shown: str,
        stage: str,
        reply_class: str,
        st: ClientState,
        rcpt: str | None,
        depth: int,
        rname: str,
    ) -> Reply | DeferIf | str:
        word, _, text = value.partition(" ")
        text = text.strip()
        upper = word.upper()
        if upper == "OK" or upper == "PERMIT":
            return PERMIT
        if upper == "DUNNO":
            return DUNNO
        if upper == "REJECT":
            code = self.cfg.get_int("access_map_reject_code")
            return self._refusal(code, text, "5.7.1", cls, shown, "Access denied")
        if upper == "DEFER":
            code = self.cfg.get_int("access_map_defer_code")
            return self._refusal(code, text, "4.7.1", cls, shown, "Access denied")
        if upper in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
            code = self.cfg.get_int("access_map_defer_code")
            reply = self._refusal(code, text, "4.7.1", cls, shown, "Service unavailable")
            return DeferIf(upper == "DEFER_IF_PERMIT", reply)
        if value.isascii() and value.isdigit():
            # Some out-of-band authentication answers a time stamp: OK, as Postfix's.
            return PERMIT
        if text and re.fullmatch(r"[45]\d\d", upper):
            code = int(upper)
            return self._refusal(code, text, f"{upper[0]}.7.1", cls, shown, "Access denied")
        if upper in _DELEGATED and not self._can_delegate(table, upper, stage, st):
            return DUNNO
        if upper == "HOLD":
            # Once per transaction, as Postfix's check_table_result: a later HOLD neither
            # logs nor changes the text.
            if "HOLD" not in st.actions:
                # Never empty: the queue file's hold attribute is read as a flag.
                st.actions["HOLD"] = text = text or "triggers HOLD action"
                self._log_action(st, "hold", f"<{shown}>: {cls} {text}", rcpt)
            return DUNNO
        if upper in ("FILTER", "REDIRECT", "BCC"):
            # check_table_result skips, with a warning, a FILTER without
            # transport:destination and a REDIRECT or BCC without user@domain.
            if upper == "FILTER" and not text:
                return self._bad_entry(table, key, "has FILTER entry without value")
            if upper == "FILTER" and ":" not in text:
                return self._bad_entry(table, key, "requires transport:destination")
            if upper != "FILTER" and "@" not in text:
                return self._bad_entry(table, key, "requires user@domain target")
            self._log_action(st, upper.lower(), f"<{shown}>: {cls} triggers {upper} {text}", rcpt)
            if upper == "BCC":
                # Postfix 3.1 and later keep every BCC of the transaction (an argv), in
                # order and duplicates included; one per line here (no address holds a
                # newline).
                kept = st.actions.get("BCC")
                st.actions["BCC"] = f"{kept}\n{text}" if kept else text
            else:
                st.actions[upper] = text
            return DUNNO
        if upper == "DISCARD":
            # Logged, and a permit as OK is (Postfix's smtpd_acl_permit).
            self._log_action(
                st, "discard", f"<{shown}>: {cls} {text or 'triggers DISCARD action'}", rcpt
            )
            st.actions[upper] = text
            return PERMIT
        if upper == "PREPEND":
            if stage == "end_of_data":
                return self._bad_entry(
                    table, "", "action PREPEND must be used before smtpd_end_of_data_restrictions"
                )
            if not header_length(text):
                return self._bad_entry(table, key, "requires header: text")
            # Every PREPEND of the transaction, in order (Postfix's state->prepend argv);
            # one a line, as the BCC ones.
            kept = st.actions.get(upper)
            st.actions[upper] = f"{kept}\n{text}" if kept else text
            return DUNNO
        if upper in ("WARN", "INFO"):
            st.actions[upper] = text
            self._log_action(st, upper.lower(), text, rcpt)
            return DUNNO
        # Anything else is a restriction list (or a class name) evaluated in its place.
        return self.run_list(
            value.replace(",", " ").split(), stage, reply_class, st, rcpt, depth + 1
        )

    def _refusal(
        self, code: int, text: str, default_dsn: str, cls: str, shown: str, default_text: str
    ) -> Reply:
        """An access(5) or policy refusal: the entry's status (else `default_dsn`) as
        smtpd_dsn_fix makes it fit `cls`, and its text (else `default_text`)."""
        dsn, reply_text = _dsn_text(text, default_dsn, f"<{shown}>: {cls} rejected: ", default_text)
        return Reply(code, self._dsn_fix(dsn, cls), reply_text)

    def _dsn_fix(self, dsn: str, reply_class: str) -> str:
        """Postfix's smtpd_dsn_fix: an address status (X.1.Y) from a table or an RBL reply
        template says what is refused. A sender is given the sender's status of that kind,
        a recipient the recipient's (X.1.0 for one without), anything else X.0.0; logged
        when the status changes. The class digit is the reply code's (Reply)."""
        if not (dsn[:1].isdigit() and dsn[1:4] == ".1."):
            return dsn
        if reply_class == "Sender address":
            fixed = _SENDER_DSN.get(dsn[4:], "1.0")
        elif reply_class == "Recipient address":
            fixed = _RECIPIENT_DSN.get(dsn[4:], "1.0")
        else:
            fixed = "0.0"
        if fixed != dsn[2:] and self.log is not None:
            self.log.info(f"mapping DSN status {dsn} into {reply_class} status {dsn[0]}.{fixed}")
        return f"{dsn[0]}.{fixed}"

    def _bad_entry(self, table: str, key: str, problem: str) -> str:
        """An access(5) action Postfix skips, with its warning about the table entry."""
        if self.log is not None:
            entry = f' entry "{key}"' if key else ":"
            self.log.warning(f"access table {table}{entry} {problem}")
        return DUNNO

    def _undeliverable(self, address: str, what: str, res: Resolution) -> Reply:
        """Postfix's check_rcpt_maps for an address that resolves to the error transport
        (known undeliverable: 550 5.1.1, 5.1.0 for a sender, or the status in its text
        fitted to a sender's or recipient's by smtpd_dsn_fix) or the retry transport (not
        now: 450 4.1.1 or 4.1.0)."""
        sender = what.startswith("Sender")
        reply_class = "Sender address" if sender else "Recipient address"
        default = ("4" if res.transport == "retry" else "5") + (".1.0" if sender else ".1.1")
        # A bare "error" keeps the domain as its next hop here; Postfix's has none.
        given = "" if res.nexthop == split_internal(res.recipient)[1] else res.nexthop
        dsn, text = _dsn_text(
            given, default, f"<{address}>: {what} rejected: ", "Address is undeliverable"
        )
        dsn = self._dsn_fix(dsn, reply_class)
        return Reply(450 if dsn.startswith("4") else 550, dsn, text)

    def _can_delegate(self, table: str, action: str, stage: str, st: ClientState) -> bool:
        """Postfix's can_delegate_action and not_in_client_helo: ETRN has no message for
        HOLD, DISCARD, FILTER, REDIRECT or BCC to act on, and no session without a MAIL
        FROM has one for those or PREPEND (connect and HELO with smtpd_delay_reject = no,
        but also ETRN and VRFY outside a transaction, whatever the warning says)."""
        if stage == "etrn" and action != "PREPEND":
            warning = f"action {action} is unavailable in smtpd_etrn_restrictions"
        elif st.sender is None:
            warning = (
                f"with smtpd_delay_reject=no, action {action} is always skipped in Client "
                "host or Helo command restrictions"
            )
        else:
            return True
        if self.log is not None:
            self.log.warning(f"access table {table}: {warning}")
        return False

    def _log_action(self, st: ClientState, action: str, text: str, rcpt: str | None) -> None:
        if self.log is not None:
            self.log.info(st.whatsup(action, text, rcpt or ""))


# smtpd_dsn_fix's replacement for an address status X.1.Y: the sender's (no "bad sender
# mailbox" status exists: 1.7, bad syntax, keeps it apart from a recipient's) and the
# recipient's; any other Y is X.1.0 for both.
_SENDER_DSN = {"1": "1.7", "2": "1.8", "3": "1.7", "4": "1.7", "5": "1.0", "6": "1.7"}
_SENDER_DSN.update({"7": "1.7", "8": "1.8"})
_RECIPIENT_DSN = {"1": "1.1", "2": "1.2", "3": "1.3", "4": "1.4", "5": "1.5", "6": "1.6"}
_RECIPIENT_DSN.update({"7": "1.3", "8": "1.2"})

# access(5) actions that the message carries (cleanup's, or its header for PREPEND).
_DELEGATED = frozenset({"HOLD", "DISCARD", "FILTER", "REDIRECT", "BCC", "PREPEND"})


def _server_error() -> Reply:
    return Reply(451, "4.3.5", "Server configuration error", software=True)


def _dsn_text(text: str, default_dsn: str, prefix: str, default_text: str) -> tuple[str, str]:
    m = re.match(r"([245]\.\d{1,3}\.\d{1,3})\s*(.*)$", text)
    if m:
        return m.group(1), prefix + (m.group(2) or default_text)
    return default_dsn, prefix + (text or default_text)


_IP_MATCH_OCTET = re.compile(r"(\d{1,3})(?:\.\.(\d{1,3}))?$")


def _ip_match_parse(pattern: str) -> list[list[tuple[int, int]]]:
    """Postfix's ip_match_parse: an IPv4 reply filter such as 127.0.0.2 or
    127.0.0.[2..11] or 127.0.[0;1].[2;4..9], as each octet's allowed ranges; ValueError
    (with Postfix's words where they matter) for anything else."""
    octets: list[list[tuple[int, int]]] = []
    for part in re.split(r"\.(?![.\d;]*\])", pattern):
        items = part[1:-1].split(";") if part.startswith("[") and part.endswith("]") else [part]
        ranges = []
        for item in items:
            m = _IP_MATCH_OCTET.match(item)
            if m is None:
                raise ValueError(f'in "{pattern}": bad octet value: "{item}"')
            low, high = int(m.group(1)), int(m.group(2) or m.group(1))
            if low > 255 or high > 255 or low > high:
                raise ValueError(f'in "{pattern}": bad octet value: "{item}"')
            ranges.append((low, high))
        octets.append(ranges)
    if len(octets) != 4:
        raise ValueError(f'in "{pattern}": need four octets')
    return octets


def _ip_match(codes: list[list[tuple[int, int]]], addr: str) -> bool:
    parts = addr.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return False
    return all(
        any(low <= int(p) <= high for low, high in ranges)
        for p, ranges in zip(parts, codes, strict=True)
    )


def _fqdn(name: str) -> bool:
    if name.startswith("[") and name.endswith("]"):
        return True
    return "." in name.strip(".")


def _fqdn_helo(name: str) -> bool:
    """reject_non_fqdn_helo_hostname's test, as Postfix's reject_non_fqdn_hostname: the
    name without its trailing dots is a valid host name (not an address) with a dot."""
    bare = name.rstrip(".")
    return "." in bare and valid_hostname(bare)


def valid_helo(name: str) -> bool:
    """reject_invalid_helo_hostname's test of a name that is not an address literal: the
    name without its trailing dots (smtpd_check.c's dup_if_truncate) is a host name or an
    address."""
    bare = name.rstrip(".") or name
    return valid_hostname(bare) or valid_hostaddr(bare)


def _canonical(cfg: Config, addr: str) -> str:
    """The envelope address as trivial-rewrite's local context leaves it."""
    return rewrite_address(cfg, addr)


__all__ = [
    "RESOLVE_CLASS_DEFAULT",
    "CheckConfigError",
    "Checker",
    "ClientState",
    "Reply",
    "match_networks",
    "valid_helo",
    "validate",
]
