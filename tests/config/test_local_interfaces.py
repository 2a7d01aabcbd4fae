"""The host's interface addresses as Postfix 3.7's inet_addr_local finds them: secondary
addresses too (a second IPv4 address on lo, an IPv6 one), in the kernel's order, and only
those of the protocols inet_protocols names. Compared with real Postfix through what reads
them: mynetworks' default (postconf -h mynetworks) and the inet_interfaces check every
program makes as it starts (an address only a secondary has).

The addresses are added to lo for the test and removed after it.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, postconf_as_postfix
from tests.delivery.test_e2e_delivery import oxi  # noqa: F401 (a fixture)
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = pytest.mark.postfix

SECONDARY = ("10.99.0.5/32", "10.98.0.1/16", "fd00:99::5/128")


@pytest.fixture
def secondaries() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("adding an address to lo needs root (CI runs as root)")
    added = []
    try:
        for address in SECONDARY:
            subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True)
            added.append(address)
        yield
    finally:
        for address in added:
            subprocess.run(["ip", "addr", "del", address, "dev", "lo"], check=True)


@pytest.mark.parametrize(
    "main_cf",
    [
        "mynetworks_style = host\n",
        "mynetworks_style = subnet\n",
        "mynetworks_style = class\n",
        "inet_protocols = ipv4\n",
        "inet_protocols = ipv6\n",
        "inet_protocols = ipv6, ipv4\nmynetworks_style = subnet\n",
        "inet_interfaces = 10.99.0.5\n",
        "inet_interfaces = [fd00:99::5]\n",
        "inet_interfaces = 10.99.0.6\n",
        "inet_interfaces = 10.99.0.5\ninet_protocols = ipv6\n",
        "inet_interfaces = 192.0.2.2, 10.98.0.1, 127.0.0.1\nmynetworks_style = subnet\n",
        "inet_interfaces = loopback-only\nmynetworks_style = subnet\n",
        "inet_interfaces = localhost\n",
    ],
)
def test_secondary_addresses_as_postfix(secondaries, confdir: Path, main_cf: str) -> None:
    (confdir / "main.cf").write_text("compatibility_level = 3.6\n" + main_cf)
    postconf_as_postfix(confdir, "-h", "mynetworks")


def test_starts_on_a_secondary_address_as_postfix(secondaries, oxi) -> None:  # noqa: F811
    """inet_interfaces naming an address only lo's secondary has: Postfix starts with it, and
    so does ours, its port-only service answering on that address."""
    with running_postfix("inet_interfaces = 10.99.0.5\n"):
        pass
    port = free_port()
    oxi.start("inet_interfaces = 10.99.0.5\n", f"{port} inet n - n - - smtpd\n")
    with smtplib.SMTP("10.99.0.5", port, timeout=10) as s:
        assert s.ehlo()[0] == 250
