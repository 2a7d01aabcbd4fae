"""VERP: the recipient's address in the sender's, as Postfix's global/verp_sender.c.

verp_sender() turns prefix@origin, for the recipient user@domain and the delimiters "+=",
into prefix+user=domain@origin; verp_delims_verify() judges delimiters against
verp_delimiter_filter. Diagnostics: verp_delims_verify's text, which each caller words
into its own complaint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.envelope import Recipient

if TYPE_CHECKING:
    # Not at run time: config's startup checks use verp_delims_verify.
    from oxipost.config import Config


def verp_delims_verify(cfg: Config, delims: str) -> str | None:
    """What is wrong with these VERP delimiters, as Postfix's verp_delims_verify(); None
    when they are two characters of verp_delimiter_filter."""
    allowed = cfg.get("verp_delimiter_filter")
    if len(delims) != 2:
        return "bad VERP delimiter character count"
    for which, char in zip(("first", "second"), delims, strict=True):
        if char not in allowed:
            return f"bad {which} VERP delimiter character"
    return None


def verp_sender(delims: str, sender: str, rcpt: Recipient) -> str:
    """The sender with the recipient in it: the original recipient (what a VERP consumer
    expects), its domain after the second delimiter only when it has one, and the
    sender's domain only when it has one (a local part alone stays one)."""
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = sender, ""
    recipient = rcpt.original or rcpt.address
    user, rat, rdomain = recipient.rpartition("@")
    if not rat:
        user, rdomain = recipient, ""
    out = local + delims[0] + user
    if rdomain:
        out += delims[1] + rdomain
    if domain:
        out += "@" + domain
    return out
