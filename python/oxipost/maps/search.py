"""Postfix's key search orders, one helper per kind of table, used by every caller.

- virtual(5) and canonical(5): `user+ext@domain`, `user@domain`, then (for a local domain
  only) `user+ext`, `user`, then `@domain`.
- aliases(5): the local part, then without its extension.
- access(5): the full address, `user@domain` without the extension, the domain and its
  parents (`parent` or `.parent` per parent_domain_matches_subdomains), then `user@`; client
  names and addresses with their network prefixes.

Keys are lowercased here; tables fold as well (Postfix folds both sides).
"""

from __future__ import annotations

from oxipost.config import Config

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


def virtual_keys(address: str, delimiters: str, local_domain: bool) -> list[str]:
    """virtual(5)/canonical(5) order for an address. `local_domain`: the domain is one of
    $myorigin, $mydestination, $inet_interfaces, $proxy_interfaces (bare user keys apply)."""
    local, domain = _split(address.lower())
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
    return keys


def alias_keys(address: str, delimiters: str) -> list[str]:
    """aliases(5) order: the local part, then the local part without its extension."""
    local, _ = _split(address.lower())
    user, ext = split_extension(local, delimiters)
    return [local] if ext is None else [local, user]


def subdomains_match(cfg: Config, feature: str = "smtpd_access_maps") -> bool:
    """Whether `parent.domain` keys match subdomains for `feature` (otherwise only
    `.parent.domain` keys do): parent_domain_matches_subdomains."""
    return feature in cfg.get_list("parent_domain_matches_subdomains")


def access_domain_keys(domain: str, cfg: Config) -> list[tuple[str, bool]]:
    """access(5) keys for a domain: (key, is_parent) for the domain then each parent."""
    domain = domain.lower().rstrip(".")
    parent_style = subdomains_match(cfg)
    keys = [(domain, False)]
    parts = domain.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[i:])
        keys.append((parent if parent_style else "." + parent, True))
    return keys


def access_address_keys(address: str, cfg: Config) -> list[tuple[str, bool]]:
    """access(5) keys for a mail address; the null sender is smtpd_null_access_lookup_key."""
    if address == "":
        return [(cfg.get("smtpd_null_access_lookup_key"), False)]
    local, domain = _split(address.lower())
    user, ext = split_extension(local, cfg.get("recipient_delimiter"))
    keys: list[tuple[str, bool]] = [(f"{local}@{domain}" if domain else local, False)]
    if ext is not None and domain:
        keys.append((f"{user}@{domain}", False))
    if domain:
        keys.extend(access_domain_keys(domain, cfg))
    keys.append((f"{local}@", False))
    if ext is not None:
        keys.append((f"{user}@", False))
    return keys


def access_client_keys(name: str, addr: str) -> list[tuple[str, bool]]:
    """access(5) keys for a client: its name and parent domains (when known), then its
    address and, for IPv4, the shorter network prefixes `1.2.3`, `1.2`, `1`; for IPv6 the
    prefixes ending at each colon."""
    keys: list[tuple[str, bool]] = []
    if name and name != "unknown":
        parts = name.lower().split(".")
        keys.extend((".".join(parts[i:]), i > 0) for i in range(len(parts)))
    keys.append((addr.lower(), False))
    if ":" in addr:
        groups = addr.lower().split(":")
        keys.extend(
            (":".join(groups[:i]), True) for i in range(len(groups) - 1, 0, -1) if groups[i - 1]
        )
    else:
        octets = addr.split(".")
        keys.extend((".".join(octets[:i]), True) for i in range(3, 0, -1))
    return keys
