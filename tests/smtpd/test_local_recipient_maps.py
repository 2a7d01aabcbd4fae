"""smtpd with Postfix's default local_recipient_maps, `proxy:unix:passwd.byname
$alias_maps`, beside real Postfix 3.7 (its proxymap(8) serving the passwd table).

The harness's base main.cf empties local_recipient_maps, so these sessions set it to the
default's text; that an unset parameter is that text is postconf -d's (compared with
Postfix's in tests/cli).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import Played

pytestmark = pytest.mark.postfix

DEFAULT_CF = (
    "local_recipient_maps = proxy:unix:passwd.byname $alias_maps\n"
    "alias_maps = inline:{ {postmaster=root}, {alias1=root} }\n"
    "recipient_delimiter = +\n"
)


def _rejects(lines: list[str]) -> list[str]:
    """smtpd's reject lines (the queue ID, taken at the first accepted RCPT, as QID) and
    its lines about unix: tables, without syslog's prefix, once each (a second smtpd
    process of Postfix's that opens its tables logs them again)."""
    out: list[str] = []
    for line in lines:
        text = line.split("]: ", 1)[1] if "postfix/" in line else line
        text = re.sub(r"^[0-9A-F]{10,}: ", "QID: ", text)
        if re.match(r"(NOQUEUE|QID): reject: |(warning|error): .*unix:", text):
            if text not in out:
                out.append(text)
    return out


@pytest.mark.slow
def test_default_local_recipient_maps_as_postfix(start_smtpd: Any) -> None:
    """A login name (in any case, with an extension) and an alias are known local
    recipients; a name passwd does not know, a group that is no user, is "550 5.1.1
    <ADDR>: Recipient address rejected: User unknown in local recipient table", with its
    reject line, word for word as Postfix 3.7's."""
    rcpts = [
        "root@mx.example.test",
        "ROOT@localhost",
        "root+box@mx.example.test",
        "nobody@mx.example.test",
        "alias1@mx.example.test",
        "postmaster@localhost",
        "nosuch@mx.example.test",
        "ssl-cert@mx.example.test",
    ]
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>"]
    dialogue += [f"RCPT TO:<{r}>" for r in rcpts] + ["QUIT"]
    both = Played(start_smtpd, dialogue, DEFAULT_CF)
    assert both.their_replies[3:9] == ["250 2.1.5 Ok"] * 6, both.their_replies
    assert both.their_replies[9] == (
        "550 5.1.1 <nosuch@mx.example.test>: Recipient address rejected: "
        "User unknown in local recipient table"
    )
    assert both.our_replies[1:] == both.their_replies[1:]
    theirs = _rejects(both.theirs)
    assert len(theirs) == 2, "\n".join(both.theirs)
    assert _rejects(both.ours) == theirs


@pytest.mark.slow
def test_unknown_unix_table_is_a_temporary_failure_as_postfix(start_smtpd: Any) -> None:
    """local_recipient_maps naming a unix: table that does not exist: Postfix's
    dict_surrogate ("unknown table: unix:NAME", logged as smtpd starts and at each
    lookup) and a temporary failure for a local recipient, never a 550."""
    main_cf = DEFAULT_CF.replace("proxy:unix:passwd.byname", "unix:passwd.byuid")
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<u@localhost>"]
    both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf)
    assert both.their_replies[3].startswith("451 4.3.0 "), both.their_replies
    assert both.our_replies[1:] == both.their_replies[1:]
    assert _rejects(both.ours) == _rejects(both.theirs)


def test_unapproved_proxied_table_is_a_temporary_failure(start_smtpd: Any) -> None:
    """A proxy: table that proxy_read_maps does not list: Postfix 3.7's smtpd dies with
    'fatal: proxymap service is not configured for table "unix:passwd.byname"' (its
    client never disconnects cleanly); ours logs that as an error when it starts and
    answers a local recipient 451 4.3.0, never an accept or a 550."""
    main_cf = DEFAULT_CF + "proxy_read_maps = $alias_maps\n"
    srv = start_smtpd(main_cf, daemon_tables=True)
    dialogue = ["EHLO client.example", "MAIL FROM:<a@example.org>", "RCPT TO:<root@localhost>"]
    raw = Raw("127.0.0.1", srv.port, source="127.0.0.2")
    try:
        replies = [raw.reply()] + [raw.cmd(command) for command in [*dialogue, "QUIT"]]
    finally:
        raw.close()
    assert replies[3] == "451 4.3.0 <root@localhost>: Temporary lookup failure"
    reason = 'proxymap service is not configured for table "unix:passwd.byname"'
    assert f"error: {reason}" in srv.log
    assert f"warning: proxy:unix:passwd.byname is unavailable. {reason}" in srv.log
