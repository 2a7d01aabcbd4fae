"""Differences a random differential of SMTP dialogues found between real Postfix 3.7 and
our smtpd (same main.cf): VRFY and ETRN run the restrictions smtpd_delay_reject left
pending, AUTH wants HELO first, MAIL judges the address before its parameters, and
extract_addr's one pair of brackets too many. Each dialogue is played on both; the
replies and the reject and warning lines must be the same."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import main_cf_with
from tests.smtpd.test_postfix_differential import Played, _transaction_lines

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

CHECKS_CF = """\
smtpd_helo_required = yes
smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname
smtpd_sender_restrictions = reject_non_fqdn_sender
smtpd_recipient_restrictions = reject_non_fqdn_recipient
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains = relay.example
message_size_limit = 20000
"""

# smtpd's reject lines and extract_addr's warnings, without the syslog prefix.
WANTED = r": reject: |Illegal address syntax"


def _played(start_smtpd: Any, dialogue: list[str], main_cf: str = "") -> Played:
    both = Played(start_smtpd, [*dialogue, "QUIT"], main_cf_with(CHECKS_CF, main_cf))
    assert both.our_replies[1:] == both.their_replies[1:]
    assert _transaction_lines(both.ours, WANTED) == _transaction_lines(both.theirs, WANTED)
    return both


def test_vrfy_runs_the_pending_and_recipient_restrictions_as_postfix(start_smtpd) -> None:
    """VRFY is smtpd_check_rcpt: with smtpd_delay_reject = yes the HELO and sender
    restrictions still pending, then the recipient and relay ones, refused as RCPT's
    would be and logged as "reject: VRFY from ..."; a bare postmaster is taken unchecked
    (and is at RCPT too)."""
    dialogue = ["EHLO client.example", "VRFY <nope@example.test>", "VRFY root"]
    dialogue += ["VRFY <u@relay.example>", "VRFY postmaster", "VRFY Postmaster@example.test"]
    dialogue += ["MAIL FROM:<a>", "VRFY root", "VRFY postmaster", "RCPT TO:<Postmaster>"]
    dialogue += ["RSET", "HELO a..b", "VRFY root", "VRFY <a@b..c>"]
    both = _played(start_smtpd, dialogue)
    assert both.their_replies[2:4] == [
        "554 5.7.1 <nope@example.test>: Relay access denied",
        "504 5.5.2 <root>: Recipient address rejected: need fully-qualified address",
    ], both.their_replies
    assert both.their_replies[8] == (
        "504 5.5.2 <a>: Sender address rejected: need fully-qualified address"
    )
    assert both.their_replies[-3] == "501 5.5.2 <a..b>: Helo command rejected: Invalid name"
    assert (
        "NOQUEUE: reject: VRFY from unknown[127.0.0.2]: 501 5.5.2 <a..b>: Helo command"
        " rejected: Invalid name; to=<root> proto=ESMTP helo=<a..b>"
    ) in _transaction_lines(both.theirs, WANTED)


def test_etrn_runs_the_pending_helo_restrictions_as_postfix(start_smtpd) -> None:
    """ETRN is smtpd_check_etrn: the client and HELO restrictions smtpd_delay_reject left
    pending refuse it before the flush service is asked (which would say 250 or 459)."""
    dialogue = ["EHLO client.example", "HELO localhost", "ETRN relay.example", "ETRN @x"]
    dialogue += ["EHLO a..b", "ETRN relay.example", "EHLO client.example", "ETRN @x"]
    both = _played(start_smtpd, dialogue)
    assert both.their_replies[3] == (
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    )
    assert both.their_replies[-2] == "459 <x>: service unavailable"


def test_auth_asks_for_helo_first_as_postfix(start_smtpd) -> None:
    """smtpd_helo_required: AUTH before HELO is "send HELO/EHLO first" even where AUTH is
    not enabled, as Postfix's smtpd_sasl_auth_cmd checks in that order."""
    both = _played(start_smtpd, ["AUTH PLAIN", "HELO client.example", "AUTH PLAIN"])
    assert both.their_replies[1:4] == [
        "503 5.5.1 Error: send HELO/EHLO first",
        "250 mx.example.test",
        "503 5.5.1 Error: authentication not enabled",
    ]


def test_mail_address_judged_before_its_parameters_as_postfix(start_smtpd) -> None:
    """A sender whose domain is not valid is "Bad sender address syntax" (with
    extract_addr's warning) whatever parameters follow; SMTPUTF8 among them is looked for
    first, as it decides whether a UTF-8 domain is valid. RCPT is the same."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@b..c> SIZE=999999"]
    dialogue += ["MAIL FROM:<a@b..c> FOO=bar", "MAIL FROM:<a@.b.c> SIZE"]
    dialogue += ["MAIL FROM:<a@\u00e9.example> BODY=BAD", "MAIL FROM:<a@\u00e9.example> SMTPUTF8"]
    dialogue += ["RCPT TO:<a@b..c> FOO=bar", "RCPT TO:<a@b..c> NOTIFY=x"]
    both = _played(start_smtpd, dialogue)
    assert both.their_replies[2:5] == ["501 5.1.7 Bad sender address syntax"] * 3
    assert both.their_replies[6] == "250 2.1.0 Ok"
    assert (
        "warning: Illegal address syntax from unknown[127.0.0.2] in MAIL command: <a@b..c>"
        in _transaction_lines(both.theirs, WANTED)
    )


def test_one_pair_of_brackets_too_many_as_postfix(start_smtpd) -> None:
    """extract_addr takes one pair of brackets off the whole word, and tok822 ignores one
    more around the address: <<a@b.c>> and <a@b.c>> are a@b.c, <<>> the null sender;
    <<a@b.c>>>, <<<a@b.c>>> and <a@b.c>>x are bad syntax (with the warning)."""
    dialogue = ["EHLO client.example", "MAIL FROM:<<>>", "RSET", "MAIL FROM:<<a@b.c>> SIZE=10"]
    dialogue += ["RCPT TO:<a@b.c>> NOTIFY=x", "RCPT TO:<<u@relay.example>>"]
    dialogue += ["RCPT TO:<u@relay.example>>", 'RCPT TO:<<"q u"@b.c>>', "RCPT TO:<postmaster>>"]
    dialogue += ["RCPT TO:<<a@b.c>(c)>", "RCPT TO:<<a@b.c>", "RCPT TO:<<a@b.c>>>"]
    dialogue += ["RCPT TO:<<<a@b.c>>>", "RCPT TO:<a@b.c>>x", "RCPT TO:<<a@b..c>>"]
    both = _played(start_smtpd, dialogue)
    replies = both.their_replies
    assert replies[5:8] == [
        "501 5.5.4 Error: Bad NOTIFY parameter syntax",
        "250 2.1.5 Ok",
        "250 2.1.5 Ok",
    ], replies
    assert all(re.match("501 5.1.3 ", r) for r in replies[11:16]), replies


def test_helo_address_literal_judged_as_postfix(start_smtpd) -> None:
    """reject_invalid_helo_hostname sends a name that starts with "[" to Postfix's
    reject_invalid_hostaddr ("invalid ip address"): brackets off when both are there, an
    IPv6 address only after "IPv6:"; reject_non_fqdn_helo_hostname leaves it alone. A
    refused HELO leaves the session's name as it was."""
    dialogue = ["HELO [::1]", "ETRN a.example", "HELO [IPv6:::1]", "ETRN a.example"]
    dialogue += ["HELO [1.2.3.4", "ETRN a.example", "HELO [1.2.3]", "HELO [1.2.3.4]x"]
    dialogue += ["HELO [127.0.0.2]", "EHLO [1.2.3]", "MAIL FROM:<a@b.c>"]
    # Judged at HELO, the name as given (not yet neutered); an address is no FQDN.
    dialogue += ["HELO foo.example.com extra", "HELO 1.2.3.4", "HELO 1.2.3.4."]
    both = _played(start_smtpd, dialogue, "smtpd_delay_reject = no\n")
    replies = both.their_replies
    assert replies[1] == "501 5.5.2 <[::1]>: Helo command rejected: invalid ip address"
    assert replies[2] == "503 Error: send HELO/EHLO first"
    assert replies[3:5] == ["250 mx.example.test", "459 <a.example>: service unavailable"]


def test_mail_size_kept_after_a_failed_mail_as_postfix(start_smtpd) -> None:
    """SIZE= is judged against message_size_limit after all parameters, and Postfix's
    msg_size outlives a MAIL that failed: the next MAIL without SIZE= is refused too, until
    RSET or HELO. The refusal is logged with the sender."""
    dialogue = ["EHLO client.example", "MAIL FROM:<a@b.c> SIZE=999999 FOO=bar"]
    dialogue += ["MAIL FROM:<a@b.c>", "MAIL FROM:<a@b.c> SIZE=10", "RSET"]
    dialogue += ["MAIL FROM:<a@b.c> SIZE=999999", "RSET", "MAIL FROM:<a@b.c>", "RSET"]
    dialogue += ["MAIL FROM:<a@b.c> SIZE=999999", "EHLO client.example", "MAIL FROM:<a@b.c>"]
    both = _played(start_smtpd, dialogue)
    assert both.their_replies[2:5] == [
        "555 5.5.4 Unsupported option: FOO=bar",
        "552 5.3.4 Message size exceeds fixed limit",
        "250 2.1.0 Ok",
    ], both.their_replies


ETRN_CF = "smtpd_helo_required = no\nfast_flush_domains = relay.example\n"
ETRN_CF += "smtpd_etrn_restrictions = check_etrn_access inline:{{x=REJECT no etrn}}\n"
ETRN = ["ETRN relay.example", "ETRN @x", "ETRN other.example", "EHLO a..b", "ETRN relay.example"]
STRICT_CF = "strict_rfc821_envelopes = yes\nsmtputf8_enable = no\n"
STRICT = ["EHLO client.example", "VRFY", 'MAIL FROM:<""@b.c> FOO=bar', "MAIL FROM:<a@b.c>"]
STRICT += ['RCPT TO:<""@b.c>']
UNKNOWN_CF = "smtpd_delay_reject = no\nsmtpd_sender_restrictions = reject_unknown_sender_domain\n"
UNKNOWN = ["EHLO client.example", "MAIL FROM:<u@relay.example>", "MAIL FROM:<u@nx.invalid>"]
NO_DSN_CF = "smtpd_discard_ehlo_keywords = dsn, size\n"
NO_DSN = ["EHLO client.example", "MAIL FROM:<a@b.c> RET=x", "MAIL FROM:<a@b.c> ENVID=abc"]
NO_DSN += ["MAIL FROM:<a@b.c>", "RCPT TO:<a@b.c> NOTIFY=x", "RCPT TO:<a@b.c> ORCPT=rfc822;a@b.c"]


@pytest.mark.parametrize(
    ("main_cf", "dialogue", "first", "expected"),
    [
        # smtpd_helo_required = no: ETRN needs no HELO; check_etrn_access looks the domain
        # up ("Etrn command rejected"); a domain fast_flush_domains names is flushed.
        (
            ETRN_CF,
            ETRN,
            1,
            [
                "250 Queuing started",
                "554 5.7.1 <x>: Etrn command rejected: no etrn",
                "459 <other.example>: service unavailable",
            ],
        ),
        # strict_rfc821_envelopes = yes refuses an address whose local part is empty once
        # unquoted (<""@b.c>: '@' first, with extract_addr's warning); smtputf8_enable =
        # no leaves [SMTPUTF8] out of VRFY's syntax reply.
        (
            STRICT_CF,
            STRICT,
            2,
            ["501 5.5.4 Syntax: VRFY address", "501 5.1.7 Bad sender address syntax"],
        ),
        # smtpd_discard_ehlo_keywords = dsn: RET=, ENVID=, NOTIFY= and ORCPT= refused as
        # Postfix's ehlo_discard_mask refuses them, before their values are looked at.
        (NO_DSN_CF, NO_DSN, 2, ["501 5.7.1 DSN support is disabled"] * 2),
        # reject_unknown_sender_domain asks the DNS of a domain relay_domains names too
        # (only local and virtual ones are final for Postfix).
        (
            UNKNOWN_CF,
            UNKNOWN,
            2,
            ["450 4.1.8 <u@relay.example>: Sender address rejected: Domain not found"],
        ),
    ],
    ids=["etrn-restrictions", "rfc821-ascii", "dsn-discarded", "relay-domain-unknown"],
)
def test_configured_commands_as_postfix(
    start_smtpd, main_cf: str, dialogue: list[str], first: int, expected: list[str]
) -> None:
    both = _played(start_smtpd, dialogue, main_cf)
    assert both.their_replies[first : first + len(expected)] == expected, both.their_replies
