"""cleanup_addr - envelope address processing: canonical, masquerade, virtual alias

Postfix's cleanup_addr.c, cleanup_map11.c, cleanup_map1n.c and cleanup_masquerade.c:
- every envelope address is first put in standard form (trivial-rewrite's local context);
- canonical mapping (sender_canonical_maps or recipient_canonical_maps, then canonical_maps)
  per the *_canonical_classes, one address in, one address out;
- masquerading per masquerade_domains (`!domain` exceptions), masquerade_exceptions and
  masquerade_classes;
- virtual alias expansion of each recipient, one address in, many out: recursive up to
  virtual_alias_recursion_limit, at most virtual_alias_expansion_limit addresses, an
  address that maps to itself kept, duplicates (same original recipient) dropped.
Table keys follow virtual(5)/canonical(5) (oxipost.maps.search.virtual_keys); an unmatched
address extension is copied to the result per propagate_unmatched_extensions; a result
`@domain` keeps the original local part.

Diagnostics (logged with the queue ID, the message refused with a temporary error):
"warning: QID: virtual_alias_maps map lookup problem for ADDR -- message not accepted,
try again later" (451 4.3.0 Error: queue file write error), "warning: QID: unreasonable
virtual_alias_maps map nesting for ADDR -- ..." and "... map expansion size for ADDR --
..." (451 4.6.0 Alias expansion error).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.envelope import Recipient
from oxipost.maps import TableError
from oxipost.maps.search import split_extension, virtual_keys
from oxipost.rewrite.resolve import is_local_domain, split_address, unquote_local
from oxipost.rewrite.rewrite import rewrite_address

if TYPE_CHECKING:
    from oxipost.cleanup.state import CleanupState
    from oxipost.config import Config

# Address classes of canonical_classes and masquerade_classes.
ENV_FROM = "envelope_sender"
ENV_RCPT = "envelope_recipient"
HDR_FROM = "header_sender"
HDR_RCPT = "header_recipient"

# Table types that only see the full address, never a partial key (Postfix's
# DICT_FLAG_FIXED is not supported by them).
_PATTERN_TYPES = ("regexp:", "pcre:")

WRITE_ERROR = "451 4.3.0 Error: queue file write error"
ALIAS_ERROR = "451 4.6.0 Alias expansion error"


class CleanupDefer(Exception):
    """The message cannot be accepted now; args: (SMTP reply, warning text sans qid)."""

    def __init__(self, reply: str, warning: str) -> None:
        super().__init__(reply, warning)
        self.reply = reply
        self.warning = warning


def _local_for_lookup(cfg: Config, domain: str) -> bool:
    if not domain:
        return True
    if domain.lower() == cfg.get("myorigin").lower():
        return True
    return is_local_domain(cfg, domain)


def addr_map(state: CleanupState, param: str, address: str, propagate: bool) -> list[str] | None:
    """Postfix's mail_addr_map: the addresses `param`'s tables give for `address`, or None.

    Keys are tried in virtual(5) order, each against every table in turn. Raises
    TableError when a table cannot be read."""
    cfg = state.cfg
    tables = [(spec.startswith(_PATTERN_TYPES), table) for spec, table in state.tables(param)]
    if not tables:
        return None
    local, domain = split_address(address)
    delimiters = cfg.get("recipient_delimiter")
    keys = virtual_keys(address, delimiters, _local_for_lookup(cfg, domain))
    user, ext = split_extension(local, delimiters)
    bare = {f"{user}@{domain}".lower(), user.lower()} if ext is not None else set()
    for n, key in enumerate(keys):
        for pattern, table in tables:
            if pattern and n:
                continue
            value = table.lookup(key)
            if value is None:
                continue
            extension = None
            if ext is not None and key in bare:
                extension = local[len(user)] + ext
            if value.startswith("@"):
                value = local + value
            return _crunch(cfg, value, extension if propagate else None)
    return None


def _crunch(cfg: Config, value: str, extension: str | None) -> list[str]:
    """A table result as standard-form addresses (Postfix's mail_addr_crunch_ext)."""
    out: list[str] = []
    for item in _split_result(value):
        if item.startswith("<") and item.endswith(">"):
            item = item[1:-1]
        local, domain = split_address(item)
        local = unquote_local(local)
        item = f"{local}@{domain}" if domain else local
        item = rewrite_address(cfg, item)
        if extension:
            local, domain = split_address(item)
            item = f"{local}{extension}@{domain}" if domain else local + extension
        out.append(item)
    return out


def _split_result(value: str) -> list[str]:
    """Comma/space separated addresses; double quotes keep their contents together."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if not quoted and (ch == "," or ch.isspace()):
            if cur:
                items.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        items.append("".join(cur))
    return items


def _propagate(cfg: Config, what: str) -> bool:
    return what in cfg.get_keywords("propagate_unmatched_extensions")


def map11(state: CleanupState, param: str, address: str) -> str:
    """One canonical table lookup: the address it maps to, or the address unchanged."""
    cfg = state.cfg
    try:
        result = addr_map(state, param, address, _propagate(cfg, "canonical"))
    except TableError:
        raise CleanupDefer(
            WRITE_ERROR,
            f"{param} map lookup problem for {address} -- message not accepted, try again later",
        ) from None
    if not result:
        return address
    if len(result) > 1:
        state.warn(f"multi-valued {param} entry for {address}")
    return result[0]


def masquerade(cfg: Config, address: str) -> str:
    """Strip subdomains per masquerade_domains (cleanup_masquerade.c)."""
    domains = [d.lower() for d in cfg.get_list("masquerade_domains")]
    if not domains:
        return address
    local, domain = split_address(address)
    if not domain:
        return address
    if unquote_local(local).lower() in cfg.get_keywords("masquerade_exceptions"):
        return address
    low = domain.lower()
    for masq in domains:
        excluded = masq.startswith("!")
        if excluded:
            masq = masq[1:]
        if not masq:
            continue
        if len(masq) == len(low):
            if masq == low:
                break  # the domain itself: leave it, and stop looking
        elif len(masq) < len(low) and low.endswith("." + masq):
            if not excluded:
                return f"{local}@{masq}"
            break
    return address


def canonical(state: CleanupState, address: str, kind: str) -> str:
    """Canonical mapping then masquerading of one address of class `kind`."""
    cfg = state.cfg
    own = "sender_canonical" if kind in (ENV_FROM, HDR_FROM) else "recipient_canonical"
    if cfg.get_list(f"{own}_maps") and kind in cfg.get_keywords(f"{own}_classes"):
        address = map11(state, f"{own}_maps", address)
    if cfg.get_list("canonical_maps") and kind in cfg.get_keywords("canonical_classes"):
        address = map11(state, "canonical_maps", address)
    if kind in cfg.get_keywords("masquerade_classes"):
        address = masquerade(cfg, address)
    return address


def virtual_expand(state: CleanupState, address: str) -> list[str]:
    """Recursive virtual_alias_maps expansion (cleanup_map1n.c)."""
    cfg = state.cfg
    param = "virtual_alias_maps"
    if not cfg.get_list(param):
        return [address]
    expansion_limit = cfg.get_int("virtual_alias_expansion_limit")
    recursion_limit = cfg.get_int("virtual_alias_recursion_limit")
    length_limit = cfg.get_int("virtual_alias_address_length_limit")
    propagate = _propagate(cfg, "virtual")
    addrs = [address]
    # Addresses that expanded into themselves: not expanded again.
    fixed: set[str] = set()
    arg = 0
    while arg < len(addrs):
        if len(addrs) > expansion_limit:
            raise CleanupDefer(
                ALIAS_ERROR,
                f"unreasonable {param} map expansion size for {address} -- "
                "message not accepted, try again later",
            )
        count = 0
        while addrs[arg].lower() not in fixed:
            if count >= recursion_limit:
                raise CleanupDefer(
                    ALIAS_ERROR,
                    f"unreasonable {param} map nesting for {address} -- "
                    "message not accepted, try again later",
                )
            lhs = addrs[arg]
            try:
                result = addr_map(state, param, lhs, propagate)
            except TableError:
                raise CleanupDefer(
                    WRITE_ERROR,
                    f"{param} map lookup problem for {address} -- "
                    "message not accepted, try again later",
                ) from None
            if not result:
                break
            for i, new in enumerate(result):
                if len(new) > length_limit:
                    raise CleanupDefer(
                        ALIAS_ERROR,
                        f"unreasonable {param} result {new[:300]}... -- "
                        "message not accepted, try again later",
                    )
                if i == 0:
                    addrs[arg] = new
                else:
                    addrs.append(new)
                if new.lower() == lhs.lower():
                    fixed.add(lhs.lower())
            count += 1
        arg += 1
    return addrs


def process_sender(state: CleanupState, sender: str) -> str:
    """The envelope sender after rewriting, canonical mapping and masquerading."""
    if not sender:
        return sender
    sender = rewrite_address(state.cfg, sender)
    if state.map_ok:
        sender = canonical(state, sender, ENV_FROM)
    return sender


def process_recipients(state: CleanupState, recipients: list[Recipient]) -> list[Recipient]:
    """Envelope recipients after canonical mapping, masquerading and virtual aliasing;
    each keeps its original recipient, duplicates of one original are dropped."""
    cfg = state.cfg
    keep_original = cfg.get_bool("enable_original_recipient")
    out: list[Recipient] = []
    seen: set[tuple[str, frozenset[str], str, str]] = set()
    for rcpt in recipients:
        original = rcpt.original or rcpt.address
        addr = rewrite_address(cfg, rcpt.address)
        if state.map_ok:
            addr = canonical(state, addr, ENV_RCPT)
        state.recip = state.recip or addr
        if state.map_ok:
            expanded = virtual_expand(state, addr)
        else:
            expanded = [addr]
        for new in expanded:
            key = (rcpt.orcpt, rcpt.notify, original.lower(), new.lower())
            if key in seen:
                continue
            seen.add(key)
            out.append(
                Recipient(
                    new,
                    original=original if keep_original else "",
                    notify=rcpt.notify,
                    orcpt=rcpt.orcpt,
                )
            )
    return out
