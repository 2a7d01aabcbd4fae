"""smtp(8)'s smtp_tls_policy_maps, compared with real Postfix 3.7's smtp client.

The next hop is a real Postfix smtpd offering STARTTLS (Debian's snakeoil certificate),
logging each TLS session ("Anonymous TLS connection established from ..."). The same
mail goes to it through seven spellings of the destination, each with its own entry in
the policy table (or none: smtp_tls_security_level then), from a second real Postfix
(transport_maps) and from our client: which sessions used TLS, what was deferred, the
warnings logged and, with smtp_tls_loglevel = 1, the client's "Untrusted TLS connection
established to ..." lines must be the same. The key is the destination as given; an unknown level or
attribute skips the destination's hosts (4.7.5 client TLS configuration problem)."""

from __future__ import annotations

import logging
import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for_log
from tests.smtpd.test_postfix_differential import running_postfix

from .conftest import make_config, request, run
from .test_smtp_client import free_port, sink
from .test_smtp_mx import dns_server

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
NEXT_HOP_CF = (
    "smtpd_tls_security_level = may\n"
    "smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem\n"
    "smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key\n"
    "smtpd_tls_loglevel = 1\n"
    "mydestination = $myhostname, a.test, b.test, c.test, d.test, e.test, f.test, g.test\n"
) + LOG_CF
# Destination (HOP: the next hop's port, which smtp_tcp_port also names) → policy.
POLICIES = {
    "[127.0.0.1]:HOP": "none",
    "127.0.0.1:HOP": "encrypt ciphers=high",
    "localhost": "encrypt",
    "[localhost]:HOP": "bogus",
    "localhost:HOP": "may foo=bar",
    "[localhost]": "none match=nexthop",
    "[127.0.0.1]": None,
}
TLS_LINE = "Anonymous TLS connection established from"
CLIENT_TLS_LINE = r"\w+ TLS connection established to .*"
# What tls_log_summary adds from OpenSSL and Python's ssl module does not tell.
KEY_EXCHANGE = re.compile(r" key-exchange .*")


def _sessions(maillog: Path, taken: int) -> list[str]:
    """ "tls" or "plain" for each message the next hop took, in order, once it logged
    `taken` (its postlogd writes behind the client's "status=sent" and our outcome)."""
    out = []
    tls = False
    for line in wait_for_log(maillog, r": client=", taken).splitlines():
        if TLS_LINE in line:
            tls = True
        elif re.search(r": client=", line):
            out.append("tls" if tls else "plain")
            tls = False
    return out


def test_tls_policy_per_destination_as_postfix(tmp_path, shared_tmp, caplog) -> None:
    caplog.set_level(logging.INFO, logger="oxipost.smtp")
    with running_postfix(NEXT_HOP_CF, without=("qmgr",)) as (hop, hop_dir):
        dests = [d.replace("HOP", str(hop)) for d in POLICIES]
        # Read by Postfix's daemons as user postfix: not pytest's 0700 tree.
        tables = shared_tmp
        (tables / "policy").write_text(
            "".join(f"{d} {v}\n" for d, v in zip(dests, POLICIES.values(), strict=True) if v)
        )
        (tables / "transport").write_text(
            "".join(f"{chr(97 + n)}.test smtp:{d}\n" for n, d in enumerate(dests))
        )
        main = (
            f"smtp_tls_policy_maps = texthash:{tables}/policy\nsmtp_tls_security_level = may\n"
            f"smtp_tcp_port = {hop}\ndisable_dns_lookups = yes\nsmtp_host_lookup = native\n"
            "smtp_tls_loglevel = 1\n"
        )
        relay_cf = f"mydestination =\ntransport_maps = texthash:{tables}/transport\n" + main
        with running_postfix(relay_cf + LOG_CF) as (port, d):
            for n in range(len(dests)):
                with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                    s.sendmail(
                        "x@example.org", [f"u@{chr(97 + n)}.test"], b"Subject: x\r\n\r\nx\r\n"
                    )
                deadline = time.monotonic() + 30
                while len(re.findall(r" status=", log := (d / "maillog").read_text())) <= n:
                    assert time.monotonic() < deadline, log
                    time.sleep(0.1)
        their_statuses = re.findall(r"relay=([^,]+), .* dsn=([\d.]+), status=\w+ \((.*)\)", log)
        sent = sum(dsn.startswith("2.") for _relay, dsn, _text in their_statuses)
        their_sessions = _sessions(hop_dir / "maillog", sent)
        their_warnings = re.findall(r"postfix/smtp\[\d+\]: warning: ((?!/).*)", log)
        their_tls = re.findall(rf"postfix/smtp\[\d+\]: ({CLIENT_TLS_LINE})", log)
        caplog.clear()
        cfg = make_config(tmp_path / "ours", main)
        our_statuses = []
        for n, dest in enumerate(dests):
            (o,) = run(request(cfg, "smtp", dest, [f"u@{chr(97 + n)}.test"]))
            relay = o.relay or "none"
            text = re.sub(r" queued as \w+", " queued as Q", o.text)
            our_statuses.append((relay, o.status, text))
        sent += sum(status.startswith("2.") for _relay, status, _text in our_statuses)
        our_sessions = _sessions(hop_dir / "maillog", sent)[len(their_sessions) :]
    our_warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    our_tls = [
        r.getMessage() for r in caplog.records if re.fullmatch(CLIENT_TLS_LINE, r.getMessage())
    ]
    their_statuses = [
        (r, s, re.sub(r" queued as \w+", " queued as Q", t)) for r, s, t in their_statuses
    ]
    assert our_warnings == their_warnings
    assert our_statuses == their_statuses
    assert our_sessions == their_sessions
    assert our_tls == [KEY_EXCHANGE.sub("", line) for line in their_tls]
    assert len(our_tls) == 3 and our_tls[0].startswith("Untrusted TLS connection established to ")
    # none, encrypt, encrypt, -, -, none, may (the global level)
    assert their_sessions == ["plain", "tls", "tls", "plain", "tls"]
    assert [s[1:] for s in their_statuses[3:5]] == [
        ("4.7.5", "client TLS configuration problem")
    ] * 2


@pytest.mark.parametrize(
    ("destination", "policy", "required"),
    [
        ("mail.sub.tls.test", ".tls.test encrypt", True),
        ("mail.sub.tls.test", ".sub.tls.test encrypt\n.tls.test none", True),
        ("mail.sub.tls.test", "tls.test encrypt", False),
        ("[mx.tls.test]:PORT", ".tls.test encrypt", False),
    ],
)
def test_parent_domains_of_a_domain_destination(tmp_path, destination, policy, required):
    """A domain destination is looked up, then each parent as '.parent' (the nearest
    first); a bare parent name does not match, nor is a bracketed destination's host
    searched by its parents (Postfix's tls_policy_lookup). smtp-sink offers no STARTTLS."""
    zone = {
        ("mail.sub.tls.test", "MX"): ["10 mx.tls.test."],
        # Not 127.0.0.1: that is this host, and mail for it would loop.
        ("mx.tls.test", "A"): ["127.0.0.2"],
    }
    with sink(tmp_path, listen=f"127.0.0.2:{free_port()}") as (listen, _dump):
        port = listen.rsplit(":", 1)[1]
        table = tmp_path / "policy"
        table.write_text(policy.replace("PORT", port) + "\n")
        main = f"smtp_tcp_port = {port}\nsmtp_tls_policy_maps = texthash:{table}\n"
        cfg = make_config(tmp_path / "c", main)
        with dns_server(zone):
            (o,) = run(request(cfg, "smtp", destination.replace("PORT", port), ["u@x.test"]))
    if required:
        assert (o.status, o.text) == (
            "4.7.4",
            "TLS is required, but was not offered by host mx.tls.test[127.0.0.2]",
        )
    else:
        assert o.delivered, o


def test_a_destination_that_is_not_utf8_is_looked_up_as_is(tmp_path, caplog) -> None:
    """smtp_tls_list_init opens smtp_tls_policy_maps without DICT_FLAG_UTF8_REQUEST, so
    even with smtputf8_enable = yes a latin-1 destination (sendmail takes any bytes) finds
    its entry, byte for byte, and no "non-UTF-8 key" warning is logged."""
    from oxipost.delivery.smtp import Params, _tls_policy

    table = tmp_path / "policy.re"
    table.write_bytes(b"/^caf\xe9\\.test$/ encrypt\n/^caf.\\.test$/ none\n")
    main = f"smtputf8_enable = yes\nsmtp_tls_policy_maps = pcre:{table}\n"
    p = Params(make_config(tmp_path / "c", main), lmtp=False)
    caplog.set_level(logging.WARNING)
    latin1 = b"caf\xe9.test".decode("utf-8", "surrogateescape")
    assert _tls_policy(p, latin1) == ("encrypt", [])
    other = b"caf\xe8.test".decode("utf-8", "surrogateescape")
    assert _tls_policy(p, other) == ("none", [])
    assert "non-UTF-8" not in caplog.text
