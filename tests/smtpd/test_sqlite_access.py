"""A sqlite: table as smtpd's check_recipient_access, beside real Postfix 3.7 with
Debian's postfix-sqlite: the same sessions from 127.0.0.2 get the same replies and the
same log lines about their access checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_dir
from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import Played, _access_check_lines

pytestmark = pytest.mark.postfix

RCPTS = ["rejected@example.com", "anyone@example.net", "quote'd@example.com", "ok@example.com"]
DIALOGUE = ["EHLO x.example", "MAIL FROM:<a@example.org>", *(f"RCPT TO:<{r}>" for r in RCPTS)]


@pytest.fixture
def database() -> Iterator[Path]:
    """A directory Postfix's smtpd (the postfix user) can read, with access.sqlite:
    an address, a domain and a quoted local part."""
    with shared_dir("oxipost-sqlite-") as d:
        db = sqlite3.connect(d / "access.sqlite")
        with db:
            db.execute("CREATE TABLE access (k TEXT, v TEXT)")
            db.executemany(
                "INSERT INTO access VALUES (?, ?)",
                [
                    ("rejected@example.com", "REJECT go away"),
                    ("example.net", "REJECT no mail for example.net"),
                    ("quote'd@example.com", "REJECT quoted"),
                ],
            )
        db.close()
        (d / "access.sqlite").chmod(0o644)
        yield d


def _cf(d: Path, name: str, extra: str = "") -> str:
    path = d / name
    path.write_text(
        f"dbpath = {d}/access.sqlite\nquery = SELECT v FROM access WHERE k = '%s'\n{extra}"
    )
    path.chmod(0o644)
    return f"sqlite:{path}"


def _main_cf(table: str) -> str:
    return (
        "relay_domains = example.com, example.net\n"
        f"smtpd_recipient_restrictions = check_recipient_access {table}\n"
    )


@pytest.mark.slow
def test_sqlite_access_table_as_postfix(start_smtpd, database: Path) -> None:
    """The recipient's address, then its domain (a fixed table is asked partial keys),
    each quoted into the query: the same REJECTs as Postfix's."""
    table = _cf(database, "access.cf")
    both = Played(start_smtpd, [*DIALOGUE, "QUIT"], _main_cf(table))
    expected = _access_check_lines(both.theirs, table)
    assert len(expected) == 3, both.theirs
    assert _access_check_lines(both.ours, table) == expected
    assert both.our_replies[1:] == both.their_replies[1:]
    assert both.their_replies[4].startswith("554 5.7.1 <anyone@example.net>")


@pytest.mark.slow
def test_sqlite_domain_keeps_partial_keys_out_as_postfix(start_smtpd, database: Path) -> None:
    """With domain = example.com, example.net only user@domain keys are looked up: the
    domain row no longer answers for anyone@example.net."""
    table = _cf(database, "domains.cf", "domain = example.com, example.net\n")
    both = Played(start_smtpd, [*DIALOGUE, "QUIT"], _main_cf(table))
    assert _access_check_lines(both.ours, table) == _access_check_lines(both.theirs, table)
    assert both.our_replies[1:] == both.their_replies[1:]
    assert both.their_replies[4].startswith("250 ")


@pytest.mark.slow
def test_sqlite_query_that_fails_is_a_temporary_failure(start_smtpd, database: Path) -> None:
    """SQL that does not prepare: Postfix's smtpd dies with the fatal error (the client
    loses its connection); ours logs that error and answers as for any table that
    fails, 451 4.3.5, never an accept."""
    path = database / "broken.cf"
    path.write_text(f"dbpath = {database}/access.sqlite\nquery = SELECT v FROM nosuch\n")
    table = f"sqlite:{path}"
    srv = start_smtpd(_main_cf(table), daemon_tables=True)
    raw = Raw("127.0.0.1", srv.port, source="127.0.0.2")
    raw.reply()
    raw.cmd("EHLO x.example")
    raw.cmd("MAIL FROM:<a@example.org>")
    reply = raw.cmd("RCPT TO:<ok@example.com>")
    raw.cmd("QUIT")
    raw.close()
    assert reply.startswith("451 4.3.5 "), reply
    log = "\n".join(srv.log)
    assert f"dict_sqlite_lookup: {path}: SQL prepare failed: no such table: nosuch?" in log
    assert f'{table} lookup error for "ok@example.com"' in log
