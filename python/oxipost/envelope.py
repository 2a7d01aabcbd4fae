"""The message as it flows smtpd → cleanup → spool → qmgr → agent, and the outcome back.

These are the shared shapes between the roles (Postfix's queue-file records, as Python
values): what a queue file carries, and what a delivery attempt reports. Every role uses
these and no other representation; the spool serialises them with msgpack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

# DSN NOTIFY's words (RFC 3461).
NOTIFY_WORDS = frozenset({"NEVER", "SUCCESS", "FAILURE", "DELAY"})


def notify_ok(words: frozenset[str] | set[str]) -> bool:
    """Whether these (upper-case) words are a NOTIFY value, as Postfix's DSN_NOTIFY_OK:
    NEVER alone, or some of the others."""
    return bool(words) and words <= NOTIFY_WORDS and ("NEVER" not in words or len(words) == 1)


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
    # The name the client's address reverse-resolves to, whether or not it is confirmed
    # (client_name is "unknown" then), and the address and port it connected to: kept
    # with the message as Postfix's smtpd keeps them, for postcat.
    reverse_name: str = ""
    server_addr: str = ""
    server_port: int = 0
    helo_name: str = ""
    protocol: str = ""  # "SMTP", "ESMTP", "ESMTPS", "ESMTPSA", "UTF8ESMTP", ... as in Received:
    sasl_method: str = ""
    sasl_username: str = ""
    # The two VERP delimiters (sendmail -XV, MAIL FROM's XVERP): each recipient is sent the
    # message alone, from the sender with its address in it (Postfix's REC_TYPE_VERP
    # record, verp_sender()); "" for none.
    verp_delims: str = ""
    # MAIL FROM's AUTH= value as the client gave it (RFC 4954 section 5), whether or not it
    # authenticated, as Postfix's smtpd keeps it; "" for none or AUTH=<>.
    sasl_sender: str = ""
    # Anything else a role needs to carry through the queue (Postfix's named attributes).
    attrs: dict[str, str] = field(default_factory=dict)
    # The recipients a Milter application deleted (DELRCPT), each after how many of
    # `recipients` it came: Postfix's queue file keeps them in place as canceled recipient
    # records, which postcat shows and nothing delivers.
    canceled: list[tuple[int, Recipient]] = field(default_factory=list)
    # Where the recipients cleanup takes from the header (sendmail -t) or adds at its end
    # (BCC) begin: Postfix queues those after the content, in the extracted segment (postcat's
    # HEADER EXTRACTED); -1 when there are none. Given to cleanup, where pickup's own begin.
    extracted: int = -1

    @property
    def rcpt_count(self) -> int:
        """The recipient records the queue file holds, canceled ones too: what Postfix
        counts in its message_size record and qmgr logs as nrcpt."""
        return len(self.recipients) + len(self.canceled)

    @property
    def filter(self) -> str:
        """The transport:nexthop qmgr sends the message to first: a FILTER action's (the
        "filter" attribute, from the extracted segment in Postfix's queue file), else the
        content_filter smtpd or pickup queued it with (the envelope segment's)."""
        attrs = self.attrs
        return attrs.get("filter") or attrs.get("content_filter", "")

    @property
    def trace_flags(self) -> int:
        """The message's delivery request trace flags (TRACE_*), as its queue file keeps
        them in the "trace_flags" attribute (Postfix's MAIL_ATTR_TRACE_FLAGS)."""
        try:
            return int(self.attrs.get("trace_flags", 0))
        except ValueError:
            return 0

    @property
    def trace_only(self) -> bool:
        """A probe: each agent says what it would do and delivers nothing (Postfix's
        DEL_REQ_TRACE_ONLY)."""
        return bool(self.trace_flags & TRACE_ONLY)


# Postfix's delivery request trace flags (deliver_request.h), with Postfix's values so that
# a queue file's trace_flags reads as Postfix's.
# An address verification probe (verify(8), reject_unverified_*): its outcomes are what
# verify(8) remembers; nothing is delivered and nobody is notified.
TRACE_MTA_VRFY = 1 << 8
# sendmail -bv: nothing is delivered; the sender is mailed what each agent would have done.
TRACE_USR_VRFY = 1 << 9
TRACE_ONLY = TRACE_MTA_VRFY | TRACE_USR_VRFY


@dataclass(slots=True, frozen=True)
class Entry:
    """One address a delivery agent delivered to, bounced or deferred for a queue
    recipient: what Postfix's local(8) logs for each member of an alias or .forward it
    delivers itself (to=<address>, orig_to=<original>), and what a bounce names."""

    address: str
    original: str
    status: str
    text: str
    # The transport whose agent made the attempt and its relay=, when local(8) passed the
    # address on (mailbox_transport, fallback_transport): its line is that agent's.
    agent: str = ""
    relay: str = ""
    # Outcome.diagnostic's.
    diagnostic: str = ""
    # Delivered with NOTIFY=SUCCESS still on (no alias or .forward took it off on the way,
    # as luser_relay does not): its own success report, as Postfix's sent() traces it.
    success: bool = False


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
    # The delivery agent process that made the attempt, whose pid the log line carries;
    # 0 when it ran in the process that logs it.
    pid: int = field(default=0, compare=False)
    # The destination failed, not the recipient (Postfix's smtp_site_fail: no connection,
    # a greeting or handshake refused, TLS that cannot be had): qmgr counts it towards
    # declaring the destination dead, whatever its status.
    site: bool = field(default=False, compare=False)
    # What the agent did for each address the recipient expanded to, as Postfix's local(8)
    # logs one line per member of an alias or .forward and none for the recipient itself;
    # empty when there was no expansion. status and text are then the recipient's as a
    # whole: deferred (its every member retried later) when one member was, else done.
    entries: tuple[Entry, ...] = field(default=(), compare=False)
    # The transport whose agent made the attempt when it is not the one qmgr asked: local(8)
    # passed the recipient on to it (Postfix's deliver_pass(): mailbox_transport,
    # fallback_transport), and the line is that agent's (postfix/lmtp[pid]: ...).
    agent: str = field(default="", compare=False)
    # smtp/lmtp: when the session was ready for the delivery (0: no session), and its use
    # count from the second use on (0 otherwise), for the delays= and conn_use= of the line.
    setup: float = field(default=0.0, compare=False)
    conn_use: int = field(default=0, compare=False)
    # The next hop took the recipient's DSN request (it announced DSN): a success notice is
    # its to send, not ours (Postfix's smtp_rcpt_done).
    dsn_passed: bool = field(default=False, compare=False)
    # A notice's Diagnostic-Code ("type; text") when the agent has one of its own: a
    # command's "x-unix; OUTPUT" (pipe_command.c's dsb_unix); "" lets bounce derive it.
    diagnostic: str = field(default="", compare=False)

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")

    @property
    def delivered(self) -> bool:
        return self.status.startswith("2")


# How msgpack decodes the strings of queue records and agent requests: an address with
# bytes that are not UTF-8 (smtpd takes them as they come with smtputf8_enable = no, as
# Postfix) is a str with surrogate escapes, and comes back as those bytes.
UNICODE_ERRORS = "surrogateescape"


def packb(obj: Any) -> bytes:
    """msgpack.packb, strings with surrogate escapes packed as the bytes they stand for;
    the common case keeps msgpack's fast path (an errors handler would slow every string)."""
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except UnicodeEncodeError:
        return msgpack.packb(obj, use_bin_type=True, unicode_errors=UNICODE_ERRORS)


# The plain form of envelopes and recipients, for msgpack: queue records and the requests
# qmgr sends to a delivery agent process. Fields by name (dataclasses.asdict deep-copies
# and cost more than the commit).
_ENV_FIELDS = tuple(f for f in Envelope.__dataclass_fields__ if f not in ("recipients", "canceled"))


def outcome_to_list(o: Outcome) -> list[object]:
    entries = [
        [e.address, e.original, e.status, e.text, e.agent, e.relay, e.diagnostic, e.success]
        for e in o.entries
    ]
    return [o.status, o.text, o.relay, o.site, entries, o.agent, o.diagnostic]


def outcome_from_list(item: list[object], pid: int = 0) -> Outcome:
    status, text, relay, site, entries, agent, diagnostic = item
    return Outcome(
        str(status),
        str(text),
        str(relay),
        pid,
        site=bool(site),
        entries=tuple(Entry(*e) for e in entries),  # type: ignore[attr-defined]
        agent=str(agent),
        diagnostic=str(diagnostic),
    )


def recipients_to_list(rcpts: list[Recipient]) -> list[list[object]]:
    return [[r.address, r.original, sorted(r.notify), r.orcpt] for r in rcpts]


def recipients_from_list(items: list[list[Any]]) -> list[Recipient]:
    """The recipients recipients_to_list wrote (decoded msgpack: untyped)."""
    return [Recipient(a, o, frozenset(n), c) for a, o, n, c in items]


def envelope_to_dict(env: Envelope) -> dict[str, object]:
    d: dict[str, object] = {f: getattr(env, f) for f in _ENV_FIELDS}
    d["recipients"] = recipients_to_list(env.recipients)
    if env.canceled:
        canceled = recipients_to_list([r for _, r in env.canceled])
        d["canceled"] = [[at, *r] for (at, _), r in zip(env.canceled, canceled, strict=True)]
    return d


def envelope_from_dict(d: dict[str, object]) -> Envelope:
    rcpts = recipients_from_list(d["recipients"])  # type: ignore[arg-type]
    env = Envelope(recipients=rcpts, **{k: d[k] for k in _ENV_FIELDS if k in d})  # type: ignore[arg-type]
    canceled: list[list[Any]] = d.get("canceled") or []  # type: ignore[assignment]
    if canceled:
        found = recipients_from_list([c[1:] for c in canceled])
        env.canceled = [(int(c[0]), r) for c, r in zip(canceled, found, strict=True)]
    return env
