"""qmgr's scheduler: the Rust core (`oxipost._core.sched`) configured from main.cf/master.cf.

`Scheduler.from_config(cfg)` reads Postfix's queue-manager parameters: the backoff timers
(`minimal_backoff_time`, `maximal_backoff_time`), the lifetimes (`maximal_queue_lifetime`,
`bounce_queue_lifetime`), `delay_warning_time`, and per transport the
`<transport>_destination_concurrency_limit`, `_recipient_limit`, `_initial_destination_concurrency`,
`_destination_concurrency_{positive,negative}_feedback`, `_failed_cohort_limit` (each falling
back to its `default_...` parameter), the master.cf process limit, and `defer_transports`.
A transport whose agent cannot be reached is throttled by the caller for
`transport_retry_time` (`throttle_transport`).

Batches and events come back as named records; the core's tuples never leave this module.
Times are seconds as floats, always passed in.

Diagnostics: a bad feedback value raises `oxipost.config.ConfigError` with Postfix's text.
"""

from __future__ import annotations

from dataclasses import dataclass

from oxipost._core import sched as _sched
from oxipost.config import Config, ConfigError

# A message's recipients as insert() takes them: (rcpt index, transport, queue name).
Rcpts = list[tuple[int, str, str]]

__all__ = ["Batch", "Event", "Scheduler"]


@dataclass(frozen=True, slots=True)
class Batch:
    """One delivery: recipients (indexes into the message's list) of one message."""

    id: int
    msg: int
    transport: str
    queue: str  # the destination queue name (nexthop, or the recipient at limit 1)
    rcpts: list[int]


@dataclass(frozen=True, slots=True)
class Event:
    """What the caller must act on.

    kind: "rcpt_deferred" (a recipient deferred without an attempt: rcpt, transport, queue,
    and the DSN status and reason to log it with), "done" (remove the queue file),
    "deferred" (retry at `time`), "expired" (bounce the deferred recipients, remove),
    "delay_warning" (send the notice once).
    """

    kind: str
    msg: int
    rcpt: int = 0
    transport: str = ""
    queue: str = ""
    status: str = ""
    reason: str = ""
    time: float = 0.0


def _param(cfg: Config, transport: str, suffix: str, default: str) -> str:
    """`<transport>_<suffix>` if the registry knows it for this transport, else `default`."""
    try:
        return cfg.get(f"{transport}_{suffix}")
    except KeyError:
        return cfg.get(default)


class Scheduler:
    """The scheduler, configured; transports are set up on first use."""

    def __init__(self, cfg: Config | None = None, **timers: float) -> None:
        self._core = _sched.Scheduler(**timers)
        self._cfg = cfg
        self._configured: set[str] = set()
        if cfg is not None:
            self.reconfigure(cfg)

    @classmethod
    def from_config(cls, cfg: Config) -> Scheduler:
        return cls(cfg)

    def reconfigure(self, cfg: Config) -> None:
        """Apply (re-read) parameters; queued mail and destination state are kept."""
        self._cfg = cfg
        self._core.set_params(
            minimal_backoff=cfg.get_time("minimal_backoff_time"),
            maximal_backoff=cfg.get_time("maximal_backoff_time"),
            maximal_queue_lifetime=cfg.get_time("maximal_queue_lifetime"),
            # Never above maximal_queue_lifetime (qmgr warns at start, as Postfix's).
            bounce_queue_lifetime=min(
                cfg.get_time("bounce_queue_lifetime"), cfg.get_time("maximal_queue_lifetime")
            ),
            delay_warning=cfg.get_time("delay_warning_time"),
        )
        configured, self._configured = self._configured, set()
        for name in configured:
            self._configure(name)

    def _configure(self, transport: str) -> None:
        if transport in self._configured or self._cfg is None:
            return
        cfg = self._cfg
        maxproc = cfg.get_int("default_process_limit")
        for svc in cfg.services:
            if svc.name == transport and svc.type == "unix":
                maxproc = svc.process_limit(maxproc)
                break
        try:
            self._core.set_transport(
                transport,
                concurrency_limit=int(
                    _param(
                        cfg,
                        transport,
                        "destination_concurrency_limit",
                        "default_destination_concurrency_limit",
                    )
                ),
                recipient_limit=int(
                    _param(
                        cfg,
                        transport,
                        "destination_recipient_limit",
                        "default_destination_recipient_limit",
                    )
                ),
                process_limit=maxproc,
                initial_concurrency=int(
                    _param(
                        cfg,
                        transport,
                        "initial_destination_concurrency",
                        "initial_destination_concurrency",
                    )
                ),
                positive_feedback=_param(
                    cfg,
                    transport,
                    "destination_concurrency_positive_feedback",
                    "default_destination_concurrency_positive_feedback",
                ),
                negative_feedback=_param(
                    cfg,
                    transport,
                    "destination_concurrency_negative_feedback",
                    "default_destination_concurrency_negative_feedback",
                ),
                failed_cohort_limit=float(
                    _param(
                        cfg,
                        transport,
                        "destination_concurrency_failed_cohort_limit",
                        "default_destination_concurrency_failed_cohort_limit",
                    )
                ),
                deferred=transport in cfg.get_list("defer_transports"),
            )
        except ValueError as e:
            raise ConfigError(f"{cfg.main_cf}: transport {transport}: {e}") from None
        self._configured.add(transport)

    def recipient_limit(self, transport: str) -> int:
        self._configure(transport)
        return self._core.recipient_limit(transport)

    def insert(
        self, msg: int, arrival: float, null_sender: bool, rcpts: Rcpts, single_rcpt: bool = False
    ) -> None:
        """Activate message `msg` with its recipients; with `single_rcpt` (VERP) each
        recipient is a delivery of its own."""
        for _, transport, _ in rcpts:
            self._configure(transport)
        self._core.insert(msg, arrival, null_sender, rcpts, single_rcpt)

    def defer_until(
        self, msg: int, arrival: float, next_try: float, backoff: float = 0.0, warned: bool = False
    ) -> None:
        self._core.defer_until(msg, arrival, next_try, backoff, warned)

    def forget(self, msg: int) -> None:
        self._core.forget(msg)

    def take_due(self, now: float) -> list[int]:
        return self._core.take_due(now)

    def next_wakeup(self) -> float | None:
        return self._core.next_wakeup()

    def flush(self, now: float) -> None:
        self._core.flush(now)

    def flush_site(self, now: float, site: str, msgs: list[int]) -> None:
        self._core.flush_site(now, site, msgs)

    def next_deliveries(self, now: float, max: int = 1 << 30) -> list[Batch]:
        return [Batch(*b) for b in self._core.next_deliveries(now, max)]

    def report(
        self,
        batch: int,
        now: float,
        results: list[tuple[int, str]],
        site_failure: tuple[str, str] | None = None,
    ) -> bool:
        """Results are (rcpt index, "sent" | "deferred" | "bounced"); missing ones defer.
        site_failure is the (status, text) of a failure of the destination itself, which
        may make it dead: its mail is then deferred with that status."""
        return self._core.report(batch, now, results, site_failure)

    def report_crash(self, batch: int, now: float) -> bool:
        """The batch's agent died before it answered: its recipients defer, and neither
        the destination nor the transport gets feedback (Postfix's DELIVER_STAT_CRASH)."""
        return self._core.report_crash(batch, now)

    def throttle_transport(self, transport: str, until: float, status: str, reason: str) -> bool:
        """Defer the transport's mail, waiting and new, with `status` and `reason` and no
        attempt until `until` (Postfix's qmgr_transport_throttle); False if it was throttled
        already."""
        self._configure(transport)
        return self._core.throttle_transport(transport, until, status, reason)

    def unthrottle_transport(self, transport: str) -> None:
        self._core.unthrottle_transport(transport)

    def transport_throttled(self, transport: str) -> bool:
        return self._core.transport_throttled(transport)

    def drain_events(self) -> list[Event]:
        return [Event(*e) for e in self._core.drain_events()]

    def retry_state(self, msg: int) -> tuple[float, float, bool] | None:
        return self._core.retry_state(msg)

    def queue_state(self, transport: str, queue: str) -> tuple[int, int, bool] | None:
        """(window, active deliveries, dead?) of one destination."""
        return self._core.queue_state(transport, queue)

    @property
    def active_messages(self) -> int:
        return self._core.active_messages()

    @property
    def in_flight(self) -> int:
        return self._core.in_flight()
