"""discard(8): report every recipient delivered, with the nexthop as the text.

As Postfix's discard(8): `discard:silently` logs "status=sent (silently)"; an optional
leading enhanced status in the nexthop replaces the default 2.0.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oxipost.delivery.dsn import dsn_split
from oxipost.envelope import Outcome

if TYPE_CHECKING:
    from oxipost.delivery import DeliveryRequest


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    status, text = dsn_split("2.0.0", req.nexthop)
    return [Outcome("2" + status[1:], text)] * len(req.recipients)
