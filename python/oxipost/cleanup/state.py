"""cleanup_state - what cleanup learns about one message while it processes it

Log lines are kept here (without the "QID: " prefix) and written by the caller once the
message is queued or refused, under the queue ID it took for it (Queue.new_id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oxipost.maps import Table, open_table

if TYPE_CHECKING:
    from oxipost.config import Config
    from oxipost.envelope import Envelope


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
    bcc: list[str] = field(default_factory=list)
    # The recipient duplicate filter of the whole message (Postfix's state->dups).
    dups: set[object] = field(default_factory=set)
    # What the action log lines show: the sender and first recipient after rewriting.
    sender: str = ""
    recip: str = ""
    _tables: dict[str, list[tuple[str, Table]]] = field(default_factory=dict)

    def tables(self, param: str) -> list[tuple[str, Table]]:
        """(spec, table) for each table of `param`, opened once per message (an open checks
        the file for a rebuild). Raises TableError."""
        found = self._tables.get(param)
        if found is None:
            # header/body checks match the text as is; address tables fold the key.
            fold = not param.endswith("checks")
            specs = self.cfg.get_list(param)
            found = [(spec, open_table(spec, self.cfg, fold_keys=fold)) for spec in specs]
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
            else:
                log.info(f"{queue_id}: {text}")
