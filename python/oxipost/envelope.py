"""The message as it flows smtpd → cleanup → spool → qmgr → agent, and the outcome back.

These are the shared shapes between the roles (Postfix's queue-file records, as Python
values): what a queue file carries, and what a delivery attempt reports. Every role uses
these and no other representation; the spool serialises them with msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Recipient:
    """One envelope recipient (Postfix's R/O/N records)."""

    address: str
    # The address as first received, before virtual/canonical rewriting (the O record).
    original: str = ""
    # DSN NOTIFY (RFC 3461): empty means the default (FAILURE, DELAY); {"NEVER"} is exclusive.
    notify: frozenset[str] = frozenset()
    # DSN ORCPT as given by the client, e.g. "rfc822;user@example.com".
    orcpt: str = ""


@dataclass(slots=True)
class Envelope:
    """Everything a queue file carries besides the content."""

    sender: str
    recipients: list[Recipient]
    arrival_time: float
    # DSN envelope parameters (RFC 3461) from MAIL FROM.
    envid: str = ""
    ret: str = ""  # "", "FULL" or "HDRS"
    body_type: str = ""  # "", "7BIT", "8BITMIME" or "BINARYMIME"
    smtputf8: bool = False
    # Client attributes, as Postfix logs and stores them (the A records).
    client_name: str = ""
    client_addr: str = ""
    client_port: int = 0
    helo_name: str = ""
    protocol: str = ""  # "SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "UTF8ESMTP", ... as in Received:
    sasl_method: str = ""
    sasl_username: str = ""
    # Anything else a role needs to carry through the queue (Postfix's named attributes).
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Outcome:
    """What a delivery attempt did for one recipient: (dsn status, permanent?, text).

    status is the enhanced code ("2.0.0" sent, "4.x.x" deferred, "5.x.x" bounced); text is
    what Postfix puts in parentheses after status=sent|deferred|bounced in the log.
    """

    status: str
    text: str
    # Where the attempt went, as Postfix logs relay=: "mx.example.com[192.0.2.1]:25" from
    # smtp/lmtp once connected; "" when the agent has none (qmgr logs its own).
    relay: str = field(default="", compare=False)

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")

    @property
    def delivered(self) -> bool:
        return self.status.startswith("2")
