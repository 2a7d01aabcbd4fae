"""smtpd_peername_lookup against a resolver that fails for now, for our smtpd and Postfix.

    unshare --mount --net python -m tests.smtpd.peername_namespace WORKDIR

Run as root in a private mount and network namespace, so that the machine's resolver is not
touched: loopback is brought up, a resolv.conf naming 127.0.0.1 and an /etc/hosts knowing
only localhost are bind-mounted over the real ones, and DNS is answered on 127.0.0.1:53
from ZONE, SERVFAIL included (getnameinfo and getaddrinfo then fail with EAI_AGAIN). For each
reject_unknown_*client* restriction, real Postfix, our smtpd on asyncio's loop and on uvloop
each get the same RCPT from each client address, then once more from 127.0.0.3 after the
resolver has recovered (a temporary failure must not be remembered). Prints one JSON line:
{server: {restriction: {client: reply}}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import uvloop

from tests.dns_stub import answering
from tests.smtpd.conftest import Raw, running_smtpd
from tests.smtpd.test_postfix_differential import running_postfix

RESTRICTIONS = ("reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname")
# name -> {type: data}, or None: SERVFAIL for every type. Names not here do not exist.
Zone = dict[str, dict[str, str] | None]
ZONE: Zone = {
    # A name whose name->address lookup fails for now.
    "2.0.0.127.in-addr.arpa": {"PTR": "mx2.client.example."},
    "mx2.client.example": None,
    # The address->name lookup fails for now.
    "3.0.0.127.in-addr.arpa": None,
    # 127.0.0.4 has no name.
}
RECOVERED: Zone = {
    "3.0.0.127.in-addr.arpa": {"PTR": "mx3.client.example."},
    "mx3.client.example": {"A": "127.0.0.3"},
}
CLIENTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MAIN_CF = "smtpd_peername_lookup = yes\nunknown_client_reject_code = 550\n"


def dns_server(zone: Zone) -> contextlib.AbstractContextManager[None]:
    """Answers on 127.0.0.1:53 from `zone`, which may change meanwhile."""

    def lookup(name: str, rtype: str) -> tuple[int, list[str]]:
        if name not in zone:
            return dns.rcode.NXDOMAIN, []
        records = zone[name]
        if records is None:
            return dns.rcode.SERVFAIL, []
        return dns.rcode.NOERROR, [records[rtype]] if rtype in records else []

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    return answering(sock, lookup)


def private_resolver(workdir: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    hosts = workdir / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    for ours, theirs in ((resolv, "/etc/resolv.conf"), (hosts, "/etc/hosts")):
        subprocess.run(["mount", "--bind", str(ours), theirs], check=True)


def rcpt_reply(port: int, source: str) -> str:
    raw = Raw("127.0.0.1", port, source=source)
    try:
        raw.reply()
        raw.cmd("EHLO client.example")
        raw.cmd("MAIL FROM:<a@example.org>")
        reply = raw.cmd("RCPT TO:<postmaster@localhost>")
        raw.cmd("QUIT")
        return reply
    finally:
        raw.close()


def play(zone: Zone, port: int) -> dict[str, str]:
    """Every client while the resolver fails, then 127.0.0.3 once it has recovered."""
    replies = {client: rcpt_reply(port, client) for client in CLIENTS}
    zone.update(RECOVERED)
    replies["127.0.0.3 recovered"] = rcpt_reply(port, "127.0.0.3")
    return replies


@contextlib.contextmanager
def postfix(tmp: str, main_cf: str) -> Iterator[int]:
    with running_postfix(main_cf) as (port, _config_dir):
        yield port


@contextlib.contextmanager
def ours(
    tmp: str, main_cf: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> Iterator[int]:
    with running_smtpd(tmp, main_cf, loop_factory=loop_factory) as srv:
        yield srv.port


SERVERS = {
    "postfix": postfix,
    "ours-asyncio": functools.partial(ours, loop_factory=asyncio.new_event_loop),
    "ours-uvloop": functools.partial(ours, loop_factory=uvloop.new_event_loop),
}


def main(workdir: Path) -> None:
    private_resolver(workdir)
    results: dict[str, dict[str, dict[str, str]]] = {}
    for server, start in SERVERS.items():
        for restriction in RESTRICTIONS:
            tmp = workdir / f"{server}-{restriction}"
            tmp.mkdir()
            main_cf = f"{MAIN_CF}smtpd_client_restrictions = {restriction}\n"
            zone = dict(ZONE)
            with dns_server(zone), start(str(tmp), main_cf) as port:
                results.setdefault(server, {})[restriction] = play(zone, port)
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
