"""Delivery agents: local, virtual, smtp, lmtp, pipe, error, discard.

qmgr hands one `DeliveryRequest` (one message, the recipients for one transport:nexthop)
to `deliver()`, which picks the agent by the master.cf command of the service named by
the transport (as Postfix's qmgr connects to private/<transport>), runs it with that
service's -o overrides applied, and returns one `Outcome` per recipient, in order. The
agent runs in this process, except local(8), virtual(8) and pipe(8) when this process is
unprivileged and master runs them privileged: then the request goes to their process
over private/<transport> (oxipost.delivery.service).

Diagnostics: a transport with no master.cf entry, or one whose command is not a delivery
agent, defers every recipient with "4.3.0 mail transport unavailable" (Postfix's qmgr
text); an agent that raises defers its recipients with "4.3.0 delivery agent error"
and logs the error, so a bug never loses or bounces mail. A configuration error that
Postfix's agent would die of is raised as AgentFatal (qmgr logs it and defers). An
agent process that cannot be connected to raises TransportUnavailable (qmgr throttles
the transport).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from oxipost.config import Config, Service
from oxipost.envelope import Envelope, Outcome, Recipient

__all__ = ["AGENTS", "AgentFatal", "DeliveryRequest", "TransportUnavailable", "deliver"]

log = logging.getLogger("oxipost.delivery")


@dataclass(slots=True)
class DeliveryRequest:
    """One delivery request: what Postfix's qmgr sends an agent (deliver_request.h)."""

    queue_id: str
    transport: str
    nexthop: str
    envelope: Envelope
    recipients: list[Recipient]
    content: bytes
    cfg: Config


class AgentFatal(Exception):
    """A configuration error that Postfix's agent dies of (msg_fatal), with its text: an
    agent process logs it as fatal and exits, so that qmgr defers the mail as Postfix's
    does; qmgr running the agent itself logs it and defers the recipients."""


class TransportUnavailable(Exception):
    """The transport's agent process cannot be connected to; the text is the reason
    (strerror), as in Postfix's "connect to transport private/NAME: REASON"."""


Agent = Callable[[DeliveryRequest], Awaitable[list[Outcome]]]

# master.cf command → module:function of the agent.
AGENTS: dict[str, str] = {
    "error": "oxipost.delivery.error:deliver",
    "discard": "oxipost.delivery.discard:deliver",
    "pipe": "oxipost.delivery.pipe:deliver",
    "smtp": "oxipost.delivery.smtp:deliver",
    "lmtp": "oxipost.delivery.smtp:deliver",
    "virtual": "oxipost.delivery.virtual:deliver",
    "local": "oxipost.delivery.local:deliver",
}


@dataclass(frozen=True, slots=True)
class _Route:
    """What a transport's deliveries share: its master.cf entry, agent, the -o view of
    the configuration, and what the agent would die of at start."""

    service: Service
    agent: Agent
    view: Config
    fatal: str | None


# Each configuration's routes, made once: a view caches its expanded values, and building
# one per delivery cost qmgr a tenth of its time (finding the service, importing the agent
# and checking its options cost as much again). They live in the configuration
# (Config.derived): a reload brings a new Config, so its routes are new too, and the old
# ones go with it.
_Routes = dict[str, _Route | None]


def _route(cfg: Config, transport: str) -> _Route | None:
    routes = cast(_Routes, cfg.derived.setdefault("delivery", {}))
    if transport in routes:
        return routes[transport]
    try:
        service = cfg.service(transport)
    except KeyError:
        service = None
    agent = _agent(service.command) if service is not None else None
    route = None
    if service is not None and agent is not None:
        view = cfg.for_service(transport)
        route = _Route(service, agent, view, service.option_error())
    routes[transport] = route
    return route


def _agent(command: str) -> Agent | None:
    target = AGENTS.get(command.rsplit("/", 1)[-1])
    if target is None:
        return None
    module, _, func = target.partition(":")
    agent: Agent = getattr(importlib.import_module(module), func)
    return agent


async def deliver(req: DeliveryRequest) -> list[Outcome]:
    """Deliver req to its recipients; one Outcome per recipient, in order."""
    # Not at the top: the package's light modules (address quoting, which sendmail needs
    # through tok822) must not bring in asyncio and the agents' service.
    from oxipost.delivery.service import request, runs_apart

    route = _route(req.cfg, req.transport)
    if route is None:
        return [Outcome("4.3.0", "mail transport unavailable")] * len(req.recipients)
    try:
        path = runs_apart(req.cfg, route.service)
        if path is None:
            # An agent process dies of this at start (child.py); one run here must too.
            if route.fatal:
                raise AgentFatal(route.fatal)
            sub = DeliveryRequest(
                req.queue_id,
                req.transport,
                req.nexthop,
                req.envelope,
                req.recipients,
                req.content,
                route.view,
            )
            outcomes = await route.agent(sub)
        else:
            try:
                outcomes = await request(path, req)
            except OSError as e:
                # request() loses no connection it made without an answer: only the
                # connect itself fails this way.
                raise TransportUnavailable(e.strerror or str(e)) from None
    except (AgentFatal, TransportUnavailable):
        raise
    except Exception:
        log.exception("%s: %s delivery agent failed", req.queue_id, req.transport)
        return [Outcome("4.3.0", "delivery agent error")] * len(req.recipients)
    if len(outcomes) != len(req.recipients):
        log.error("%s: %s returned %d outcomes", req.queue_id, req.transport, len(outcomes))
        return [Outcome("4.3.0", "delivery agent error")] * len(req.recipients)
    return outcomes
