"""smtpd's match lists with /file/name items (mynetworks = /etc/postfix/mynetworks,
mydestination = /etc/postfix/local_domains, relay_domains = /file), one session from
127.0.0.2 on real Postfix 3.7 and on ours with the same main.cf and files: relaying
allowed or denied alike, the same warnings of a '#' after a pattern, and for a file that
does not open the same 451 and the same lines (its error once as smtpd starts, then
dict_surrogate's warning and match_ops' 'LIST: non-existent:FILE: table lookup problem'
at each lookup). postconf shows such a value as written."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.config import ConfigError, load_config
from oxipost.smtpd.check import open_smtpd_tables

from tests.conftest import run_ours, shared_dir
from tests.smtpd.conftest import write_config
from tests.smtpd.test_postfix_differential import Played, _after_prefix, running_postfix

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

RELAY = ["EHLO x", "MAIL FROM:<a@example.org>", "RCPT TO:<x@example.net>", "QUIT"]

FILES = {
    # A comment line, a continuation line, a '#' after a pattern.
    "nets": "# trusted\n127.0.0.3\n  127.0.0.2 # the test client\n",
    "plain": "127.0.0.2\n",
    # A file naming another under '!', and a !pattern under !/file (which matches).
    "outer": "!{dir}/plain\n127.0.0.0/8\n",
    "negated": "!127.0.0.2\n",
    "table": "cidr:{dir}/clients.cidr\n",
    "clients.cidr": "127.0.0.2/32 OK\n",
    "domains": "localhost\n{dir}/more_domains\n",
    "more_domains": "example.net\n",
}


@pytest.fixture(scope="module")
def files() -> Iterator[Path]:
    with shared_dir("oxipost-lists-") as d:
        for name, text in FILES.items():
            (d / name).write_text(text.replace("{dir}", str(d)))
        yield d


def _comment_warnings(lines: list[str]) -> set[str]:
    return {t for t in map(_after_prefix, lines) if "comment at end of line" in t}


@pytest.mark.parametrize(
    ("main_cf", "relayed"),
    [
        ("mynetworks = 127.0.0.1/32, {dir}/nets", True),
        ("mynetworks = {dir}/outer", False),
        ("mynetworks = !{dir}/plain, 127.0.0.0/8", False),
        ("mynetworks = !!{dir}/plain", True),
        ("mynetworks = !{dir}/negated, 127.0.0.1", True),
        ("mynetworks = 127.0.0.1/32, {dir}/table", True),
        # A relative name is a name, not a file.
        ("mynetworks = 127.0.0.1/32, plain", False),
        ("mydestination = {dir}/domains", True),
        ("relay_domains = {dir}/more_domains", True),
    ],
)
def test_list_files_as_postfix(start_smtpd, files: Path, main_cf: str, relayed: bool) -> None:
    both = Played(start_smtpd, RELAY, main_cf.replace("{dir}", str(files)) + "\n")
    assert both.their_replies[3].startswith("250 " if relayed else "454 "), both.their_replies
    assert both.our_replies[1:] == both.their_replies[1:]
    # Each smtpd list that holds it ($mynetworks is the default of two more) says so.
    assert _comment_warnings(both.ours) == _comment_warnings(both.theirs)


def _missing_file_lines(lines: list[str]) -> list[str]:
    """Distinct texts about the file that does not open, in their first order."""
    out: list[str] = []
    for text in map(_after_prefix, lines):
        if ("non-existent:" in text or "open file" in text) and text not in out:
            out.append(text)
    return out


@pytest.mark.parametrize("param", ["mynetworks", "mydestination"])
def test_missing_list_file_as_postfix(start_smtpd, files: Path, param: str) -> None:
    missing = files / "missing"
    # Postfix 3.7's default, so that ours does not match the exclusions ($mynetworks).
    main_cf = f"{param} = {missing}\nsmtpd_forbid_bare_newline = no\n"
    both = Played(start_smtpd, RELAY, main_cf)
    assert both.their_replies[3] == "451 4.3.0 <x@example.net>: Temporary lookup failure"
    assert both.our_replies[1:] == both.their_replies[1:]
    theirs = _missing_file_lines(both.theirs)
    assert f"warning: {param}: non-existent:{missing}: table lookup problem" in theirs
    assert set(_missing_file_lines(both.ours)) == set(theirs)
    # Logged once, as our smtpd starts.
    error = f"error: open file {missing}: No such file or directory"
    assert [_after_prefix(ln) for ln in both.ours].count(error) == 1
    connect = both.ours.index("connect from unknown[127.0.0.2]")
    assert error in map(_after_prefix, both.ours[:connect])


def test_postconf_shows_the_list_as_written(files: Path, tmp_path: Path) -> None:
    main_cf = f"mynetworks = 127.0.0.1/32, {files}/nets\nmydestination = !{files}/domains\n"
    d = write_config(str(tmp_path), main_cf)
    names = ["mynetworks", "mydestination"]
    theirs = subprocess.run(
        ["postconf", "-c", d, *names], capture_output=True, text=True, check=True
    ).stdout
    ours = run_ours("postconf", "-c", d, *names)
    assert ours.stdout == theirs
    assert re.search(r"^mynetworks = 127\.0\.0\.1/32, /\S+/nets$", theirs, re.M)


def _postfix_fatal(main_cf: str) -> str:
    """The fatal error real Postfix's smtpd starts with under this main.cf."""
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf) as (_port, d):
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(FileNotFoundError):
                for line in (d / "maillog").read_text().splitlines():
                    if "postfix/smtpd[" in line and ": fatal: " in line:
                        return line.split(": fatal: ", 1)[1]
            assert time.monotonic() < deadline, "no fatal error from Postfix's smtpd"
            time.sleep(0.1)


@pytest.mark.parametrize(
    "main_cf",
    [
        "mynetworks = !\n",
        "mynetworks = 127.0.0.1/32, {dir}\n",
        "relay_domains = {dir}/with_bang\n",
    ],
)
def test_unusable_list_is_fatal_at_start_as_postfix(
    files: Path, tmp_path: Path, main_cf: str
) -> None:
    """A '!' without a pattern and a file that opens but cannot be read (a directory)
    end Postfix's smtpd as it starts; ours refuses to start with the same words (the
    service's fatal line under master)."""
    (files / "with_bang").write_text("example.net, !\n")
    main_cf = main_cf.replace("{dir}", str(files))
    theirs = _postfix_fatal(main_cf)
    cfg = load_config(write_config(str(tmp_path), main_cf)).for_service("smtp")
    with pytest.raises(ConfigError) as ours:
        open_smtpd_tables(cfg)
    assert str(ours.value) == theirs
