"""DNS block and allow lists for our smtpd and Postfix, against the same DNS server.

    unshare --mount --net python -m tests.smtpd.dnsbl_namespace WORKDIR

Run as root in a private mount and network namespace (as tests/smtpd/peername_namespace.py,
whose resolver set-up it shares): both servers ask the system's resolver, which then asks
ZONE on 127.0.0.1:53. One restriction list covers reject_rbl_client with and without a
reply filter, rbl_reply_maps (a template with macros, and one that is not a reply),
reject_rhsbl_helo/_sender/_recipient, permit_dnswl_client, a list whose server fails and an
allow list whose server fails (its defer_if_reject defers the block list's reject).
Prints one JSON line: {server: {session: reply, "log": [reject and RBL warning lines]}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import uvloop

from tests.conftest import wait_for_log
from tests.smtpd.conftest import Raw, running_smtpd
from tests.smtpd.peername_namespace import Zone, dns_server, private_resolver
from tests.smtpd.test_postfix_differential import running_postfix

ZONE: Zone = {
    "2.0.0.127.bl.test": {"A": "127.0.0.2", "TXT": '"listed, see https://bl.test/?127.0.0.2"'},
    # Listed with a code outside the reply filter, and in bl2.test with a template.
    "3.0.0.127.bl.test": {"A": "127.0.0.12"},
    "3.0.0.127.bl2.test": {"A": "127.0.0.2", "TXT": '"bl2 says so"'},
    "6.0.0.127.wl.test": {"A": "127.0.10.1"},
    "6.0.0.127.bl.test": {"A": "127.0.0.2"},
    "7.0.0.127.badtpl.test": {"A": "127.0.0.2"},
    "5.0.0.127.fail.test": None,
    # The allow list fails for now: the block list's reject is deferred.
    "8.0.0.127.wl.test": None,
    "8.0.0.127.bl.test": {"A": "127.0.0.2"},
    "spam.test.dbl.test": {"A": "127.0.1.2", "TXT": '"spam domain"'},
}
MAIN_CF = (
    "smtpd_recipient_restrictions = permit_dnswl_client wl.test,"
    " reject_rbl_client bl.test=127.0.0.[2..11], reject_rbl_client bl2.test,"
    " reject_rbl_client badtpl.test, reject_rbl_client fail.test,"
    " reject_rhsbl_helo dbl.test, reject_rhsbl_sender dbl.test,"
    " reject_rhsbl_recipient dbl.test, permit\n"
    "rbl_reply_maps = inline:{ {bl2.test = 451 4.7.9 Go away $$client_address"
    " [$${rbl_what}] $$rbl_class: $$rbl_reason}, {badtpl.test = listed} }\n"
)
# name -> (client address, HELO, sender, recipient)
SESSIONS = {
    "listed with TXT": ("127.0.0.2", "client.example", "a@example.org", "u@localhost"),
    "filtered out, template": ("127.0.0.3", "client.example", "a@example.org", "u@localhost"),
    "not listed": ("127.0.0.4", "client.example", "a@example.org", "u@localhost"),
    "helo listed": ("127.0.0.4", "spam.test", "a@example.org", "u@localhost"),
    "sender listed": ("127.0.0.4", "client.example", "a@spam.test", "u@localhost"),
    "recipient listed": ("127.0.0.1", "client.example", "a@example.org", "u@spam.test"),
    "server failure": ("127.0.0.5", "client.example", "a@example.org", "u@localhost"),
    "allow list first": ("127.0.0.6", "client.example", "a@example.org", "u@localhost"),
    "allow list failing": ("127.0.0.8", "client.example", "a@example.org", "u@localhost"),
    "template not a reply": ("127.0.0.7", "client.example", "a@example.org", "u@localhost"),
}


def rcpt_reply(port: int, source: str, helo: str, sender: str, rcpt: str) -> str:
    raw = Raw("127.0.0.1", port, source=source)
    try:
        raw.reply()
        raw.cmd("EHLO " + helo)
        raw.cmd(f"MAIL FROM:<{sender}>")
        reply = raw.cmd(f"RCPT TO:<{rcpt}>")
        raw.cmd("QUIT")
        return reply
    finally:
        raw.close()


# smtpd's log lines that the lists make: rejects and their warnings.
_LOGGED = ("NOQUEUE: reject: ", "warning: ")


@contextlib.contextmanager
def postfix(tmp: str) -> Iterator[tuple[int, Callable[[], list[str]]]]:
    main_cf = MAIN_CF + "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(main_cf) as (port, config_dir):

        def log() -> list[str]:
            # postlogd writes behind the replies: wait for the last session's end, logged
            # after its reject and warning (its "connect from" comes before them).
            last = r"postfix/smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.7\]"
            text = wait_for_log(config_dir / "maillog", last)
            return [ln.split("]: ", 1)[1] for ln in text.splitlines() if "/smtpd[" in ln]

        yield port, log


@contextlib.contextmanager
def ours(
    tmp: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> Iterator[tuple[int, Callable[[], list[str]]]]:
    with running_smtpd(tmp, MAIN_CF, loop_factory=loop_factory) as srv:
        yield srv.port, lambda: list(srv.log)


SERVERS = {
    "postfix": postfix,
    "ours-asyncio": functools.partial(ours, loop_factory=asyncio.new_event_loop),
    "ours-uvloop": functools.partial(ours, loop_factory=uvloop.new_event_loop),
}


def main(workdir: Path) -> None:
    private_resolver(workdir)
    results: dict[str, dict[str, object]] = {}
    for server, start in SERVERS.items():
        tmp = workdir / server
        tmp.mkdir()
        with dns_server(dict(ZONE)), start(str(tmp)) as (port, log):
            replies: dict[str, object] = {
                name: rcpt_reply(port, *session) for name, session in SESSIONS.items()
            }
            replies["log"] = [ln for ln in log() if ln.startswith(_LOGGED)]
            results[server] = replies
    print(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
