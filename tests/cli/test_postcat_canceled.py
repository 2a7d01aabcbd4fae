"""postcat of a message whose recipients a Milter application deleted: each stays in the
queue file where it was, as a canceled recipient, after its original address (Postfix's
cleanup_milter.c marks the record in place; tests/milter/test_milter_postfix.py compares
one deletion with Postfix 3.7's postcat). Nothing delivers it: it is no recipient."""

from __future__ import annotations

import time
from pathlib import Path

from oxipost.cleanup.milter import MilterEditor
from oxipost.config import load_config
from oxipost.envelope import Envelope, Recipient
from oxipost.qmgr.queue import Queue, QueueState

from tests.conftest import run_ours

CONTENT = b"Received: by x\r\nSubject: t\r\n\r\nhello\r\n"


def _recipient_lines(conf: str, qid: str) -> list[str]:
    out = run_ours("postcat", "-c", conf, "-e", "-q", qid)
    assert out.returncode == 0, out.stderr
    kinds = ("original_recipient:", "recipient:", "canceled_recipient:", "message_size:")
    return [ln for ln in out.stdout.splitlines() if ln.startswith(kinds)]


def test_deleted_recipients_stay_in_place_as_canceled(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {tmp_path}/queue\n")
    cfg = load_config(str(conf))
    rcpts = [Recipient(f"{r}@example.org", f"{r}@example.org") for r in "abc"]
    editor = MilterEditor(cfg, Envelope("s@example.org", rcpts, time.time()), CONTENT, "")
    editor.del_rcpt("<b@example.org>")
    editor.del_rcpt("<a@example.org>")
    editor.add_rcpt("<d@example.org>", "")
    env, content = editor.result()
    assert [r.address for r in env.recipients] == ["c@example.org", "d@example.org"]
    q = Queue.open(cfg, "test")
    try:
        first = q.enqueue_sync(env, content)
    finally:
        q.close()
    # The next milter's edit of what the first left, as the queue file has it.
    stored, _ = QueueState(cfg).load(first)
    assert stored.canceled == env.canceled
    again = MilterEditor(cfg, stored, content, "")
    again.del_rcpt("<d@example.org>")
    q = Queue.open(cfg, "test")
    try:
        second = q.enqueue_sync(*again.result())
    finally:
        q.close()
    records = _recipient_lines(str(conf), first)
    # Postfix counts the records it wrote, the canceled ones too.
    assert records[0].split()[3] == "4", records[0]
    expected = [
        ("a", "canceled_recipient"),
        ("b", "canceled_recipient"),
        ("c", "recipient"),
        ("d", "recipient"),
    ]
    assert records[1:] == _records(expected)
    expected[-1] = ("d", "canceled_recipient")
    assert _recipient_lines(str(conf), second)[1:] == _records(expected)


def _records(expected: list[tuple[str, str]]) -> list[str]:
    out = []
    for user, kind in expected:
        out += [f"original_recipient: {user}@example.org", f"{kind}: {user}@example.org"]
    return out
