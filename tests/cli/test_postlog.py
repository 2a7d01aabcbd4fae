"""postlog(1) beside Postfix 3.7's: the same records in the mail log, the same lines on a
terminal and the same exit statuses, for each severity, tag, standard input and error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import on_terminal, shared_dir, wait_for_log
from tests.smtpd.conftest import write_config
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = pytest.mark.postfix

MAIN_CF = (
    "maillog_file = {dir}/maillog\n"
    "maillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    "smtputf8_enable = no\n"
)
# Arguments, run with standard error on a terminal.
ON_TERMINAL = [
    ["hello", "world"],
    ["-t", "mytag", "-p", "warn", "a warning"],
    ["-p", "WARNING", "upper case"],
    ["-p", "err", "an error"],
    ["-p", "crit", "critical"],
    ["-p", "panic", "a panic"],
    ["-i", "-t", "a b", "two\nlines\tand a tab"],
    ["-p", "notice", "refused"],
    ["-x", "bad option"],
    ["x" * 2100],
]
# Standard input, standard error not a terminal.
STDIN = [b"line one\nline two\n\nline\x01four\n\xff\xfe not UTF-8\n", b"no newline at end"]
RECORD = re.compile(r"^\w{3} \d\d \d\d:\d\d:\d\d \S+ (.*?)\[\d+\]: (.*)$")


def _records(maillog: Path) -> list[tuple[str, str]]:
    """(tag, text) of each record but smtpd's (Postfix's start-up check connects), master's
    and postfix-script's."""
    lines = maillog.read_text(errors="replace").splitlines()
    found = [m.groups() for m in map(RECORD.match, lines) if m]
    others = ("/smtpd", "/master", "/postfix-script")
    return [(tag, text) for tag, text in found if not tag.endswith(others)]


def _play(postlog: list[str], config_dir: Path) -> list[tuple[int, str]]:
    results = []
    for args in ON_TERMINAL:
        shown = on_terminal([*postlog, "-c", str(config_dir), *args])
        results.append((shown.returncode, shown.stderr))
    for data in STDIN:
        done = subprocess.run(
            [*postlog, "-c", str(config_dir)], input=data, capture_output=True, timeout=30
        )
        results.append((done.returncode, done.stderr.decode()))
    return results


def _settled(maillog: Path) -> list[tuple[str, str]]:
    # Postfix's records reach the file through postlogd, which writes behind: wait for the
    # last one _play sends (a pause between two reads said nothing of a busy postlogd).
    wait_for_log(maillog, r" postfix/postlog\[\d+\]: no newline at end$")
    return _records(maillog)


def test_postlog_as_postfix() -> None:
    with running_postfix(MAIN_CF) as (_port, d):
        theirs = _play(["/usr/sbin/postlog"], d)
        their_log = _settled(d / "maillog")
    with shared_dir("oxipost-postlog-") as tmp:
        write_config(str(tmp), MAIN_CF.replace("{dir}", str(tmp)))
        ours = _play([sys.executable, "-m", "oxipost.cli.postlog"], tmp)
        our_log = _records(tmp / "maillog")
    assert ours == theirs
    assert our_log == their_log
    # The test sees something: a record of each kind, the tags as given.
    assert ("mytag", "warning: a warning") in our_log
    assert ("postfix/postlog", "line?four") in our_log
    assert ("a b", "two?lines?and a tab") in our_log
