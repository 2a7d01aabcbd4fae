"""rewrite - trivial-rewrite's address rewriting to standard form

rewrite_address(cfg, address, context) does what Postfix's trivial-rewrite(8) rewrite
service does to one address in its internal (unquoted) form: in the "local" context a bare
user gets @$myorigin (append_at_myorigin) and a single-label domain gets .$mydomain
(append_dot_mydomain); in the "remote" context a bare user gets @$remote_header_rewrite_domain
and nothing else changes. A trailing dot is removed from the domain. Source routes and
`%`/`!` forms are left for resolve() to handle, as smtpd has always done here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.rewrite.resolve import split_internal

if TYPE_CHECKING:
    from oxipost.config import Config

CONTEXT_LOCAL = "local"
CONTEXT_REMOTE = "remote"


def rewrite_address(cfg: Config, address: str, context: str = CONTEXT_LOCAL) -> str:
    """The address in standard form for `context` ("local" or "remote")."""
    if not address or (address.startswith("@") and ":" in address):
        return address
    local, domain = split_internal(address)
    if not domain:
        if "!" in local or "%" in local or not local:
            return address
        if context == CONTEXT_REMOTE:
            remote = cfg.get("remote_header_rewrite_domain")
            return f"{local}@{remote}" if remote else address
        if not cfg.get_bool("append_at_myorigin"):
            return address
        return f"{local}@{cfg.get('myorigin')}"
    if domain.endswith(".") and len(domain) > 1:
        domain = domain.rstrip(".")
        address = f"{local}@{domain}"
    if (
        context == CONTEXT_LOCAL
        and cfg.get_bool("append_dot_mydomain")
        and "." not in domain
        and not domain.startswith("[")
        and domain.lower() != "localhost"
    ):
        return f"{local}@{domain}.{cfg.get('mydomain')}"
    return address
