"""The parameter registry: every parameter oxipost knows, with Postfix's default, a type and a
one-line description. It is the single source of truth for `postconf -d`, validation and docs;
code never repeats a default.

The defaults are Postfix 3.7's (parameters.tsv, generated once by scripts/gen_parameters.py
from Debian's postfix package and committed), except the parameters in DEVIATIONS, where
oxipost deliberately differs, each with its reason, and the oxipost-only parameters in EXTRA.
Host-dependent defaults (HOST_DEPENDENT) are computed at run time as Postfix computes them.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cache
from typing import NamedTuple

from oxipost.config.expand import references


class Parameter(NamedTuple):
    name: str
    default: str
    kind: str  # bool, int, time, maps, str
    doc: str


# Where oxipost's default differs from Postfix 3.7's on purpose. The differential test against
# real `postconf -d` skips exactly these names.
DEVIATIONS: dict[str, tuple[str, str]] = {
    # name: (our default, why)
    "smtpd_forbid_bare_newline": (
        "normalize",
        "Postfix 3.9's anti-smuggling default (3.7.11 backports the knob with 'no').",
    ),
    "smtpd_forbid_unauth_pipelining": (
        "yes",
        "Postfix 3.9's default: a client that pipelines without PIPELINING is rejected.",
    ),
    "mail_name": ("oxipost", "This is not Postfix; log tools key on syslog_name, kept 'postfix'."),
    "mail_version": ("0.1.0", "oxipost's own version."),
    "mail_release_date": ("20261125", "oxipost's own release date."),
}

# Parameters that only oxipost has.
EXTRA: dict[str, tuple[str, str, str]] = {
    # name: (default, kind, doc)
    "smtpd_worker_processes": (
        "${cpu_count}",
        "int",
        "The number of smtpd worker processes that share each inet listener (default: CPUs).",
    ),
    "cpu_count": ("", "int", "The number of CPUs of this host (read-only, computed)."),
}

# Computed from the host at run time, as Postfix does; never compared with another host's.
HOST_DEPENDENT = frozenset(
    {"myhostname", "mydomain", "mynetworks", "process_id", "process_name", "cpu_count"}
)

# Parameters master.cf creates for each delivery service NAME ("NAME_" + suffix), with the
# default each one refers to; only for services whose command is a delivery agent.
_PER_TRANSPORT = {
    "delivery_slot_cost": "$default_delivery_slot_cost",
    "delivery_slot_discount": "$default_delivery_slot_discount",
    "delivery_slot_loan": "$default_delivery_slot_loan",
    "destination_concurrency_failed_cohort_limit": (
        "$default_destination_concurrency_failed_cohort_limit"
    ),
    "destination_concurrency_limit": "$default_destination_concurrency_limit",
    "destination_concurrency_negative_feedback": (
        "$default_destination_concurrency_negative_feedback"
    ),
    "destination_concurrency_positive_feedback": (
        "$default_destination_concurrency_positive_feedback"
    ),
    "destination_rate_delay": "$default_destination_rate_delay",
    "destination_recipient_limit": "$default_destination_recipient_limit",
    "extra_recipient_limit": "$default_extra_recipient_limit",
    "initial_destination_concurrency": "$initial_destination_concurrency",
    "minimum_delivery_slots": "$default_minimum_delivery_slots",
    "recipient_limit": "$default_recipient_limit",
    "recipient_refill_delay": "$default_recipient_refill_delay",
    "recipient_refill_limit": "$default_recipient_refill_limit",
    "transport_rate_delay": "$default_transport_rate_delay",
}
DELIVERY_AGENTS = frozenset({"smtp", "lmtp", "local", "virtual", "pipe", "error"})
# Agents that run external commands get NAME_time_limit (spawn has only that one).
_TIME_LIMITED = frozenset({"pipe", "spawn"})


def per_service_parameters(service: str, command: str) -> dict[str, str]:
    """The NAME_* parameters (name → default) a master.cf service with this command creates."""
    out: dict[str, str] = {}
    if command in DELIVERY_AGENTS:
        out.update({f"{service}_{k}": v for k, v in _PER_TRANSPORT.items()})
    if command in _TIME_LIMITED:
        out[f"{service}_time_limit"] = "$command_time_limit"
    return out


@cache
def parameters() -> dict[str, Parameter]:
    """All registry parameters by name (Postfix 3.7's, deviations applied, extras added)."""
    table: dict[str, Parameter] = {}
    # A plain open: importlib.resources costs every command several ms of start-up.
    with open(os.path.join(os.path.dirname(__file__), "parameters.tsv"), encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, default, kind, doc = line.split("\t", 3)
        table[name] = Parameter(name, default, kind, doc)
    for name, (default, _why) in DEVIATIONS.items():
        old = table.get(name)
        kind = old.kind if old else "str"
        doc = old.doc if old else _why
        table[name] = Parameter(name, default, kind, doc)
    for name, (default, kind, doc) in EXTRA.items():
        table[name] = Parameter(name, default, kind, doc)
    return table


# Values Postfix keeps raw, expanded per delivery or reply (local(8)'s $home, smtpd's
# $rbl_code): the names they mention are none of main.cf's.
_EXPANDED_LATER = frozenset({"default_rbl_reply", "forward_path"})


@cache
def legacy_parameters() -> frozenset[str]:
    """The names defaults mention that are no parameter of their own (authorized_verp_clients,
    virtual_maps, fallback_relay, ...): Postfix's postconf knows each as a legacy parameter,
    empty by default and left out of its listing of defaults, and counts one main.cf sets as
    used."""
    table = parameters()
    mentioned = {
        name
        for param in table.values()
        if param.name not in _EXPANDED_LATER
        for name in references(param.default)
    }
    return frozenset(mentioned - set(table) - HOST_DEPENDENT - {"config_directory"})


def host_default(name: str, raw_lookup: dict[str, str]) -> str:
    """The run-time default of a HOST_DEPENDENT parameter.

    raw_lookup holds the settings that feed it (mynetworks_style, already expanded).
    """
    if name == "myhostname":
        return _myhostname(raw_lookup.get("mydomain"))
    if name == "mydomain":
        host = raw_lookup.get("myhostname") or _myhostname(None)
        return host.split(".", 1)[1] if "." in host else "localdomain"
    if name == "mynetworks":
        return " ".join(
            _mynetworks(
                raw_lookup.get("mynetworks_style", "host"),
                raw_lookup.get("inet_protocols", "all"),
                raw_lookup.get("inet_interfaces", "all"),
            )
        )
    if name == "process_id":
        return str(os.getpid())
    if name == "process_name":
        return raw_lookup.get("process_name", "postconf")
    if name == "cpu_count":
        return str(os.cpu_count() or 1)
    raise KeyError(name)


def _myhostname(mydomain: str | None) -> str:
    # Imported here to keep it out of every command's start-up; services have it loaded
    # before they drop privileges (master's child imports socket).
    import socket

    name = socket.gethostname()
    # Postfix wants a fully-qualified name: a bare host name gets ".$mydomain" when main.cf
    # sets mydomain, else ".localdomain".
    return name if "." in name else f"{name}.{mydomain if mydomain is not None else 'localdomain'}"


def local_interfaces() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The addresses, with their prefixes, of the host's interfaces that are up, secondary
    ones too, as Postfix's inet_addr_local lists them (getifaddrs): IPv4 first, each family
    in the order the kernel gives."""
    import ctypes
    import socket

    class Ifaddrs(ctypes.Structure):
        pass

    Ifaddrs._fields_ = [
        ("ifa_next", ctypes.POINTER(Ifaddrs)),
        ("ifa_name", ctypes.c_char_p),
        ("ifa_flags", ctypes.c_uint),
        ("ifa_addr", ctypes.c_void_p),
        ("ifa_netmask", ctypes.c_void_p),
        ("ifa_ifu", ctypes.c_void_p),
        ("ifa_data", ctypes.c_void_p),
    ]
    # struct sockaddr_in's address is at offset 4, sockaddr_in6's at 8.
    where: dict[int, tuple[int, int]] = {socket.AF_INET: (4, 4), socket.AF_INET6: (8, 16)}
    found: dict[int, list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = {
        socket.AF_INET: [],
        socket.AF_INET6: [],
    }
    # The interpreter's own symbols include libc's (find_library would run ldconfig).
    libc = ctypes.CDLL(None)
    head = ctypes.POINTER(Ifaddrs)()
    if libc.getifaddrs(ctypes.byref(head)) != 0:
        return []
    try:
        entry = head
        while entry:
            ifa = entry.contents
            entry = ifa.ifa_next
            if not ifa.ifa_flags & 1 or not ifa.ifa_addr:  # IFF_UP
                continue
            family = ctypes.c_ushort.from_address(ifa.ifa_addr).value
            if family not in where:
                continue
            offset, size = where[family]
            addr = ctypes.string_at(ifa.ifa_addr + offset, size)
            mask = ctypes.string_at(ifa.ifa_netmask + offset, size) if ifa.ifa_netmask else b""
            plen = bin(int.from_bytes(mask, "big")).count("1") if mask else 8 * size
            found[family].append(ipaddress.ip_interface((addr, plen)))
    finally:
        libc.freeifaddrs(head)
    return found[socket.AF_INET] + found[socket.AF_INET6]


def _fmt(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if net.version == 6:
        return f"[{net.network_address}]/{net.prefixlen}"
    return str(net)


def _versions(protocols: str) -> set[int]:
    """The IP versions inet_protocols names (check_startup has refused another word)."""
    words = set(protocols.replace(",", " ").split())
    return {4, 6} if "all" in words else {int(w[3]) for w in words if w in ("ipv4", "ipv6")}


def interface_addresses(value: str, protocols: str) -> list[str] | None:
    """The addresses inet_interfaces names, as own_inet_addr_list resolves them with the
    protocols inet_protocols allows; None for all of the host's. LookupError(name) for a
    name that does not resolve."""
    import socket

    # Only the whole value is special, in this case ("ALL" and "all, 127.0.0.1" are names).
    if value == "all":
        return None
    versions = _versions(protocols)
    if value == "loopback-only":
        return [address for v, address in ((4, "127.0.0.1"), (6, "::1")) if v in versions]
    family = socket.AF_UNSPEC
    if versions == {4}:
        family = socket.AF_INET
    elif versions == {6}:
        family = socket.AF_INET6
    wanted: list[str] = []
    for host in value.replace(",", " ").split():
        name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise LookupError(host) from None
        for info in infos:
            address = str(ipaddress.ip_address(str(info[4][0]).partition("%")[0]))
            if address not in wanted:
                wanted.append(address)
    return wanted


def _mynetworks(style: str, protocols: str, interfaces: str) -> list[str]:
    # The interfaces Postfix listens on (own_inet_mask_list), in the host's order: those
    # inet_interfaces names, of the protocols inet_protocols names. A name that does not
    # resolve was refused as the program started (check_startup).
    versions = _versions(protocols)
    try:
        wanted = interface_addresses(interfaces, protocols)
    except LookupError:
        wanted = []
    out: list[str] = []
    for iface in local_interfaces():
        if iface.version not in versions or (wanted is not None and str(iface.ip) not in wanted):
            continue
        if style == "host":
            net = ipaddress.ip_network(f"{iface.ip}/{iface.max_prefixlen}")
        elif style == "class" and iface.version == 4:
            first = int(iface.ip) >> 24
            plen = 8 if first < 128 else 16 if first < 192 else 24
            net = ipaddress.ip_network(f"{iface.ip}/{max(plen, 0)}", strict=False)
        else:
            net = iface.network
        text = _fmt(net)
        if text not in out:
            out.append(text)
    return out
