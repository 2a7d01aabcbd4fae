"""Log lines in Postfix's format, so pflogsumm and friends read them unchanged."""

from __future__ import annotations

import logging
import os
import re
import time

import pytest
from oxipost.config import load_config
from oxipost.log import capture_python_logging, format_line, format_tv, get_logger

LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ postfix/smtpd\[\d+\]: ")


def test_format_pads_the_day_with_a_zero_as_postfix_maillog_file():
    # msg_logger's strftime("%b %d %H:%M:%S"), not syslog's space-padded day.
    when = time.mktime((2026, 11, 5, 2, 19, 53, 0, 0, -1))
    assert format_line(when, "mx", "postfix/qmgr", 6663, "ABC: removed") == (
        "Nov 05 02:19:53 mx postfix/qmgr[6663]: ABC: removed"
    )


def test_maillog_file_lines_and_prefixes(tmp_path):
    log_path = tmp_path / "log" / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\nmyhostname = mx.example\n")
    log = get_logger("smtpd", load_config(str(tmp_path)))
    log.info("connect from x[192.0.2.1]")
    log.warning("something odd")
    lines = log_path.read_text().splitlines()
    assert all(LINE.match(line) for line in lines)
    # The host is myhostname's first label, as msg_logger writes it.
    assert lines[0].endswith(f" mx postfix/smtpd[{os.getpid()}]: connect from x[192.0.2.1]")
    assert lines[1].endswith(": warning: something odd")


def test_lines_are_logged_printable_as_postfix_msg_vprintf(tmp_path):
    # Control characters (a table's HOLD text, say) and bytes that are not UTF-8 (surrogate
    # escapes) are each a '?', UTF-8 stays (with SMTPUTF8), as Postfix's printable() of
    # every log line.
    log_path = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\nsmtputf8_enable = yes\n")
    log = get_logger("smtpd", load_config(str(tmp_path)))
    log.info("hold: a\x03b\tc \x7f caf\u00e9 caf" + b"\xe9".decode("utf-8", "surrogateescape"))
    (line,) = log_path.read_text().splitlines()
    assert line.endswith("]: hold: a?b?c ? caf\u00e9 caf?")


@pytest.mark.parametrize("smtputf8", ["yes", "no"])
def test_newlines_and_utf8_logged_as_postfix_msg_vprintf(tmp_path, smtputf8: str) -> None:
    # A newline is a control character like any other; UTF-8 is kept only where Postfix's
    # util_utf8_enable (smtputf8_enable) says so.
    log_path = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\nsmtputf8_enable = {smtputf8}\n")
    log = get_logger("cleanup", load_config(str(tmp_path)))
    log.info("warning: header Subject: a\n\tb caf\u00e9\r")
    (line,) = log_path.read_bytes().splitlines()
    cafe = "caf\u00e9" if smtputf8 == "yes" else "caf??"
    assert line.decode().endswith(f"]: warning: header Subject: a??b {cafe}?")


def test_records_cut_at_2000_bytes_after_the_severity(tmp_path):
    # msg_logger's "%s[%ld]: %s: %.*s" with MSG_LOGGER_RECLEN 2000: the text is cut, the
    # "warning: " before it is not counted; a cut inside a UTF-8 character keeps its first
    # byte, as Postfix's %.*s does.
    log_path = tmp_path / "maillog"
    (tmp_path / "main.cf").write_text(f"maillog_file = {log_path}\nsmtputf8_enable = yes\n")
    log = get_logger("smtpd", load_config(str(tmp_path)))
    log.info("i" * 1999 + "xyz")
    log.warning("w" * 2500)
    log.info("e" * 1999 + "\u00e9tc")
    log.info("e" * 2000)
    texts = [ln.split(b"]: ", 1)[1] for ln in log_path.read_bytes().splitlines()]
    assert texts == [
        b"i" * 1999 + b"x",
        b"warning: " + b"w" * 2000,
        b"e" * 1999 + b"\xc3",
        b"e" * 2000,
    ]


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


# (seconds, significant digits, decimals at most, what Postfix's format_tv() writes): the
# cases of Postfix's own format_tv test, and the default delay_logging_resolution_limit (2).
FORMAT_TV = [
    *[
        (t, 2, 6, out)
        for t, out in [
            (1110, "1110"), (111, "111"), (11.1, "11"), (1.11, "1.1"), (0.111, "0.11"),
            (0.0111, "0.011"), (0.00111, "0.0011"), (0.000111, "0.00011"),
            (0.000011, "0.000011"), (1000, "1000"), (10, "10"), (1, "1"), (0.1, "0.1"),
            (0.000001, "0.000001"), (996, "996"), (99.6, "100"), (9.96, "10"), (0.996, "1"),
            (0.0996, "0.1"), (0.00996, "0.01"), (0.000996, "0.001"),
        ]
    ],
    *[
        (t, 1, 6, out)
        for t, out in [
            (11.1, "11"), (1.11, "1"), (0.111, "0.1"), (0.0111, "0.01"), (0.000011, "0.00001"),
            (99.6, "100"), (9.96, "10"), (0.996, "1"), (0.000996, "0.001"),
        ]
    ],
    *[
        (t, 2, 2, out)
        for t, out in [
            (0, "0"), (0.004, "0"), (0.005, "0.01"), (0.037, "0.04"), (0.123, "0.12"),
            (0.999, "1"), (1.25, "1.3"), (12.5, "13"), (3600.2, "3600"),
        ]
    ],
    (0.037, 2, 0, "0"),
    (0.6, 2, 0, "1"),
]  # fmt: skip


@pytest.mark.parametrize(("seconds", "sig", "res", "expected"), FORMAT_TV)
def test_format_tv_as_postfix(seconds: float, sig: int, res: int, expected: str) -> None:
    assert format_tv(seconds, sig, res) == expected
