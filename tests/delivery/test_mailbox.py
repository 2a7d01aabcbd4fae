"""oxipost._core.mailbox through the binding: Maildir, mbox, path safety (catalogue 10, 49)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from oxipost._core import mailbox

from tests.conftest import check_stub

STUB = Path(__file__).parents[2] / "python" / "oxipost" / "_core_stubs" / "mailbox.pyi"


def test_stub_matches_runtime_signatures():
    check_stub(mailbox, STUB)


def test_maildir_delivery_and_names(tmp_path):
    # catalogue 10
    md = tmp_path / "u" / "Maildir"
    outcome = mailbox.maildir_deliver(
        str(md), b"Delivered-To: u@x\r\n", b"Subject: s\r\n\r\nhi\r\n", "mx.example"
    )
    assert outcome == ("2.0.0", False, "delivered to maildir", "")
    (name,) = os.listdir(md / "new")
    data = (md / "new" / name).read_bytes()
    assert data == b"Delivered-To: u@x\nSubject: s\n\nhi\n"
    assert name.endswith(f".mx.example,S={len(data)}")
    assert f"P{os.getpid()}Q" in name
    assert os.listdir(md / "tmp") == [] and os.listdir(md / "cur") == []


def test_maildir_concurrent_threads_unique(tmp_path):
    # catalogue 10: names stay unique with the GIL released in many threads.
    md = str(tmp_path / "md")
    results: list[tuple[str, bool, str, str]] = []

    def work() -> None:
        for _ in range(25):
            results.append(mailbox.maildir_deliver(md, b"", b"x\r\n" * 1000, "h"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r[0] == "2.0.0" for r in results)
    assert len(os.listdir(os.path.join(md, "new"))) == 150


def test_maildir_failure_is_an_outcome(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    md = str(tmp_path / "f" / "md")
    status, permanent, text, _warning = mailbox.maildir_deliver(md, b"", b"x", "h")
    assert status == "4.2.0" and permanent is False
    assert text.startswith("maildir delivery failed: create maildir file ")
    assert text.endswith(": Not a directory")


def test_mbox_quoting_and_lock(tmp_path):
    p = tmp_path / "user"
    r = mailbox.mbox_deliver(str(p), "a@b", b"Return-Path: <a@b>\r\n", b"S: 1\r\n\r\nFrom x\r\n")
    assert r == ("2.0.0", False, "delivered to mailbox", "")
    text = p.read_text()
    assert text.startswith("From a@b  ")
    assert text.endswith("Return-Path: <a@b>\nS: 1\n\n>From x\n\n")
    (tmp_path / "user.lock").write_bytes(b"")
    for may_fail in (False, True):
        # A dotlock held is waited for even where one that cannot be made may fail.
        status, permanent, text, _warning = mailbox.mbox_deliver(
            str(p), "a@b", b"", b"x", attempts=2, delay=0.01, dotlock_may_fail=may_fail
        )
        assert status == "4.2.0" and not permanent
        assert text.startswith("unable to create lock file")


@pytest.mark.parametrize(
    "rel", ["../../etc/x", "a/../../x", "..", "/etc/passwd", "a\0b", "dom/here/.."]
)
def test_resolve_under_refuses_traversal(tmp_path, rel):
    # catalogue 49
    with pytest.raises(ValueError) as ei:
        mailbox.resolve_under(str(tmp_path), rel)
    status, text = ei.value.args
    assert status == "4.3.5"
    assert text.startswith("mail system configuration error")


def test_resolve_under_accepts_inside(tmp_path):
    got = mailbox.resolve_under(str(tmp_path), "example.com/info/")
    assert os.path.normpath(got) == str(tmp_path / "example.com" / "info")
