"""qmgr - the queue manager: delivers queued mail through the delivery agents.

qmgr is the queue's one state writer (it holds the spool's state lock). At start and every
`queue_run_delay` it scans the queue; smtpd and pickup wake it over the control socket
(`$queue_directory/public/qmgr`) when they queue mail. Each message becomes active (`QID:
from=<sender>, size=N, nrcpt=N (queue active)`), its recipients are resolved to
`transport:nexthop` by trivial-rewrite (`oxipost.rewrite.resolve`; a header_checks REDIRECT
sends one of them to its target and leaves the others, as Postfix's qmgr), and the scheduler
(`oxipost.qmgr.scheduler`, Postfix's SCHEDULER_README semantics) hands out deliveries that
run concurrently as asyncio tasks through `oxipost.delivery.deliver`. Each attempt is logged
as the delivery agent would log it (`postfix/smtp[pid]: QID: to=<...>, relay=..., delay=...,
delays=a/b/c/d, dsn=X.Y.Z, status=sent|deferred|bounced (...)`), a recipient that local(8)
expanded as one line per member it delivered, bounced or deferred (Outcome.entries), with
the bounced members in the bounce notice. Finished recipients are
crossed off in the journal; a message with deferred recipients waits in the deferred queue
for its backoff; bounced and expired recipients get a non-delivery notice
(`oxipost.bounce`), delayed ones a delay notice once; a finished message is removed
(`QID: removed`). A bounce or success notice that cannot be built or queued (`QID:
status=deferred (bounce failed)`) leaves its recipients crossed off in the message's notice
log (Postfix's bounce/QID and trace/QID logfiles): the next pass sends the notice from it.

Control requests (see oxipost.qmgr.control): wakeup, flush (postqueue -f), flush-site
(postqueue -s, ETRN), flush-id (postqueue -i), super (postsuper while qmgr runs).
SIGUSR1 wakes it; SIGHUP (postfix reload) makes it finish what is in flight and exit so
the next generation, with the new configuration, takes over the queue; SIGTERM exits now
(mail in flight is retried: a delivery may repeat, none is lost).

Agent failures, as Postfix 3.7's qmgr: a transport whose agent cannot be reached (no
master.cf service, nothing listening on private/NAME) is throttled for
`transport_retry_time` (`warning: connect to transport private/NAME: STRERROR`): its mail,
waiting and new, is deferred without an attempt ("4.3.0 mail transport unavailable",
logged by the retry service's agent, relay=none) until then, or until an agent of that
transport answers, or a flush; other transports go on. An agent that dies before it
answers (`warning: private/NAME socket: malformed response`) leaves its recipients
deferred without a line of their own and throttles nothing: master's bad-startup throttle
holds back an agent that keeps dying. Mail deferred without an attempt (dead destination,
throttled transport, defer_transports) is logged by the retry service's agent.

Flow control: after each turn of its loop qmgr tops up the in_flow_delay tokens smtpd and
pickup take (oxipost.flow), as Postfix's qmgr_loop does; held mail (in the hold queue from
its record on, as Postfix's cleanup writes it there) earns none (its receiver gave its token
back).

Diagnostics: `fatal: the queue is being managed by another process (is qmgr running?)`
when a second qmgr starts; `warning: open QUEUE QID: STRERROR` for a message whose read
failed (EIO, out of descriptors: it stays queued and is tried again by the next queue run);
`warning: QID: WHY` and `warning: saving corrupt file "QID" from queue "QUEUE" to queue
"corrupt"` for a message that reads but does not decode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import msgpack

# Everything qmgr may use is imported here, while master's child loads this module, not on
# first use: qmgr then drops to mail_owner, who may not be able to read the interpreter's
# own tree (a Python under /root), and a later import fails ("No module named ...").
from oxipost import bounce, runloop, verify
from oxipost.cleanup.state import open_cleanup_tables
from oxipost.config import Config, load_config
from oxipost.delivery import AgentFatal, DeliveryRequest, TransportUnavailable, deliver
from oxipost.delivery.address import log_form, orig_to
from oxipost.envelope import (
    TRACE_MTA_VRFY,
    Entry,
    Envelope,
    Outcome,
    Recipient,
    outcome_from_list,
    outcome_to_list,
)
from oxipost.flow import FlowPipe, FlowProducer
from oxipost.log import Logger, format_tv, get_logger
from oxipost.maps import TableError
from oxipost.pickup.maildrop import requeue
from oxipost.qmgr.control import flush_site_ok
from oxipost.qmgr.queue import (
    LOGFILE_QUEUES,
    Deferral,
    MessageInfo,
    Queue,
    QueueBusy,
    QueueState,
    QueueWriteError,
    in_queues,
)
from oxipost.qmgr.scheduler import Batch, Event, Scheduler
from oxipost.rewrite.resolve import open_rewrite_tables, resolve
from oxipost.rewrite.rewrite import rewrite_address
from oxipost.verify import client as verify_client
from oxipost.verp import verp_sender

if TYPE_CHECKING:
    from oxipost.master.context import ServiceContext

# How long a new qmgr waits for the state lock: across a reload, the old generation is
# finishing its deliveries; a second qmgr beside a running one gives up after this.
LOCK_WAIT = 30.0
# On reload, deliveries still running after this long are cut (they will be retried).
DRAIN_LIMIT = 10.0
# A segment untouched this long whose messages are mostly finished has its live ones moved
# forward, so long-deferred mail does not pin old segments (seconds).
COMPACT_AFTER = 3600.0
COMPACT_EVERY = 300.0
# A control client's request: read within this many seconds, at most this many bytes.
CONTROL_TIMEOUT = 30.0
CONTROL_MAX = 1 << 20
# qmgr's requests in Postfix's trigger protocol (qmgr.h): scan all queues, the deferred
# queue, incoming; flush the dead destinations; the generic wakeup. None starts a msgpack map.
_TRIGGERS = frozenset(bytes([c]) for c in b"ADIFW")
# Agents whose log lines say relay=none (Postfix's error and discard agents).
_NO_RELAY = {"error", "discard", "retry"}
# An agent that died before it answered (Postfix's DELIVER_STAT_CRASH).
CRASHED = Outcome("4.3.0", "unknown mail transport error")
# A transport whose agent cannot be reached, while it is throttled.
UNAVAILABLE = Outcome("4.3.0", "mail transport unavailable")
# What Postfix's qmgr logs (`QID: status=deferred (...)`) when bounce(8) cannot send a
# notice of this kind, by experiment with Postfix 3.7.
_NOTICE_FAILED = {
    "failure": "bounce failed",
    "success": "trace failed",
    "verify": "trace failed",
    "delay": "delay warning failed",
}


@dataclass(slots=True)
class Active:
    """One message in the active queue: its envelope, never its content. As Postfix's
    qmgr, which reads only the envelope records: 20000 active messages (the default
    qmgr_message_active_limit) must not mean 20000 messages in memory. Content is read
    from the queue when a delivery or a notice needs it, and dropped after."""

    qid: str
    msg: int
    env: Envelope
    activated: float
    # rcpt index → (transport, nexthop)
    route: dict[int, tuple[str, str]] = field(default_factory=dict)
    deferred: dict[int, Outcome] = field(default_factory=dict)
    bounced: dict[int, tuple[Outcome, str]] = field(default_factory=dict)
    success_notify: dict[int, tuple[Outcome, str]] = field(default_factory=dict)
    # A probe's (Envelope.trace_only) outcomes and relays: what the agents would have done.
    traced: dict[int, tuple[Outcome, str]] = field(default_factory=dict)
    # delay_warning_time has passed: a delay notice goes with this pass's other notices.
    warn: bool = False
    # A header_checks REDIRECT (the queue file's redirect_to): the one recipient this pass
    # delivers, by its index, with the target address.
    redirect: tuple[int, Recipient] | None = None


def _sort_key(item: tuple[int, Recipient]) -> tuple[bool, str, str]:
    """A recipient's place in qmgr_message_sort()'s order within a destination: by domain
    from the last '@' in any case, those without one last, then by address."""
    address = item[1].address
    at = address.rfind("@")
    return at < 0, address[at:].lower() if at >= 0 else "", address


def _redirected(
    cfg: Config, pending: list[tuple[int, Recipient]], target: str
) -> tuple[int, Recipient]:
    """Postfix's qmgr_message_resolve() for a queue file with redirect_to: the first of
    the recipients in qmgr_message_sort()'s order alone goes to the target in canonical
    form, keeping its original recipient, DSN ORCPT and NOTIFY; the others go nowhere."""
    idx, first = min(pending, key=_sort_key)
    return idx, replace(first, address=rewrite_address(cfg, target))


def _site_failure(outcomes: list[Outcome]) -> tuple[str, str] | None:
    """A delivery whose every recipient deferred because the destination failed (the agent
    says so, as Postfix's smtp_site_fail does for a greeting refused, or the status is a
    network/routing one, 4.4.x) failed at the site: the destination, not the recipients,
    is the problem. Its (status, text) is what the site's other mail is deferred with if
    this makes it dead."""
    if outcomes and all(
        o.status.startswith("4") and (o.site or o.status.startswith("4.4.")) for o in outcomes
    ):
        return outcomes[0].status, outcomes[0].text
    return None


def _defer_reason(act: Active, default: str) -> str:
    """The reason mailq lists a deferred message's recipients with: the last deferral's."""
    return next(reversed(act.deferred.values())).text if act.deferred else default


def _deferrals(act: Active) -> list[tuple[int, Deferral]]:
    """The pass's deferred recipients as the queue keeps them (Postfix's defer logfile):
    an alias's or .forward's by the members it deferred."""
    return [
        (
            i,
            Deferral(
                o.status,
                o.text,
                o.diagnostic,
                tuple(
                    (e.address, e.original, e.status, e.text, e.diagnostic)
                    for e in o.entries
                    if e.status.startswith("4")
                ),
            ),
        )
        for i, o in act.deferred.items()
    ]


def _kind(status: str) -> str:
    """The status= word of a delivery attempt with this enhanced status code."""
    return "sent" if status.startswith("2") else "bounced" if status.startswith("5") else "deferred"


def _delay_resolution(cfg: Config, log: Logger) -> int:
    """delay_logging_resolution_limit, checked as Postfix's get_mail_conf_int() and
    format_tv() check it."""
    n = cfg.get_int("delay_logging_resolution_limit")
    if n > 6:
        log.fatal(f"invalid delay_logging_resolution_limit parameter value {n} > 6")
    if n < 0:
        log.panic(f"format_tv: bad maximum decimal count {n}")
    return n


class Qmgr:
    """The queue manager's state; `run()` is its event loop."""

    def __init__(
        self,
        cfg: Config,
        log: Logger,
        state: QueueState,
        flow: FlowPipe | None = None,
        used: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.state = state
        # Tells master a request was served (ServiceContext.used).
        self.used = used or (lambda: None)
        if cfg.get_time("bounce_queue_lifetime") > cfg.get_time("maximal_queue_lifetime"):
            log.warning(
                "bounce_queue_lifetime is larger than maximal_queue_lifetime - adjusting "
                "bounce_queue_lifetime"
            )
        self.sched = Scheduler(cfg)
        self.active: dict[int, Active] = {}
        self.ids: dict[str, int] = {}
        self._last_id = 0
        self.qids: dict[int, str] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self.draining = False
        self._agent_logs: dict[str, Logger] = {}
        # Each transport's relay= for its agent's lines, from master.cf: looked up once per
        # configuration (reconfigure() starts again), not once a delivery.
        self._relays: dict[str, str] = {}
        self._writer: Queue | None = None
        self.next_scan = 0.0
        self.next_compaction = 0.0
        self.flow = FlowProducer(flow, cfg)
        self.delay_res = _delay_resolution(cfg, log)
        self.log_external = cfg.get("info_log_address_format") == "external"
        # Incoming mail left behind by the last scan because the active queue was full, in
        # arrival order.
        self.incoming_backlog: dict[str, None] = {}
        # The next walk of the whole queue (at start, then every queue_run_delay).
        self.next_full_scan = 0.0

    # Identities ---------------------------------------------------------------------------

    def _id(self, qid: str) -> int:
        n = self.ids.get(qid)
        if n is None:
            self._last_id += 1
            n = self._last_id
            self.ids[qid] = n
            self.qids[n] = qid
        return n

    def _command(self, transport: str) -> str:
        """The delivery agent a transport runs (master.cf's command), by its name."""
        try:
            return self.cfg.service(transport).command.rsplit("/", 1)[-1]
        except KeyError:
            return transport

    def _agent_log(self, transport: str) -> Logger:
        """The logger a delivery agent would use: postfix/<command>[pid]."""
        log = self._agent_logs.get(transport)
        if log is None:
            log = get_logger(self._command(transport), self.cfg)
            self._agent_logs[transport] = log
        return log

    # Scanning -----------------------------------------------------------------------------

    def scan(self, now: float, full: bool = False) -> int:
        """Pick up new messages, and with `full` walk the whole queue for mail that came
        back from elsewhere (deferred mail a previous qmgr left, requeued mail); return how
        many activated. A wakeup (one per burst of new mail) looks at the new messages and
        those left waiting for room in the active queue only: a walk of every message per
        wakeup would cost qmgr in proportion to its deferred backlog."""
        new = self.state.refresh()
        # Compaction walks every message and segment: not on every wakeup-driven scan.
        if now >= self.next_compaction:
            self.next_compaction = now + COMPACT_EVERY
            try:
                moved = self.state.compact_forward(COMPACT_AFTER)
            except (OSError, QueueWriteError) as e:
                self.log.warning(f"queue compaction: {e}")
            else:
                if moved:
                    self.log.info(f"queue compaction: moved {moved} messages forward")
        count = 0
        limit = self.cfg.get_int("qmgr_message_active_limit")
        if full:
            infos = list(self.state.messages.values())
        else:
            messages = self.state.messages
            wanted = dict.fromkeys([*self.incoming_backlog, *new])
            infos = [info for qid in wanted if (info := messages.get(qid)) is not None]
        self.incoming_backlog = {}
        for info in infos:
            msg = self._id(info.queue_id)
            if msg in self.active:
                continue
            if info.state == "incoming":
                # Only what enters the active queue counts for in_flow_delay tokens: the
                # receiver gave back the token of held mail, which is never incoming.
                if len(self.active) < limit:
                    if self.activate(info.queue_id, now):
                        count += 1
                else:
                    self.incoming_backlog[info.queue_id] = None
            elif info.state == "deferred" and self.sched.retry_state(msg) is None:
                self._wait_deferred(msg, info)
        return count

    def _wait_deferred(self, msg: int, info: MessageInfo, not_before: float = 0.0) -> None:
        """Schedule a deferred message the scheduler does not know at its next attempt."""
        minimal = self.cfg.get_time("minimal_backoff_time")
        maximal = self.cfg.get_time("maximal_backoff_time")
        # The last delay, as the scheduler chose it (the time queued at the last
        # attempt, within the backoff times): next_attempt is that attempt plus it.
        backoff = max(min((info.next_attempt - info.arrival_time) / 2, maximal), minimal)
        warn = self.cfg.get_time("delay_warning_time")
        warned = warn > 0 and info.next_attempt - backoff >= info.arrival_time + warn
        when = max(info.next_attempt, not_before)
        self.sched.defer_until(msg, info.arrival_time, when, backoff, warned)

    def _room_for_backlog(self) -> bool:
        return bool(self.incoming_backlog) and len(self.active) < self.cfg.get_int(
            "qmgr_message_active_limit"
        )

    def activate(self, qid: str, now: float) -> bool:
        """Move the message into the active queue; False when it did not go there (gone,
        unreadable, or corrupt)."""
        info = self.state.messages.get(qid)
        if info is None:
            return False
        msg = self._id(qid)
        try:
            env, _content = self.state.load(qid)
        except OSError as e:
            # A read that may work later (EIO, EMFILE, ENFILE, a segment not a file for
            # now): the message stays in its queue, as Postfix's qmgr leaves a queue file it
            # cannot open, and is tried again by the next queue run (its backoff and delay
            # notice as they were).
            self.log.warning(f"open {info.state} {qid}: {e.strerror or e}")
            retry = self.sched.retry_state(msg)
            backoff, warned = (retry[1], retry[2]) if retry is not None else (0.0, False)
            self.sched.defer_until(msg, info.arrival_time, self.next_full_scan, backoff, warned)
            return False
        except Exception as e:
            # It reads but does not decode: damaged, kept for inspection.
            self.log.warning(f"{qid}: {e}")
            self.log.warning(
                f'saving corrupt file "{qid}" from queue "{info.state}" to queue "corrupt"'
            )
            self.state.move(qid, "corrupt")
            self.sched.forget(msg)
            return False
        self.state.move(qid, "active")
        pending = info.pending
        self.log.info(
            f"{qid}: from=<{log_form(env.sender, self.log_external)}>, size={info.message_size}, "
            f"nrcpt={env.rcpt_count} (queue active)"
        )
        act = Active(qid, msg, env, now)
        self.active[msg] = act
        if info.notices:
            self._logged_notices(act, info.notices)
        if info.expired:
            self._force_expire(act, info, now)
            return True
        redirect = env.attrs.get("redirect_to")
        if redirect and pending:
            act.redirect = _redirected(self.cfg, pending, redirect)
            pending = [act.redirect]
        rcpts: list[tuple[int, str, str]] = []
        if len(pending) > 1:
            # A delivery's recipients in qmgr_message_sort()'s order: their RCPT TOs, the
            # lines logged and so the notices' and mailq's order.
            pending = sorted(pending, key=_sort_key)
        for idx, rcpt in pending:
            transport, nexthop = self._route(
                rcpt, env.sender, env.filter, env.trace_flags & TRACE_MTA_VRFY
            )
            act.route[idx] = (transport, nexthop)
            queue = rcpt.address if self.sched.recipient_limit(transport) == 1 else nexthop
            rcpts.append((idx, transport, queue))
        # VERP: one recipient a delivery, each with its own sender (Postfix's single_rcpt;
        # its qmgr ignores VERP for the null sender).
        verp = bool(env.verp_delims and env.sender)
        self.sched.insert(msg, env.arrival_time, env.sender == "", rcpts, single_rcpt=verp)
        self.handle_events(now)
        return True

    def _route(
        self, rcpt: Recipient, sender: str, content_filter: str = "", probe: int = 0
    ) -> tuple[str, str]:
        if content_filter:
            # content_filter or a FILTER action (cleanup's "filter" attribute): every
            # recipient goes to that transport:nexthop, as Postfix's qmgr_message_resolve.
            transport, _, nexthop = content_filter.partition(":")
            if not nexthop:
                nexthop = self.cfg.get("default_filter_nexthop")
            return transport, nexthop or rcpt.address.rpartition("@")[2]
        try:
            # An address verification probe goes where address_verify_* say.
            r = resolve(rcpt.address, verify.routing(self.cfg) if probe else self.cfg, sender)
        except Exception as e:
            # A table that failed has said so as Postfix's trivial-rewrite does (its own
            # warnings, "transport_maps lookup failure"); its qmgr adds nothing.
            if not isinstance(e, TableError):
                self.log.warning(f"address resolver failure for {rcpt.address}: {e}")
            # Postfix's retry transport: the error agent with a temporary status.
            return "retry", "4.3.0 address resolver failure"
        return r.transport, r.nexthop

    # Deliveries ---------------------------------------------------------------------------

    def pump(self, now: float) -> None:
        if self.draining:
            return
        for batch in self.sched.next_deliveries(now):
            task = asyncio.get_running_loop().create_task(self.deliver(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.handle_events(now)

    async def deliver(self, batch: Batch) -> None:
        act = self.active[batch.msg]
        started = time.time()
        transport, nexthop = act.route[batch.rcpts[0]]
        recipients = [self._recipient(act, i) for i in batch.rcpts]
        unreachable: str | None = None
        env = act.env
        if env.verp_delims and env.sender:
            # Every agent is given the VERP sender as the sender, as by Postfix's qmgr.
            env = replace(env, sender=verp_sender(env.verp_delims, env.sender, recipients[0]))
        try:
            req = DeliveryRequest(
                act.qid, transport, nexthop, env, recipients, self._content(act), self.cfg
            )
            outcomes = await deliver(req)
        except asyncio.CancelledError:
            raise
        except AgentFatal as e:
            # What Postfix's agent process dies of, logged under its name; qmgr then has
            # no answer from it, as Postfix's qmgr from an agent process that died.
            self._agent_log(transport).fatal_line(str(e))
            outcomes = [CRASHED] * len(recipients)
        except TransportUnavailable as e:
            unreachable = str(e)
            outcomes = [UNAVAILABLE] * len(recipients)
        except Exception as e:
            self.log.warning(f"{act.qid}: delivery via {transport} failed: {e}")
            outcomes = [Outcome("4.3.0", "delivery agent error")] * len(recipients)
        now = time.time()
        # Both are 4.3.0: a delivery that went anywhere is told apart by its first status.
        if outcomes and outcomes[0].status == UNAVAILABLE.status:
            if all(o == UNAVAILABLE for o in outcomes):
                # No master.cf service: Postfix's qmgr finds no private/NAME socket.
                self._unreachable(batch, unreachable or "No such file or directory", now)
                self._defer_unattempted(act, batch, UNAVAILABLE, started, now)
                return
            if all(o == CRASHED for o in outcomes):
                self._crashed(act, batch, now)
                return
        # An agent that answered: a throttle on its transport ends (Postfix's
        # qmgr_deliver_update).
        self.sched.unthrottle_transport(transport)
        relay = self._relay(transport)
        log = self._agent_log(transport)
        results: list[tuple[int, str]] = []
        done: list[int] = []
        probe = act.env.trace_only
        for idx, rcpt, out in zip(batch.rcpts, recipients, outcomes, strict=True):
            kind = _kind(out.status)
            if probe and kind == "deferred":
                # A probe is never retried: a deferral is its answer (undeliverable).
                kind = "bounced"
            # local(8) may have passed the recipient to another transport's agent, whose
            # line it is (Postfix's deliver_pass()).
            agent_log, agent_relay = self._agent(out.agent, log, relay)
            if out.entries:
                self._log_entries(agent_log, act, out, out.relay or agent_relay, started, now)
            else:
                self._log_attempt(
                    agent_log, act, rcpt, out.relay or agent_relay, started, now, out, kind
                )
            results.append((idx, kind))
            if probe:
                # Reported to whoever asked (the trace service's report, or verify(8)'s
                # cache), never bounced.
                self._probed(act, idx, out, out.relay or agent_relay)
                done.append(idx)
                continue
            # An expanded recipient's bounce notice names the members that bounced, with
            # or without others deferred (Postfix's bounce log of the queue file).
            if out.entries:
                bounced = tuple(e for e in out.entries if e.status.startswith("5"))
                if bounced:
                    act.bounced[idx] = (replace(out, entries=bounced), out.relay or agent_relay)
            if kind == "deferred":
                act.deferred[idx] = out
                continue
            if kind == "bounced" and not out.entries:
                act.bounced[idx] = (out, out.relay or agent_relay)
            elif (
                rcpt.notify and "SUCCESS" in {n.upper() for n in rcpt.notify} and not out.dsn_passed
            ):
                act.success_notify[idx] = (out, out.relay or agent_relay)
            # A recipient with a notice to send is crossed off once the notice is queued,
            # or kept in the message's notice log when it cannot be (_notices): never
            # forgotten with the message, never delivered to again.
            if idx not in act.bounced and idx not in act.success_notify:
                done.append(idx)
        if done:
            self._journal(lambda: self.state.cross_off(act.qid, done))
        self.sched.report(batch.id, now, results, None if probe else _site_failure(outcomes))
        self.handle_events(now)
        self.wake.set()

    def _crashed(self, act: Active, batch: Batch, now: float) -> None:
        """The agent died before it answered (Postfix's DELIVER_STAT_CRASH): qmgr warns,
        as Postfix's does on the agent's end of the stream, and defers the recipients
        without a line of their own (the agent logged none, and Postfix's qmgr writes
        none). Neither the destination nor the transport is throttled: master's
        "bad command startup" throttle is what holds back an agent that keeps dying."""
        self.log.warning(f"private/{batch.transport} socket: malformed response")
        for idx in batch.rcpts:
            act.deferred[idx] = CRASHED
        self.sched.report_crash(batch.id, now)
        self.handle_events(now)
        self.wake.set()

    def _unreachable(self, batch: Batch, why: str, now: float) -> None:
        """The transport's agent cannot be reached: throttle the transport for
        transport_retry_time, as Postfix's qmgr_transport_throttle, so that its mail,
        waiting and new, is deferred without an attempt until then, while other
        transports go on. Warned once per throttle (the attempt that found it down)."""
        until = now + self.cfg.get_time("transport_retry_time")
        if self.sched.throttle_transport(
            batch.transport, until, UNAVAILABLE.status, UNAVAILABLE.text
        ):
            self.log.warning(f"connect to transport private/{batch.transport}: {why}")

    def _defer_unattempted(
        self, act: Active, batch: Batch, out: Outcome, started: float, now: float
    ) -> None:
        """Defer a batch that no agent looked at, logged as Postfix's retry(8) agent does
        for the mail its qmgr sends there."""
        log = self._retry_log()
        for idx in batch.rcpts:
            act.deferred[idx] = out
            rcpt = self._recipient(act, idx)
            self._log_attempt(log, act, rcpt, "none", started, now, out, "deferred")
        self.sched.report_crash(batch.id, now)
        self.handle_events(now)
        self.wake.set()

    def _retry_log(self) -> Logger:
        """Postfix's qmgr sends the mail it defers without an attempt (a throttled
        transport, a dead destination, defer_transports) to the retry service, whose
        agent logs the deferral: postfix/error with the stock master.cf."""
        try:
            self.cfg.service("retry")
        except KeyError:
            return self.log
        return self._agent_log("retry")

    def _content(self, act: Active) -> bytes:
        """The message's content for one delivery or notice: kept from the refresh that
        found it while the cache has room, else read from the queue again (the record was
        read whole and checked at activation)."""
        return self.state.load(act.qid)[1]

    def _recipient(self, act: Active, idx: int) -> Recipient:
        if act.redirect is not None and act.redirect[0] == idx:
            return act.redirect[1]
        return self.state.messages[act.qid].recipients[idx]

    def _relay(self, transport: str) -> str:
        relay = self._relays.get(transport)
        if relay is None:
            relay = transport
            # The smtp and lmtp agents name the host they reached (Outcome.relay); none
            # when they reached none.
            if transport in _NO_RELAY or self._command(transport) in ("smtp", "lmtp"):
                relay = "none"
            self._relays[transport] = relay
        return relay

    def _agent(self, agent: str, log: Logger, relay: str) -> tuple[Logger, str]:
        """The logger and default relay= of the transport local(8) passed an address to,
        or (log, relay) when it passed nothing on."""
        if not agent:
            return log, relay
        return self._agent_log(agent), self._relay(agent)

    def _log_entries(
        self, log: Logger, act: Active, out: Outcome, relay: str, started: float, now: float
    ) -> None:
        """A line for each address the agent delivered to, bounced or deferred for one
        queue recipient, and none for the recipient itself (Postfix's local(8) logs the
        members of an alias as it delivers them)."""
        for e in out.entries:
            rcpt = Recipient(e.address, e.original)
            done = Outcome(e.status, e.text, pid=out.pid)
            agent_log, agent_relay = self._agent(e.agent, log, relay)
            self._log_attempt(
                agent_log, act, rcpt, e.relay or agent_relay, started, now, done, _kind(e.status)
            )

    def _log_attempt(
        self,
        log: Logger,
        act: Active,
        rcpt: Recipient,
        relay: str,
        started: float,
        now: float,
        out: Outcome,
        kind: str,
    ) -> None:
        arrival = act.env.arrival_time
        a = max(0.0, act.activated - arrival)
        b = max(0.0, started - act.activated)
        # log_adhoc(): with a network session, its set-up time, then the transmission.
        c = max(0.0, out.setup - started) if out.setup else 0.0
        d = max(0.0, now - (out.setup or started))
        orig = orig_to(rcpt.address, rcpt.original, self.log_external)
        res = self.delay_res
        use = f", conn_use={out.conn_use}" if out.conn_use else ""
        if act.env.trace_only:
            # Postfix's trace_append() logs a probe's outcome with the report's action.
            kind = "deliverable" if out.delivered else "undeliverable"
        log.info(
            f"{act.qid}: to=<{log_form(rcpt.address, self.log_external)}>, "
            f"{orig}relay={relay}{use}, "
            f"delay={format_tv(now - arrival, 2, res)}, delays={format_tv(a, 2, res)}/"
            f"{format_tv(b, 2, res)}/{format_tv(c, 2, res)}/{format_tv(d, 2, res)}, "
            f"dsn={out.status}, status={kind} ({out.text})",
            out.pid,
        )

    def _journal(self, write: Any) -> None:
        try:
            write()
        except Exception as e:
            # The queue keeps the message as it was: the worst case is a repeated delivery.
            self.log.warning(f"queue state write error: {e}")

    # Scheduler events ---------------------------------------------------------------------

    def handle_events(self, now: float) -> None:
        for ev in self.sched.drain_events():
            act = self.active.get(ev.msg)
            if act is None:
                continue
            if ev.kind == "rcpt_deferred":
                self._suspended(act, ev, now)
            elif ev.kind == "done":
                failed = self._notices(act, "failure", act.bounced)
                failed += self._notices(act, "success", act.success_notify)
                # A probe's report is never retried: its recipients are crossed off.
                self._notices(act, "verify", act.traced)
                if failed:
                    self._notice_failed(act, failed, now)
                else:
                    self._finish(act)
            elif ev.kind == "deferred" and act.env.trace_only:
                # Recipients deferred without an attempt (a dead destination, a throttled
                # transport): a probe reports them undeliverable now, never retried.
                for i, o in act.deferred.items():
                    self._probed(act, i, o, "")
                self._notices(act, "verify", act.traced)
                self.sched.forget(act.msg)
                self._finish(act)
            elif ev.kind == "delay_warning":
                act.warn = True
            elif ev.kind == "deferred":
                # In Postfix's qmgr_active_done order: bounces, then the delay warning.
                failed = self._notices(act, "failure", act.bounced)
                failed += self._notices(act, "success", act.success_notify)
                if act.warn:
                    delayed = {i: (o, "") for i, o in act.deferred.items()}
                    if self._notices(act, "delay", delayed):
                        failed.append("delay warning failed")
                        # Not warned: the next pass that defers the message warns again
                        # (Postfix's qmgr updates the warn time only once it was sent).
                        retry = self.sched.retry_state(act.msg)
                        if retry is not None:
                            self.sched.defer_until(
                                act.msg, act.env.arrival_time, retry[0], retry[1], False
                            )
                for why in failed:
                    self.log.info(f"{act.qid}: status=deferred ({why})")
                reason = _defer_reason(act, "")
                deferred = _deferrals(act)
                self._journal(
                    lambda a=act, r=reason, t=ev.time, d=deferred: self.state.defer(a.qid, r, t, d)
                )
                del self.active[act.msg]
            elif ev.kind == "expired":
                self._returned(act, "expired", now)

    def _returned(self, act: Active, status: str, now: float) -> None:
        """An expired message (`status` expired, or force-expired by postsuper) returned
        to its sender, as Postfix's qmgr_active_done: the pass's bounces are flushed first,
        then the deferred recipients are returned in a notice of their own."""
        failed = self._notices(act, "failure", act.bounced)
        self.log.info(
            f"{act.qid}: from=<{log_form(act.env.sender, self.log_external)}>,"
            f" status={status}, returned to sender"
        )
        failed += self._notices(act, "failure", {i: (o, "") for i, o in act.deferred.items()})
        failed += self._notices(act, "success", act.success_notify)
        if failed:
            self._notice_failed(act, failed, now)
        else:
            self._finish(act)

    def _force_expire(self, act: Active, info: MessageInfo, now: float) -> None:
        """A message postsuper -e expired, returned to its sender without a delivery, as
        Postfix 3.7's qmgr does: each recipient with its last deferral when the message was
        deferred (its defer logfile), else all of them through the error agent as
        "4.7.0 message is administratively expired"."""
        # In the order they were deferred, as Postfix reads its defer logfile.
        pending = {idx for idx, _rcpt in info.pending}
        for idx, d in (info.deferrals or {}).items():
            if idx in pending:
                members = tuple(Entry(a, o, s, t, diagnostic=dg) for a, o, s, t, dg in d.members)
                act.deferred[idx] = Outcome(
                    d.status, d.text, diagnostic=d.diagnostic, entries=members
                )
        if not act.deferred:
            expired = Outcome("4.7.0", "message is administratively expired")
            log = self._agent_log("error")
            for idx, rcpt in info.pending:
                act.deferred[idx] = expired
                self._log_attempt(log, act, rcpt, "none", now, time.time(), expired, "deferred")
        self._returned(act, "force-expired", now)

    def _suspended(self, act: Active, ev: Event, now: float) -> None:
        """A recipient deferred without an attempt (dead destination, throttled or held
        transport), with the status the scheduler kept for it: for a dead destination,
        that of the failure that killed it, as Postfix's queue->dsn."""
        rcpt = self._recipient(act, ev.rcpt)
        out = Outcome(ev.status, ev.reason)
        act.deferred[ev.rcpt] = out
        self._log_attempt(self._retry_log(), act, rcpt, "none", now, now, out, "deferred")

    def _finish(self, act: Active) -> None:
        self._journal(lambda: self.state.remove(act.qid))
        self.log.info(f"{act.qid}: removed")
        del self.active[act.msg]
        # A long-running qmgr must not keep every queue ID it ever saw.
        del self.ids[act.qid], self.qids[act.msg]

    def _notice_failed(self, act: Active, failed: list[str], now: float) -> None:
        """A pass that is over but for a notice that could not be queued: as Postfix's
        qmgr when bounce(8) fails, the message is deferred (`QID: status=deferred (bounce
        failed)`) with the backoff of a message the pass deferred, its recipients waiting
        for the notice in its notice log (_log_notice), and the next pass sends it."""
        for why in failed:
            self.log.info(f"{act.qid}: status=deferred ({why})")
        # The scheduler's backoff for a message it defers (finish_message): it let go of
        # this one, done or expired.
        low = self.cfg.get_time("minimal_backoff_time")
        high = max(self.cfg.get_time("maximal_backoff_time"), low)
        backoff = min(max(now - act.env.arrival_time, low), high)
        self.sched.defer_until(act.msg, act.env.arrival_time, now + backoff, backoff)
        # mailq lists the recipients still deferred (expired ones whose notice failed) with
        # their own reason, as Postfix's showq reads it from the defer logfile.
        reason = _defer_reason(act, failed[-1])
        deferred = _deferrals(act)
        self._journal(lambda: self.state.defer(act.qid, reason, now + backoff, deferred))
        del self.active[act.msg]

    def _unsent_trace(self, act: Active) -> None:
        """bounce's line for a trace or success report it sends to no one."""
        get_logger("bounce", self.cfg).info(
            f"{act.qid}: not sending trace/success notification for"
            f" {bounce.unsent_trace(self.cfg, act.env)} message"
        )

    def _notices(self, act: Active, kind: str, which: dict[int, tuple[Outcome, str]]) -> list[str]:
        """Send a notice of this kind for these recipients and cross off those done; what
        Postfix's qmgr says of the notice when it cannot be built or queued ("bounce
        failed"), in a list to add to the pass's, else none."""
        if not which:
            # Postfix's qmgr asks for the trace whenever a recipient has NOTIFY=SUCCESS,
            # and bounce refuses the null sender before it looks for one: said even when
            # nothing was to be reported (relayed to a server with DSN).
            if (
                kind == "success"
                and not act.env.sender
                and any("SUCCESS" in {n.upper() for n in r.notify} for r in act.env.recipients)
            ):
                self._unsent_trace(act)
            return []
        reports = []
        # In the order the recipients were done, as Postfix reads its bounce and defer logs.
        for idx, (out, relay) in which.items():
            # Postfix's Remote-MTA names the host reached, as in relay= less [addr]:port,
            # for a success; a failure's only when the server said it (bounce derives it
            # from "host H said:"), not the client's own (no connection, no SMTPUTF8).
            host = relay.partition("[")[0] if kind == "success" else ""
            remote = f"dns; {host}" if host not in ("", "none", "local", "virtual") else ""
            rcpt = self._recipient(act, idx)
            # Postfix's trace_append(): a success names the relay it went through.
            via = (
                f"delivery via {relay}: " if kind == "success" and relay not in ("", "none") else ""
            )
            if kind == "verify":
                reports += self._verify_reports(act, idx, out, relay)
            elif not out.entries:
                # Mail handed to an SMTP server without DSN: "relayed", with the server's
                # reply (smtp_rcpt_done).
                route = act.route.get(idx, ("", ""))[0]
                relayed = kind == "success" and self._command(route) == "smtp"
                reports.append(
                    bounce.Report(
                        rcpt,
                        replace(out, text=via + out.text),
                        remote_mta=remote,
                        diagnostic=(
                            bounce.remote_diagnostic(out.text) if relayed else out.diagnostic
                        ),
                        action="relayed" if relayed else "",
                    )
                )
            elif kind == "success" and any(e.success for e in out.entries):
                # Relayed on by luser_relay, which leaves NOTIFY alone (unknown.c): each
                # delivery reports itself.
                for e in out.entries:
                    if e.success:
                        member = replace(rcpt, address=e.address, original=e.original)
                        done = Outcome(e.status, via + e.text)
                        reports.append(bounce.Report(member, done, diagnostic=e.diagnostic))
            elif kind == "success":
                # The members were sent on without SUCCESS: the expansion is what reports
                # it (alias.c).
                expanded = Outcome("2.0.0", f"{via}alias expanded")
                reports.append(bounce.Report(rcpt, expanded, action="expanded"))
            else:
                for e in out.entries:
                    if e.status.startswith("4" if kind == "delay" else ("4", "5")):
                        member = replace(rcpt, address=e.address, original=e.original)
                        done = Outcome(e.status, e.text)
                        reports.append(bounce.Report(member, done, diagnostic=e.diagnostic))
        if kind in ("success", "verify") and bounce.unsent_trace(self.cfg, act.env) is not None:
            self._unsent_trace(act)
            self._noticed(act, kind, which)
            return []
        if self._send_notice(act, kind, reports):
            self._noticed(act, kind, which)
            return []
        self._log_notice(act, kind, which)
        return [_NOTICE_FAILED[kind]]

    def _send_notice(self, act: Active, kind: str, reports: list[bounce.Report]) -> bool:
        """Build and queue the notice of these reports; False when it could not be (said
        as Postfix's bounce(8) and cleanup say it)."""
        bounce_log = get_logger("bounce", self.cfg)
        try:
            msgs = []
            env, content = act.env, self._content(act)
            for to, group in self._verp_notices(env, kind, reports):
                msgs += bounce.notices(
                    kind, self.cfg, act.qid, env, content, group, bounce_log.warning, to
                )
        except bounce.TemplateError as e:
            # Fatal to Postfix's bounce daemon (its template file): said as it says it.
            bounce_log.fatal_line(str(e))
            return False
        except Exception as e:
            self.log.warning(f"{act.qid}: cannot build {kind} notice: {e}")
            return False
        what = {
            "failure": "sender non-delivery notification",
            "delay": "sender delay notification",
            "success": "sender delivery status notification",
            "verify": "sender delivery status notification",
        }[kind]
        queued = sent = False
        for env, content in msgs:
            try:
                if self._writer is None:
                    self._writer = Queue.open(self.cfg, writer="qmgr")
                new, cleaned = bounce.queue_notice(self.cfg, self._writer, env, content)
            except Exception as e:
                self.log.warning(f"{act.qid}: cannot queue {kind} notice: {e}")
                break
            # Refused, cleanup logs why (`reject: header ...`) under the notice's ID.
            cleaned.log_notes(bounce_log, new)
            if bounce.cancelled(env):
                continue
            if cleaned.reply is not None:
                break
            queued = True
            notice = what if env.sender == "" else "postmaster " + what.split(" ", 1)[1]
            bounce_log.info(f"{act.qid}: {notice}: {new}")
        else:
            sent = True
        if queued:
            # As cleanup tells qmgr about a new queue file: pick the notice up now.
            self.next_scan = 0.0
            self.wake.set()
        return sent

    def _verp_notices(
        self, env: Envelope, kind: str, reports: list[bounce.Report]
    ) -> list[tuple[str, list[bounce.Report]]]:
        """Whom the sender's notice of each report goes to: a VERP message's failures one
        by one, each to the sender with its recipient in it (Postfix's
        bounce_notify_verp, which copies the postmaster for each too), unless
        disable_verp_bounces; else all to the sender ("")."""
        if kind != "failure" or not (env.verp_delims and env.sender):
            return [("", reports)]
        if self.cfg.get_bool("disable_verp_bounces"):
            return [("", reports)]
        delims = env.verp_delims
        return [(verp_sender(delims, env.sender, r.recipient), [r]) for r in reports]

    def _noticed(self, act: Active, kind: str, which: dict[int, tuple[Outcome, str]]) -> None:
        """Cross off the recipients whose notice is out, but those still deferred (an
        alias's bounced members beside others deferred), and drop the notice log the
        notice was sent from."""
        done = [i for i in which if i not in act.deferred]
        if done and not act.env.trace_only:
            self._journal(lambda: self.state.cross_off(act.qid, done))
        info = self.state.messages.get(act.qid)
        if info is not None and info.notices and kind in info.notices:
            self._journal(lambda: self.state.notice_sent(act.qid, kind))

    def _log_notice(self, act: Active, kind: str, which: dict[int, tuple[Outcome, str]]) -> None:
        """The notice could not be sent: its recipients (not those still deferred, retried
        as Postfix retries its defer log's) go into the message's notice log and are crossed
        off, as Postfix's bounce(8) logfile keeps them with the queue file saying them done.
        The next pass sends the notice from the log and delivers to none of them again."""
        if kind not in ("failure", "success"):
            return
        done = self.state.messages[act.qid].done
        keep = [i for i in which if i not in act.deferred and i not in done]
        if keep:
            logged: list[list[object]] = [
                [i, outcome_to_list(which[i][0]), which[i][1], act.route.get(i, ("", ""))[0]]
                for i in keep
            ]
            self._journal(lambda: self.state.log_notice(act.qid, kind, keep, logged))

    def _logged_notices(self, act: Active, notices: dict[str, list[list[Any]]]) -> None:
        """A previous pass's recipients whose notice is still to be sent: it goes out with
        this pass's notices, as Postfix's qmgr flushes the bounce or trace logfile when the
        message is done with."""
        for kind, logged in notices.items():
            which = act.bounced if kind == "failure" else act.success_notify
            for idx, out, relay, transport in logged:
                which[idx] = (outcome_from_list(out), relay)
                act.route[idx] = (transport, "")

    def _probed(self, act: Active, idx: int, out: Outcome, relay: str) -> None:
        """A probe's outcome for one recipient: kept for the sender's report (sendmail
        -bv), or told to verify(8) for the address as probed (Postfix's verify_append())."""
        if not act.env.trace_flags & TRACE_MTA_VRFY:
            act.traced[idx] = (out, relay)
            return
        rcpt = self._recipient(act, idx)
        status = {"2": verify_client.STAT_OK, "5": verify_client.STAT_BOUNCE}.get(
            out.status[:1], verify_client.STAT_DEFER
        )

        async def tell() -> None:
            address = rcpt.original or rcpt.address
            if not await verify_client.update(self.cfg, address, status, out.text):
                self.log.warning(
                    f"{act.qid}: {self.cfg.get('address_verify_service_name')} service failure"
                )

        task = asyncio.get_running_loop().create_task(tell())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _verify_reports(
        self, act: Active, idx: int, out: Outcome, relay: str
    ) -> list[bounce.Report]:
        """A probe's report lines for one queue recipient: one per address the agent
        expanded it to (an alias's, a .forward's members), else its own; each says what
        would have been done and through which relay (Postfix's trace_append())."""
        rcpt = self._recipient(act, idx)
        route = act.route.get(idx, ("", ""))[0]
        items = [(rcpt, out, relay, route)]
        if out.entries:
            items = [
                (
                    replace(rcpt, address=e.address, original=e.original),
                    Outcome(e.status, e.text),
                    e.relay or (self._relay(e.agent) if e.agent else relay),
                    e.agent or route,
                )
                for e in out.entries
            ]
        reports = []
        for member, done, via, transport in items:
            reached = via not in ("", "none")
            host = via.partition("[")[0]
            remote = reached and self._command(transport) in ("smtp", "lmtp")
            reports.append(
                bounce.Report(
                    member,
                    replace(done, text=(f"delivery via {via}: " if reached else "") + done.text),
                    remote_mta=f"dns; {host}" if remote else "",
                    diagnostic=bounce.remote_diagnostic(done.text) if remote else "",
                    action="deliverable" if done.delivered else "undeliverable",
                )
            )
        return reports

    # Control requests ---------------------------------------------------------------------

    def control(self, req: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        op = req.get("op")
        if op == "wakeup":
            # Scanned by the loop: a burst of wakeups (one per message smtpd queues) costs
            # one scan, not one each.
            self.next_scan = 0.0
            n = 0
        elif op == "flush":
            n = len(self.state.in_queue("deferred"))
            self.sched.flush(now)
        elif op in ("flush-site", "flush-id"):
            site = str(req.get("site", ""))
            if op == "flush-site" and not flush_site_ok(self.cfg, site):
                # Postfix's flush server answers FLUSH_STAT_DENY.
                return {"ok": False, "denied": True, "error": f"{site}: not in fast_flush_domains"}
            ids = self._site_messages(site) if op == "flush-site" else []
            if op == "flush-id":
                # A message no longer queued is flushed as well as can be: nothing to do,
                # and no error (Postfix's flush server answers FLUSH_STAT_OK).
                qid = str(req.get("id", ""))
                ids = [qid] if qid in self.state.messages else []
            self.sched.flush_site(now, site, [self._id(q) for q in ids])
            n = len(ids)
        elif op == "super":
            changed = self._super(req, now)
            self.wake.set()
            return {"ok": True, "count": len(changed), "ids": changed}
        else:
            return {"ok": False, "error": f"unknown request: {op!r}"}
        self.wake.set()
        return {"ok": True, "count": n}

    def _site_messages(self, site: str) -> list[str]:
        site = site.lower().strip("[]")
        out = []
        for info in self.state.in_queue("deferred"):
            for _idx, r in info.pending:
                domain = r.address.rpartition("@")[2].lower()
                if domain == site:
                    out.append(info.queue_id)
                    break
        return out

    def _super(self, req: dict[str, Any], now: float) -> list[str]:
        """postsuper's action on the messages it names that are not in delivery; the IDs
        changed (postsuper reports them, as Postfix's does)."""
        action = req.get("action")
        ids = req.get("ids")
        queues = req.get("queues")
        for logs in queues or ():
            # postsuper -d ALL defer|bounce|trace: the logs go, the messages stay.
            if logs in LOGFILE_QUEUES and action == "delete" and ids == "ALL":
                for qid in list(self.state.messages):
                    if self._id(qid) not in self.active:
                        self.state.drop_log(qid, logs)
        infos = [i for i in self.state.messages.values() if in_queues(i.state, queues)]
        if ids != "ALL":
            wanted = set(ids or [])
            infos = [i for i in infos if i.queue_id in wanted]
        changed = []
        for info in infos:
            msg = self._id(info.queue_id)
            if msg in self.active:
                continue  # in delivery now; Postfix's postsuper also leaves active mail alone
            qid = info.queue_id
            if action == "delete":
                self.state.remove(qid)
            elif action == "expire" and not info.expired and info.state != "corrupt":
                # Returned at its next pass (Postfix's qmgr sees the flag as it opens it).
                self.state.expire(qid)
            elif action == "hold" and info.state != "hold":
                self.state.move(qid, "hold")
            elif action == "release" and info.state == "hold":
                # Into the deferred queue, as Postfix's postsuper moves the file, without
                # waking anyone: it goes at the next queue scan, or at its next retry time
                # if that is later (the file's time, kept through the hold).
                self.state.move(qid, "deferred")
                self._wait_deferred(msg, info, self.next_full_scan)
            elif action == "requeue" and info.state != "corrupt":
                requeue(self.state, qid)
            else:
                continue
            if action not in ("release", "expire"):
                self.sched.forget(msg)
            changed.append(qid)
        return changed

    def control_reply(self, data: bytes) -> bytes:
        """The answer to the first request in what a control client sent (ValueError if
        it does not decode)."""
        if data[:1] in _TRIGGERS:
            # Postfix's trigger letters (postkick public qmgr A): a scan of all queues ('A',
            # as postqueue -f sends it with F, D and I) is a flush, the others a wakeup.
            return msgpack.packb(self.control({"op": "flush" if b"A" in data else "wakeup"}))
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=CONTROL_MAX)
        unpacker.feed(data)
        reply: dict[str, Any] = {"ok": False, "error": "empty request"}
        for req in unpacker:
            try:
                reply = self.control(dict(req))
            except Exception as e:  # the reply says what went wrong; qmgr keeps running
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            break
        return msgpack.packb(reply, use_bin_type=True)

    # The loop -----------------------------------------------------------------------------

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg
        self.log_external = cfg.get("info_log_address_format") == "external"
        self.sched.reconfigure(cfg)
        self._agent_logs.clear()
        self._relays.clear()

    async def run(self, listen: socket.socket | None) -> int:
        loop = asyncio.get_running_loop()
        server = None
        if listen is not None:
            server = await loop.create_unix_server(lambda: _ControlClient(self), sock=listen)
        journal_fd = self.state.write_behind()
        loop.add_reader(journal_fd, self._journal_results)
        stop = asyncio.Event()

        def _stop() -> None:
            stop.set()
            self.wake.set()

        runloop.on_signals(
            {
                signal.SIGTERM: _stop,
                signal.SIGINT: _stop,
                signal.SIGHUP: self._drain,
                signal.SIGUSR1: self._wakeup,
            }
        )
        delay = self.cfg.get_time("queue_run_delay")
        try:
            while not stop.is_set():
                now = time.time()
                fed = 0
                if self.draining:
                    if not self.tasks:
                        break
                elif now >= self.next_scan or self._room_for_backlog():
                    full = now >= self.next_full_scan
                    if full:
                        self.next_full_scan = now + delay
                    fed = self.scan(now, full)
                    self.next_scan = self.next_full_scan
                for msg in self.sched.take_due(now):
                    qid = self.qids.get(msg)
                    if qid is not None and not self.draining:
                        self.activate(qid, now)
                self.pump(now)
                self.flow.refill(fed, bool(self.incoming_backlog))
                wakeup = self.sched.next_wakeup()
                until = min(self.next_scan, wakeup if wakeup is not None else self.next_scan)
                if self.draining:
                    until = min(until, self._drain_deadline)
                    if now >= self._drain_deadline:
                        break
                self.wake.clear()
                # Woken by new work, a stop (which sets wake too) or the timer: no task per
                # wait, as asyncio.wait() on the two events made (three tasks and their
                # cancellations a turn, and a busy qmgr turns about once a message).
                timer = loop.call_later(max(0.0, until - time.time()), self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()
        finally:
            loop.remove_reader(journal_fd)
            if server is not None:
                server.close()
            for t in list(self.tasks):
                t.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            if self._writer is not None:
                self._writer.close()
        return 0

    _drain_deadline = 0.0

    def _journal_results(self) -> None:
        for error in self.state.journal_errors():
            # The queue keeps the message as it was: the worst case is a repeated delivery.
            self.log.warning(f"queue state write error: {error}")

    def _drain(self) -> None:
        self.draining = True
        self._drain_deadline = time.time() + DRAIN_LIMIT
        self.wake.set()

    def _wakeup(self) -> None:
        self.next_scan = 0.0
        self.wake.set()


class _ControlClient(asyncio.Protocol):
    """One client of the control socket: its first read is its request (up to
    CONTROL_MAX bytes, within CONTROL_TIMEOUT), answered, then the connection closes; a
    request that does not decode closes it unanswered. A protocol, not a stream server:
    smtpd's wakeups come every few messages, and the streams, the task and the timeout
    task that each client cost were a tenth of qmgr's time."""

    def __init__(self, qmgr: Qmgr) -> None:
        self.qmgr = qmgr
        self.transport: asyncio.WriteTransport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes.
        transport = cast(asyncio.WriteTransport, transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(CONTROL_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        self._answer(data[:CONTROL_MAX])

    def eof_received(self) -> bool:
        self._answer(b"")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _answer(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # answered already, or timed out
        if self.timer is not None:
            self.timer.cancel()
        try:
            reply = self.qmgr.control_reply(data)
        except ValueError:
            transport.close()
            return
        # Before the answer: a client that has it knows master counts this qmgr as used,
        # as Postfix's trigger server reports each trigger (no restart throttle if it dies).
        self.qmgr.used()
        transport.write(reply)
        transport.close()


def open_state(cfg: Config, log: Logger, lock_wait: float) -> QueueState:
    """Take the state writer's lock, waiting up to lock_wait seconds (a reload hands over)."""
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return QueueState(cfg, lock=True, log=log)
        except QueueBusy as e:
            if time.monotonic() >= deadline:
                log.fatal(str(e))
            time.sleep(0.2)


def serve(
    cfg: Config,
    log: Logger,
    listen: socket.socket | None,
    lock_wait: float,
    flow: FlowPipe | None = None,
    used: Callable[[], None] | None = None,
) -> int:
    state = open_state(cfg, log, lock_wait)
    for problem in state.problems:
        log.warning(problem)
    # What Postfix's qmgr asks of trivial-rewrite, and its bounces of cleanup.
    open_rewrite_tables(cfg, log.for_program("trivial-rewrite"))
    open_cleanup_tables(cfg, log.for_program("cleanup"))
    try:
        return runloop.run(Qmgr(cfg, log, state, flow, used).run(listen))
    finally:
        state.close()


def main(ctx: ServiceContext) -> int:
    """Entry point under master: ctx.listen_socket is public/qmgr."""
    return serve(ctx.cfg, ctx.log, ctx.listen_socket, LOCK_WAIT, ctx.flow, ctx.used)


def bind_control(cfg: Config) -> socket.socket:
    """Bind public/qmgr ourselves (standalone runs and tests; master binds it otherwise)."""
    from oxipost.qmgr.queue import queue_dirs

    path = os.path.join(queue_dirs(cfg), "public", "qmgr")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(100)
    return sock


def standalone(argv: list[str] | None = None) -> int:
    """`python -m oxipost.qmgr.service [-c dir] [--lock-wait N]`: qmgr without master."""
    p = argparse.ArgumentParser(prog="qmgr")
    p.add_argument("-c", dest="config_dir")
    p.add_argument("--lock-wait", type=float, default=LOCK_WAIT)
    args = p.parse_args(argv)
    base = load_config(args.config_dir)
    try:
        cfg = base.for_service("qmgr")
    except KeyError:
        cfg = base
    log = get_logger("qmgr", cfg, echo_stderr=True)
    for warning in base.read_warnings():
        log.warning(warning)
    state_log = log
    # Lock first, bind after: a refused second qmgr must not steal the running one's socket.
    state = open_state(cfg, state_log, args.lock_wait)
    for problem in state.problems:
        log.warning(problem)
    listen = bind_control(cfg)
    try:
        return runloop.run(Qmgr(cfg, log, state).run(listen))
    finally:
        state.close()


if __name__ == "__main__":
    sys.exit(standalone())
