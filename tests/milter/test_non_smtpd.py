"""non_smtpd_milters: mail from sendmail, through pickup, to a libmilter application,
compared with real Postfix 3.7 (its sendmail and pickup) talking to the same milter."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from oxipost.config import load_config
from oxipost.pickup.service import pickup_once
from oxipost.qmgr.queue import Queue, QueueState

from tests.conftest import run_ours, wait_for_log
from tests.milter.conftest import AppMilter
from tests.smtpd.conftest import ListLog, write_config
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = pytest.mark.postfix

# With the headers cleanup would add (pickup's made-up From: is not Postfix's yet).
MESSAGE = (
    "From: Joe <joe@example.test>\nDate: Sun, 6 Dec 2026 10:00:00 +0000\n"
    "Message-Id: <local@example.test>\nSubject: local\n\nhello\n"
)
LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"


def _milter_lines(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        text = line.split("]: ", 1)[1] if "postfix/" in line else line
        if "milter" in text:
            out.append(re.sub(r"^(warning: )?[0-9A-F]{8,12}: ", r"\1QID: ", text))
    return out


def _postfix(app: AppMilter, logged: str = "") -> tuple[list[str], list[Any]]:
    """(cleanup's milter lines, what the milter was told) for one sendmail submission to
    real Postfix; once the line matching `logged` is in its log, when given (postlogd
    writes behind the milter's end of session)."""
    # Postfix's cleanup keeps its default in_flow_delay wait here (no qmgr gives flow tokens
    # back): it spaces pickup's retries of a deferred message, and only the first is compared.
    main_cf = f"non_smtpd_milters = {app.endpoint}\nin_flow_delay = 1s\n" + LOG_CF
    with running_postfix(main_cf, without=("qmgr",)) as (_, d):
        app.clear()
        sent = subprocess.run(
            ["sendmail", "-C", str(d), "-f", "joe@example.test", "good@localhost"],
            input=MESSAGE.encode(),
            capture_output=True,
            timeout=60,
            env=dict(os.environ, MAIL_CONFIG=str(d)),
        )
        assert sent.returncode == 0, sent
        # The first round only: pickup tries a deferred message again.
        _wait_closed(app)
        if logged:
            wait_for_log(d / "maillog", logged)
        time.sleep(0.5)
        lines = [ln for ln in _read(d / "maillog") if "postfix/pickup" in ln or "cleanup" in ln]
        qid = next(m.group(1) for ln in lines if (m := re.search(r": ([0-9A-F]{8,12}): ", ln)))
        told = app.told()
        again = [i for i, event in enumerate(told) if event[0] == "connect"][1:]
        return _milter_lines([ln for ln in lines if qid in ln]), told[: again[0] if again else None]


def _wait_closed(app: AppMilter) -> None:
    """Until the milter saw its session end (libmilter records it in a thread of its own,
    after the client has gone)."""
    deadline = time.monotonic() + 20
    while '["close"]' not in (app.record.read_text() if app.record.exists() else ""):
        assert time.monotonic() < deadline, "the milter session did not end"
        time.sleep(0.1)


def _read(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _ours(app: AppMilter, tmp_path: Path) -> tuple[list[str], list[Any], QueueState]:
    app.clear()
    conf = Path(write_config(str(tmp_path), f"non_smtpd_milters = {app.endpoint}\n"))
    (conf / "master.cf").write_text("pickup unix n - n 60 1 pickup\n")
    sent = run_ours(
        "sendmail",
        "-f",
        "joe@example.test",
        "good@localhost",
        stdin=MESSAGE,
        env={**os.environ, "MAIL_CONFIG": str(conf)},
    )
    assert sent.returncode == 0, sent
    cfg = load_config(str(conf))
    queue = Queue.open(cfg, writer="pickup")
    lines: list[str] = []
    try:
        pickup_once(cfg, queue, ListLog(lines))
    finally:
        queue.close()
    _wait_closed(app)
    return _milter_lines(lines), app.told(), QueueState(cfg)


@pytest.mark.parametrize(
    "rules",
    [
        {"mail": {"joe@example.test": ["550", "5.7.1", "no local mail"]}},
        {"rcpt": {"good@localhost": ["tempfail"]}},
        {"eom": ["550", "5.7.1", "not this one"]},
    ],
    ids=["mail", "rcpt", "end-of-message"],
)
def test_non_smtpd_milter_refusal_as_postfix(app_milter, tmp_path: Path, rules: Any) -> None:
    """What the milter is told for local mail (CONNECT from localhost[127.0.0.1], HELO
    localhost, MAIL and RCPT without angle brackets, i from the start) and cleanup's
    milter-reject line, as Postfix's cleanup makes them."""
    app = app_milter(rules)
    theirs = _postfix(app, r"postfix/cleanup\[\d+\]: \w+: milter-reject: ")
    ours = _ours(app, tmp_path)
    assert theirs[0] and theirs[0][0].startswith("QID: milter-reject: ")
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]


def test_non_smtpd_milter_edits_queued(app_milter, tmp_path: Path) -> None:
    """A header the milter adds and a recipient it adds are in the queued message."""
    app = app_milter(
        {"edits": [["addheader", "X-Local", "seen"], ["addrcpt", "<added@localhost>"]]}
    )
    theirs = _postfix(app)
    _, events, state = _ours(app, tmp_path)
    assert events == theirs[1]
    (qid,) = state.messages
    env, content = state.load(qid)
    assert [r.address for r in env.recipients] == ["good@localhost", "added@localhost"]
    assert b"\r\nX-Local: seen\r\n" in content
