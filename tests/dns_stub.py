"""A DNS server for tests: answers UDP queries on a bound socket from a callback, so that
resolvers (dnspython's, the C library's) meet real DNS messages, errors included."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import dns.flags
import dns.message
import dns.rdatatype
import dns.resolver
import dns.rrset

R = TypeVar("R", bound=dns.resolver.Resolver)

# (name without the final dot, lower case; type such as "MX") -> (rcode, record texts).
Lookup = Callable[[str, str], tuple[int, list[str]]]


@contextlib.contextmanager
def answering(sock: socket.socket, lookup: Lookup) -> Iterator[None]:
    """Serve queries arriving on `sock` from a thread until the block ends; closes it."""
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.flags |= dns.flags.AA
            question = q.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            rtype = dns.rdatatype.to_text(question.rdtype)
            rcode, records = lookup(name, rtype)
            r.set_rcode(rcode)
            if records:
                r.answer.append(dns.rrset.from_text_list(name + ".", 60, "IN", rtype, records))
            sock.sendto(r.to_wire(), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        sock.close()


@contextlib.contextmanager
def serving(lookup: Lookup, resolver_class: type[R]) -> Iterator[R]:
    """A server on a free 127.0.0.1 port answering from `lookup`, and a resolver of
    `resolver_class` (dnspython's, sync or async) that asks it alone, until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    resolver = resolver_class(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = sock.getsockname()[1]
    resolver.lifetime = 3
    with answering(sock, lookup):
        yield resolver
