"""pytest-benchmark of cleanup_message as smtpd calls it in process (`make bench`): the
message smtp-source sends in the bench (smtp-source -l 1024), from a local client, with
the Received: header smtpd gives, on a main.cf like the bench's (no tables for cleanup).
"""

from __future__ import annotations

from pathlib import Path

from oxipost.cleanup.message import cleanup_message
from oxipost.config import load_config
from oxipost.envelope import Envelope, Recipient

MAIN_CF = """\
compatibility_level = 3.6
myhostname = bench.example.test
mydomain = example.test
mydestination = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = vbench.example.test
"""

# smtp-source's message: four headers, then numbered lines of X up to -l bytes.
BODY = b"".join(b"%d" % (i % 10) + b"X" * 78 + b"\r\n" for i in range(1, 13)) + b"X" * 64 + b"\r\n"
CONTENT = (
    b"From: <bench@example.org>\r\nTo: <user1@vbench.example.test>\r\n"
    b"Date: Sun,  6 Dec 2026 09:41:38 +0000 (UTC)\r\nMessage-Id: <6314.0003.0000@vm>\r\n\r\n" + BODY
)
RECEIVED = (
    "Received: from vm (localhost [127.0.0.1])\r\n"
    "\tby bench.example.test (Postfix) with ESMTP id 4QXYZ1234\r\n"
    "\tfor <user1@vbench.example.test>; Sun, 6 Dec 2026 09:41:38 +0000 (UTC)\r\n"
)


def test_cleanup_message_smtp_source(benchmark, tmp_path: Path):
    (tmp_path / "main.cf").write_text(MAIN_CF)
    (tmp_path / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    cfg = load_config(str(tmp_path)).for_service("smtp")

    def one():
        env = Envelope(
            sender="bench@example.org",
            recipients=[Recipient("user1@vbench.example.test")],
            arrival_time=1_796_550_000.0,
            client_name="localhost",
            client_addr="127.0.0.1",
            client_port=40000,
            helo_name="vm",
            protocol="ESMTP",
        )
        return cleanup_message(env, CONTENT, RECEIVED, cfg, "4QXYZ1234")

    cleaned = benchmark(one)
    assert cleaned.reply is None
    assert cleaned.content == RECEIVED.encode() + CONTENT
    assert cleaned.notes == [("info", "message-id=<6314.0003.0000@vm>")]
