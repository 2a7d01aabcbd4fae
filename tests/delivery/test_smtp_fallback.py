"""smtp(8)'s smtp_fallback_relay (smtp_connect.c): the fallback destinations are tried, in
order, after the next hop's own hosts when every recipient is still to be delivered (the
destination not found, no host reachable, every recipient soft-failed), never after a
bounce, nor when this host is one of the destination's MX hosts, nor by lmtp(8); a
fallback relay or the relayhost that is not found defers with 4.3.5 and Postfix's
"configuration problem" warning. Real smtp-sink next hops and a DNS server on 127.0.0.1."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from oxipost.envelope import Outcome

from .conftest import dumping_sink, make_config, postfix_relay, request, run
from .test_smtp_client import dumps, free_port, relay_host, sink
from .test_smtp_mx import dns_server

ZONE = {("here.test", "A"): ["127.0.0.1"], ("me.test", "A"): ["127.0.0.1"]}


def _cfg(tmp_path, extra: str):  # type: ignore[no-untyped-def]
    return make_config(
        tmp_path / "c", main="inet_interfaces = 127.0.0.1\nmyhostname = me.test\n" + extra
    )


def _port(listen: str) -> str:
    return listen.rsplit(":", 1)[1]


def test_fallback_after_domain_not_found_and_after_connection_refused(tmp_path):
    closed = f"[127.0.0.1]:{free_port()}"
    with sink(tmp_path) as (listen, dump), dns_server(ZONE):
        cfg = _cfg(tmp_path, f"smtp_fallback_relay = {closed}, {relay_host(listen)}\n")
        (o,) = run(request(cfg, "smtp", "missing.test", ["x@missing.test"]))
        assert o.status == "2.0.0", o
        assert o.relay == f"127.0.0.1[127.0.0.1]:{_port(listen)}"
        (o,) = run(request(cfg, "smtp", closed, ["x@example.com"]))
        assert o.status == "2.0.0", o
        assert len(dumps(dump)) == 2


def test_fallback_after_every_recipient_soft_failed(tmp_path):
    with sink(tmp_path, "-r", "RCPT") as (soft, _), sink(tmp_path) as (good, dump):
        cfg = _cfg(tmp_path, f"smtp_fallback_relay = {relay_host(good)}\n")
        out = run(request(cfg, "smtp", relay_host(soft), ["x@example.com", "y@example.com"]))
        assert [o.status for o in out] == ["2.0.0", "2.0.0"], out
        assert {o.relay for o in out} == {f"127.0.0.1[127.0.0.1]:{_port(good)}"}
        assert len(dumps(dump)) == 1


def test_no_fallback_after_a_bounce_for_an_mx_host_or_for_lmtp(tmp_path):
    # The fallback is a closed port: had it been tried, the outcome would be its refusal.
    closed = f"[127.0.0.1]:{free_port()}"
    cfg = _cfg(tmp_path, f"smtp_fallback_relay = {closed}\n")
    with sink(tmp_path, "-f", "RCPT") as (hard, _):
        (o,) = run(request(cfg, "smtp", relay_host(hard), ["x@example.com"]))
    assert o.permanent and o.text.endswith("(in reply to RCPT TO command)"), o
    # We are an MX host of the destination (after an unreachable better one): mail must
    # not leave for hosts that are not its MX hosts.
    zone = {
        **ZONE,
        ("mx.test", "MX"): ["10 gone.test.", "20 me.test."],
        ("gone.test", "A"): ["127.0.0.9"],
    }
    cfg = _cfg(tmp_path, f"smtp_fallback_relay = {closed}\nsmtp_tcp_port = {free_port()}\n")
    with dns_server(zone):
        (o,) = run(request(cfg, "smtp", "mx.test", ["x@mx.test"]))
    assert o.text.startswith("connect to gone.test[127.0.0.9]:"), o
    # lmtp(8) has no fallback relay.
    port = free_port()
    (o,) = run(request(cfg, "lmtp", f"inet:127.0.0.1:{port}", ["x@example.com"]))
    assert o.text.startswith(f"connect to 127.0.0.1[127.0.0.1]:{port}: "), o


def test_unresolvable_fallback_or_relayhost_is_a_configuration_problem(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="oxipost.smtp")
    cfg = _cfg(tmp_path, "smtp_fallback_relay = gone1.test\n")
    with dns_server(ZONE):
        (o,) = run(request(cfg, "smtp", "missing.test", ["x@missing.test"]))
    assert o == Outcome(
        "4.3.5",
        "Host or domain name not found. Name service error for name=gone1.test type=MX: "
        "Host not found",
    )
    assert caplog.messages == ["smtp_fallback_relay configuration problem"]
    caplog.clear()
    cfg = _cfg(tmp_path, "relayhost = gone2.test\n")
    with dns_server(ZONE):
        (o,) = run(request(cfg, "smtp", "gone2.test", ["x@example.com"]))
        assert o.status == "4.3.5", o
        assert caplog.messages == ["relayhost configuration problem"]
        # Any other destination that is not found bounces.
        (o,) = run(request(cfg, "smtp", "missing.test", ["x@missing.test"]))
    assert o.status == "5.4.4", o
    assert caplog.messages == ["relayhost configuration problem"]


def test_every_destination_soft_failed_gives_the_last_one_s_reason(tmp_path):
    # As Postfix's DSN buffer, which holds the last error.
    port = free_port()
    with sink(tmp_path, "-r", "RCPT") as (soft, _):
        cfg = _cfg(tmp_path, f"smtp_fallback_relay = [127.0.0.1]:{port}\n")
        (o,) = run(request(cfg, "smtp", relay_host(soft), ["x@example.com"]))
    assert o.status == "4.4.1", o
    assert o.text.startswith(f"connect to 127.0.0.1[127.0.0.1]:{port}: "), o


@pytest.mark.postfix
@pytest.mark.slow
@pytest.mark.parametrize("refused", ["RCPT", "."])
def test_soft_failed_relay_logged_before_the_fallback_as_postfix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, refused: str
) -> None:
    """A relay that soft-fails every recipient is not the last to try: Postfix's smtp says
    why it leaves it, "QID: host H[A] said: ... (in reply to end of DATA command)" once,
    or that line for each recipient a RCPT TO refused, then the fallback relay takes the
    mail."""
    message = b"From: a@example.org\r\nSubject: y\r\n\r\nz\r\n"
    rcpts = ["b@example.net", "c@example.net"]
    with dumping_sink("-r", refused) as (soft, _), dumping_sink() as (good, _dump):
        main = f"smtp_fallback_relay = [127.0.0.1]:{good}\n"
        log, dsn, _text = postfix_relay(soft, main, lambda c: c.sendmail(rcpts[0], rcpts, message))
        cfg = make_config(tmp_path / "ours", main)
        caplog.set_level(logging.INFO, logger="oxipost.smtp")
        out = run(request(cfg, "smtp", f"[127.0.0.1]:{soft}", rcpts, content=message))
    assert dsn == "2.0.0"
    assert [o.status for o in out] == ["2.0.0", "2.0.0"], out
    theirs = [
        re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln.split("]: ", 1)[1])
        for ln in log.splitlines()
        if "/smtp[" in ln and " to=<" not in ln
    ]
    ours = [re.sub(r"^[0-9A-F]{6,}: ", "QID: ", r.getMessage()) for r in caplog.records]
    assert ours == theirs
    assert len(theirs) == (2 if refused == "RCPT" else 1), theirs
