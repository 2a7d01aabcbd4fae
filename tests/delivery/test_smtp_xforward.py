"""smtp(8)'s XFORWARD (smtp_send_xforward_command = yes, as for an after-queue content
filter), compared with real Postfix 3.7's smtp client.

Postfix and oxipost each relay the same three submissions to a next hop of their own that
records what it received: one over SMTP from 127.0.0.1 (a client with a name), one from
127.0.0.2 (no name: no NAME attribute), one by sendmail (a local submission: SOURCE=LOCAL
only). The next hops: Debian's smtp-sink (-v prints each command; it announces NAME ADDR
PROTO HELO), smtp-sink refusing XFORWARD (-f, which also turns PIPELINING off: the
commands go one at a time, each refusal is a warning and the mail goes on), and real
Postfix's smtpd with smtpd_authorized_xforward_hosts (every attribute announced;
debug_peer_list logs each command). The XFORWARD commands, and the warnings, must be the
same from both clients, but for the client port and the queue ID.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, run_ours, smtp_sink, wait_for_log
from tests.smtpd.test_postfix_differential import running_postfix

from .test_e2e_delivery import Oxipost

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

SENDMAIL = "/usr/sbin/sendmail"
LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp, /var\n"


# What _submit sends: two messages over SMTP and one by sendmail.
SUBMITTED = 3


def _submit(port: int, sendmail: Callable[[bytes], object]) -> None:
    for source in ("127.0.0.1", "127.0.0.2"):
        with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=60) as c:
            c.ehlo("client.example")
            c.sendmail("a@example.org", ["b@example.net"], b"Subject: smtp\r\n\r\nhi\r\n")
    sendmail(b"Subject: local\n\nhello\n")


def _wait_sent(log: Callable[[], str], count: int) -> str:
    deadline = time.monotonic() + 60
    while (text := log()).count("status=sent") < count:
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    return text


def _normal(lines: list[str]) -> list[str]:
    """The lines without what differs between any two runs: client ports, queue IDs and
    the next hop's port."""
    out = []
    for line in lines:
        line = re.sub(r"\bPORT=\d+", "PORT=*", line)
        line = re.sub(r"\bIDENT=[0-9A-Za-z]+", "IDENT=*", line)
        out.append(re.sub(r"\]:\d+ said", "]:* said", line))
    return sorted(out)


def _warnings(log: str) -> list[str]:
    return [ln.split("]: ", 1)[1] for ln in log.splitlines() if "in reply to XFORWARD" in ln]


@contextlib.contextmanager
def _next_hop(kind: str, tmp: Path) -> Iterator[tuple[int, Callable[[], list[str]]]]:
    """The next hop of this kind on a free port; yields (port, the XFORWARD commands it
    has received so far)."""
    if kind == "postfix":
        cf = "smtpd_authorized_xforward_hosts = 127.0.0.0/8\ndebug_peer_list = 127.0.0.1\n"
        cf += "mynetworks = 127.0.0.0/8\ndefer_transports = smtp\n" + LOG_CF
        with running_postfix(cf) as (port, d):

            def received() -> list[str]:
                # This Postfix's postlogd writes behind the relay's "status=sent": wait
                # for smtpd's "client=" line of each message, logged after its XFORWARD.
                client = r"postfix/smtpd\[\d+\]: \w+: client="
                log = wait_for_log(d / "maillog", client, SUBMITTED)
                return re.findall(r": < \S+: (XFORWARD .*)", log)

            yield port, received
        return
    port = free_port()
    out = tmp / "sink.out"
    flags = ["-v"] + (["-f", "xforward"] if kind == "refusing" else [])
    with smtp_sink(port, *flags, output=out):

        def printed() -> list[str]:
            return re.findall(r"smtp-sink: (XFORWARD .*)", out.read_text(errors="replace"))

        yield port, printed


def _through_postfix(kind: str, tmp: Path) -> tuple[list[str], list[str]]:
    with _next_hop(kind, tmp) as (hop, received):
        cf = f"relayhost = [127.0.0.1]:{hop}\nsmtp_send_xforward_command = yes\n"
        cf += "smtpd_peername_lookup = yes\nmynetworks = 127.0.0.0/8\n" + LOG_CF
        with running_postfix(cf) as (port, d):

            def sendmail(msg: bytes) -> None:
                argv = [SENDMAIL, "-C", str(d), "-f", "c@example.org", "d@example.net"]
                subprocess.run(argv, input=msg, capture_output=True, timeout=60, check=True)

            _submit(port, sendmail)
            log = _wait_sent(lambda: (d / "maillog").read_text(), SUBMITTED)
        return received(), _warnings(log)


def _through_oxipost(kind: str, tmp: Path) -> tuple[list[str], list[str]]:
    with _next_hop(kind, tmp) as (hop, received):
        oxi = Oxipost()
        try:
            oxi.start(f"relayhost = [127.0.0.1]:{hop}\nsmtp_send_xforward_command = yes\n")

            def sendmail(msg: bytes) -> None:
                argv = ["-C", str(oxi.conf), "-f", "c@example.org", "d@example.net"]
                done = run_ours("sendmail", *argv, stdin=msg.decode())
                assert done.returncode == 0, done.stderr

            _submit(oxi.port, sendmail)
            log = _wait_sent(oxi.log, SUBMITTED)
        finally:
            oxi.close()
        return received(), _warnings(log)


@pytest.mark.parametrize("kind", ["sink", "refusing", "postfix"])
def test_xforward_commands_as_postfix_sends_them(kind: str, tmp_path: Path) -> None:
    (tmp_path / "postfix").mkdir()
    (tmp_path / "oxipost").mkdir()
    theirs, their_warnings = _through_postfix(kind, tmp_path / "postfix")
    ours, our_warnings = _through_oxipost(kind, tmp_path / "oxipost")
    # Not empty: the next hop saw XFORWARD at all (none when it is refused is no test).
    assert any("XFORWARD ADDR=127.0.0.2" in c for c in theirs), theirs
    assert _normal(ours) == _normal(theirs)
    assert _normal(our_warnings) == _normal(their_warnings)
    assert bool(their_warnings) == (kind == "refusing"), their_warnings
