"""verify_clnt - what smtpd and qmgr ask the verify(8) server

query(cfg, address) → (status, text): what the server knows of an address (STAT_OK,
STAT_DEFER, STAT_BOUNCE, or STAT_TODO while its probe is under way, with "Address
verification in progress"); the server sends a probe when it knows nothing or its
knowledge needs a refresh. update(cfg, address, status, text): qmgr's report of a probe's
outcome (Postfix's verify_append()). One connection per request to
$queue_directory/private/$address_verify_service_name, in the plain name=value protocol of
anvil (read_attrs, attr_bytes).

Diagnostics: None when the server cannot be reached or answers nothing useful; the caller
says so (smtpd: "warning: verify service failure", as Postfix's).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from oxipost.anvil.client import attr_bytes, read_attrs

if TYPE_CHECKING:
    from oxipost.config import Config

# Postfix's DEL_RCPT_STAT_* (deliver_request.h): what a probe found.
STAT_OK = 0
STAT_DEFER = 1
STAT_BOUNCE = 2
STAT_TODO = 3


def socket_path(cfg: Config) -> str:
    service = cfg.get("address_verify_service_name")
    return os.path.join(cfg.path("queue_directory"), "private", service)


async def _ask(cfg: Config, attrs: dict[str, object]) -> dict[str, str] | None:
    timeout = cfg.get_time("ipc_timeout")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(socket_path(cfg))
            try:
                writer.write(attr_bytes(attrs))
                await writer.drain()
                return await read_attrs(reader)
            finally:
                writer.close()
    except (OSError, ValueError, TimeoutError):
        return None


async def query(cfg: Config, address: str) -> tuple[int, str] | None:
    """The server's (status, text) for address; None when it cannot be asked."""
    answer = await _ask(cfg, {"request": "query", "address": address})
    try:
        if answer is None or int(answer["status"]) != 0:
            return None
        return int(answer["recipient_status"]), answer.get("reason", "")
    except (KeyError, ValueError):
        return None


async def update(cfg: Config, address: str, status: int, text: str) -> bool:
    """Tell the server what a probe of address found; False when it could not be told."""
    request = {"request": "update", "address": address, "recipient_status": status}
    answer = await _ask(cfg, {**request, "reason": text})
    return answer is not None and answer.get("status") == "0"
