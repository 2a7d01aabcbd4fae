"""smtp(8)'s smtp_sasl_password_maps, compared with real Postfix 3.7's smtp client.

The next hop is a real Postfix smtpd with SASL through a real Dovecot (users carol and
dave); it logs which user logged in for each message ("client=..., sasl_username=U"). The
same tables are given to a second real Postfix, which relays through it, and to our
client: the users logged for the same senders must be the same, in the order
smtp_sasl_passwd_lookup() asks (the sender with smtp_sender_dependent_authentication, the
remote host's name, then the destination as given, each key asked of every table before
the next key, pattern tables given the whole string only)."""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
from pathlib import Path

import pytest
from oxipost.delivery import smtp
from oxipost.envelope import Outcome

from tests.smtpd.conftest import dovecot
from tests.smtpd.test_postfix_differential import running_postfix

from .conftest import make_config, request, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]
__all__ = ["dovecot"]  # the fixture, used by name

LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
RCPT = "user@mx.example.test"


def _wait(path: Path, pattern: str, count: int) -> list[str]:
    deadline = time.monotonic() + 30
    while True:
        text = path.read_text() if path.exists() else ""
        found = re.findall(pattern, text, re.M)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, text
        time.sleep(0.1)


def _next_hop_cf(dovecot_path: str) -> str:
    """The next hop's main.cf: SASL through the Dovecot fixture, a maillog."""
    return (
        "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
        f"smtpd_sasl_path = {dovecot_path}\n" + LOG_CF
    )


def _logins(maillog: Path, count: int) -> list[str]:
    """The user each of the next hop's first `count` clients logged in as ("" for none)."""
    found = _wait(maillog, r": client=\S+\[127\.0\.0\.1\](.*)$", count)
    return [m.partition("sasl_username=")[2] for m in found[:count]]


def _tables(d: Path, next_hop: int, tables: dict[str, str]) -> str:
    """The tables written in d (PORT in them the next hop's), as smtp_sasl_password_maps."""
    specs = []
    for name, text in tables.items():
        kind = "regexp" if text.startswith("/") else "texthash"
        (d / name).write_text(text.replace("PORT", str(next_hop)))
        specs.append(f"{kind}:{d / name}")
    return ", ".join(specs)


def _logins_both_ways(
    tmp_path: Path, dovecot_path: str, client_cf: str, tables: dict[str, str], senders: list[str]
) -> tuple[list[str], list[str]]:
    """(Postfix's logins, ours) for mail from each sender through the next hop, the client
    configured with client_cf and these tables."""
    with running_postfix(_next_hop_cf(dovecot_path), without=("qmgr",)) as (
        hop,
        hop_dir,
    ):
        tdir = tmp_path / "tables"
        tdir.mkdir()
        # Postfix's smtp runs as the postfix user: pytest's 0700 tree is closed to it.
        for up in (tdir, *tdir.parents):
            if up == Path("/tmp"):
                break
            up.chmod(up.stat().st_mode | 0o055)
        main = (
            # Postfix's default (noplaintext) would use no PLAIN or LOGIN without TLS.
            "smtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n"
            f"smtp_sasl_password_maps = {_tables(tdir, hop, tables)}\n" + client_cf
        )
        relay_cf = (
            f"myhostname = relay.example.test\nmydestination =\nrelayhost = [127.0.0.1]:{hop}\n"
            + main
            + LOG_CF
        )
        with running_postfix(relay_cf) as (port, d):
            for n, sender in enumerate(senders, 1):
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                    assert s.sendmail(sender, [RCPT], b"Subject: t\r\n\r\nx\r\n") == {}
                # One at a time: the next hop logs them in this order.
                sent = _wait(d / "maillog", r"postfix/smtp\[\d+\]: .* status=(\w+)", n)
            assert sent == ["sent"] * len(senders), (d / "maillog").read_text()
        cfg = make_config(tmp_path / "ours", main)
        for sender in senders:
            (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{hop}", [RCPT], sender=sender))
            assert o.delivered, o
        logins = _logins(hop_dir / "maillog", 2 * len(senders))
    return logins[: len(senders)], logins[len(senders) :]


def test_sender_then_host_name_each_key_in_every_table_as_postfix(tmp_path, dovecot) -> None:
    """smtp_sender_dependent_authentication: the sender's keys (the address, without its
    extension, @domain) come first, then the host's name, then the destination; a key is
    asked of every table before the next key, and the regexp table sees whole strings."""
    tables = {
        "by-domain": "@example.org carol:letmein\n[127.0.0.1]:PORT carol:letmein\n",
        # Not asked for dave@example.net: only dave+x@example.net, the whole address.
        "pattern": "/^dave@example\\.net$/ carol:letmein\n/^nobody@/ carol:wrong\n",
        "by-address": "dave@example.net dave:pw\n127.0.0.1 dave:pw\n",
    }
    senders = ["a+ext@example.org", "dave+x@example.net", "other@example.com", ""]
    theirs, ours = _logins_both_ways(
        tmp_path,
        dovecot[0],
        "smtp_sender_dependent_authentication = yes\n",
        tables,
        senders,
    )
    assert ours == theirs
    # The host's name (second table) before the destination (first table).
    assert theirs == ["carol", "dave", "dave", "dave"]


def test_destination_as_given_and_no_sender_keys_by_default_as_postfix(tmp_path, dovecot) -> None:
    """Without sender-dependent authentication the sender is not a key; the destination is
    the relayhost as written, [127.0.0.1]:port; no entry at all: no AUTH."""
    tables = {
        "one": "@example.org dave:pw\n[127.0.0.1]:PORT carol:letmein\n",
    }
    theirs, ours = _logins_both_ways(tmp_path, dovecot[0], "", tables, ["a@example.org"])
    assert ours == theirs == ["carol"]


def _failing_both_ways(
    tmp_path: Path, dovecot_path: str, main: str
) -> tuple[str, tuple[str, str, str], Outcome]:
    """(Postfix's smtp log, (relay, dsn, text) of its status line, our outcome) for one
    message through the SASL next hop with this main.cf (HOP: the next hop's port)."""
    next_hop_cf = _next_hop_cf(dovecot_path)
    with running_postfix(next_hop_cf) as (hop, _hop_dir):
        main = main.replace("HOP", str(hop))
        relay_cf = (
            f"myhostname = relay.example.test\nmydestination =\nrelayhost = [127.0.0.1]:{hop}\n"
            + main
            + LOG_CF
        )
        with running_postfix(relay_cf) as (port, d):
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                assert s.sendmail("a@example.org", [RCPT], b"Subject: t\r\n\r\nx\r\n") == {}
            pattern = r"postfix/smtp\[\d+\]: \w+: to=.*, relay=([^,]+), .*dsn=([\d.]+), "
            pattern += r"status=\w+ \((.*)\)$"
            (status,) = _wait(d / "maillog", pattern, 1)
            theirs = (d / "maillog").read_text()
        cfg = make_config(tmp_path / "ours", main)
        (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{hop}", [RCPT]))
    return theirs, status, o


def test_table_lookup_error_defers_as_postfix(tmp_path, dovecot, caplog) -> None:
    """A table that cannot answer (fail:) defers the mail with 4.3.0 'local data error while
    talking to H[A]' after 'warning: QID: smtp_sasl_password_maps lookup error', as
    Postfix's smtp does; asked only because the server offers AUTH."""
    main = "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = fail:broken\n"
    theirs, status, o = _failing_both_ways(tmp_path, dovecot[0], main)
    qid = re.findall(r"([0-9A-F]+): to=", theirs)[0]
    warning = rf"postfix/smtp\[\d+\]: warning: {qid}: smtp_sasl_password_maps lookup error"
    assert re.search(warning, theirs)
    assert "4ABCDE1234: smtp_sasl_password_maps lookup error" in caplog.messages
    assert (o.relay, o.status, o.text) == status
    assert status[1:] == ("4.3.0", "local data error while talking to 127.0.0.1[127.0.0.1]")


@pytest.mark.parametrize("soft", ["yes", "no"])
def test_refused_login_as_postfix(tmp_path, dovecot, soft) -> None:
    """The server's 535 5.7.8: deferred as 4.7.8 with smtp_sasl_auth_soft_bounce, bounced
    as 5.7.8 without, 'SASL authentication failed; server H[A] said: REPLY'."""
    main = (
        "smtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n"
        "smtp_sasl_password_maps = inline:{ [127.0.0.1]:HOP=carol:wrong }\n"
        f"smtp_sasl_auth_soft_bounce = {soft}\n"
    )
    _theirs, status, o = _failing_both_ways(tmp_path, dovecot[0], main)
    assert (o.relay, o.status, o.text) == status
    assert status[1] == ("4.7.8" if soft == "yes" else "5.7.8")
    assert status[2].startswith("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535")


def test_cached_session_is_not_another_senders(tmp_path, dovecot) -> None:
    """With smtp_sender_dependent_authentication a session logged in for one sender is not
    reused for the next sender's mail (Postfix's cache key holds the sender): each logs in
    as its own user."""
    with running_postfix(_next_hop_cf(dovecot[0]), without=("qmgr",)) as (
        hop,
        hop_dir,
    ):
        main = (
            "smtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n"
            "smtp_sender_dependent_authentication = yes\nsmtp_sasl_password_maps = "
            "inline:{ @example.org=carol:letmein, @example.com=dave:pw }\n"
        )
        cfg = make_config(tmp_path / "ours", main)

        async def both() -> list[Outcome]:
            try:
                out = []
                for sender in ("a@example.org", "b@example.com", "c@example.org"):
                    req = request(cfg, "smtp", f"[127.0.0.1]:{hop}", [RCPT], sender=sender)
                    out += await smtp.deliver(req)
                return out
            finally:
                await smtp.close_cached()

        assert all(o.delivered for o in asyncio.run(both()))
        assert _logins(hop_dir / "maillog", 3) == ["carol", "dave", "carol"]
