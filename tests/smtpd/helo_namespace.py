"""reject_unknown_helo_hostname for our smtpd and Postfix, against the same DNS server.

    unshare --mount --net python -m tests.smtpd.helo_namespace WORKDIR

Run as root in a private mount and network namespace (as tests/smtpd/peername_namespace.py,
whose resolver set-up it shares): both servers ask the system's resolver, which asks ZONE on
127.0.0.1:53. Each HELO name (an A, an AAAA, an MX, a null MX record, none, a resolver that
fails, an address literal) is judged under each configuration, and so is each name as a
sender's domain under reject_unknown_sender_domain. Prints one JSON line:
{server: {configuration: {helo: RCPT reply}}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import main_cf_with
from tests.smtpd.dnsbl_namespace import rcpt_reply
from tests.smtpd.peername_namespace import SERVERS, Zone, dns_server, private_resolver

ZONE: Zone = {
    "a.helo.test": {"A": "127.0.0.9"},
    "six.helo.test": {"AAAA": "2001:db8::9"},
    "mx.helo.test": {"MX": "10 a.helo.test."},
    "nullmx.helo.test": {"MX": "0 ."},
    "fail.helo.test": None,
}
HELOS = (
    "a.helo.test",
    "six.helo.test",
    "mx.helo.test",
    "nullmx.helo.test",
    "none.helo.test",
    "fail.helo.test",
    "[127.0.0.2]",
)
CONFIGURATIONS = {
    "default code": "unknown_helo_hostname_tempfail_action = defer\n",
    "550": "unknown_hostname_reject_code = 550\nunknown_helo_hostname_tempfail_action = defer\n",
    "old name, at RCPT": "smtpd_helo_restrictions =\n"
    "smtpd_recipient_restrictions = reject_unknown_hostname, permit\n"
    "unknown_helo_hostname_tempfail_action = defer\n",
    # The default: a lookup that fails for now defers only what would be permitted.
    "defer_if_permit": "",
    "defer_if_permit, then reject": "smtpd_recipient_restrictions = reject\n",
}
MAIN_CF = "smtpd_helo_restrictions = reject_unknown_helo_hostname\n"
# reject_unknown_sender_domain against the same names, each configuration's "sender "
# results keyed by the sender's domain.
SENDER_CF = "smtpd_sender_restrictions = reject_unknown_sender_domain\n"
SENDER_CONFIGURATIONS = {
    "sender defer_if_permit": "",
    "sender defer_if_permit, then reject": "smtpd_recipient_restrictions = reject\n",
    "sender defer": "unknown_address_tempfail_action = defer\n",
}


def main(workdir: Path) -> None:
    private_resolver(workdir)
    results: dict[str, dict[str, dict[str, str]]] = {}
    for server, start in SERVERS.items():
        for i, (name, extra) in enumerate(CONFIGURATIONS.items()):
            tmp = workdir / f"{server}-{i}"
            tmp.mkdir()
            with dns_server(dict(ZONE)), start(str(tmp), main_cf_with(MAIN_CF, extra)) as port:
                results.setdefault(server, {})[name] = {
                    helo: rcpt_reply(port, "127.0.0.2", helo, "a@example.org", "u@localhost")
                    for helo in HELOS
                }
        for i, (name, extra) in enumerate(SENDER_CONFIGURATIONS.items()):
            tmp = workdir / f"{server}-sender-{i}"
            tmp.mkdir()
            with dns_server(dict(ZONE)), start(str(tmp), SENDER_CF + extra) as port:
                results[server][name] = {
                    domain: rcpt_reply(port, "127.0.0.2", "c.example", f"a@{domain}", "u@localhost")
                    for domain in HELOS[:-1]
                }
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
