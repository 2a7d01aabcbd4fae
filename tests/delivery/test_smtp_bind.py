"""smtp(8)'s source address, compared with real Postfix 3.7's smtp client.

Both clients send to Debian's smtp-sink, whose transaction dump (`-d`) names the client
address (X-Client-Addr): smtp_bind_address (with or without brackets), a bind that fails
(a warning, then sent unbound; deferred 4.4.0 'server configuration error' with
smtp_bind_address_enforce), the one non-loopback address of inet_interfaces used when no
smtp_bind_address is set, and a value that is no address (fatal)."""

from __future__ import annotations

import logging
import re
import smtplib
import subprocess
from pathlib import Path

import pytest
from oxipost.delivery import AgentFatal

from tests.conftest import free_port

from .conftest import dumping_sink, make_config, postfix_relay, request, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"


def _global_address() -> str:
    """A non-loopback IPv4 address of this host (Postfix binds to it by itself when it is
    inet_interfaces' only one)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
    assert found, "the test needs an IPv4 address other than loopback on this host"
    return found[0]


def _client_addrs(files: set[Path]) -> list[str]:
    """The client address of each transaction smtp-sink dumped in these files."""
    return [f.read_text().split("\n", 1)[0].removeprefix("X-Client-Addr: ") for f in files]


def _both(tmp_path: Path, main: str, caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    """What each client did with this main.cf: the address smtp-sink saw it connect from,
    its smtp warnings and the status it gave the recipient."""

    def send(client: smtplib.SMTP) -> None:
        client.sendmail("a@example.org", ["b@example.net"], b"Subject: x\r\n\r\nx\r\n")

    with dumping_sink() as (sink, dump):
        log, dsn, text = postfix_relay(sink, main, send)
        their_files = set(dump.iterdir())
        theirs = {
            "from": _client_addrs(their_files),
            "warnings": re.findall(r"postfix/smtp\[\d+\]: warning: (smtp_connect.*)", log),
            "status": (dsn, text),
        }
        caplog.clear()
        cfg = make_config(tmp_path / "ours", main)
        (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{sink}", ["b@example.net"]))
        ours = {
            "from": _client_addrs(set(dump.iterdir()) - their_files),
            "warnings": [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING],
            "status": (o.status, o.text),
        }
    assert ours == theirs
    return theirs


@pytest.mark.parametrize("value", ["127.0.0.2", "[127.0.0.3]"])
def test_bind_address_as_postfix(tmp_path, caplog, value) -> None:
    got = _both(tmp_path, f"smtp_bind_address = {value}\n", caplog)
    assert got["from"] == [value.strip("[]")]
    assert got["status"] == ("2.0.0", "250 2.0.0 Ok")


def test_bind_failure_warns_and_sends_unbound_as_postfix(tmp_path, caplog) -> None:
    got = _both(tmp_path, "smtp_bind_address = 192.0.2.99\n", caplog)
    assert got["from"] == ["127.0.0.1"]
    assert got["warnings"] == [
        "smtp_connect_addr: bind 192.0.2.99: Cannot assign requested address"
    ]


def test_bind_failure_defers_when_enforced_as_postfix(tmp_path, caplog) -> None:
    main = "smtp_bind_address = 192.0.2.99\nsmtp_bind_address_enforce = yes\n"
    got = _both(tmp_path, main, caplog)
    assert got["from"] == []
    assert got["status"] == ("4.4.0", "server configuration error")


def test_only_inet_interface_is_the_source_as_postfix(tmp_path, caplog) -> None:
    own = _global_address()
    got = _both(tmp_path, f"inet_interfaces = {own}\n", caplog)
    assert got["from"] == [own]


def test_bad_bind_address_is_fatal(tmp_path) -> None:
    """Postfix 3.7 logs 'fatal: smtp_connect_addr: bad smtp_bind_address parameter:
    not-an-address: Name or service not known' (seen in its maillog) and qmgr defers."""
    cfg = make_config(tmp_path / "ours", "smtp_bind_address = not-an-address\n")
    with pytest.raises(AgentFatal) as e:
        run(request(cfg, "smtp", f"[127.0.0.1]:{free_port()}", ["b@example.net"]))
    assert str(e.value) == (
        "smtp_connect_addr: bad smtp_bind_address parameter: not-an-address: "
        "Name or service not known"
    )
