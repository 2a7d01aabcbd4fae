"""reject_unverified_recipient and reject_unverified_sender through verify(8), on a running
oxipost (master, smtpd, verify, qmgr, the smtp client) and on real Postfix 3.7 with the
same main.cf and the same smtp-sink next hops: one that accepts RCPT, one that refuses it
(5xx), one that defers it (4xx).

A first round of transactions finds nothing known: each address is "450 4.1.1 ... unverified
address: Address verification in progress" (4.1.7 for a sender) and a probe goes out from
double-bounce@, which the smtp client takes as far as RCPT TO (status=deliverable or
undeliverable, nothing delivered). Once the probes are done, a second round has the
answers: 250 for the address the next hop took, the next hop's reply for the others (450
with unverified_*_reject_code's default, as Postfix 3.7; 550 "undeliverable address" with
550; unverified_sender_reject_reason in place of the reply; the recipient's 450 at once
with unverified_recipient_tempfail_action = defer). Both must send the same replies
and log the same smtpd rejects and probe lines (cleanup, qmgr, smtp) once queue IDs, pids,
delays and the ports of the sinks are set aside; the probes' sizes differ only by their
queue IDs' length (the Received: and Message-Id: headers name them).
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, main_cf_with, postfix_log_lines, smtp_sink, wait_for_log
from tests.delivery.test_e2e_local import running_ours
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

# (sender, recipient) of each transaction.
TRANSACTIONS = [
    ("", "a@sink.test"),
    ("", "b@hard.test"),
    ("", "c@soft.test"),
    # A recipient of its own: whether a@sink.test's probe is done yet is a race.
    ("s@hard.test", "d@sink.test"),
]
# What running_ours' master.cf lacks.
SERVICES = """\
smtp unix - - n - - smtp
verify unix - - n - 1 verify
"""
PROGRAMS = ("smtpd", "cleanup", "qmgr", "smtp", "verify")


def _main_cf(ports: list[int], extra: str) -> str:
    ok, hard, soft = ports
    return (
        f"transport_maps = inline:{{ sink.test=smtp:[127.0.0.1]:{ok}, "
        f"hard.test=smtp:[127.0.0.1]:{hard}, soft.test=smtp:[127.0.0.1]:{soft} }}\n"
        "relay_domains = sink.test, hard.test, soft.test\n"
        "smtpd_sender_restrictions = reject_unverified_sender\n"
        "address_verify_poll_count = 1\naddress_verify_map =\n"
        + main_cf_with(
            "smtpd_recipient_restrictions = reject_unverified_recipient\n",
            extra.replace("HARD", str(hard)),
        )
    )


@pytest.fixture
def sinks() -> Iterator[list[int]]:
    ports = [free_port() for _ in range(3)]
    ok, hard, soft = ports
    with smtp_sink(ok), smtp_sink(hard, "-f", "RCPT"), smtp_sink(soft, "-r", "RCPT"):
        yield ports


def _round(port: int) -> list[tuple[int, str]]:
    replies = []
    for sender, rcpt in TRANSACTIONS:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.test")
            assert s.mail(sender)[0] == 250
            code, text = s.rcpt(rcpt)
            replies.append((code, text.decode()))
    return replies


def _probes_done(maillog: Path, count: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        log = maillog.read_text() if maillog.exists() else ""
        probes = re.findall(r"qmgr\[\d+\]: (\w+): from=<double-bounce@", log)
        if len(probes) >= count and all(f"{q}: removed" in log for q in probes):
            return
        assert time.monotonic() < deadline, log
        time.sleep(0.2)


def _play(port: int, maillog: Path) -> tuple[list[list[tuple[int, str]]], str]:
    first = _round(port)
    # A probe for each recipient and one for the sender (its defer_if_permit lets the
    # recipient's check run).
    _probes_done(maillog, len(TRANSACTIONS) + 1)
    second = _round(port)
    # smtpd's reject lines come behind its replies (Postfix's through postlogd): one for
    # each refused recipient.
    refused = sum(code >= 400 for code, _text in first + second)
    wait_for_log(maillog, r"smtpd\[\d+\]: NOQUEUE: reject: RCPT from ", refused)
    time.sleep(1)  # anything more that would be wrong
    return [first, second], maillog.read_text()


def _lines(log: str, ports: list[int]) -> tuple[list[str], list[int]]:
    """The compared programs' lines without time, host, pid, delays and sink ports, queue
    IDs as QID; and each probe's size without its queue ID's two mentions."""
    out, sizes = [], []
    for program, text in postfix_log_lines(log, PROGRAMS):
        if re.match(r"(connect|disconnect|lost connection) ", text):
            continue
        q = re.match(r"([0-9A-F]{10,}): ", text)
        if q:
            qid = q.group(1)
            text = text.replace(qid, "QID")
            s = re.search(r", size=(\d+), ", text)
            if s:
                sizes.append(int(s.group(1)) - 2 * len(qid))
                text = text.replace(s.group(0), ", size=N, ")
        text = re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", text)
        text = re.sub(r"<\d{14}\.QID@", "<STAMP.QID@", text)
        for i, p in enumerate(ports):
            text = text.replace(f"]:{p},", f"]:SINK{i},")
        out.append(f"{program}: {text}")
    return sorted(out), sizes


BOUNCED = (
    "Recipient address rejected: {}: host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: "
    "command failed (in reply to RCPT TO command)"
)
SCENARIOS = {
    "defaults": "",
    # A bounced recipient gets a 5xx "undeliverable address"; the sender's reason is
    # replaced, in progress or not.
    "reject_code_and_reason": "unverified_recipient_reject_code = 550\n"
    "unverified_sender_reject_reason = Sender address unknown here\n",
    # tempfail action defer: a 450 comes at once whatever follows (a reject here).
    "tempfail_defer": "unverified_recipient_tempfail_action = defer\n"
    "smtpd_recipient_restrictions = reject_unverified_recipient, reject\n",
    # Probes go where address_verify_transport_maps says (HARD: the refusing sink).
    "verify_transport_maps": "address_verify_transport_maps = "
    "inline:{ sink.test=smtp:[127.0.0.1]:HARD }, $transport_maps\n",
}
SECOND_ROUND = {
    "": [
        (250, "2.1.5 Ok"),
        (450, "4.1.1 <b@hard.test>: " + BOUNCED.format("unverified address")),
    ],
    SCENARIOS["reject_code_and_reason"]: [
        (250, "2.1.5 Ok"),
        (550, "5.1.1 <b@hard.test>: " + BOUNCED.format("undeliverable address")),
    ],
    SCENARIOS["tempfail_defer"]: [
        (554, "5.7.1 <a@sink.test>: Recipient address rejected: Access denied"),
        (450, "4.1.1 <b@hard.test>: " + BOUNCED.format("unverified address")),
    ],
    SCENARIOS["verify_transport_maps"]: [
        (450, "4.1.1 <a@sink.test>: " + BOUNCED.format("unverified address")),
        (450, "4.1.1 <b@hard.test>: " + BOUNCED.format("unverified address")),
    ],
}


@pytest.mark.parametrize("extra", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_reject_unverified_as_postfix(shared_tmp: Path, sinks: list[int], extra: str) -> None:
    main_cf = _main_cf(sinks, extra)
    with running_postfix(
        main_cf + "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    ) as (
        port,
        d,
    ):
        theirs = _play(port, d / "maillog")
    top = shared_tmp / "ours"
    top.mkdir()
    with running_ours(top, main_cf, SERVICES) as port:
        ours = _play(port, top / "maillog")
    # What each scenario is about, as Postfix answers it the second time.
    assert theirs[0][1][:2] == SECOND_ROUND[extra]
    assert ours[0] == theirs[0]
    our_lines, our_sizes = _lines(ours[1], sinks)
    their_lines, their_sizes = _lines(theirs[1], sinks)
    assert our_lines == their_lines
    assert our_sizes == their_sizes
