"""rewrite - trivial-rewrite's address rewriting to standard form

rewrite_address(cfg, address, context) does what Postfix's trivial-rewrite(8) rewrite
service does to one address in its internal (unquoted) form: in the "local" context a bare
user gets @$myorigin (append_at_myorigin) and a single-label domain gets .$mydomain
(append_dot_mydomain); in the "remote" context $remote_header_rewrite_domain stands for both.
Without an '@', site!user is user@site (swap_bangpath), else user%site is user@site
(allow_percent_hack). A trailing dot is removed from the domain. A source route stays: its
'@' puts it in the quoted local part, as in Postfix's rewrite service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.delivery.address import is_dot_string
from oxipost.rewrite.resolve import split_internal

if TYPE_CHECKING:
    from oxipost.config import Config

CONTEXT_LOCAL = "local"
CONTEXT_REMOTE = "remote"


def rewrite_address(
    cfg: Config, address: str, context: str = CONTEXT_LOCAL, domainless: bool = False
) -> str:
    """The address in standard form for `context` ("local" or "remote"), as Postfix's
    rewrite_tree() makes it of the address with its local part quoted (quote_822_local):
    a quoted local part hides its '@', '!' and '%' from every step. `domainless`: the
    address is all local part, its '@', '!' or '%' in quotes where it was written
    ("a@b" in an alias, which local(8) has rewritten in external form)."""
    if not address:
        return address
    remote = context == CONTEXT_REMOTE
    local, domain = (address, "") if domainless else split_internal(address)
    if local == address:
        bare = not domainless and is_dot_string(address)
        if bare and "!" in address and cfg.get_bool("swap_bangpath"):
            site, _, user = address.partition("!")
            address = f"{user}@{site}"
        elif bare and "%" in address and cfg.get_bool("allow_percent_hack"):
            user, _, site = address.rpartition("%")
            address = f"{user}@{site}"
        else:
            origin = cfg.get("remote_header_rewrite_domain" if remote else "myorigin")
            if not (origin and cfg.get_bool("append_at_myorigin")):
                return address
            address = f"{address}@{origin}"
        local, domain = split_internal(address)
    # A domain without a dot (not a literal, not the broken "user@") gets .$mydomain.
    if domain and "." not in domain and "[" not in domain and cfg.get_bool("append_dot_mydomain"):
        mydomain = cfg.get("remote_header_rewrite_domain" if remote else "mydomain")
        if mydomain:
            return f"{local}@{domain}.{mydomain}"
    # One trailing dot goes, but not that of "..", nor of "@.": those stay as they were.
    if domain.endswith(".") and len(domain) > 1 and domain[-2] != ".":
        return f"{local}@{domain[:-1]}"
    return address
