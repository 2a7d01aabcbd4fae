"""Random SMTP dialogues, the same ones (a fixed seed) played on real Postfix 3.7 and on our
smtpd with the same main.cf: every reply must be Postfix's. The grammar mixes good and bad
HELO names, addresses, ESMTP parameters and commands out of order, around the
restrictions, access(5) actions, relay control and size limits a site uses."""

from __future__ import annotations

import random
import re

import pytest

from tests.smtpd.conftest import Raw, running_smtpd
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

MAIN_CF = """\
smtpd_banner = $myhostname ESMTP
smtpd_error_sleep_time = 0
smtpd_helo_required = yes
smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname
smtpd_sender_restrictions = reject_non_fqdn_sender, check_sender_access \
inline:{{blocked@example.org=REJECT go away}, {held.example=HOLD}, {ok.example=OK}}
smtpd_recipient_restrictions = reject_non_fqdn_recipient, check_recipient_access \
inline:{{nope@example.test=550 5.7.1 nope here}, {tmp@example.test=450 try later}, \
{warn.example=WARN careful}}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains = relay.example
virtual_alias_maps = inline:{{alias@example.test=root@localhost}}
virtual_alias_domains = valias.example
message_size_limit = 20000
smtpd_recipient_limit = 5
"""

NAMES = ["", "x", "foo.example.com", "[127.0.0.2]", "[1.2.3]", "bad_name!", "a..b", "-x.com"]
NAMES += ["x" * 70 + ".com", "foo.example.com extra", "localhost", "[IPv6:::1]", "1.2.3.4"]
NAMES += ["\u00e9.example", "[::1]", "[1.2.3.4"]
ADDRS = ["<>", "<a@b>", "<a@b.c>", "<@r.example:a@b.c>", "<a>", '<"q u"@b.c>', "<a@[1.2.3.4]>"]
ADDRS += ["<blocked@example.org>", "<x@held.example>", "<x@ok.example>", "<root@localhost>"]
ADDRS += ["<root@mx.example.test>", "<nope@example.test>", "<tmp@example.test>"]
ADDRS += ["<a@warn.example>", "<u@relay.example>", "<u@other.example>", "<alias@example.test>"]
ADDRS += ["<u@valias.example>", "<postmaster>", "<Postmaster>", "<a@b.c", "a@b.c", "<a b@c.d>"]
ADDRS += ["<a@b.c>>", "<<a@b.c>>", "<a@.b.c>", "<a@b..c>", "<a@b.c.>", "<a%b@relay.example>"]
ADDRS += ["<a!b@relay.example>", "<a@-b.c>", "<" + "l" * 70 + "@b.c>", '<""@b.c>']
ADDRS += ["<a@[IPv6:::1]>", "<a@[300.1.1.1]>", "<root@LOCALHOST>", "<a@b.c> ", " <a@b.c>"]
ADDRS += ["<<>>", "<a@\u00e9.example>"]
MPARAMS = ["", " SIZE=100", " SIZE=x", " SIZE=999999", " BODY=8BITMIME", " BODY=BAD"]
MPARAMS += [" RET=HDRS", " RET=x", " ENVID=abc", " ENVID=a+2Bb", " AUTH=<>", " SMTPUTF8"]
MPARAMS += [" FOO=bar", " SIZE", " SIZE=100 SIZE=200", " size=10", " BODY=7BIT RET=FULL"]
RPARAMS = ["", " NOTIFY=NEVER", " NOTIFY=SUCCESS,FAILURE", " NOTIFY=x", " ORCPT=rfc822;a@b.c"]
RPARAMS += [" ORCPT=x", " FOO=bar", " NOTIFY=NEVER,SUCCESS"]
# No "BDAT n": the client here does not send the chunk, and both servers would wait for it.
OTHER = ["RSET", "RSET x", "NOOP", "NOOP x", "VRFY root", "VRFY", "VRFY <nope@example.test>"]
OTHER += ["EXPN root", "HELP", "HELP x", "ETRN", "ETRN relay.example", "ETRN @x", "AUTH PLAIN"]
OTHER += ["STARTTLS", "BDAT x", "XCLIENT NAME=x", "XFORWARD NAME=x", "", "   ", "QUIT x"]
OTHER += ["GET / HTTP/1.0", "TURN", "SEND FROM:<a@b.c>", "X", "NOOP " + "y" * 600, "EXPN"]
OTHER += ["VRFY postmaster", "VRFY <alias@example.test>"]
BODIES = ["Subject: t\r\n\r\nhello\r\n.\r\n", "\r\n.\r\n", "no header line\r\n.\r\n"]
BODIES += ["Subject: t\r\n\r\n" + "x" * 30000 + "\r\n.\r\n", "From: a\r\n\r\n..dot\r\n.\r\n"]


def _command(r: random.Random) -> str:
    k = r.random()
    if k < 0.12:
        verb = r.choice(["EHLO", "HELO", "ehlo", "Helo", "LHLO"])
        return verb + (" " + r.choice(NAMES) if r.random() < 0.9 else "")
    if k < 0.32:
        verb = r.choice(["MAIL FROM:", "MAIL FROM: ", "mail from:", "MAIL FROM", "MAIL "])
        return verb + r.choice(ADDRS) + r.choice(MPARAMS)
    if k < 0.55:
        verb = r.choice(["RCPT TO:", "RCPT TO: ", "rcpt to:", "RCPT TO", "RCPT FROM:"])
        return verb + r.choice(ADDRS) + r.choice(RPARAMS)
    if k < 0.62:
        return "DATA" + r.choice(["", "", " x"])
    return r.choice(OTHER)


def _dialogues(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """n dialogues of (command, the message to send should it be answered 354)."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        commands = [_command(r) for _ in range(r.randint(2, 12))]
        if r.random() < 0.6:
            commands.insert(0, "EHLO client.example")
        out.append([(c, r.choice(BODIES)) for c in [*commands, "QUIT"]])
    return out


_QUEUE_ID = re.compile(r"queued as [0-9A-Za-z]+")


def _play(port: int, dialogue: list[tuple[str, str]]) -> list[str]:
    raw = Raw("127.0.0.1", port, source="127.0.0.2")
    replies = [raw.reply()]
    try:
        for command, body in dialogue:
            reply = raw.cmd(command)
            if reply.startswith("354"):
                raw.send(body.encode())
                reply += " / " + raw.reply()
            replies.append(_QUEUE_ID.sub("queued as QID", reply))
            if reply.startswith(("221", "421")):
                break
    except OSError:
        replies.append("(closed)")
    finally:
        raw.close()
    return replies


@pytest.mark.parametrize("delay_reject", ["yes", "no"])
def test_random_dialogues_as_postfix(tmp_path, delay_reject: str) -> None:
    main_cf = MAIN_CF + f"smtpd_delay_reject = {delay_reject}\n"
    dialogues = _dialogues(75, 20261206)
    differences = []
    with running_postfix(main_cf) as (port, _d), running_smtpd(str(tmp_path), main_cf) as srv:
        for dialogue in dialogues:
            theirs, ours = _play(port, dialogue), _play(srv.port, dialogue)
            if theirs != ours:
                sent = ["(greeting)"] + [c for c, _ in dialogue]
                pairs = enumerate(zip(theirs, ours, strict=False))
                at = next((i for i, (t, o) in pairs if t != o), min(len(theirs), len(ours)))
                differences.append((sent[: at + 1], theirs[at : at + 1], ours[at : at + 1]))
    assert differences == [], "\n".join(map(repr, differences))
