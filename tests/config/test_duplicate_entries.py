"""A main.cf parameter set twice: every command that reads main.cf warns as Postfix 3.7's
does (dict_load_fp's "FILE, line N: overriding earlier entry: NAME=OLDVALUE", on stderr,
each time it reads), compared with real Postfix (Debian's package).

Real Postfix reads a main.cf changed within the last second again, after a pause, until it
is older (dict_load_file_xt's cool-down), warning each time: the files here are an hour old.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from oxipost.config import ConfigError, load_config, maincf

from tests.conftest import POSTFIX_POSTCONF, run_ours, run_postfix

MAIN_CF = (
    # Longer than the 30 characters Postfix shows of it.
    " orphan text that continues nothing at all\n"
    "relay_domains = one.example\n"
    "mydomain = example.com\n"
    "relay_domains =\n"
    "  two.example\n"
    "  three.example\n"
    # The same values again: Postfix warns only of a value it replaces.
    "relay_domains = two.example  three.example\n"
    "mydomain = example.com\n"
    "relayhost=[r.example]\n"
    "# a comment\n"
    "relayhost = [r.example]:587\n"
)


def expected(path: Path) -> list[str]:
    return [
        f'{path}: logical line must not start with whitespace: " orphan text that continues no..."',
        f"{path}, line 4: overriding earlier entry: relay_domains=one.example",
        f"{path}, line 11: overriding earlier entry: relayhost=[r.example]",
    ]


def aged(confdir: Path, text: str) -> Path:
    main_cf = confdir / "main.cf"
    main_cf.write_text(text)
    (confdir / "master.cf").write_text("")
    past = time.time() - 3600
    os.utime(main_cf, (past, past))
    return main_cf


def test_a_value_replaced_is_warned_of_at_its_first_line(tmp_path: Path) -> None:
    warnings: list[str] = []
    entries = maincf.parse_text(MAIN_CF, str(tmp_path / "main.cf"), warnings)
    assert warnings == expected(tmp_path / "main.cf")
    assert maincf.settings(entries)["relay_domains"] == "two.example  three.example"
    # Without a list to warn to (postconf -e's reading), nothing is compared.
    assert maincf.parse_text(MAIN_CF, "main.cf") == entries


def test_config_directory_set_in_main_cf_overrides_the_one_read(tmp_path: Path) -> None:
    aged(tmp_path, f"config_directory = {tmp_path}\n")
    assert load_config(str(tmp_path)).read_warnings() == []
    aged(tmp_path, "config_directory = /etc/postfix\n")
    assert load_config(str(tmp_path)).read_warnings() == [
        f"{tmp_path}/main.cf, line 1: overriding earlier entry: config_directory={tmp_path}"
    ]


def test_warnings_before_a_fatal_line_still_reach_stderr(tmp_path: Path, capfd) -> None:
    aged(tmp_path, "myhostname = a\nmyhostname = b\nbad line\n")
    with pytest.raises(ConfigError, match="line 3: missing '='"):
        load_config(str(tmp_path), stderr_as="postqueue")
    assert capfd.readouterr().err == (
        f"postqueue: warning: {tmp_path}/main.cf, line 2: overriding earlier entry: myhostname=a\n"
    )


@pytest.mark.postfix
@pytest.mark.parametrize(
    "args",
    [
        ("postconf", "-n"),
        ("postconf", "relay_domains", "relayhost"),
        ("postconf", "-M"),
        ("postmap", "-q", "k", "inline:{k=v}"),
        ("postalias", "-q", "k", "inline:{k=v}"),
    ],
)
def test_commands_warn_as_postfix(confdir: Path, args: tuple[str, ...]) -> None:
    """The whole output: the warnings in Postfix's order, then what the command says."""
    aged(confdir, MAIN_CF)
    tool, *rest = args
    ours = run_ours(tool, "-c", str(confdir), *rest)
    real = run_postfix(f"/usr/sbin/{tool}", "-c", str(confdir), *rest)
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )
    assert f"{tool}: warning: {expected(confdir / 'main.cf')[1]}\n" in ours.stderr


@pytest.mark.postfix
def test_postconf_warns_before_its_fatal_as_postfix(confdir: Path) -> None:
    aged(confdir, "myhostname = a\nmyhostname = b\nbad line\n")
    ours = run_ours("postconf", "-c", str(confdir), "-n")
    real = run_postfix(POSTFIX_POSTCONF, "-c", str(confdir), "-n")
    main_cf = confdir / "main.cf"
    assert (ours.returncode, ours.stderr) == (real.returncode, real.stderr)
    assert ours.stderr.splitlines() == [
        f"postconf: warning: {main_cf}, line 2: overriding earlier entry: myhostname=a",
        f"postconf: fatal: {main_cf}, line 3: missing '=' after attribute name: \"bad line\"",
    ]


def _main_cf_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "/main.cf" in line]


@pytest.mark.postfix
@pytest.mark.parametrize(
    "args",
    [
        ("postqueue", "-c", "{dir}", "-p"),
        ("postsuper", "-c", "{dir}", "-d", "NOSUCHID"),
        ("postcat", "-c", "{dir}", "-q", "NOSUCHID"),
        # sendmail reads main.cf, then the postqueue it runs reads it again.
        ("mailq", "-C", "{dir}"),
        # sendmail -bi, then the postalias it runs.
        ("newaliases", "-C", "{dir}"),
    ],
)
def test_queue_commands_warn_as_postfix(shared_tmp: Path, args: tuple[str, ...]) -> None:
    """The main.cf warnings each program prints, in order (what the queue then says differs:
    Postfix's showq and queue files are not ours)."""
    (shared_tmp / "spool").mkdir()
    (shared_tmp / "aliases").write_text("postmaster: root\n")
    aged(
        shared_tmp,
        MAIN_CF
        + f"queue_directory = {shared_tmp}/spool\n"
        + f"alias_database = hash:{shared_tmp}/aliases\n",
    )
    tool, *rest = (a.replace("{dir}", str(shared_tmp)) for a in args)
    ours = run_ours(tool, *rest)
    real = subprocess.run(
        [tool, *rest],
        executable=shutil.which(tool) or f"/usr/sbin/{tool}",
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert _main_cf_lines(ours.stderr) == _main_cf_lines(real.stderr)
    assert f"{tool}: warning: {expected(shared_tmp / 'main.cf')[1]}" in ours.stderr
