"""Quoted local parts and backslash escapes in MAIL FROM and RCPT TO, beside real Postfix
3.7 (Debian's): smtpd keeps the address in its internal (unquoted) form, `"a\\"b"@x` as
`a"b@x`, `"a\\\\b"@x` as `a\\b@x` and `"a\\b"@x` as `ab@x`; trivial-rewrite quotes it again
(quote_822_local) before it parses it, so a local part with `@`, `%` or `!` is routed
(`"a@b"@localhost`: Relay access denied) and a bare `"` is just a character. Compared:
the replies and smtpd's log lines, the queue file's envelope (postcat), and local(8)'s
delivery lines."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.delivery.test_e2e_delivery import Oxipost
from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import (
    MESSAGE,
    Played,
    _commands,
    _queued_on_both,
    _transaction_lines,
    running_postfix,
)

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

# Local parts that are accepted for a local domain, as the client writes them.
ACCEPTED = [
    r'"a\"b"@localhost',
    r'"a\\b"@localhost',
    r'"a\b"@localhost',
    r"a\"b@localhost",
    r'"\"a\""@localhost',
    r'"a b"@localhost',
    r'"a\"b"',
]
# A routing operator in the local part: foreign to relay control, whatever the quoting.
ROUTED = [
    r'"a@b"@localhost',
    r'"a%b"@localhost',
    r'"a!b"@localhost',
    r"a\@b@localhost",
    r'"a\"@b"@localhost',
    r'"a@b"@example.org',
]


@pytest.mark.parametrize("command", ["MAIL FROM", "RCPT TO"])
def test_quoted_addresses_answered_as_postfix(start_smtpd, command: str) -> None:
    """Each address as sender and as recipient: the same replies as Postfix ("<a@b@localhost>:
    Relay access denied" naming the internal form) and the same smtpd lines (the reject's
    from=<"a@b"@localhost>, quoted again as info_log_address_format = external)."""
    dialogue = ["EHLO x.example"]
    for address in ACCEPTED + ROUTED:
        if command == "MAIL FROM":
            dialogue += [f"MAIL FROM:<{address}>", "RCPT TO:<u@localhost>", "RSET"]
        else:
            dialogue += ["MAIL FROM:<s@example.org>", f"RCPT TO:<{address}>", "RSET"]
    both = Played(start_smtpd, [*dialogue, "QUIT"], "")
    expected = _transaction_lines(both.theirs)
    assert both.their_replies[2:4] == ["250 2.1.0 Ok", "250 2.1.5 Ok"], both.their_replies
    if command == "RCPT TO":
        relay_denied = [r for r in both.their_replies if "Relay access denied" in r]
        assert len(relay_denied) == len(ROUTED), both.their_replies
        assert '454 4.7.1 <a"@b@localhost>: Relay access denied' in relay_denied
        assert any('from=<s@example.org> to=<"a\\"@b"@localhost>' in ln for ln in expected)
    assert both.our_replies[1:] == both.their_replies[1:]
    assert _transaction_lines(both.ours) == expected


def _envelope(postcat: subprocess.CompletedProcess) -> list[str]:
    assert postcat.returncode == 0, postcat.stderr
    wanted = ("sender: ", "recipient: ", "original_recipient: ", "named_attribute: dsn_orig_rcpt")
    return [ln for ln in postcat.stdout.splitlines() if ln.startswith(wanted)]


def test_quoted_addresses_queued_as_postfix(start_smtpd) -> None:
    """Each accepted address as sender and recipient of one message: the queue file holds
    the internal form (`a"b@localhost`, `a\\b@localhost`, `ab@localhost`, `"a"@localhost`,
    an unqualified one with @$myorigin and its original recipient without), and the
    client's own text as the DSN original recipient, as Postfix's (postcat -e)."""
    dialogue = ["EHLO x.example"]
    for address in ACCEPTED:
        dialogue += [f"MAIL FROM:<{address}>", f"RCPT TO:<{address}>", *MESSAGE]
    play = _commands([*dialogue, "QUIT"])
    theirs, ours = _queued_on_both(start_smtpd, "", play, len(ACCEPTED), "-e")
    expected = [_envelope(q.postcat) for q in theirs]
    assert expected[0] == [
        'sender: a"b@localhost',
        'named_attribute: dsn_orig_rcpt=rfc822;"a\\"b"@localhost',
        'original_recipient: a"b@localhost',
        'recipient: a"b@localhost',
    ], expected
    assert expected[2][0] == "sender: ab@localhost", expected
    assert [_envelope(q.postcat) for q in ours] == expected


def _delivery_lines(maillog: Path, count: int) -> list[str]:
    """qmgr's from= and local(8)'s lines, once local has logged `count`, without queue IDs
    and times, sorted (the messages are delivered in parallel)."""
    deadline = time.monotonic() + 60
    while (
        len(re.findall(r"postfix/local\[\d+\]: [0-9A-F]+: to=", text := maillog.read_text()))
        < count
    ):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    lines = re.findall(r"postfix/(?:qmgr|local)\[\d+\]: [0-9A-F]+: ((?:from|to)=.*)", text)
    return sorted(re.sub(r"delay=[\d.]+, delays=[\d./]+, |size=\d+, ", "", ln) for ln in lines)


def _send(port: int, addresses: list[str]) -> None:
    raw = Raw("127.0.0.1", port, source="127.0.0.2")
    raw.reply()
    raw.cmd("EHLO x.example")
    for address in addresses:
        # NOTIFY=NEVER: the bounce would go back to the same address.
        commands = [f"MAIL FROM:<{address}>", f"RCPT TO:<{address}> NOTIFY=NEVER", *MESSAGE]
        assert [raw.cmd(c)[:3] for c in commands] == ["250", "250", "354", "250"], address
    raw.cmd("QUIT")
    raw.close()


def test_quoted_addresses_delivered_as_postfix() -> None:
    """local(8) gets the internal form: no such user `a"b` ("unknown user: "a"b""), while
    qmgr's from= and local's to= quote it again (info_log_address_format = external), as
    Postfix 3.7 logs them."""
    delivered = [a for a in ACCEPTED if "@" in a]
    main_cf = "alias_maps =\nalias_database =\n"
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf) as (port, d):
        _send(port, delivered)
        theirs = _delivery_lines(d / "maillog", len(delivered))
    with contextlib.closing(Oxipost()) as oxi:
        oxi.start(main_cf)
        _send(oxi.port, delivered)
        ours = _delivery_lines(oxi.dir / "maillog", len(delivered))
    assert (
        'to=<"a\\"b"@localhost>, relay=local, dsn=5.1.1, status=bounced (unknown user: "a"b")'
        in theirs
    ), theirs
    assert 'from=<"a\\\\b"@localhost>, nrcpt=1 (queue active)' in theirs, theirs
    assert ours == theirs


def test_content_check_logs_quoted_addresses_as_postfix(start_smtpd) -> None:
    """cleanup's header_checks line (WARN) names the envelope as Postfix's cleanup_act_log
    does: from=<"a\\"b"@localhost> to=<"a b"@localhost>, quoted again."""
    main_cf = "header_checks = regexp:{{/^Subject:/ WARN quoted}}\n"
    dialogue = ["EHLO x.example", r'MAIL FROM:<"a\"b"@localhost>', 'RCPT TO:<"a b"@localhost>']
    both = Played(start_smtpd, [*dialogue, *MESSAGE, "QUIT"], main_cf)
    expected = _transaction_lines(both.theirs, r": warning: header ")
    assert len(expected) == 1 and 'from=<"a\\"b"@localhost> to=<"a b"@localhost>' in expected[0]
    assert _transaction_lines(both.ours, r": warning: header ") == expected
