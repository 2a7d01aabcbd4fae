"""cleanup's automatic BCC recipients: always_bcc, sender_bcc_maps, recipient_bcc_maps (and
a header_checks BCC action), beside real Postfix 3.7: the same main.cf and SMTP sessions,
then the queued recipients compared in order with their original recipient and DSN
NOTIFY (Postfix's through postcat -e, ours through QueueState.load)."""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oxipost.config import load_config
from oxipost.qmgr.queue import QueueState

from tests.cleanup.conftest import Run, envelope
from tests.smtpd.test_postfix_differential import running_postfix

MAIN_CF = """\
recipient_delimiter = +
sender_bcc_maps = inline:{ joe@example.org=sarch@example.net, @other.org=dom@example.net }
recipient_bcc_maps = inline:{ a@example.net=rarch@example.net, b@example.net=rarch@example.net,
    c=cc-local, d@example.net=alias@example.net }
virtual_alias_maps = inline:{ { alias@example.net = v1@example.net, v2@example.net } }
always_bcc = big@example.net
header_checks = regexp:{dir}/header_checks
smtpd_recipient_restrictions =
    check_recipient_access inline:{ {e@example.net=BCC arc@example.net} },
    permit_mynetworks, reject_unauth_destination
"""
HEADER_CHECKS = "/^Subject: copy/ BCC hdr@example.net\n"

# (sender, recipients, subject)
MESSAGES: list[tuple[str, list[str], str]] = [
    # The sender's copy by user@domain without the extension; two recipients with one
    # archive get one copy; a local recipient's bare user key; always_bcc to an address
    # that is also a recipient is not a duplicate of it; the header_checks copy last.
    (
        "joe+x@example.org",
        ["a@example.net", "b@example.net", "c@localhost", "big@example.net"],
        "copy",
    ),
    # @domain; a sender copy to an address that is also a recipient; a BCC address that
    # is a virtual alias expands.
    ("x@other.org", ["sarch@example.net", "d@example.net"], "plain"),
    # The null sender has no sender copy; the recipient's and always_bcc still apply.
    ("", ["a@example.net"], "plain"),
    # smtpd's access(5) BCC: a recipient of the extracted segment with the default NOTIFY,
    # before always_bcc and the header_checks copy.
    ("x@example.org", ["e@example.net"], "copy"),
]

_FLAGS = {1: "NEVER", 2: "SUCCESS", 4: "FAILURE", 8: "DELAY"}


def _send(port: int) -> list[str]:
    qids = []
    for sender, rcpts, subject in MESSAGES:
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo("client.example")
            s.mail(sender)
            for r in rcpts:
                assert s.rcpt(r)[0] == 250, r
            code, text = s.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
            assert code == 250, text
            qids.append(text.decode().rsplit(" ", 1)[1])
    return qids


def _postcat(d: Path, qid: str) -> list[tuple[str, str, frozenset[str]]]:
    """(recipient, original recipient, NOTIFY) in queue file order, both segments."""
    out = subprocess.run(
        ["postcat", "-c", str(d), "-e", "-q", qid], capture_output=True, text=True, timeout=30
    ).stdout
    rcpts = []
    notify: frozenset[str] = frozenset()
    original = ""
    for line in out.splitlines():
        if line.startswith("named_attribute: notify_flags="):
            bits = int(line.rsplit("=", 1)[1])
            notify = frozenset(name for bit, name in _FLAGS.items() if bits & bit)
        elif line.startswith("original_recipient: "):
            original = line[20:]
        elif line.startswith("recipient: "):
            rcpts.append((line[11:], original, notify))
            notify = frozenset()
    return rcpts


@pytest.fixture(scope="module")
def postfix_queued() -> Iterator[list[list[tuple[str, str, frozenset[str]]]]]:
    with running_postfix(MAIN_CF, without=("qmgr",)) as (port, d):
        (d / "header_checks").write_text(HEADER_CHECKS)
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        yield [_postcat(d, qid) for qid in _send(port)]


@pytest.mark.postfix
@pytest.mark.slow
def test_bcc_recipients_queued_as_postfix(
    postfix_queued: Any, start_smtpd: Any, tmp_path: Path
) -> None:
    (tmp_path / "header_checks").write_text(HEADER_CHECKS)
    srv = start_smtpd(MAIN_CF.replace("{dir}", str(tmp_path)), real_queue=True)
    qids = _send(srv.port)
    state = QueueState(load_config(srv.config_dir))
    mine = [[(r.address, r.original, r.notify) for r in state.load(q)[0].recipients] for q in qids]
    assert mine == postfix_queued
    # What the comparison rests on, as Postfix queued it.
    first = postfix_queued[0]
    never = frozenset({"NEVER"})
    assert first[0] == ("sarch@example.net", "sarch@example.net", never)
    assert [r for r, _, n in first if r == "rarch@example.net"] == ["rarch@example.net"]
    assert first[-2:] == [
        ("big@example.net", "big@example.net", never),
        ("hdr@example.net", "hdr@example.net", never),
    ]
    assert ("v2@example.net", "alias@example.net", never) in postfix_queued[1]
    assert postfix_queued[3] == [
        ("e@example.net", "e@example.net", frozenset()),
        ("arc@example.net", "arc@example.net", frozenset()),
        ("big@example.net", "big@example.net", never),
        ("hdr@example.net", "hdr@example.net", never),
    ]


def _bcc_rcpts(res: Any) -> list[str]:
    return [r.address for r in res.envelope.recipients if r.notify == {"NEVER"}]


BCC_CF = "always_bcc = big@example.net\nsender_bcc_maps = inline:{ s@example.test=sb }\n"


def test_no_bcc_for_internal_mail_or_no_address_mappings(run: Run) -> None:
    env = envelope("s@example.test", "r@example.org")
    assert _bcc_rcpts(run(BCC_CF, None, env)) == ["sb@example.test", "big@example.net"]
    # Bounces and mail local(8) resubmits: Postfix's CLEANUP_FLAG_MASK_INTERNAL has no
    # BCC_OK.
    assert _bcc_rcpts(run(BCC_CF, None, env, internal=True)) == []
    off = BCC_CF + "receive_override_options = no_address_mappings\n"
    res = run(off, None, env)
    assert [r.address for r in res.envelope.recipients] == ["r@example.org"]


def test_unreadable_bcc_table_tempfails(run: Run) -> None:
    for param in ("sender_bcc_maps", "recipient_bcc_maps"):
        res = run(f"{param} = hash:{{dir}}/missing\n", None, envelope("s@example.test", "r@x"))
        assert res.reply == "451 4.3.0 Error: queue file write error"
        assert res.notes == [
            ("warning", f"{param} map lookup problem -- message not accepted, try again later")
        ]


def test_duplicate_filter_without_original_recipient(run: Run) -> None:
    # enable_original_recipient = no: Postfix's filter is on the address alone, so the
    # always_bcc copy of a recipient's own address is dropped.
    env = envelope("s@example.test", "big@example.net")
    cf = "always_bcc = big@example.net\n"
    assert len(run(cf, None, env).envelope.recipients) == 2
    res = run(cf + "enable_original_recipient = no\n", None, env)
    assert [(r.address, r.notify) for r in res.envelope.recipients] == [
        ("big@example.net", frozenset())
    ]
