"""smtp(8) destination lookup against a real DNS server on 127.0.0.1 (dnspython-built):
MX preference, implicit MX, null MX (RFC 7505), "loops back to myself" (catalogue 47),
and DSN parameters passed through to smtp-sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import dns.asyncresolver
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
from oxipost.delivery import smtp
from oxipost.envelope import Outcome, Recipient

from tests.dns_stub import serving

from .conftest import make_config, request, run
from .test_smtp_client import dumps, free_port, sink


@contextlib.contextmanager
def dns_server(zone: dict[tuple[str, str], list[str]]) -> Iterator[None]:
    def lookup(name: str, rtype: str) -> tuple[int, list[str]]:
        if not any(n == name for n, _ in zone):
            return dns.rcode.NXDOMAIN, []
        return dns.rcode.NOERROR, zone.get((name, rtype), [])

    old = smtp.RESOLVER
    try:
        with serving(lookup, dns.asyncresolver.Resolver) as resolver:
            smtp.RESOLVER = resolver
            yield
    finally:
        smtp.RESOLVER = old


def _params(tmp_path, port: int, extra: str = ""):
    cfg = make_config(
        tmp_path / "c",
        main=f"smtp_tcp_port = {port}\ninet_interfaces = 127.0.0.1\nmyhostname = me.test\n" + extra,
    )
    return cfg, smtp.Params(cfg, lmtp=False)


def test_mx_preference_order_and_randomised_equals(tmp_path):
    zone = {
        ("dom.test", "MX"): ["20 b.test.", "10 a1.test.", "10 a2.test."],
        ("a1.test", "A"): ["127.0.0.11"],
        ("a2.test", "A"): ["127.0.0.12"],
        ("b.test", "A"): ["127.0.0.20"],
    }
    _, p = _params(tmp_path, 25)
    seen = set()
    with dns_server(zone):
        for _ in range(12):
            hosts = asyncio.run(smtp.resolve("dom.test", p))
            assert [h.name for h in hosts][2] == "b.test"
            assert {h.name for h in hosts[:2]} == {"a1.test", "a2.test"}
            seen.add(hosts[0].name)
    assert seen == {"a1.test", "a2.test"}


def test_implicit_mx_and_nxdomain(tmp_path):
    zone = {("plain.test", "A"): ["127.0.0.30"]}
    _, p = _params(tmp_path, 25)
    with dns_server(zone):
        (h,) = asyncio.run(smtp.resolve("plain.test", p))
        assert (h.name, h.address) == ("plain.test", "127.0.0.30")
        with pytest.raises(smtp.SessionError) as e:
            asyncio.run(smtp.resolve("missing.test", p))
    assert e.value.status == "5.4.4"
    assert e.value.text == (
        "Host or domain name not found. Name service error for name=missing.test type=MX: "
        "Host not found"
    )


def test_null_mx_bounces(tmp_path):
    cfg, _ = _params(tmp_path, 25)
    with dns_server({("null.test", "MX"): ["0 ."]}):
        (o,) = run(request(cfg, "smtp", "null.test", ["u@null.test"]))
    assert o == Outcome("5.1.10", "Domain null.test does not accept mail (nullMX)")


def test_mx_pointing_at_us_loops_back(tmp_path):
    # catalogue 47
    cfg, _ = _params(tmp_path, 25)
    zone = {("loop.test", "MX"): ["10 me.test."], ("me.test", "A"): ["127.0.0.1"]}
    with dns_server(zone):
        (o,) = run(request(cfg, "smtp", "loop.test", ["u@loop.test"]))
    assert o == Outcome("5.4.6", "mail for loop.test loops back to myself")


def test_delivery_through_mx_with_dsn_parameters(tmp_path):
    port = free_port()
    cfg, _ = _params(tmp_path, port)
    zone = {("dsn.test", "MX"): ["10 mx.dsn.test."], ("mx.dsn.test", "A"): ["127.0.0.2"]}
    # Kept decoded (as smtpd stores them), sent as xtext: "+", "=" and blanks as +XX.
    req = request(cfg, "smtp", "dsn.test", ["u@dsn.test"], envid="ID1+a b=", ret="HDRS")
    req.recipients[0] = Recipient(
        "u@dsn.test", notify=frozenset({"SUCCESS", "FAILURE"}), orcpt="rfc822;U+x@dsn.test"
    )
    with dns_server(zone), sink(tmp_path, listen=f"127.0.0.2:{port}") as (_, dump):
        (o,) = run(req)
        assert o.delivered, o
        (msg,) = dumps(dump)
    assert "X-Mail-Args: <a@example.org> ENVID=ID1+2Ba+20b+3D RET=HDRS" in msg
    assert "X-Rcpt-Args: <u@dsn.test> ORCPT=rfc822;U+2Bx@dsn.test NOTIFY=SUCCESS,FAILURE" in msg


def test_next_mx_after_a_refusal_at_end_of_data_gets_the_checks_again(tmp_path, caplog):
    """The first MX soft-fails the message at "." and the second takes it: the content
    checks run for each (their lines logged each time) and the first is left with
    "QID: host H[A] said: ..." between them, as Postfix 3.7's smtp does before a fallback
    relay (test_smtp_fallback, test_smtp_content_checks compare that with it)."""
    port = free_port()
    (tmp_path / "body").write_text("/^w/ WARN warned\n")
    cfg, _ = _params(tmp_path, port, f"smtp_body_checks = regexp:{tmp_path}/body\n")
    zone = {
        ("two.test", "MX"): ["10 mx1.two.test.", "20 mx2.two.test."],
        ("mx1.two.test", "A"): ["127.0.0.41"],
        ("mx2.two.test", "A"): ["127.0.0.42"],
    }
    caplog.set_level(logging.INFO, logger="oxipost.smtp")
    with (
        dns_server(zone),
        sink(tmp_path, "-r", ".", listen=f"127.0.0.41:{port}"),
        sink(tmp_path, listen=f"127.0.0.42:{port}") as (_, dump),
    ):
        (o,) = run(request(cfg, "smtp", "two.test", ["u@two.test"], content=b"S: x\n\nw\n"))
        assert o.delivered and o.relay == f"mx2.two.test[127.0.0.42]:{port}", o
        assert len(dumps(dump)) == 1
    warned = "4ABCDE1234: warning: body w: warned"
    assert caplog.messages == [
        warned,
        "4ABCDE1234: host mx1.two.test[127.0.0.41] said: 450 4.3.0 Error: command failed"
        " (in reply to end of DATA command)",
        warned,
    ]
