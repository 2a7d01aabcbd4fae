"""error(8) and retry: fail every recipient with the nexthop as the reason.

The nexthop may start with an enhanced status ("5.1.1 user unknown"); the `error`
service bounces (default 5.0.0), the `retry` service defers (default 4.0.0), exactly as
Postfix's error(8) picks by its service name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.delivery.dsn import dsn_split
from oxipost.envelope import Outcome

if TYPE_CHECKING:
    from oxipost.delivery import DeliveryRequest


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    retry = req.transport == "retry"
    status, text = dsn_split("4.0.0" if retry else "5.0.0", req.nexthop)
    if retry:
        status = "4" + status[1:]
    elif not status.startswith(("4", "5")):
        status = "5" + status[1:]
    return [Outcome(status, text)] * len(req.recipients)
