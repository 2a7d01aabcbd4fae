"""Log lines in Postfix's format, so pflogsumm and friends read them unchanged."""

from __future__ import annotations

import logging
import os
import re
import time

from oxipost.config import load_config
from oxipost.log import capture_python_logging, format_line, get_logger

LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ postfix/smtpd\[\d+\]: ")


def test_format_pads_the_day_like_syslog():
    when = time.mktime((2026, 11, 5, 2, 19, 53, 0, 0, -1))
    assert format_line(when, "mx", "postfix/qmgr", 6663, "ABC: removed") == (
        "Nov  5 02:19:53 mx postfix/qmgr[6663]: ABC: removed"
    )


def test_maillog_file_lines_and_prefixes(tmp_path):
    log_path = tmp_path / "log" / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\nmyhostname = mx.example\n")
    log = get_logger("smtpd", load_config(str(tmp_path)))
    log.info("connect from x[192.0.2.1]")
    log.warning("something odd")
    lines = log_path.read_text().splitlines()
    assert all(LINE.match(line) for line in lines)
    assert lines[0].endswith(f"mx.example postfix/smtpd[{os.getpid()}]: connect from x[192.0.2.1]")
    assert lines[1].endswith(": warning: something odd")


def test_agents_python_logging_reaches_the_maillog(tmp_path):
    # The delivery agents warn through Python's logging; their lines carry the agent's
    # program name, whichever process runs it, and an exception is one line.
    log_path = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\n")
    handler = capture_python_logging(get_logger("qmgr", load_config(str(tmp_path))), ["virtual"])
    try:
        logging.getLogger("oxipost.virtual").warning("recipient %s: bad uid %d", "u@x", 0)
        try:
            raise OSError("disk on fire")
        except OSError:
            logging.getLogger("oxipost.delivery").exception("Q1: virtual delivery agent failed")
    finally:
        logging.getLogger("oxipost").removeHandler(handler)
    lines = log_path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"postfix/virtual[{os.getpid()}]: warning: recipient u@x: bad uid 0")
    assert lines[1].endswith(
        f"postfix/qmgr[{os.getpid()}]: error: Q1: virtual delivery agent failed: "
        "OSError: disk on fire"
    )


def test_syslog_name_override_names_the_service(tmp_path):
    log_path = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\n")
    (tmp_path / "master.cf").write_text(
        "submission inet n - n - - smtpd\n  -o syslog_name=postfix/submission\n"
    )
    cfg = load_config(str(tmp_path)).for_service("submission")
    get_logger("smtpd", cfg).info("hello")
    assert " postfix/submission/smtpd[" in log_path.read_text()


def test_fatal_exits_1(tmp_path):
    log_path = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\n")
    log = get_logger("master", load_config(str(tmp_path)))
    try:
        log.fatal("the end")
    except SystemExit as e:
        assert e.code == 1
    else:
        raise AssertionError("fatal must exit")
    assert log_path.read_text().rstrip().endswith("fatal: the end")
