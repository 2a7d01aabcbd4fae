"""A master.cf with a bad column, beside real Postfix 3.7: what postconf says, and what the
postfix command says and logs when postconf (which postfix-script runs first) refuses it.

Postfix's messages: postconf `fatal: invalid type field "X" in "LINE"` (private,
unprivileged, chroot, wakeup, process_limit) or `fatal: file FILE: line N: bad field count`;
postfix(1), whatever the command, stops there with postconf's line on stderr (named by its
path, $command_directory/postconf) and `postfix/postfix-script: fatal: cannot execute
/usr/sbin/postconf!` in the log (and on stderr when that is a terminal), and signals or
starts nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    POSTFIX_POSTCONF,
    postconf_as_postfix,
    run_ours,
    run_postfix,
    shared_dir,
)

pytestmark = pytest.mark.postfix

POSTFIX = "/usr/sbin/postfix"

BAD_ENTRIES = [
    "smtp bogus n - n - - smtpd\n",
    "smtp inet x - n - - smtpd\n",
    "smtp inet n x n - - smtpd\n",
    "smtp inet n - Y - - smtpd\n",
    "smtp inet n - n 1x - smtpd\n",
    "smtp inet n - n 60?? - smtpd\n",
    "smtp inet n - n -1 - smtpd\n",
    "smtp inet n - n - 1x smtpd\n",
    # The logical line as read: continuation joined without its newline, a tab shown "?".
    "smtp\tinet n - n - x smtpd   \n# c\n  -o a=b   -v\n",
    # The first bad line counts; postconf stops there.
    "smtp inet n - n - - smtpd\nfoo unix - - n - - bogus\nbar bogus - - n - - smtpd\n",
    "smtp inet n - n - - smtpd\nx unix - - n - - smtpd\nx unix - - n 1? 1x smtpd\n",
]
# What postconf accepts though master may not ("-?", a private inet service): they must
# list as Postfix lists them.
GOOD_ENTRIES = [
    "a unix - - n ? - smtpd\nb unix - - n -? - smtpd\nc unix - - n 60? 00 smtpd\n"
    "smtp inet y - n - - smtpd\nsmtp inet - - n - - smtpd\n",
]


def _both(confdir: Path, master_cf: str, args: list[str]) -> None:
    (confdir / "master.cf").write_text(master_cf)
    postconf_as_postfix(confdir, *args)


@pytest.mark.parametrize("master_cf", BAD_ENTRIES + GOOD_ENTRIES)
def test_postconf_judges_master_cf_columns_as_postfix(confdir, master_cf):
    _both(confdir, master_cf, ["-M"])


@pytest.mark.parametrize("args", [["-n"], ["-d", "maximal_queue_lifetime"], ["-P"], ["-F"]])
def test_every_postconf_listing_reads_master_cf(confdir, args):
    # Not only -M: parameter listings, defaults included, read master.cf too.
    _both(confdir, BAD_ENTRIES[0], args)


def test_postconf_edits_main_cf_beside_a_bad_master_cf(tmp_path):
    # -e does not read master.cf: the edit is made all the same.
    results = []
    for who in ("ours", "real"):
        d = tmp_path / who
        d.mkdir()
        (d / "main.cf").write_text("a = 1\n")
        (d / "master.cf").write_text(BAD_ENTRIES[0])
        if who == "ours":
            proc = run_ours("postconf", "-c", str(d), "-e", "b = 2")
        else:
            proc = run_postfix(POSTFIX_POSTCONF, "-c", str(d), "-e", "b = 2")
        results.append((proc.returncode, proc.stderr, (d / "main.cf").read_text()))
    assert results[0] == results[1]
    assert results[0][0] == 0


@pytest.fixture
def var_tmp() -> Iterator[Path]:
    """A directory under /var: Postfix logs only to a maillog_file under one of
    maillog_file_prefixes (/var, /dev/stdout), which pytest's /tmp is not."""
    with shared_dir("oxipost-mastercf-", 0o700, "/var/tmp") as d:
        yield d


def _instance(d: Path, master_cf: str) -> Path:
    """A configuration whose queue directory exists (postfix-script goes there before it
    runs postconf) and whose log is a file of its own."""
    d.mkdir()
    (d / "queue").mkdir()
    (d / "main.cf").write_text(
        f"queue_directory = {d}/queue\ndata_directory = {d}/data\nmaillog_file = {d}/maillog\n"
        "inet_interfaces = 127.0.0.1\ncompatibility_level = 3.6\n"
    )
    (d / "master.cf").write_text(master_cf)
    return d / "maillog"


def _log_lines(path: Path) -> list[tuple[str, str]]:
    """(program, text) of each log line: time, host and pid differ between the two."""
    if not path.exists():
        return []
    pattern = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ (\S+)\[\d+\]: (.*)$")
    out = []
    for line in path.read_text().splitlines():
        m = pattern.match(line)
        assert m, line
        out.append((m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize("command", ["reload", "start", "check", "status"])
@pytest.mark.parametrize(
    "master_cf",
    [BAD_ENTRIES[0], BAD_ENTRIES[4], "smtp inet n - n - - smtpd\nx bogus\n"],
    ids=["type", "wakeup", "field-count"],
)
def test_postfix_command_stops_where_postconf_refuses_master_cf(
    var_tmp, master_cf, command, terminal
):
    if os.geteuid() != 0:
        pytest.fail("running real Postfix's postfix(1) needs root (CI runs as root)")
    ours_log = _instance(var_tmp / "ours", master_cf)
    real_log = _instance(var_tmp / "real", master_cf)
    ours = run_ours("postfix", "-c", str(var_tmp / "ours"), command, terminal=terminal)
    real = run_postfix(POSTFIX, "-c", str(var_tmp / "real"), command, terminal=terminal)
    assert ours.returncode == real.returncode == 1
    # postconf's line on stderr whatever it is; postfix-script's own line only when stderr
    # is a terminal (postlog(1)'s rule).
    assert ours.stderr == real.stderr.replace(f"{var_tmp}/real/", f"{var_tmp}/ours/")
    postconf_line, *script_lines = ours.stderr.splitlines()
    assert postconf_line.startswith("/usr/sbin/postconf: fatal: ")
    expected = ["postfix/postfix-script: fatal: cannot execute /usr/sbin/postconf!"]
    assert script_lines == (expected if terminal else [])
    assert (
        _log_lines(ours_log)
        == _log_lines(real_log)
        == [("postfix/postfix-script", "fatal: cannot execute /usr/sbin/postconf!")]
    )
    # Nothing was started: no master holds the pid file.
    assert not (var_tmp / "ours" / "queue" / "pid" / "master.pid").exists()
