"""oxipost._core.sched: qmgr's scheduler (Postfix SCHEDULER_README semantics), virtual time."""

class Scheduler:
    """Destination queues with concurrency windows, recipient grouping and retry backoff."""

    def __init__(
        self,
        *,
        minimal_backoff: float = 300.0,
        maximal_backoff: float = 4000.0,
        maximal_queue_lifetime: float = 432000.0,
        bounce_queue_lifetime: float = 432000.0,
        delay_warning: float = 0.0,
    ) -> None: ...
    def set_params(
        self,
        *,
        minimal_backoff: float,
        maximal_backoff: float,
        maximal_queue_lifetime: float,
        bounce_queue_lifetime: float,
        delay_warning: float,
    ) -> None:
        """Replace the timers (reload); queued state is kept."""
    def set_transport(
        self,
        name: str,
        *,
        concurrency_limit: int = 20,
        recipient_limit: int = 50,
        process_limit: int = 100,
        initial_concurrency: int = 5,
        positive_feedback: str = "1/concurrency",
        negative_feedback: str = "1/concurrency",
        failed_cohort_limit: float = 1.0,
        deferred: bool = False,
    ) -> None:
        """Set one transport's limits; ValueError for a bad feedback value."""
    def recipient_limit(self, transport: str) -> int:
        """The transport's destination recipient limit."""
    def insert(
        self,
        msg: int,
        arrival: float,
        null_sender: bool,
        rcpts: list[tuple[int, str, str]],
        single_rcpt: bool = False,
    ) -> None:
        """Activate a message with its (rcpt index, transport, queue) recipients; with
        single_rcpt, each recipient in a delivery of its own (VERP)."""
    def defer_until(
        self, msg: int, arrival: float, next_try: float, backoff: float, warned: bool
    ) -> None:
        """Register a message that waits in the deferred queue until next_try."""
    def forget(self, msg: int) -> None:
        """Drop a message (deleted by the administrator)."""
    def take_due(self, now: float) -> list[int]:
        """Deferred messages whose retry time has come; the caller re-inserts them."""
    def next_wakeup(self) -> float | None:
        """The earliest retry or dead-destination revival time, if any."""
    def flush(self, now: float) -> None:
        """postqueue -f: all deferred mail due now, held transports and dead sites released."""
    def flush_site(self, now: float, site: str, msgs: list[int]) -> None:
        """postqueue -s site / ETRN for the given messages and the queues named site."""
    def report_crash(self, batch: int, now: float) -> bool:
        """A delivery whose agent died unanswered: recipients deferred, no feedback."""
    def throttle_transport(self, name: str, until: float, status: str, reason: str) -> bool:
        """Defer the transport's mail with status and reason until then; False if already
        throttled."""
    def unthrottle_transport(self, name: str) -> None:
        """End the transport's throttle."""
    def transport_throttled(self, name: str) -> bool:
        """Whether the transport is throttled."""
    def next_deliveries(self, now: float, max: int) -> list[tuple[int, int, str, str, list[int]]]:
        """Up to max deliveries as (batch, msg, transport, queue, rcpt indexes)."""
    def report(
        self,
        batch: int,
        now: float,
        results: list[tuple[int, str]],
        site_failure: tuple[str, str] | None = None,
    ) -> bool:
        """Record (rcpt, "sent"|"deferred"|"bounced") results; False for an unknown batch.
        site_failure is the (status, text) of a failure of the destination itself."""
    def drain_events(self) -> list[tuple[str, int, int, str, str, str, str, float]]:
        """Events as (kind, msg, rcpt, transport, queue, status, reason, time), oldest
        first."""
    def retry_state(self, msg: int) -> tuple[float, float, bool] | None:
        """(next_try, backoff, warned) of a deferred message."""
    def queue_state(self, transport: str, queue: str) -> tuple[int, int, bool] | None:
        """(window, active, dead) of one destination queue."""
    def active_messages(self) -> int:
        """Messages in the active set."""
    def in_flight(self) -> int:
        """Deliveries in progress."""
