"""Real Dovecot IMAP (Debian's dovecot-imapd, pre-authenticated over stdio) reads the
Maildir and the mbox our Rust writers produce (catalogue 10; From_ quoting for mbox)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from oxipost._core import mailbox

from tests.conftest import shared_dir

IMAP = "/usr/lib/dovecot/imap"
ROOT = os.geteuid() == 0
UID = 65534 if ROOT else os.getuid()
GID = 65534 if ROOT else os.getgid()


@pytest.fixture
def home():
    if not os.path.exists(IMAP):
        pytest.fail("dovecot imap is missing: `make sysdeps` installs dovecot-imapd")
    with shared_dir("oxipost-dovecot-") as d:
        if ROOT:
            os.chown(d, UID, GID)
        yield d


def imap_argv(location: str, uid: int = UID, gid: int = GID) -> list[str]:
    """Dovecot's imap binary, pre-authenticated (stdio), serving the mailbox at location
    as uid:gid."""
    return [
        IMAP,
        "-o",
        f"mail_location={location}",
        "-o",
        f"mail_uid={uid}",
        "-o",
        f"mail_gid={gid}",
        "-o",
        "first_valid_uid=0",
        "-o",
        "first_valid_gid=0",
    ]


def imap_env(home: Path, user: str | None = None) -> dict[str, str]:
    return {
        "HOME": str(home),
        "USER": user or ("nobody" if ROOT else os.environ.get("USER", "u")),
        "PATH": "/usr/bin:/bin",
    }


def imap(home: Path, location: str, commands: str) -> str:
    r = subprocess.run(
        imap_argv(location),
        input=commands.replace("\n", "\r\n").encode(),
        capture_output=True,
        timeout=30,
        env=imap_env(home),
    )
    return r.stdout.decode()


def test_dovecot_reads_our_maildir(home):
    md = str(home / "Maildir")
    ids = (UID, GID) if ROOT else (None, None)
    for subject in ("first", "second"):
        r = mailbox.maildir_deliver(
            md,
            b"Delivered-To: u@example.com\r\n",
            f"Subject: {subject}\r\nFrom: a@b\r\n\r\nbody\r\n".encode(),
            "h",
            *ids,
        )
        assert r[0] == "2.0.0", r
    out = imap(
        home,
        f"maildir:{md}",
        "a SELECT INBOX\nb FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT DELIVERED-TO)])\nc LOGOUT\n",
    )
    assert "* 2 EXISTS" in out, out
    assert "Subject: first" in out and "Subject: second" in out
    assert out.count("Delivered-To: u@example.com") == 2
    assert "b OK Fetch completed" in out


def test_dovecot_reads_our_mbox_with_from_quoting(home):
    box = str(home / "mbox")
    ids = {"uid": UID, "gid": GID} if ROOT else {}
    body = b"Subject: one\r\n\r\nFrom here the body goes on\r\n"
    for content in (body, b"Subject: two\r\n\r\nx\r\n"):
        r = mailbox.mbox_deliver(box, "a@b", b"Return-Path: <a@b>\r\n", content, **ids)
        assert r[0] == "2.0.0", r
    out = imap(
        home,
        f"mbox:{home}:INBOX={box}",
        "a SELECT INBOX\nb FETCH 1:* (BODY.PEEK[TEXT])\nc LOGOUT\n",
    )
    # An unquoted "From " body line would have split the first message in two.
    assert "* 2 EXISTS" in out, out
    assert ">From here the body goes on" in out
