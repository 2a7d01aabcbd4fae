"""check_recipient_access and check_sender_access ask their table for the address as
trivial-rewrite resolves it (Postfix's check_mail_access): user!host, user%host and an
unqualified sender are looked up as the address they stand for, the reply naming the
address as the client gave it. Played on real Postfix 3.7 and on our smtpd, same main.cf."""

from __future__ import annotations

from typing import Any

import pytest

from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = pytest.mark.postfix

TABLE = (
    "inline:{{x!y!d=OK}, {b.example!a@mx.example.test=OK}, {a%b@mx.example.test=OK},"
    " {a@b.example=OK}, {r@q=OK}, {c@relay.example=OK}, {mx.example.test=OK},"
    " {root@mx.example.test=REJECT unqualified sender found}}"
)
MAIN_CF = f"""\
smtpd_sender_restrictions = check_sender_access {TABLE}
smtpd_recipient_restrictions = check_recipient_access {TABLE}, reject_unauth_destination
smtpd_relay_restrictions =
"""
RCPTS = [
    "<x!y!d>",
    "<a%b.example@mx.example.test>",
    "<q!r@mx.example.test>",
    "<b.example!a>",
    "<b.example!a@mx.example.test>",
    "<a%b@mx.example.test>",
    "<c@relay.example>",
    "<@elsewhere.example:u@mx.example.test>",
]


def _play(port: int) -> list[str]:
    raw = Raw("127.0.0.1", port, source="127.0.0.2")
    replies = [raw.reply(), raw.cmd("EHLO c.example"), raw.cmd("MAIL FROM:<root>")]
    # smtpd_delay_reject: the sender's restrictions answer at the first RCPT.
    replies.append(raw.cmd("RCPT TO:<a@mx.example.test>"))
    replies += [raw.cmd("RSET"), raw.cmd("MAIL FROM:<s@example.org>")]
    replies += [raw.cmd(f"RCPT TO:{r}") for r in RCPTS]
    raw.cmd("QUIT")
    raw.close()
    return replies[1:]


@pytest.mark.parametrize("routing", ["no", "yes"])
def test_access_tables_see_the_resolved_address_as_postfix(start_smtpd: Any, routing: str) -> None:
    main_cf = MAIN_CF + f"allow_untrusted_routing = {routing}\n"
    with running_postfix(main_cf) as (port, _d):
        theirs = _play(port)
    ours = _play(start_smtpd(main_cf).port)
    assert ours == theirs
    # Not what a lookup of the address as given would have found.
    assert theirs[2] == "554 5.7.1 <root>: Sender address rejected: unqualified sender found"
    assert theirs[5] == "554 5.7.1 <x!y!d>: Relay access denied"
    assert theirs[6] == "250 2.1.5 Ok"
