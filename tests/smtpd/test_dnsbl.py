"""DNS block and allow lists on our smtpd (postconf(5) reject_rbl_client, reject_rhsbl_*,
permit_dnswl_client, permit_rhswl_client, rbl_reply_maps, default_rbl_reply), against a
DNS server of the test's own on 127.0.0.1 (tests/dns_stub.py).

Real Postfix asks the system's resolver, which these tests cannot point elsewhere outside a
namespace, so the expected replies follow the documented default_rbl_reply template
(`postconf -d default_rbl_reply` of Postfix 3.7: "$rbl_code Service unavailable; $rbl_class
[$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}") and smtpd_check.c."""

from __future__ import annotations

from collections.abc import Iterator

import dns.rcode
import dns.resolver
import pytest
from oxipost.config import load_config
from oxipost.smtpd import check

from tests.dns_stub import serving
from tests.smtpd.conftest import Raw, write_config

ZONE: dict[tuple[str, str], list[str]] = {
    ("2.0.0.127.bl.test", "A"): ["127.0.0.2"],
    ("2.0.0.127.bl.test", "TXT"): ['"listed, see https://bl.test/127.0.0.2"'],
    ("3.0.0.127.bl.test", "A"): ["127.0.0.12"],
    ("3.0.0.127.bl.test", "TXT"): ['"first"', '"second"'],
    ("2.0.0.127.wl.test", "A"): ["127.0.10.1"],
    ("spam.test.dbl.test", "A"): ["127.0.1.2"],
    ("spam.test.dbl.test", "TXT"): ['"spam domain"'],
    ("mail.spam.test.dbl.test", "A"): ["127.0.1.2"],
    ("rev.spam.test.dbl.test", "A"): ["127.0.1.2"],
    ("2.0.0.127.fail.test", "A"): ["servfail"],
    # 2001:db8::1 as 32 nibbles, last first.
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test", "A"): ["127.0.0.2"],
}
SENT: list[tuple[str, str]] = []


def _lookup(name: str, rtype: str) -> tuple[int, list[str]]:
    SENT.append((name, rtype))
    records = ZONE.get((name, rtype))
    if records == ["servfail"]:
        return dns.rcode.SERVFAIL, []
    if records:
        return dns.rcode.NOERROR, records
    if any(n == name for n, _ in ZONE):
        return dns.rcode.NOERROR, []
    return dns.rcode.NXDOMAIN, []


@pytest.fixture(autouse=True)
def stub_dns() -> Iterator[None]:
    SENT.clear()
    try:
        with serving(_lookup, dns.resolver.Resolver) as resolver:
            check.RESOLVER = resolver
            yield
    finally:
        check.RESOLVER = None


def _rcpt(srv, rcpt: str = "u@localhost", sender: str = "a@example.org", **kw: str) -> str:
    raw = Raw(srv.host, srv.port, source=kw.get("source", "127.0.0.2"))
    raw.reply()
    raw.cmd("EHLO " + kw.get("helo", "client.example"))
    if "xclient" in kw:
        assert raw.cmd("XCLIENT " + kw["xclient"]).startswith("220")
        raw.cmd("EHLO " + kw.get("helo", "client.example"))
    assert raw.cmd(f"MAIL FROM:<{sender}>").startswith("250")
    return raw.cmd(f"RCPT TO:<{rcpt}>")


def _restrict(rules: str, extra: str = "") -> str:
    return f"smtpd_recipient_restrictions = {rules}, permit\n" + extra


def test_reject_rbl_client_listed_with_txt(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rbl_client bl.test"))
    reply = _rcpt(srv)
    text = (
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test;"
        " listed, see https://bl.test/127.0.0.2"
    )
    assert reply == text
    assert (
        f"NOQUEUE: reject: RCPT from unknown[127.0.0.2]: {text}; from=<a@example.org>"
        " to=<u@localhost> proto=ESMTP helo=<client.example>"
    ) in srv.log
    assert ("2.0.0.127.bl.test", "A") in SENT


def test_reject_rbl_client_not_listed(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rbl_client bl.test"))
    assert _rcpt(srv, source="127.0.0.4").startswith("250")
    assert ("4.0.0.127.bl.test", "A") in SENT


def test_reply_filter_and_txt_records_joined(start_smtpd) -> None:
    # 127.0.0.3 is listed as 127.0.0.12: outside [2..11], inside [10..12].
    srv = start_smtpd(_restrict("reject_rbl_client bl.test=127.0.0.[2..11]"))
    assert _rcpt(srv, source="127.0.0.3").startswith("250")
    srv2 = start_smtpd(_restrict("reject_rbl_client bl.test=127.0.0.[1;10..12]"))
    # Each TXT record's text, joined with " / " in the order the answer holds them.
    prefix = "554 5.7.1 Service unavailable; Client host [127.0.0.3] blocked using bl.test; "
    assert _rcpt(srv2, source="127.0.0.3") in (prefix + "first / second", prefix + "second / first")


def test_listed_without_txt_has_no_reason(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rhsbl_helo dbl.test"))
    ZONE.pop(("spam.test.dbl.test", "TXT"))
    try:
        reply = _rcpt(srv, helo="spam.test")
    finally:
        ZONE[("spam.test.dbl.test", "TXT")] = ['"spam domain"']
    assert reply == "554 5.7.1 Service unavailable; Helo command [spam.test] blocked using dbl.test"


def test_dns_failure_is_not_listed(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rbl_client fail.test"))
    assert _rcpt(srv).startswith("250")
    assert (
        "warning: 2.0.0.127.fail.test: RBL lookup error: Host or domain name not found."
        " Name service error for name=2.0.0.127.fail.test type=A: Host not found, try again"
    ) in srv.log


def test_reject_rhsbl_sender_and_recipient(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rhsbl_sender dbl.test, reject_rhsbl_recipient dbl.test"))
    assert _rcpt(srv, sender="x@spam.test") == (
        "554 5.7.1 Service unavailable; Sender address [x@spam.test] blocked using dbl.test;"
        " spam domain"
    )
    # From mynetworks, so that relay control lets the recipient through to the list.
    assert _rcpt(srv, rcpt="u@spam.test", source="127.0.0.1") == (
        "554 5.7.1 Service unavailable; Recipient address [u@spam.test] blocked using"
        " dbl.test; spam domain"
    )
    # The null sender and address literals are never looked up.
    before = len(SENT)
    assert _rcpt(srv, sender="", rcpt="u@[127.0.0.1]").startswith("250")
    assert len(SENT) == before


def test_reject_rhsbl_client_and_reverse_client(start_smtpd) -> None:
    xclient = "smtpd_authorized_xclient_hosts = 127.0.0.0/8\n"
    srv = start_smtpd(_restrict("reject_rhsbl_client dbl.test", xclient))
    # Without a name (smtpd_peername_lookup = no: "unknown") there is nothing to ask.
    assert _rcpt(srv).startswith("250")
    assert not any(n.endswith("dbl.test") for n, _ in SENT)
    assert _rcpt(srv, xclient="NAME=mail.spam.test ADDR=127.0.0.9") == (
        "554 5.7.1 Service unavailable; Client host [mail.spam.test] blocked using dbl.test"
    )
    srv2 = start_smtpd(_restrict("reject_rhsbl_reverse_client dbl.test", xclient))
    assert _rcpt(srv2, xclient="NAME=ok.test REVERSE_NAME=rev.spam.test ADDR=127.0.0.9") == (
        "554 5.7.1 Service unavailable; Unverified Client host [rev.spam.test] blocked using"
        " dbl.test"
    )


def test_rbl_reply_maps_template(start_smtpd, tmp_path) -> None:
    (tmp_path / "rbl_reply").write_text(
        "bl.test 450 4.7.9 $client_address is in $rbl_domain for <$recipient>: $rbl_txt\n"
        "bad.test not a reply\n"
    )
    maps = f"rbl_reply_maps = texthash:{tmp_path}/rbl_reply\n"
    srv = start_smtpd(_restrict("reject_rbl_client bl.test", maps))
    assert _rcpt(srv) == (
        "450 4.7.9 127.0.0.2 is in bl.test for <u@localhost>: listed, see https://bl.test/127.0.0.2"
    )


def test_rbl_reply_that_is_not_a_reply(start_smtpd, tmp_path) -> None:
    (tmp_path / "rbl_reply").write_text("bl.test listed in $rbl_domain\n")
    maps = f"rbl_reply_maps = texthash:{tmp_path}/rbl_reply\n"
    srv = start_smtpd(_restrict("reject_rbl_client bl.test", maps))
    assert _rcpt(srv) == "450 4.7.1 Service unavailable"
    assert "warning: rbl response code configuration error: listed in bl.test" in srv.log


def test_maps_rbl_reject_code(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rbl_client bl.test", "maps_rbl_reject_code = 550\n"))
    assert _rcpt(srv).startswith("550 5.7.1 Service unavailable; Client host [127.0.0.2]")


def test_permit_dnswl_client(start_smtpd) -> None:
    srv = start_smtpd(
        _restrict(
            "permit_dnswl_client wl.test, reject_rbl_client bl.test, reject_rbl_client bl2.test"
        )
    )
    # Listed in both: the allow list comes first.
    assert _rcpt(srv).startswith("250")
    # 127.0.0.3 is not on the allow list, and blocked.
    assert _rcpt(srv, source="127.0.0.3").startswith("554 5.7.1")


def test_permit_dnswl_client_never_authorizes_relaying(start_smtpd) -> None:
    srv = start_smtpd(
        "smtpd_relay_restrictions = permit_dnswl_client wl.test, reject_unauth_destination\n"
    )
    assert _rcpt(srv, rcpt="u@foreign.example").startswith("554 5.7.1 <u@foreign.example>:")
    assert _rcpt(srv, rcpt="u@localhost").startswith("250")


def test_permit_rhswl_client(start_smtpd) -> None:
    xclient = "smtpd_authorized_xclient_hosts = 127.0.0.0/8\n"
    srv = start_smtpd(_restrict("permit_rhswl_client dbl.test, reject_rbl_client bl.test", xclient))
    assert _rcpt(srv, xclient="NAME=mail.spam.test ADDR=127.0.0.2").startswith("250")
    assert _rcpt(srv, xclient="NAME=other.test ADDR=127.0.0.2").startswith("554 5.7.1")


def test_missing_domain_argument_is_skipped(start_smtpd) -> None:
    srv = start_smtpd(
        "smtpd_recipient_restrictions = reject_unauth_destination, reject_rbl_client\n"
    )
    assert _rcpt(srv).startswith("250")
    assert "warning: restriction reject_rbl_client requires domain name argument" in srv.log


def test_bad_reply_filter(start_smtpd) -> None:
    srv = start_smtpd(_restrict("reject_rbl_client bl.test=127.0.0.[x]"))
    assert _rcpt(srv) == "451 4.3.5 Server configuration error"


def test_reject_rbl_client_ipv6_nibbles(start_smtpd) -> None:
    xclient = "smtpd_authorized_xclient_hosts = 127.0.0.0/8\n"
    srv = start_smtpd(_restrict("reject_rbl_client bl.test", xclient + "inet_protocols = all\n"))
    assert _rcpt(srv, xclient="ADDR=IPv6:2001:db8::1") == (
        "554 5.7.1 Service unavailable; Client host [2001:db8::1] blocked using bl.test"
    )


@pytest.mark.parametrize(
    ("restrictions", "threaded"),
    [
        ("permit_mynetworks, reject_unauth_destination", False),
        ("reject_rbl_client zen.example, reject_unauth_destination", True),
        ("permit_dnswl_client list.example, reject_unauth_destination", True),
        ("reject_unknown_sender_domain, reject_unauth_destination", True),
        ("reject_rhsbl_sender dbl.example, reject_unauth_destination", True),
    ],
)
def test_dns_lists_run_the_checks_off_the_event_loop(
    tmp_path, restrictions: str, threaded: bool
) -> None:
    """A DNS list or a domain lookup may wait on a resolver: the checks then run in a
    worker thread, so a slow list holds up its own session only."""
    write_config(str(tmp_path), f"smtpd_recipient_restrictions = {restrictions}\n")
    assert check.Checker(load_config(str(tmp_path))).threaded is threaded
