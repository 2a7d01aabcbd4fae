"""cleanup_state - what cleanup learns about one message while it processes it

Log lines are kept here (without the "QID: " prefix) and written by the caller once the
message is queued or refused, under the queue ID it took for it (Queue.new_id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from oxipost.maps import Table, TableLog, logging_to, open_at_start, open_table
from oxipost.rewrite.rewrite import rewrite_address

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.envelope import Envelope


# Address classes of canonical_classes and masquerade_classes.
ENV_FROM = "envelope_sender"
ENV_RCPT = "envelope_recipient"
HDR_FROM = "header_sender"
HDR_RCPT = "header_recipient"

# The MIME errors Postfix's cleanup rejects a message for (mime_state's texts, each with
# DSN 5.6.0), when its MIME processor is asked to report them.
MIME_NESTING = "MIME nesting exceeds safety limit"
MIME_8BIT_HEADER = "improper use of 8-bit data in message header"
MIME_8BIT_BODY = "improper use of 8-bit data in message body"
MIME_DOMAIN = "invalid message/* or multipart/* encoding domain"


class CleanupConfig:
    """What cleanup reads of the configuration for every message, worked out once for a
    Config, whose values are fixed for its life as a daemon's main.cf is until it restarts
    (Config caches them already): lists that are empty, the canonical and masquerade steps
    of each address class. Each is worked out when first wanted, so a bad value fails
    where it did. Tables are not kept here: a message opens its own (CleanupState.tables),
    which notices a rebuilt one."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._nonempty: dict[str, bool] = {}
        self._canonical_steps: dict[str, tuple[tuple[str, ...], bool]] = {}

    @cached_property
    def overrides(self) -> frozenset[str]:
        return self.cfg.get_keywords("receive_override_options")

    @cached_property
    def internal_filter_classes(self) -> frozenset[str]:
        return self.cfg.get_keywords("internal_mail_filter_classes")

    @cached_property
    def hopcount_limit(self) -> int:
        return self.cfg.get_int("hopcount_limit")

    @cached_property
    def header_size_limit(self) -> int:
        return self.cfg.get_int("header_size_limit")

    @cached_property
    def header_address_token_limit(self) -> int:
        return self.cfg.get_int("header_address_token_limit")

    @cached_property
    def body_checks_size_limit(self) -> int:
        return self.cfg.get_int("body_checks_size_limit")

    @cached_property
    def line_length_limit(self) -> int:
        return self.cfg.get_int("line_length_limit")

    @cached_property
    def mime_boundary_length_limit(self) -> int:
        return self.cfg.get_int("mime_boundary_length_limit")

    @cached_property
    def content_checks(self) -> frozenset[str]:
        """The content check parameters that name a table (asked for each header)."""
        names = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")
        return frozenset(name for name in names if self.nonempty(name))

    @cached_property
    def wants_body(self) -> bool:
        """Whether anything looks past the primary header (the body walk costs per line)."""
        return bool(
            self.content_checks - {"header_checks"} or self.mime_reports - {MIME_8BIT_HEADER}
        )

    @cached_property
    def mime_reports(self) -> frozenset[str]:
        """The MIME errors cleanup refuses a message for, as Postfix's cleanup asks its MIME
        processor for them: 8-bit header text (strict_7bit_headers), 8-bit text in a body
        that is 7bit by its Content-Transfer-Encoding (strict_8bitmime_body; both with
        strict_8bitmime), a message/* or multipart/* entity encoded base64 or
        quoted-printable (strict_mime_encoding_domain), and multipart nesting past
        mime_nesting_limit with any of those or a header checks table. None at all without
        MIME processing (disable_mime_input_processing), not even for the primary header."""
        get = self.cfg.get_bool
        if get("disable_mime_input_processing"):
            return frozenset()
        strict = get("strict_8bitmime")
        wanted = {
            MIME_8BIT_HEADER: strict or get("strict_7bit_headers"),
            MIME_8BIT_BODY: strict or get("strict_8bitmime_body"),
            MIME_DOMAIN: get("strict_mime_encoding_domain"),
        }
        reports = {text for text, on in wanted.items() if on}
        headers = {"header_checks", "mime_header_checks", "nested_header_checks"}
        if reports or self.content_checks & headers:
            reports.add(MIME_NESTING)
        return frozenset(reports)

    @cached_property
    def detect_8bit_encoding_header(self) -> bool:
        return self.cfg.get_bool("detect_8bit_encoding_header")

    @cached_property
    def mime_nesting_limit(self) -> int:
        return self.cfg.get_int("mime_nesting_limit")

    @cached_property
    def mailer_daemon(self) -> str:
        """MAILER-DAEMON@$myorigin as cleanup rewrites it, lower case: the sender
        cleanup_addr_sender takes for the null sender."""
        return rewrite_address(self.cfg, "MAILER-DAEMON").lower()

    @cached_property
    def local_header_rewrite_clients(self) -> tuple[str, ...]:
        return tuple(self.cfg.get_list("local_header_rewrite_clients"))

    @cached_property
    def drop_headers(self) -> frozenset[str]:
        """message_drop_headers' names in lower case."""
        return frozenset(name.lower() for name in self.cfg.get_list("message_drop_headers"))

    @cached_property
    def inet_interfaces(self) -> tuple[str, ...]:
        return tuple(self.cfg.get_list("inet_interfaces"))

    def nonempty(self, param: str) -> bool:
        """Whether the list parameter `param` has any item (a table, a domain)."""
        known = self._nonempty.get(param)
        if known is None:
            known = self._nonempty[param] = bool(self.cfg.get_list(param))
        return known

    def canonical_steps(self, kind: str) -> tuple[tuple[str, ...], bool]:
        """(the canonical map parameters, in order, and whether to masquerade: the class
        is in masquerade_classes and masquerade_domains has some) for an address of class
        `kind`; ((), False) when nothing would change it."""
        steps = self._canonical_steps.get(kind)
        if steps is None:
            cfg = self.cfg
            own = "sender_canonical" if kind in (ENV_FROM, HDR_FROM) else "recipient_canonical"
            maps = ((f"{own}_maps", f"{own}_classes"), ("canonical_maps", "canonical_classes"))
            params = tuple(
                param
                for param, classes in maps
                if self.nonempty(param) and kind in cfg.get_keywords(classes)
            )
            masq = kind in cfg.get_keywords("masquerade_classes") and self.nonempty(
                "masquerade_domains"
            )
            steps = self._canonical_steps[kind] = (params, masq)
        return steps


def cleanup_config(cfg: Config) -> CleanupConfig:
    """The CleanupConfig of `cfg`, made at its first message."""
    found = cfg.derived.get("cleanup")
    if not isinstance(found, CleanupConfig):
        found = cfg.derived["cleanup"] = CleanupConfig(cfg)
    return found


# What cleanup opens as it starts (cleanup_init.c's cleanup_pre_jail), in its order.
TABLE_PARAMS = (
    "canonical_maps",
    "sender_canonical_maps",
    "recipient_canonical_maps",
    "virtual_alias_maps",
    "sender_bcc_maps",
    "recipient_bcc_maps",
    "header_checks",
    "mime_header_checks",
    "nested_header_checks",
    "body_checks",
)


def cleanup_table(cfg: Config, param: str, spec: str) -> Table:
    """One table of cleanup's `param`, opened as cleanup opens it: header/body checks
    match the text as is, even bytes that are not UTF-8 (no DICT_FLAG_UTF8_REQUEST in
    Postfix's cleanup); address tables fold the key."""
    addr = not param.endswith("checks")
    return open_table(spec, cfg, addr, utf8=addr)


def open_cleanup_tables(cfg: Config, log: TableLog) -> None:
    """Open cleanup's tables as Postfix's cleanup does when it starts, so that one that
    does not open is logged then, to `log` (cleanup's), and not by a message."""
    with logging_to(log):
        open_at_start(cfg, TABLE_PARAMS, lambda param, spec: cleanup_table(cfg, param, spec))


class TableNotes:
    """A message's table warnings and open errors, among its other lines, without its
    queue ID: the log oxipost.maps.logging_to gives cleanup."""

    def __init__(self, state: CleanupState) -> None:
        self.state = state

    def warning(self, text: str) -> None:
        self.state.notes.append(("table warning", text))

    def error(self, text: str) -> None:
        self.state.notes.append(("error", text))


@dataclass
class CleanupState:
    cfg: Config
    env: Envelope
    queue_id: str = ""
    # Address mapping (canonical, masquerade, virtual): off for no_address_mappings.
    map_ok: bool = True
    # header_checks/body_checks (Postfix's CLEANUP_FLAG_FILTER): off for internal mail.
    filtering: bool = True
    # always_bcc and the *_bcc_maps (CLEANUP_FLAG_BCC_OK): off for internal mail and for
    # no_address_mappings.
    bcc_ok: bool = True
    notes: list[tuple[str, str]] = field(default_factory=list)
    reply: str | None = None  # why the message is refused (an SMTP reply), once it is
    hold: bool = False
    discard: bool = False
    redirect: str = ""
    filter: str = ""
    # A Content-Transfer-Encoding: 8bit or binary header in any header block: the queue
    # file's encoding is 8bit whatever BODY= said (Postfix's MAIL_ATTR_ENCODING).
    eight_bit: bool = False
    bcc: list[str] = field(default_factory=list)
    # The recipient duplicate filter of the whole message (Postfix's state->dups).
    dups: set[object] = field(default_factory=set)
    # What the action log lines show: the sender and first recipient after rewriting.
    sender: str = ""
    recip: str = ""
    # The sender's full name for a From: header cleanup adds (Postfix's REC_TYPE_FULL).
    full_name: str = ""
    # What the action log lines' action starts with: "milter-header-" for
    # milter_header_checks, as Postfix's cleanup_milter.c logs them.
    act_prefix: str = ""
    _tables: dict[str, list[tuple[str, Table]]] = field(default_factory=dict)
    # Whether the client is in local_header_rewrite_clients, once asked.
    local: bool | None = None
    opts: CleanupConfig = field(init=False)

    def __post_init__(self) -> None:
        self.opts = cleanup_config(self.cfg)

    def tables(self, param: str) -> list[tuple[str, Table]]:
        """(spec, table) for each table of `param`, opened once per message (an open checks
        the file for a rebuild). Raises TableError."""
        found = self._tables.get(param)
        if found is None:
            specs = self.cfg.get_list(param)
            found = [(spec, cleanup_table(self.cfg, param, spec)) for spec in specs]
            self._tables[param] = found
        return found

    def info(self, text: str) -> None:
        self.notes.append(("info", text))

    def warn(self, text: str) -> None:
        self.notes.append(("warning", text))

    def refuse(self, reply: str) -> None:
        """Remember the first reason to refuse; later ones do not replace it."""
        if self.reply is None:
            self.reply = reply


@dataclass
class Cleaned:
    """cleanup's answer: the message to queue, or the reply refusing it."""

    envelope: Envelope
    content: bytes
    reply: str | None = None
    discard: bool = False
    notes: list[tuple[str, str]] = field(default_factory=list)

    def log_notes(self, log: Any, queue_id: str) -> None:
        """Write cleanup's log lines, as Postfix's cleanup logs them for this message:
        under the program name "cleanup" when `log` can say so (oxipost.log.Logger)."""
        if not self.notes:
            return
        for_program = getattr(log, "for_program", None)
        if for_program is not None:
            log = for_program("cleanup")
        for level, text in self.notes:
            if level == "warning":
                log.warning(f"{queue_id}: {text}")
            elif level == "table warning":
                log.warning(text)
            elif level == "error":
                log.error(text)
            else:
                log.info(f"{queue_id}: {text}")
