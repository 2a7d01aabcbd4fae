"""cleanup_addr - envelope address processing: canonical, masquerade, virtual alias

Postfix's cleanup_addr.c, cleanup_map11.c, cleanup_map1n.c and cleanup_masquerade.c:
- every envelope address is first put in standard form (trivial-rewrite's local context);
- canonical mapping (sender_canonical_maps or recipient_canonical_maps, then canonical_maps)
  per the *_canonical_classes, one address in, one address out;
- masquerading per masquerade_domains (`!domain` exceptions), masquerade_exceptions and
  masquerade_classes;
- automatic BCC recipients (sender_bcc_maps, recipient_bcc_maps, always_bcc; Postfix's
  cleanup_addr_bcc), mapped as recipients, with NOTIFY=NEVER;
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
..." (451 4.6.0 Alias expansion error); "warning: QID: sender_bcc_maps map lookup
problem -- message not accepted, try again later" (recipient_bcc_maps alike, 451 4.3.0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.cleanup.state import ENV_FROM, ENV_RCPT
from oxipost.delivery.address import quote_local
from oxipost.envelope import Recipient
from oxipost.maps import TableError, fold
from oxipost.maps.search import maps_find, split_extension, virtual_keys
from oxipost.rewrite.resolve import is_local_domain, split_address, unquote_822_local, unquote_local
from oxipost.rewrite.rewrite import rewrite_address

if TYPE_CHECKING:
    from collections.abc import Sequence

    from oxipost.cleanup.state import CleanupState
    from oxipost.config import Config
    from oxipost.maps import Table

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


def addr_find(state: CleanupState, param: str, address: str) -> tuple[str, str] | None:
    """Postfix's mail_addr_find: (key, value) for the first key, in virtual(5) order, that
    one of `param`'s tables answers (each key against every table in turn; a pattern table
    sees the whole address only), or None. Raises TableError when a table cannot be read."""
    return mail_addr_find(state.cfg, [table for _spec, table in state.tables(param)], address)


def mail_addr_find(cfg: Config, tables: Sequence[Table], address: str) -> tuple[str, str] | None:
    """addr_find with the tables given."""
    if not tables:
        return None
    domain = split_address(address)[1]
    keys = virtual_keys(address, cfg.get("recipient_delimiter"), _local_for_lookup(cfg, domain))
    found = maps_find(tables, keys)
    return None if found is None else (found[1], found[0])


def addr_map(state: CleanupState, param: str, address: str, propagate: bool) -> list[str] | None:
    """Postfix's mail_addr_map: the addresses `param`'s tables give for `address`, or None.
    Raises TableError when a table cannot be read."""
    tables = [table for _spec, table in state.tables(param)]
    return mail_addr_map(state.cfg, tables, address, propagate)


def mail_addr_map(
    cfg: Config, tables: Sequence[Table], address: str, propagate: bool
) -> list[str] | None:
    """addr_map with the tables given: the result as standard-form addresses, a result
    `@domain` with the address's local part, an unmatched extension kept when `propagate`."""
    found = mail_addr_find(cfg, tables, address)
    if found is None:
        return None
    key, value = found
    local, domain = split_address(address)
    user, ext = split_extension(local, cfg.get("recipient_delimiter"))
    extension = None
    if ext is not None and key in (fold(f"{user}@{domain}"), fold(user)):
        extension = local[len(user)] + ext
    if value.startswith("@"):
        # The local part goes in quoted where it must be ("q u"@new), as Postfix's result
        # is parsed as an external address.
        quoted = quote_local(f"{local}@{domain}").rpartition("@")[0] if domain else None
        value = (quote_local(local) if quoted is None else quoted) + value
    return _crunch(cfg, value, extension if propagate else None)


def _crunch(cfg: Config, value: str, extension: str | None) -> list[str]:
    """A table result as standard-form addresses (Postfix's mail_addr_crunch_ext)."""
    out: list[str] = []
    for item in _split_result(value):
        if item.startswith("<") and item.endswith(">"):
            item = item[1:-1]
        item = rewrite_address(cfg, unquote_822_local(item))
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


def propagate_extension(cfg: Config, what: str) -> bool:
    """Whether propagate_unmatched_extensions names `what` (canonical, virtual, ...)."""
    return what in cfg.get_keywords("propagate_unmatched_extensions")


def _addr_map_or_defer(
    state: CleanupState, param: str, key: str, address: str, propagate: bool
) -> list[str] | None:
    """addr_map of `key`, or CleanupDefer naming `address` when a table cannot be read."""
    try:
        return addr_map(state, param, key, propagate)
    except TableError:
        raise CleanupDefer(
            WRITE_ERROR,
            f"{param} map lookup problem for {address} -- message not accepted, try again later",
        ) from None


# Postfix's cleanup_map11 MAX_RECURSION.
_MAP11_RECURSION = 10


def map11(state: CleanupState, param: str, address: str) -> str:
    """A canonical table's address for `address`, looked up again until the table leaves
    it alone (maps to nothing, or to itself but for case), as cleanup_map11_external: so
    `a b` and `b c` map a to c. After 10 rounds the address is kept and a warning logged;
    Postfix 3.7's says "message not accepted" and yet accepts it, as this does."""
    cfg = state.cfg
    propagate = propagate_extension(cfg, "canonical")
    for _ in range(_MAP11_RECURSION):
        result = _addr_map_or_defer(state, param, address, address, propagate)
        if not result:
            return address
        if len(result) > 1:
            state.warn(f"multi-valued {param} entry for {address}")
        if result[0].lower() == address.lower():
            return result[0]
        address = result[0]
    state.warn(
        f"unreasonable {param} map nesting for {address} -- message not accepted, try again later"
    )
    return address


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
    params, masq = state.opts.canonical_steps(kind)
    for param in params:
        address = map11(state, param, address)
    if masq:
        address = masquerade(state.cfg, address)
    return address


def virtual_expand(state: CleanupState, address: str) -> list[str]:
    """Recursive virtual_alias_maps expansion (cleanup_map1n.c)."""
    cfg = state.cfg
    param = "virtual_alias_maps"
    if not state.opts.nonempty(param):
        return [address]
    expansion_limit = cfg.get_int("virtual_alias_expansion_limit")
    recursion_limit = cfg.get_int("virtual_alias_recursion_limit")
    length_limit = cfg.get_int("virtual_alias_address_length_limit")
    propagate = propagate_extension(cfg, "virtual")
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
            result = _addr_map_or_defer(state, param, lhs, address, propagate)
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
    """The envelope sender after rewriting, canonical mapping and masquerading; when a
    canonical table fails, as it was, with the message refused (state.reply). The
    mailer-daemon address (MAILER-DAEMON@$myorigin, any case) is the null sender, as
    Postfix's cleanup_addr_sender makes it before any mapping."""
    if not sender:
        return sender
    sender = rewrite_address(state.cfg, sender)
    # Postfix compares only an address with a domain (append_at_myorigin = no leaves a
    # bare MAILER-DAEMON as it is).
    if "@" in sender and sender.lower() == state.opts.mailer_daemon:
        return ""
    if state.map_ok:
        try:
            sender = canonical(state, sender, ENV_FROM)
        except CleanupDefer as e:
            # cleanup_addr_sender goes on with the address as it was, to the sender's BCC
            # lookup; the message is refused all the same.
            state.warn(e.warning)
            state.refuse(e.reply)
    return sender


def _clean_recipient(state: CleanupState, address: str) -> str:
    """An envelope recipient in standard form, canonical mapped and masqueraded."""
    address = rewrite_address(state.cfg, address)
    if state.map_ok:
        address = canonical(state, address, ENV_RCPT)
    return address


def _out_recipient(
    state: CleanupState, rcpt: Recipient, dsn_orcpt: str, seen: set[object]
) -> list[Recipient]:
    """Postfix's cleanup_out_recipient: virtual alias expansion of a clean recipient, then
    the message's duplicate filter: (DSN ORCPT, NOTIFY, original, address), or the address
    alone with enable_original_recipient = no (which changes only this: the original
    recipient is still written, as Postfix's queue file has it)."""
    keep_original = state.cfg.get_bool("enable_original_recipient")
    expanded = virtual_expand(state, rcpt.address) if state.map_ok else [rcpt.address]
    out: list[Recipient] = []
    for new in expanded:
        key: object = new.lower()
        if keep_original:
            # been_here with BH_FLAG_FOLD: the whole key in lower case, ORCPT too.
            key = (dsn_orcpt.lower(), rcpt.notify, rcpt.original.lower(), key)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            Recipient(
                new,
                original=rcpt.original,
                notify=rcpt.notify,
                orcpt=rcpt.orcpt,
            )
        )
    return out


def process_recipients(
    state: CleanupState,
    recipients: list[Recipient],
    bcc: bool = False,
    seen: set[object] | None = None,
    envelope: bool = False,
) -> list[Recipient]:
    """Envelope recipients after canonical mapping, masquerading and virtual aliasing;
    each keeps its original recipient, duplicates in the message are dropped (`seen`, the
    message's filter by default). With `bcc`, each is followed by its recipient_bcc_maps
    copy, as Postfix's cleanup_addr_recipient adds it. The message's own `envelope`
    recipients without ORCPT get one (a milter's added ones do not)."""
    out: list[Recipient] = []
    for rcpt in recipients:
        original = rcpt.original or rcpt.address
        # The null address (sendmail '<>' or ''; smtpd refuses RCPT TO:<>) is
        # $empty_address_recipient, as Postfix's cleanup_addr_recipient has it; its
        # original recipient stays empty.
        addr = _clean_recipient(state, rcpt.address or state.cfg.get("empty_address_recipient"))
        # The last one, which header_checks' log lines name (to=<...>), as Postfix's
        # cleanup_addr_recipient keeps it.
        state.recip = addr
        # Postfix gives a recipient without ORCPT its address after canonical mapping as
        # DSN original recipient, so it never collides with a BCC copy (which has none) in
        # the duplicate filter; an envelope recipient (sendmail's, a bounce's) keeps it
        # with each address it expands to: the smtp client passes it on, a DSN reports it.
        dsn_orcpt = rcpt.orcpt or f"rfc822;{addr}"
        orcpt = dsn_orcpt if envelope else rcpt.orcpt
        clean = Recipient(addr, original=original, notify=rcpt.notify, orcpt=orcpt)
        out += _out_recipient(state, clean, dsn_orcpt, state.dups if seen is None else seen)
        if bcc:
            out += add_bcc(state, bcc_lookup(state, "recipient_bcc_maps", addr))
    return out


def bcc_lookup(state: CleanupState, param: str, address: str) -> str:
    """The sender_bcc_maps or recipient_bcc_maps address for `address` (Postfix's
    mail_addr_find: no extension propagation), "" for none. Raises CleanupDefer when a
    table cannot be read."""
    if not address or not state.opts.nonempty(param):
        return ""
    try:
        found = addr_find(state, param, address)
    except TableError:
        raise CleanupDefer(
            WRITE_ERROR, f"{param} map lookup problem -- message not accepted, try again later"
        ) from None
    return found[1].strip() if found else ""


def add_bcc(state: CleanupState, address: str) -> list[Recipient]:
    """Postfix's cleanup_addr_bcc: an automatic BCC recipient (always_bcc, the *_bcc_maps,
    a header_checks BCC action), rewritten and mapped as a recipient, its own original
    recipient, with DSN NOTIFY=NEVER, through the message's duplicate filter."""
    if not address:
        return []
    addr = _clean_recipient(state, unquote_822_local(address))
    rcpt = Recipient(addr, original=addr, notify=frozenset({"NEVER"}))
    return _out_recipient(state, rcpt, "", state.dups)
