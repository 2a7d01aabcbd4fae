"""End to end, all real processes on 127.0.0.1: oxipost under its master routes remote mail
by its envelope sender (sender_dependent_relayhost_maps, sender_dependent_default_transport_maps)
to one of Debian's smtp-sink next hops, always_bcc's copy going out with the message, and
to smtp_fallback_relay when the relayhost refuses connections."""

from __future__ import annotations

import re
import smtplib
import time

import pytest

from tests.conftest import free_port, smtp_sink
from tests.qmgr.test_service import wait_log
from tests.smtpd.test_postfix_differential import running_postfix

from .test_e2e_delivery import Oxipost, oxi

__all__ = ["oxi"]  # the fixture, used by name

pytestmark = [pytest.mark.slow, pytest.mark.postfix]


def _relay_of(log: str, qid: str, rcpt: str) -> str:
    m = re.search(rf"{qid}: to=<{re.escape(rcpt)}>, relay=([^,]+), .*status=sent ", log)
    assert m, log
    return m.group(1)


def test_next_hop_chosen_by_envelope_sender(oxi: Oxipost) -> None:
    usual, special, bulk = free_port(), free_port(), free_port()
    cfg = oxi.start(
        f"relayhost = [127.0.0.1]:{usual}\n"
        f"sender_dependent_relayhost_maps = inline:{{ @example.com=[127.0.0.1]:{special} }}\n"
        "sender_dependent_default_transport_maps = "
        f"inline:{{ bulk@example.org=smtp:[127.0.0.1]:{bulk} }}\n"
        "always_bcc = archive@example.net\n"
    )
    with smtp_sink(usual), smtp_sink(special), smtp_sink(bulk):
        by_sender = oxi.swaks("alice@example.com", "far@example.net", "one", "by sender")
        global_relay = oxi.swaks("someone@example.org", "far@example.net", "two", "global")
        by_transport = oxi.swaks("bulk@example.org", "far@example.net", "three", "bulk")
        for qid in (by_sender, global_relay, by_transport):
            wait_log(cfg, rf"{qid}: removed", timeout=60)
    log = oxi.log()
    at = "127.0.0.1[127.0.0.1]"
    assert _relay_of(log, by_sender, "far@example.net") == f"{at}:{special}"
    assert _relay_of(log, by_sender, "archive@example.net") == f"{at}:{special}"
    assert _relay_of(log, global_relay, "far@example.net") == f"{at}:{usual}"
    assert _relay_of(log, by_transport, "far@example.net") == f"{at}:{bulk}"


def _smtp_lines(log: str, qid: str) -> list[str]:
    """smtp's lines about one message (and the connection failures among them), without
    the time, host, pid, queue ID and delays."""
    out = []
    for line in log.splitlines():
        if "/smtp[" in line and (qid in line or ": connect to " in line):
            text = line.split("]: ", 1)[1].replace(qid, "QID")
            out.append(re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D", text))
    return out


def test_fallback_relay_takes_mail_the_relayhost_refuses_as_postfix(oxi: Oxipost) -> None:
    closed, fallback = free_port(), free_port()
    main_cf = f"relayhost = [127.0.0.1]:{closed}\nsmtp_fallback_relay = [127.0.0.1]:{fallback}\n"
    cfg = oxi.start(main_cf)
    with smtp_sink(fallback):
        qid = oxi.swaks("alice@example.com", "far@example.net", "fb", "fallback")
        wait_log(cfg, rf"{qid}: removed", timeout=60)
        log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
        with running_postfix(main_cf + log_cf) as (port, d):
            with smtplib.SMTP("127.0.0.1", port) as s:
                reply = s.sendmail(
                    "alice@example.com", ["far@example.net"], b"Subject: fb\r\n\r\nx\r\n"
                )
            assert reply == {}
            deadline = time.monotonic() + 30
            while not re.search(r"([0-9A-F]+): removed", theirs := (d / "maillog").read_text()):
                assert time.monotonic() < deadline, theirs
                time.sleep(0.2)
            their_qid = re.findall(r"([0-9A-F]+): removed", theirs)[0]
    ours = _smtp_lines(oxi.log(), qid)
    assert ours == _smtp_lines(theirs, their_qid)
    at = "127.0.0.1[127.0.0.1]"
    assert ours == [
        f"connect to {at}:{closed}: Connection refused",
        f"QID: to=<far@example.net>, relay={at}:{fallback}, delay=D, dsn=2.0.0, "
        "status=sent (250 2.0.0 Ok)",
    ]
