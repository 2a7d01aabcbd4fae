"""local(8) opens alias_maps with DICT_FLAG_PARANOID, cleanup opens virtual_alias_maps
without it: one regexp file serving both keeps `$1` in cleanup and loses it in local(8),
where it would put what a remote sender wrote into a |command. Played under our master
and under real Postfix 3.7 with the same main.cf and table: same warnings, same mail.
(A local(8) process logs the warnings when it opens the table; Postfix may start more
than one, so the lines are compared without repeats.)"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.maps.test_net_tables import Peer, peer
from tests.smtpd.test_postfix_differential import running_postfix

from .test_e2e_local import _wait_for, running_ours

pytestmark = pytest.mark.slow

# Local parts as local(8) looks them up; full addresses as cleanup does. A `$1` rule
# that local(8) skipped would otherwise run `echo x;touch ...` for run-x;touch...
ALIASES = """\
/^fwd-(.*)@localhost$/ $1@localhost
/^run-([^@]*)$/ "|echo $1 > {out}/ran"
/^fixed$/ "|echo fixed > {out}/fixed"
"""

MAIN_CF = """\
alias_maps = regexp:{top}/aliases
alias_database =
virtual_alias_maps = regexp:{top}/aliases
"""

REFUSED = "regular expression substitution is not allowed: skipping this rule"


def _scenario(top: Path, out: Path, send: Callable[[list[str]], None], log: Path) -> list[str]:
    """Send to fwd-fixed@ (cleanup's `$1` makes it fixed@, whose command runs) and run-x@
    (no alias in local(8): unknown user). Returns the local(8) lines that tell: its
    warnings, and run-x's outcome without delays and ids."""
    send(["fwd-fixed@localhost", "run-x@localhost"])
    assert _wait_for(out / "fixed"), log.read_text()
    assert (out / "fixed").read_text() == "fixed\n"
    # Our local(8) process and qmgr (which logs the agent's delivery lines) write the
    # maillog each on its own: wait for both.
    deadline = time.monotonic() + 30
    while not all(s in log.read_text() for s in ("to=<run-x@localhost>", "line 2: ")):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert not (out / "ran").exists()
    warnings, outcomes = [], []
    for ln in log.read_text().splitlines():
        m = re.search(r" postfix/local\[\d+\]: (.*)", ln)
        if m is None:
            continue
        text = m.group(1)
        if text.startswith("warning: "):
            if text not in warnings:
                warnings.append(text)
        elif "to=<run-x@localhost>" in text:
            outcomes.append(re.sub(r"^[0-9A-F]+: |delay.*?dsn=", "", text))
    return warnings + outcomes


@pytest.fixture
def top_out(shared_tmp: Path) -> tuple[Path, Path]:
    # Commands run as default_privs: not pytest's private tree.
    top = shared_tmp
    out = top / "out"
    out.mkdir()
    out.chmod(0o1777)
    (top / "aliases").write_text(ALIASES.format(out=out))
    return top, out


def _expected(table: Path) -> list[str]:
    return [
        f"warning: regexp map {table}, line 1: {REFUSED}",
        f"warning: regexp map {table}, line 2: {REFUSED}",
        'to=<run-x@localhost>, relay=local, 5.1.1, status=bounced (unknown user: "run-x")',
    ]


def _sender(port: int) -> Callable[[list[str]], None]:
    def send(rcpts: list[str]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("", rcpts, b"Subject: t\r\n\r\nhi\r\n")

    return send


def test_alias_substitution_refused_in_local_kept_in_cleanup_as_postfix(top_out):
    top, out = top_out
    # The main.cf real Postfix gets below.
    with running_ours(top, MAIN_CF.format(top=top)) as port:
        ours = _scenario(top, out, _sender(port), top / "maillog")
    assert ours == _expected(top / "aliases")


@pytest.mark.postfix
def test_the_same_with_real_postfix(top_out):
    top, out = top_out
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(MAIN_CF.format(top=top) + logging) as (port, d):
        theirs = _scenario(top, out, _sender(port), d / "maillog")
    assert theirs == _expected(top / "aliases")


def _refusing_scenario(send: Callable[[list[str]], None], log: Path) -> list[str]:
    """Send to user@localhost: alias_maps is a socketmap: table, which local(8) may not
    open (DICT_FLAG_NO_UNAUTH). Returns local(8)'s warnings and the recipient's outcome,
    without delays and ids."""
    send(["user@localhost"])
    deadline = time.monotonic() + 30
    while "to=<user@localhost>" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    lines = []
    for ln in log.read_text().splitlines():
        m = re.search(r" postfix/local\[\d+\]: (.*)", ln)
        if m is not None and (m.group(1).startswith("warning: ") or "to=<user@" in ln):
            lines.append(re.sub(r"^[0-9A-F]+: |delay.*?dsn=", "", m.group(1)))
    return lines


def _refused_expected(table: str) -> list[str]:
    return [
        f"warning: {table} is unavailable. {table} map is not allowed for security-sensitive data",
        f"warning: {table}: lookup of 'user' failed",
        "to=<user@localhost>, relay=local, 4.3.0, status=deferred (alias database unavailable)",
    ]


@pytest.fixture
def aliases_peer() -> Iterator[tuple[Peer, str]]:
    """A socketmap server that would answer every alias: it must never be asked."""
    with peer("netstring", lambda request: b"7:OK root,") as p:
        yield p


def test_socketmap_alias_maps_refused_as_postfix(shared_tmp: Path, aliases_peer) -> None:
    p, endpoint = aliases_peer
    table = f"socketmap:inet:{endpoint}:aliases"
    with running_ours(shared_tmp, f"alias_maps = {table}\nalias_database =\n") as port:
        ours = _refusing_scenario(_sender(port), shared_tmp / "maillog")
    assert ours == _refused_expected(table)
    assert p.requests == []


@pytest.mark.postfix
def test_socketmap_alias_maps_refused_by_real_postfix(aliases_peer) -> None:
    p, endpoint = aliases_peer
    table = f"socketmap:inet:{endpoint}:aliases"
    main_cf = (
        f"alias_maps = {table}\nalias_database =\n"
        "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    )
    with running_postfix(main_cf) as (port, d):
        theirs = _refusing_scenario(_sender(port), d / "maillog")
    assert theirs == _refused_expected(table)
    assert p.requests == []
