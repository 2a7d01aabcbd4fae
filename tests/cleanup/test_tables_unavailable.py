"""cleanup with tables that do not open, as Postfix 3.7's daemons go on without them
(dict_surrogate): their "error:" when cleanup opens its tables as it starts, then, at each
message, the table's and maps_find's warnings without the queue ID, cleanup's own with it,
and the message refused with 451 4.3.0. Compared with real Postfix 3.7 through smtpd in
tests/smtpd/test_postfix_differential.py; here the parts one by one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost import maps
from oxipost.cleanup.message import cleanup_message
from oxipost.cleanup.state import open_cleanup_tables

from tests.cleanup.conftest import RECEIVED, envelope, make_config

WRITE_ERROR = "451 4.3.0 Error: queue file write error"


class Recorded:
    """A Logger's methods, each line kept with its program's name."""

    def __init__(self, lines: list[str], program: str = "smtpd") -> None:
        self.lines = lines
        self.program = program

    def for_program(self, program: str) -> Recorded:
        return Recorded(self.lines, program)

    def info(self, text: str) -> None:
        self.lines.append(f"{self.program}: {text}")

    def warning(self, text: str) -> None:
        self.lines.append(f"{self.program}: warning: {text}")

    def error(self, text: str) -> None:
        self.lines.append(f"{self.program}: error: {text}")


@pytest.fixture
def process_log() -> Iterator[list[str]]:
    """The process's log, where a daemon's table lines go (oxipost.master.child)."""
    lines: list[str] = []
    log = Recorded(lines)
    previous_warn = maps.set_warning_sink(log.warning)
    previous_error = maps.allow_surrogates(log.error)
    yield lines
    maps.allow_surrogates(previous_error)
    maps.set_warning_sink(previous_warn)


MISSING = (
    "virtual_alias_maps = cdb:{dir}/virtual\n"
    "sender_bcc_maps = hash:{dir}/bcc\n"
    "canonical_maps = hash:{dir}/canonical\n"
    "header_checks = regexp:{dir}/header_checks\n"
)


def test_tables_open_as_cleanup_starts(tmp_path: Path, process_log: list[str]) -> None:
    """cleanup_pre_jail's order (canonical, virtual alias, BCC, header checks), each
    reason naming the file Postfix's type opens, logged as cleanup."""
    cfg = make_config(tmp_path, MISSING)
    open_cleanup_tables(cfg, Recorded(process_log).for_program("cleanup"))
    d = tmp_path
    assert process_log == [
        f"cleanup: error: open database {d}/canonical.db: No such file or directory",
        f"cleanup: error: open database {d}/virtual.cdb: No such file or directory",
        f"cleanup: error: open database {d}/bcc.db: No such file or directory",
        f"cleanup: error: open {d}/header_checks: No such file or directory",
    ]
    # Opened: a message finds them in the cache, with no error of its own.
    res = cleanup_message(envelope("s@example.test", "r@x.example"), b"\r\n", RECEIVED, cfg)
    assert [level for level, _ in res.notes if level == "error"] == []


def test_a_message_and_a_sender_table_that_did_not_open(
    tmp_path: Path, process_log: list[str]
) -> None:
    """The sender's canonical lookup fails, its BCC lookup is made all the same (Postfix's
    cleanup_addr_sender), and no recipient is looked at: the lines in Postfix's order,
    cleanup's, the tables' without the queue ID."""
    cfg = make_config(tmp_path, MISSING)
    res = cleanup_message(envelope("s@example.test", "r@x.example"), b"\r\n", RECEIVED, cfg)
    assert res.reply == WRITE_ERROR
    logged: list[str] = []
    res.log_notes(Recorded(logged), "4F00D1234A")
    d = tmp_path
    canonical = f"open database {d}/canonical.db: No such file or directory"
    bcc = f"open database {d}/bcc.db: No such file or directory"
    assert logged == [
        # Opened by this message (no start-up here): each error as its table is wanted.
        f"cleanup: error: {canonical}",
        f"cleanup: warning: hash:{d}/canonical is unavailable. {canonical}",
        f'cleanup: warning: hash:{d}/canonical lookup error for "s@example.test"',
        "cleanup: warning: 4F00D1234A: canonical_maps map lookup problem for s@example.test"
        " -- message not accepted, try again later",
        f"cleanup: error: {bcc}",
        f"cleanup: warning: hash:{d}/bcc is unavailable. {bcc}",
        f'cleanup: warning: hash:{d}/bcc lookup error for "s@example.test"',
        "cleanup: warning: 4F00D1234A: sender_bcc_maps map lookup problem -- message not"
        " accepted, try again later",
    ]
    # Nothing went to the process's own log.
    assert process_log == []


def test_a_recipient_table_that_did_not_open(tmp_path: Path, process_log: list[str]) -> None:
    cfg = make_config(tmp_path, "virtual_alias_maps = cdb:{dir}/virtual\n")
    open_cleanup_tables(cfg, Recorded(process_log).for_program("cleanup"))
    res = cleanup_message(envelope("s@example.test", "r@x.example"), b"\r\n", RECEIVED, cfg)
    assert res.reply == WRITE_ERROR
    reason = f"open database {tmp_path}/virtual.cdb: No such file or directory"
    assert res.notes == [
        ("table warning", f"cdb:{tmp_path}/virtual is unavailable. {reason}"),
        ("table warning", f'cdb:{tmp_path}/virtual lookup error for "r@x.example"'),
        (
            "warning",
            "virtual_alias_maps map lookup problem for r@x.example -- message not accepted,"
            " try again later",
        ),
    ]
