"""Postfix's key search orders, one helper per kind of table, and the one walk over keys
and tables (`maps_find`) that every caller uses.

- virtual(5) and canonical(5): `user+ext@domain`, `user@domain`, then (for a local domain
  only) `user+ext`, `user`, then `@domain`.
- aliases(5): the local part, then without its extension.
- access(5): the full address, `user@domain` without the extension, the domain and its
  parents (`parent` or `.parent` per parent_domain_matches_subdomains), then `user@`; client
  names and addresses with their network prefixes.
- transport(5): the full address, `user@domain` without the extension, the domain and its
  parents, then `*`.

A search key is `(key, partial)`. The whole string looked up is FULL; what is derived from
it (the address without its extension, a bare local part, `@domain`, a domain or parent
domain of an address, a parent domain of a host name, a shorter network prefix) is PARTIAL:
as Postfix's mail_addr_find(), check_domain_access() and transport_lookup() pass
DICT_FLAG_FIXED to maps_find() for those, a table that is not `fixed` (regexp:, pcre:,
cidr:) is only given the FULL keys (transport(5)'s `*` is one). A plain string is a FULL
key.

Keys are folded here in ASCII only (maps.fold), as Postfix's casefold() without
smtputf8_enable: a table whose keys fold in Unicode (smtputf8_enable = yes) folds them
again as it looks them up; Python's str.lower() would turn `ÉTÉ` into `été`, which such a
table without Unicode folding does not hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from oxipost.config import Config
from oxipost.maps import fold
from oxipost.valid import valid_hostaddr

if TYPE_CHECKING:
    from oxipost.maps import Table

FULL = False
PARTIAL = True
SearchKey = tuple[str, bool]


def maps_find(tables: Sequence[Table], keys: Iterable[SearchKey | str]) -> tuple[str, str] | None:
    """(value, key) of the first key any table answers, as Postfix's maps_find() called
    for each key in turn: every table for one key before the next key, a PARTIAL key only
    for fixed tables, an empty key never asked. TableError propagates, after maps_find's
    'SPEC lookup error for "KEY"' for a table that did not open (its own warning first)."""
    for item in keys:
        key, partial = (item, FULL) if isinstance(item, str) else item
        if not key:
            continue
        for table in tables:
            if partial and not table.fixed:
                continue
            try:
                value = table.lookup(key)
            except Exception as e:
                # Imported here, off the path of a lookup that works.
                from oxipost.maps import warn_lookup_error

                warn_lookup_error(e, key)
                raise
            if value is not None:
                return value, key
    return None


def maps_find_warned(
    specs: Sequence[str],
    keys: Iterable[SearchKey | str],
    open_one: Callable[[str], Table],
    warn: Callable[[str], None],
    lookup_error: Callable[[str, str], str] = lambda spec, key: f'{spec} lookup error for "{key}"',
) -> tuple[str, str, str, Table] | None:
    """(value, key, spec, table) of the first key a table answers: maps_find() over the
    tables `specs` name, opened with `open_one`, with Postfix's
    warnings when one fails: dict_surrogate's "SPEC is unavailable. REASON" when its
    turn comes for one that did not open (a surrogate is a pattern table: asked FULL keys
    only), then `lookup_error(spec, key)`, maps_find's 'SPEC lookup error for "KEY"'
    unless the caller has words of its own; the TableError (or OSError) then
    propagates."""
    from oxipost.maps import TableConfigError, TableError

    errors = (TableError, OSError)
    tables: list[Table | Exception] = []
    for spec in specs:
        try:
            tables.append(open_one(spec))
        except errors as e:
            tables.append(e)
    for item in keys:
        key, partial = (item, FULL) if isinstance(item, str) else item
        if not key:
            continue
        for spec, table in zip(specs, tables, strict=True):
            if isinstance(table, Exception):
                if partial:
                    continue
                warn(f"{spec} is unavailable. {table}")
                warn(lookup_error(spec, key))
                raise table
            if partial and not table.fixed:
                continue
            try:
                value = table.lookup(key)
            except TableConfigError as e:
                # Named as its own warning names it (hash: by its file), as Postfix's.
                warn(lookup_error(e.table, key))
                raise
            except errors:
                warn(lookup_error(spec, key))
                raise
            if value is not None:
                return value, key, spec, table
    return None


# split_addr() leaves these alone even when they contain a delimiter (Postfix's
# mail_addr.h special addresses and the owner-/-request list conventions).
_UNSPLIT = ("postmaster", "mailer-daemon")


def split_extension(local: str, delimiters: str) -> tuple[str, str | None]:
    """(user, extension) split at the first delimiter character after the first position,
    as Postfix's split_addr(); extension None when there is none."""
    if not delimiters or local.lower() in _UNSPLIT:
        return local, None
    for i, ch in enumerate(local):
        if i > 0 and ch in delimiters:
            user, ext = local[:i], local[i + 1 :]
            if ch == "-" and (user.lower() == "owner" or ext.lower() == "request"):
                return local, None
            return user, ext
    return local, None


def _split(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def virtual_keys(address: str, delimiters: str, local_domain: bool) -> list[SearchKey]:
    """virtual(5)/canonical(5) order for an address (mail_addr_find's default strategy):
    the address is FULL, the rest PARTIAL. `local_domain`: the domain is one of $myorigin,
    $mydestination, $inet_interfaces, $proxy_interfaces (bare user keys apply)."""
    local, domain = _split(fold(address))
    user, ext = split_extension(local, delimiters)
    keys: list[str] = []
    if domain:
        keys.append(f"{local}@{domain}")
        if ext is not None:
            keys.append(f"{user}@{domain}")
    if local_domain or not domain:
        keys.append(local)
        if ext is not None:
            keys.append(user)
    if domain:
        keys.append(f"@{domain}")
    return [(key, n > 0) for n, key in enumerate(keys)]


def alias_keys(address: str, delimiters: str) -> list[str]:
    """aliases(5) order: the local part, then the local part without its extension."""
    local, _ = _split(fold(address))
    user, ext = split_extension(local, delimiters)
    return [local] if ext is None else [local, user]


def subdomains_match(cfg: Config, feature: str = "smtpd_access_maps") -> bool:
    """Whether `parent.domain` keys match subdomains for `feature` (otherwise only
    `.parent.domain` keys do): parent_domain_matches_subdomains."""
    return feature in cfg.get_list("parent_domain_matches_subdomains")


def domain_keys(domain: str, parent_style: bool) -> list[SearchKey]:
    """A domain (FULL) then each parent domain (PARTIAL), as `parent` when `parent_style`
    (parent_domain_matches_subdomains lists the feature), else `.parent`: Postfix's
    match_hostname() for a table in a domain list, and the domain search of
    check_domain_access()."""
    domain = fold(domain).rstrip(".")
    keys = [(domain, FULL)]
    parts = domain.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[i:])
        keys.append((parent if parent_style else "." + parent, PARTIAL))
    return keys


def access_domain_keys(domain: str, cfg: Config) -> list[SearchKey]:
    """access(5) keys for a host name: the name, then its parent domains unless it is a
    numerical address (check_domain_access: no subdomain magic for those)."""
    if valid_hostaddr(domain):
        return [(fold(domain), FULL)]
    return domain_keys(domain, subdomains_match(cfg))


def access_address_keys(address: str, cfg: Config) -> list[SearchKey]:
    """access(5) keys for a mail address; the null sender is smtpd_null_access_lookup_key.
    Only the address is FULL: its domain and parents are PARTIAL keys here."""
    if address == "":
        return [(cfg.get("smtpd_null_access_lookup_key"), FULL)]
    local, domain = _split(fold(address))
    user, ext = split_extension(local, cfg.get("recipient_delimiter"))
    keys = [f"{local}@{domain}" if domain else local]
    if ext is not None and domain:
        keys.append(f"{user}@{domain}")
    if domain:
        keys.extend(key for key, _ in domain_keys(domain, subdomains_match(cfg)))
    keys.append(f"{local}@")
    if ext is not None:
        keys.append(f"{user}@")
    return [(key, n > 0) for n, key in enumerate(keys)]


def transport_keys(address: str, cfg: Config) -> list[SearchKey]:
    """transport(5) keys for a recipient, as transport_lookup(): the address (FULL), the
    address without its extension, the domain and its parents (PARTIAL), then `*`, which is
    asked of every table (the wild-card lookup is FULL)."""
    local, domain = _split(fold(address))
    user, ext = split_extension(local, cfg.get("recipient_delimiter"))
    keys: list[SearchKey] = [(fold(address), FULL)]
    if ext is not None:
        keys.append((f"{user}@{domain}", PARTIAL))
    parent_style = subdomains_match(cfg, "transport_maps")
    keys.extend((key, PARTIAL) for key, _ in domain_keys(domain, parent_style))
    keys.append(("*", FULL))
    return keys


def access_client_keys(name: str, addr: str, cfg: Config) -> list[SearchKey]:
    """access(5) keys for a client: its name (FULL) and parent domains ("unknown" for a
    client without one: Postfix 3.7 looks that up too), then its address (FULL) and, for
    IPv4, the shorter network prefixes `1.2.3`, `1.2`, `1`; for IPv6 the prefixes ending at
    each colon."""
    keys: list[SearchKey] = []
    if name:
        keys.extend(access_domain_keys(name, cfg))
    keys.append((addr.lower(), FULL))
    if ":" in addr:
        groups = addr.lower().split(":")
        keys.extend(
            (":".join(groups[:i]), PARTIAL) for i in range(len(groups) - 1, 0, -1) if groups[i - 1]
        )
    else:
        octets = addr.split(".")
        keys.extend((".".join(octets[:i]), PARTIAL) for i in range(3, 0, -1))
    return keys
