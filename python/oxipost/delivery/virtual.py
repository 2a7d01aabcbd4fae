"""virtual(8): deliver to mailboxes of virtual domains.

The mailbox is virtual_mailbox_base + the virtual_mailbox_maps result for the recipient
(searched as user+ext@domain, user@domain, @domain): a result ending in "/" is a Maildir,
else an mbox file locked per virtual_mailbox_lock. The writes run as the uid/gid from
virtual_uid_maps / virtual_gid_maps (static: or tables), switched only when running as
root; a uid below virtual_minimum_uid is refused. virtual_mailbox_limit caps an mbox file
and a Maildir message. Return-Path, X-Original-To and Delivered-To are prepended.

Diagnostics, as Postfix: no mailbox → 5.1.1 unknown user: "addr"; no or bad uid/gid,
or a mailbox path leaving the base (catalogue 49) → 4.3.5 mail system configuration
error; an unreadable table → deferred; a Delivered-To: that already holds the recipient
→ 5.4.6 mail forwarding loop for addr (catalogue 47).
Deviation: when not running as root and virtual_uid_maps / virtual_gid_maps are empty,
mail is written as the running user (Postfix defers), so the embedded default works.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from oxipost._core import mailbox
from oxipost.delivery.mailstore import (
    LookupFailed,
    lock_options,
    lookup_tables,
    loop_outcome,
    maildir,
    mbox,
    prefix_headers,
    would_deliver,
)
from oxipost.envelope import Outcome, Recipient
from oxipost.maps.search import SearchKey, virtual_keys

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.delivery import DeliveryRequest

log = logging.getLogger("oxipost.virtual")
CONFIG_ERROR = Outcome("4.3.5", "mail system configuration error")


def _id(cfg: Config, param: str, keys: list[SearchKey], rcpt: str) -> int | Outcome | None:
    if not cfg.get_list(param):
        return None if os.geteuid() != 0 else CONFIG_ERROR
    value = lookup_tables(cfg, param, keys, log.warning, paranoid=True)
    if value is None:
        log.warning("recipient %s: %s not found in %s", rcpt, param[8:11], param)
        return CONFIG_ERROR
    try:
        n = int(value.strip())
    except ValueError:
        log.warning("recipient %s: bad %s %s in %s", rcpt, param[8:11], value, param)
        return CONFIG_ERROR
    return n


async def deliver_one(req: DeliveryRequest, rcpt: Recipient) -> Outcome:
    cfg = req.cfg
    addr = rcpt.address
    looped = loop_outcome(req.content, addr)
    if looped is not None:
        return looped
    keys = virtual_keys(addr, cfg.get("recipient_delimiter"), local_domain=False)
    try:
        found = lookup_tables(cfg, "virtual_mailbox_maps", keys, log.warning, paranoid=True)
        if found is None:
            return Outcome("5.1.1", f'unknown user: "{addr.lower()}"')
        uid = _id(cfg, "virtual_uid_maps", keys, addr)
        gid = _id(cfg, "virtual_gid_maps", keys, addr)
    except LookupFailed:
        return Outcome("4.3.0", "temporary lookup failure")
    if isinstance(uid, Outcome):
        return uid
    if isinstance(gid, Outcome):
        return gid
    if uid is not None and uid < cfg.get_int("virtual_minimum_uid"):
        log.warning("recipient %s: bad uid %d in virtual_uid_maps", addr, uid)
        return CONFIG_ERROR
    if gid is not None and gid <= 0:
        log.warning("recipient %s: bad gid %d in virtual_gid_maps", addr, gid)
        return CONFIG_ERROR
    ids = (uid, gid if gid is not None else uid) if uid is not None else None
    found = found.strip()
    base = cfg.path("virtual_mailbox_base")
    try:
        path = mailbox.resolve_under(base, found)
    except ValueError as e:
        status, text = e.args
        log.warning("recipient %s: %s", addr, text)
        return Outcome(status, "mail system configuration error")
    if req.envelope.trace_only:
        return would_deliver(found)
    prefix = prefix_headers(req.envelope.sender, addr, rcpt.original or addr)
    limit = cfg.get_int("virtual_mailbox_limit")
    size = len(prefix) + len(req.content)
    if found.endswith("/"):
        if limit and size > limit:
            return Outcome(
                "5.2.2", "maildir delivery failed: error writing message: File too large"
            )
        return await maildir(path, prefix, req.content, ids, cfg)
    try:
        current = os.path.getsize(path)
    except OSError:
        current = 0
    if limit and current + size > limit:
        return Outcome(
            "5.2.2", f"delivery failed to mailbox {path}: error writing message: File too large"
        )
    out = await mbox(
        path,
        req.envelope.sender,
        prefix,
        req.content,
        lock_options(cfg, "virtual_mailbox_lock"),
        ids,
        cfg,
    )
    if not out.delivered:
        return Outcome(out.status, f"delivery failed to mailbox {path}: {out.text}")
    return out


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    # A loop, not an async comprehension: that is a coroutine more per delivery.
    outcomes = []
    for rcpt in req.recipients:
        outcomes.append(await deliver_one(req, rcpt))
    return outcomes
