"""resolve - trivial-rewrite's address resolution to transport:nexthop

resolve(address, cfg) answers where a recipient goes, as Postfix's trivial-rewrite(8)
resolve service does (src/trivial-rewrite/resolve.c): the address class (local, alias,
virtual, relay, default), the transport and next-hop, the recipient as resolved, and flags.
smtpd uses it for relay control and recipient validation; qmgr uses it to pick the
delivery agent. There is one resolver; nothing else decides routing.

Address classes, in Postfix's order:
  mydestination, inet_interfaces, proxy_interfaces   -> $local_transport
  virtual_alias_domains                              -> error:User unknown in virtual alias table
  virtual_mailbox_domains                            -> $virtual_transport
  relay_domains (and subdomains)                     -> $relay_transport
  anything else                                      -> $default_transport (nexthop $relayhost)
For the last two, sender_dependent_relayhost_maps replaces $relayhost and (for the last
only) sender_dependent_default_transport_maps replaces $default_transport, looked up by the
envelope sender when the caller gives it (qmgr does); DUNNO keeps the global setting.
transport_maps overrides the result (full address, without its extension, then domain and
parent domains, then "*"; a regexp: or pcre: table sees only the full address and "*").
Source routes and `@ % !` in the local part of a local address are stripped and the
address resolved again; each time the result is flagged RESOLVE_FLAG_ROUTED, which relay
control treats as foreign (as Postfix does, whatever allow_percent_hack says).

Diagnostics: an unreadable transport or domain table raises oxipost.maps.TableError, which
callers turn into a temporary failure (smtpd's 451 4.3.0, qmgr's retry transport). A
transport_maps table that did not open logs as Postfix's trivial-rewrite: "error: REASON"
as the daemon opens its tables (open_rewrite_tables), then at each lookup the table's and
maps_find's warnings and "transport_maps lookup failure".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oxipost import match_list
from oxipost.delivery.address import is_dot_string
from oxipost.maps import TableError, fold, folds_utf8
from oxipost.maps.search import FULL, domain_keys, maps_find, transport_keys, virtual_keys
from oxipost.user_acl import string_list_match

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.maps import TableLog

RESOLVE_FLAG_FINAL = 1 << 0
RESOLVE_FLAG_ROUTED = 1 << 1
RESOLVE_FLAG_ERROR = 1 << 2
RESOLVE_FLAG_FAIL = 1 << 3

RESOLVE_CLASS_LOCAL = "local"
RESOLVE_CLASS_ALIAS = "alias"
RESOLVE_CLASS_VIRTUAL = "virtual"
RESOLVE_CLASS_RELAY = "relay"
RESOLVE_CLASS_DEFAULT = "default"

# Postfix's default parent_domain_matches_subdomains lists relay_domains, so a parent
# domain entry matches its subdomains there, and not in mydestination.
_SUBDOMAIN_PARAMS = "parent_domain_matches_subdomains"


@dataclass(frozen=True, slots=True)
class Resolution:
    transport: str
    nexthop: str
    recipient: str
    addr_class: str
    flags: int = 0

    @property
    def routed(self) -> bool:
        return bool(self.flags & RESOLVE_FLAG_ROUTED)


def split_address(address: str) -> tuple[str, str]:
    """(localpart, domain) split at the last '@' outside quotes; domain '' when none."""
    if '"' not in address:  # almost every address: no quotes to skip
        at = address.rfind("@")
        return (address, "") if at < 0 else (address[:at], address[at + 1 :])
    at = _last_bare_at(address)
    if at < 0:
        return address, ""
    return address[:at], address[at + 1 :]


def _last_bare_at(address: str) -> int:
    """Where the last '@' outside quotes and not escaped by a backslash is; -1 if none."""
    in_quote = False
    at = -1
    i, n = 0, len(address)
    while i < n:
        ch = address[i]
        if ch == '"':
            in_quote = not in_quote
        elif ch == "\\":
            i += 1
        elif ch == "@" and not in_quote:
            at = i
        i += 1
    return at


def split_internal(address: str) -> tuple[str, str]:
    """(localpart, domain) of an address in internal (unquoted) form, split at its last
    '@' as Postfix's quote_822_local does (strrchr): a '"' there is an ordinary character,
    so `a"b@localhost` is `a"b` at localhost. Domain '' when there is no '@'."""
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def unquote_local(local: str) -> str:
    """A local part in internal form: quotes dropped and each backslash escape resolved, as
    Postfix's unquote_822_local does (`"a\\"b"` is `a"b`, `"a\\\\b"` is `a\\b`, `"a\\b"` is
    `ab`; a trailing lone backslash goes)."""
    if '"' not in local and "\\" not in local:
        return local
    out: list[str] = []
    i, n = 0, len(local)
    while i < n:
        ch = local[i]
        i += 1
        if ch == '"':
            continue
        if ch == "\\":
            if i == n:
                break
            ch = local[i]
            i += 1
        out.append(ch)
    return "".join(out)


def unquote_822_local(address: str) -> str:
    """Postfix's unquote_822_local: the address in internal form, its local part (before the
    last '@' outside quotes) unquoted as unquote_local, a source route and the domain kept."""
    route = ""
    if address.startswith("@") and ":" in address:
        route, _, address = address.partition(":")
        route += ":"
    at = _last_bare_at(address)
    if at < 0:
        return route + unquote_local(address)
    return route + unquote_local(address[:at]) + address[at:]


def _table(spec: str, cfg: Config, no_regsub: bool = False):  # type: ignore[no-untyped-def]
    from oxipost.maps import open_table

    return open_table(spec, cfg, no_regsub=no_regsub)


def match_domain(
    cfg: Config, items: list[str], domain: str, subdomains: bool, pname: str = ""
) -> bool:
    """Postfix's domain match list `pname` (its value `items`): names, parent domains
    (when `subdomains`), type:table, !negation, /file/name (oxipost.match_list).
    Case-insensitive as match_hostname() folds both (maps.fold: in Unicode with
    smtputf8_enable). TableError propagates, after match_ops' warning."""
    utf8 = folds_utf8(cfg)
    domain = fold(domain, utf8).rstrip(".")
    for result, item in match_list.patterns(cfg, pname, items):
        if ":" in item and not item.startswith("["):
            # match_hostname(): the name, then its parents (`.parent` unless `subdomains`)
            # in a fixed table only.
            # dict_get itself, without maps_find's lookup error warning. A table that does
            # not open is dict_open's error (a command's fatal), not a lookup problem.
            table = match_list.table(cfg, item)
            try:
                hit = any(
                    table.lookup(key) is not None
                    for key, partial in domain_keys(domain, subdomains)
                    if table.fixed or not partial
                )
            except TableError:
                match_list.lookup_problem(pname, item)
                raise
        else:
            name = fold(item, utf8).rstrip(".")
            if name.startswith("."):
                hit = domain.endswith(name)
            else:
                hit = domain == name or (subdomains and domain.endswith("." + name))
        if hit:
            return result
    return False


def _in_string_list(cfg: Config, param: str, domain: str) -> bool:
    """Whether `domain` is in `param`, a list trivial-rewrite reads as a string list
    (mydestination, virtual_alias_domains, virtual_mailbox_domains: Postfix's
    string_list_init, not domain_list_init): whole names only, no .parent form nor
    parent domains, a table asked for the whole domain. TableError propagates."""
    return string_list_match(cfg, cfg.get_list(param), domain.rstrip("."), param)


def _subdomain_param(cfg: Config, name: str) -> bool:
    return name in cfg.get_list(_SUBDOMAIN_PARAMS)


def domain_list_match(cfg: Config, param: str, domain: str) -> bool:
    """Whether `domain` is in the domain list `param` (Postfix's domain_list_match):
    match_domain, parent domains too when parent_domain_matches_subdomains names it.
    TableError propagates."""
    return match_domain(cfg, cfg.get_list(param), domain, _subdomain_param(cfg, param), param)


def _interface_addresses(cfg: Config) -> set[str]:
    out: set[str] = set()
    for name in ("inet_interfaces", "proxy_interfaces"):
        for item in cfg.get_list(name):
            if item in ("all", "loopback-only"):
                out.update({"127.0.0.1", "::1"})
                continue
            try:
                out.add(str(ipaddress.ip_address(item.strip("[]"))))
            except ValueError:
                continue
    return out


def is_local_domain(cfg: Config, domain: str) -> bool:
    """mydestination, or an address literal of one of our interfaces."""
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        try:
            return str(ipaddress.ip_address(literal)) in _interface_addresses(cfg)
        except ValueError:
            return False
    return _in_string_list(cfg, "mydestination", domain)


def _split_transport(value: str) -> tuple[str, str]:
    transport, _, nexthop = value.partition(":")
    return transport, nexthop


def _strip_route(address: str) -> tuple[str, bool]:
    if address.startswith("@") and ":" in address:
        return address.split(":", 1)[1], True
    return address, False


def _by_sender(cfg: Config, what: str, sender: str) -> str | None:
    """sender_dependent_relayhost_maps or sender_dependent_default_transport_maps (`what`:
    relayhost or default_transport) for an envelope sender, searched as Postfix's
    mail_addr_find (the address, without its extension, the bare user of a local domain,
    @domain; the null sender as empty_address_<what>_maps_lookup_key). None for no
    answer, an empty one or DUNNO (use the global setting). Raises TableError."""
    param = f"sender_dependent_{what}_maps"
    specs = cfg.get_list(param)
    if not specs:
        return None

    if sender:
        local_domain = is_local_domain(cfg, split_address(sender)[1])
        keys = virtual_keys(sender, cfg.get("recipient_delimiter"), local_domain)
    else:
        keys = [(cfg.get(f"empty_address_{what}_maps_lookup_key"), FULL)]
    try:
        # DICT_FLAG_NO_REGSUB, as for transport_maps: no sender text in where mail goes.
        found = maps_find([_table(spec, cfg, no_regsub=True) for spec in specs], keys)
    except TableError as e:
        raise TableError(f"{param} lookup failure") from e
    value = "" if found is None else found[0].strip()
    return None if not value or value.upper() == "DUNNO" else value


def resolve(address: str, cfg: Config, sender: str | None = None) -> Resolution:
    """Resolve one (already canonicalised) address to transport, nexthop and class;
    `sender`, the envelope sender when known (qmgr), selects the sender-dependent
    relayhost and default_transport."""
    flags = 0
    address, routed = _strip_route(address)
    if routed:
        flags |= RESOLVE_FLAG_ROUTED
    percent_hack = cfg.get_bool("allow_percent_hack")
    swap_bang = cfg.get_bool("swap_bangpath")
    dequote = cfg.get_bool("resolve_dequoted_address")
    for _ in range(100):
        local, domain = split_internal(address)
        # trivial-rewrite quotes the internal form again (quote_822_local) before it parses
        # it: a local part that is no dot-string (one with '@', say) is then a quoted
        # string, which it looks inside for routing operators only with
        # resolve_dequoted_address.
        inner = local if dequote or is_dot_string(local) else ""
        if not domain or is_local_domain(cfg, domain):
            # Routing through us: strip our domain and look inside, as resolve.c does
            # (not "routed" for that: only an operator left at the end is).
            if "@" in inner:
                address = inner
                continue
            if swap_bang and "!" in inner:
                site, _, user = inner.partition("!")
                address = f"{user}@{site}"
                continue
            if "%" in inner:
                if percent_hack:
                    user, _, site = inner.rpartition("%")
                    address = f"{user}@{site}"
                    continue
            if not local:
                # An empty local part is the local MAILER-DAEMON, as in the From: of our
                # own bounces: resolve.c makes it empty_address_recipient, keeping the
                # local domain it had (else the one below).
                address = cfg.get("empty_address_recipient") + (f"@{domain}" if domain else "")
        break
    local, domain = split_internal(address)
    if "@" in local or "%" in local or "!" in local:
        # resolve.c flags a routing operator left in the local part, whatever
        # swap_bangpath, allow_percent_hack and resolve_dequoted_address say: the next
        # hop may honour it.
        flags |= RESOLVE_FLAG_ROUTED
    if not domain:
        domain = cfg.get("myhostname")
        address = f"{local}@{domain}"
    ldomain = domain.lower()
    if is_local_domain(cfg, ldomain):
        addr_class = RESOLVE_CLASS_LOCAL
        transport, nexthop = _split_transport(cfg.get("local_transport"))
        nexthop = nexthop or cfg.get("myhostname")
        flags |= RESOLVE_FLAG_FINAL
    elif _in_string_list(cfg, "virtual_alias_domains", ldomain):
        addr_class = RESOLVE_CLASS_ALIAS
        transport, nexthop = "error", "5.1.1 User unknown in virtual alias table"
        flags |= RESOLVE_FLAG_FINAL
    elif _in_string_list(cfg, "virtual_mailbox_domains", ldomain):
        addr_class = RESOLVE_CLASS_VIRTUAL
        transport, nexthop = _split_transport(cfg.get("virtual_transport"))
        nexthop = nexthop or ldomain
        flags |= RESOLVE_FLAG_FINAL
    else:
        if domain_list_match(cfg, "relay_domains", ldomain):
            addr_class = RESOLVE_CLASS_RELAY
            channel = cfg.get("relay_transport")
        else:
            addr_class = RESOLVE_CLASS_DEFAULT
            channel = cfg.get("default_transport")
            if sender is not None:
                channel = _by_sender(cfg, "default_transport", sender) or channel
        transport, nexthop = _split_transport(channel)
        # Off-host mail: a nexthop in the transport wins, then the sender's relayhost,
        # then $relayhost, then the recipient domain (resolve.c's precedences).
        relay = _by_sender(cfg, "relayhost", sender) if sender is not None else None
        nexthop = nexthop or relay or cfg.get("relayhost") or ldomain
    override = _transport_maps(cfg, address)
    if override is not None:
        o_transport, o_nexthop = _split_transport(override)
        if o_transport:
            transport = o_transport
            # A transport without a nexthop keeps the recipient domain (transport(5)).
            if not o_nexthop and transport != "error":
                nexthop = ldomain if addr_class != RESOLVE_CLASS_LOCAL else nexthop
        if o_nexthop:
            nexthop = o_nexthop
    if transport == "error":
        flags |= RESOLVE_FLAG_ERROR
    return Resolution(transport, nexthop, address, addr_class, flags)


def _transport_maps(cfg: Config, address: str) -> str | None:
    specs = cfg.get_list("transport_maps")
    if not specs:
        return None
    # Postfix's DICT_FLAG_NO_REGSUB (transport(5)): a result naming where mail goes must
    # not carry text from the address.
    tables = [_table(s, cfg, no_regsub=True) for s in specs]
    try:
        found = maps_find(tables, transport_keys(address, cfg))
    except Exception as e:
        from oxipost.maps import warn

        if isinstance(e, TableError):
            # resolve.c's, after the table's own and maps_find's.
            warn("transport_maps lookup failure")
        raise
    return None if found is None else found[0].strip()


# The domain lists trivial-rewrite matches, then the tables it asks with no_regsub.
_DOMAIN_PARAMS = (
    "mydestination",
    "relay_domains",
    "virtual_alias_domains",
    "virtual_mailbox_domains",
)
_ROUTE_PARAMS = (
    "sender_dependent_relayhost_maps",
    "sender_dependent_default_transport_maps",
    "transport_maps",
)


def open_rewrite_tables(cfg: Config, log: TableLog) -> None:
    """Open the tables trivial-rewrite's resolve service asks, as Postfix's opens them
    when it starts: one that does not open is logged then, to `log` (trivial-rewrite's;
    oxipost.maps.open_at_start)."""
    from oxipost.maps import logging_to, open_at_start

    with logging_to(log):
        open_at_start(cfg, _DOMAIN_PARAMS, lambda _param, spec: _table(spec, cfg))
        open_at_start(cfg, _ROUTE_PARAMS, lambda _p, spec: _table(spec, cfg, no_regsub=True))
