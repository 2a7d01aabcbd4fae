"""local(8) hands mailboxes to another transport and catches unknown users as Postfix's
local/mailbox.c and local/unknown.c: mailbox_transport_maps, then mailbox_transport, for
every recipient after its alias and .forward (Dovecot's LMTP over a unix socket, the
usual site); fallback_transport_maps, fallback_transport, then luser_relay for users
without a passwd entry; postmaster without an alias is discarded; an alias of nothing
defers; an alias's null address ("") goes to empty_address_recipient. Each scenario is
played under our master and under real Postfix 3.7 with the same main.cf, tables and a
real Dovecot, and both must log the same lines: local(8)'s "passing
<rcpt> to transport=lmtp", the lmtp agent's own line with relay=host[private/...], and
local(8)'s lines and warnings."""

from __future__ import annotations

import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.smtpd.test_postfix_differential import running_postfix

from .dovecot_lmtp import dovecot_lmtp
from .test_e2e_local import running_ours

pytestmark = pytest.mark.slow

LMTP = "lmtp:unix:private/dovecot-lmtp"
RELAY = "relay=mx.example.test[private/dovecot-lmtp]"
# The users Dovecot knows: ghost has no passwd entry here.
DOVECOT_USERS = ["nobody", "ghost"]
TABLES = {
    # texthash: the postmap format, "key value".
    "aliases": (
        'list nobody, ghost\nempty ,\nnull "", nobody\nonlynull ""\n'
        'quoted "a b"@localhost, "nobody"@localhost\n'
    ),
    "mailbox_transports": "daemon lmtp:unix:private/nowhere\n",
    "fallback_transports": f"ghost {LMTP}\n",
}


def _passing(address: str) -> str:
    return f"local: passing <{address}> to transport=lmtp"


def _saved(address: str, orig: str = "") -> str:
    orig_to = f"orig_to=<{orig}>, " if orig else ""
    return (
        f"lmtp: to=<{address}>, {orig_to}{RELAY}, dsn=2.0.0, status=sent "
        f"(250 2.0.0 <{address}> ID Saved)"
    )


def _refused(address: str) -> str:
    return (
        f"lmtp: to=<{address}>, {RELAY}, dsn=5.1.1, status=bounced (host "
        f"mx.example.test[private/dovecot-lmtp] said: 550 5.1.1 <{address}> User doesn't "
        f"exist: {address} (in reply to RCPT TO command))"
    )


# (main.cf, recipients, the lines of local(8) and lmtp for them, sorted)
SCENARIOS = {
    "mailbox_transport": (
        f"mailbox_transport = {LMTP}\n"
        "mailbox_transport_maps = texthash:{top}/mailbox_transports\n",
        [f"{u}@localhost" for u in ("nobody", "nosuch", "list", "daemon", "empty")],
        [
            _passing("nobody@localhost"),
            _saved("nobody@localhost"),
            # Whether or not the user has a passwd entry: Dovecot refuses it.
            _passing("nosuch@localhost"),
            _refused("nosuch@localhost"),
            # An alias's members in standard form, each passed on.
            _passing("nobody@mx.example.test"),
            _saved("nobody@mx.example.test", "list@localhost"),
            _passing("ghost@mx.example.test"),
            _saved("ghost@mx.example.test", "list@localhost"),
            # The per-user table first, its nexthop its own.
            _passing("daemon@localhost"),
            "lmtp: to=<daemon@localhost>, relay=none, dsn=4.4.1, status=deferred (connect "
            "to mx.example.test[private/nowhere]: No such file or directory)",
            "local: warning: no recipient in alias lookup result for empty",
            "local: to=<empty@localhost>, relay=local, dsn=4.3.0, status=deferred "
            "(alias database unavailable)",
        ],
    ),
    "fallback_transport_maps_and_luser_relay": (
        "fallback_transport_maps = texthash:{top}/fallback_transports\n"
        "luser_relay = bin+$local@localhost\nrecipient_delimiter = +\n",
        ["nobody@localhost", "ghost@localhost", "nosuch+x@localhost"],
        [
            "local: to=<nobody@localhost>, relay=local, dsn=2.0.0, status=sent "
            "(delivered to mailbox)",
            _passing("ghost@localhost"),
            _saved("ghost@localhost"),
            # Not in the table: luser_relay, with local(8)'s $local, delivered here.
            "local: to=<bin+nosuch+x@localhost>, orig_to=<nosuch+x@localhost>, "
            "relay=local, dsn=2.0.0, status=sent (delivered to mailbox)",
        ],
    ),
    "fallback_transport": (
        f"fallback_transport = {LMTP}\n",
        ["nobody@localhost", "ghost@localhost", "nosuch@localhost"],
        [
            "local: to=<nobody@localhost>, relay=local, dsn=2.0.0, status=sent "
            "(delivered to mailbox)",
            _passing("ghost@localhost"),
            _saved("ghost@localhost"),
            _passing("nosuch@localhost"),
            _refused("nosuch@localhost"),
        ],
    ),
    "empty_address_recipient": (
        "",
        ["null@localhost", "onlynull@localhost"],
        [
            # The null address of an alias is resolved like any member: to
            # empty_address_recipient, here MAILER-DAEMON without an alias of its own.
            "local: warning: required alias not found: mailer-daemon",
            "local: to=<MAILER-DAEMON@mx.example.test>, orig_to=<null@localhost>, "
            "relay=local, dsn=2.0.0, status=sent (discarded)",
            "local: to=<nobody@mx.example.test>, orig_to=<null@localhost>, relay=local, "
            "dsn=2.0.0, status=sent (delivered to mailbox)",
            "local: to=<MAILER-DAEMON@mx.example.test>, orig_to=<onlynull@localhost>, "
            "relay=local, dsn=2.0.0, status=sent (discarded)",
        ],
    ),
    # A member in quotes is taken in internal form (tok822_internalize): "a b"@localhost
    # is the local user "a b", "nobody"@localhost is nobody.
    "quoted_member": (
        "",
        ["quoted@localhost"],
        [
            'local: to=<"a b"@localhost>, orig_to=<quoted@localhost>, relay=local, '
            'dsn=5.1.1, status=bounced (unknown user: "a b")',
            "local: to=<nobody@localhost>, orig_to=<quoted@localhost>, relay=local, "
            "dsn=2.0.0, status=sent (delivered to mailbox)",
        ],
    ),
    "empty_address_recipient_set": (
        "empty_address_recipient = nobody\n",
        ["onlynull@localhost"],
        [
            "local: to=<nobody@mx.example.test>, orig_to=<onlynull@localhost>, "
            "relay=local, dsn=2.0.0, status=sent (delivered to mailbox)",
        ],
    ),
    "no_fallback": (
        "",
        ["postmaster@localhost", "nosuch@localhost"],
        [
            "local: warning: required alias not found: postmaster",
            "local: to=<postmaster@localhost>, relay=local, dsn=2.0.0, status=sent (discarded)",
            "local: to=<nosuch@localhost>, relay=local, dsn=5.1.1, status=bounced "
            '(unknown user: "nosuch")',
        ],
    ),
}


def _main_cf(scenario: str, top: Path) -> str:
    return SCENARIOS[scenario][0].replace("{top}", str(top)) + (
        f"alias_maps = texthash:{top}/aliases\nalias_database =\n"
        f"mail_spool_directory = {top}/mail\n"
    )


def _lines(log: str, qid: str) -> list[str]:
    """local(8)'s and lmtp's lines for qid, and local(8)'s warnings, without the syslog
    prefix, pids, delays and Dovecot's session IDs."""
    out = []
    for ln in log.splitlines():
        m = re.search(rf" postfix/(local|lmtp)\[\d+\]: (?:{qid}: )?(.*)", ln)
        if m is None or not (f" {qid}: " in ln or m.group(2).startswith("warning: ")):
            continue
        text = re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", m.group(2))
        text = re.sub(r"> \S+ Saved\)", "> ID Saved)", text)
        out.append(f"{m.group(1)}: {text}")
    return sorted(set(out))


def _play(scenario: str, port: int, spool: Path, maillog: Path) -> tuple[list[str], Path]:
    """Mail for the scenario's recipients, with Dovecot serving LMTP in spool/private;
    (the lines logged for it once all are there, Dovecot's mail directory's messages)."""
    _cf, rcpts, expected = SCENARIOS[scenario]
    with dovecot_lmtp(spool / "private" / "dovecot-lmtp", DOVECOT_USERS) as mail:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("sender@example.org", rcpts, b"Subject: t\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 60
        while True:
            log = maillog.read_text() if maillog.exists() else ""
            m = re.search(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=<sender@example.org>", log)
            if m is not None and len(_lines(log, m.group(1))) >= len(expected):
                break
            assert time.monotonic() < deadline, log
            time.sleep(0.2)
        time.sleep(0.5)  # anything more that would be wrong
        log = maillog.read_text()
        delivered = sorted(p.parent.parent.parent.name for p in mail.glob("*/Maildir/new/*"))
    return _lines(log, m.group(1)), delivered


@pytest.fixture
def top(shared_tmp: Path) -> Path:
    # Mailboxes written as their users, tables read by local(8): not pytest's 0700 tree.
    d = shared_tmp
    (d / "mail").mkdir(mode=0o1777)
    (d / "mail").chmod(0o1777)
    for name, text in TABLES.items():
        (d / name).write_text(text)
    return d


def _expected_dovecot(scenario: str) -> list[str]:
    saved = [ln for ln in SCENARIOS[scenario][2] if "status=sent (250" in ln]
    return sorted(re.search(r"to=<([^@+]+)", ln).group(1) for ln in saved)  # type: ignore[union-attr]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_local_passes_and_falls_back_as_postfix(scenario: str, top: Path) -> None:
    with running_ours(top, _main_cf(scenario, top), "lmtp unix - - n - - lmtp\n") as port:
        lines, delivered = _play(scenario, port, top / "conf" / "spool", top / "maillog")
    assert lines == sorted(SCENARIOS[scenario][2]), (top / "maillog").read_text()
    assert delivered == _expected_dovecot(scenario)


@pytest.mark.postfix
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_same_with_real_postfix(scenario: str, top: Path) -> None:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(_main_cf(scenario, top) + logging) as (port, d):
        lines, delivered = _play(scenario, port, d / "spool", d / "maillog")
    assert lines == sorted(SCENARIOS[scenario][2])
    assert delivered == _expected_dovecot(scenario)
