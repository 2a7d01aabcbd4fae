"""sendmail's -v beside Postfix 3.7's: each -v goes on to the command that sendmail runs
(postqueue for -bp, -q, -qR, -qI; postalias, ours newaliases, for -bi; postfix for -bd),
but a lone -v in delivery mode (-qR, -qI) stays with sendmail."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from oxipost.cli import sendmail

from tests.conftest import run_postfix

pytestmark = pytest.mark.postfix

CASES = [
    ["-bp", "-v"],
    ["-q"],
    ["-q", "-v", "-v"],
    ["-qRexample.com", "-v"],
    ["-qRexample.com", "-v", "-v"],
    ["-qIABC", "-v"],
    ["-qIABC", "-v", "-v", "-v"],
    ["-bi", "-v"],
    ["-bd", "-v"],
]

# Postfix's command for ours, and where Postfix's arguments stop being comparable
# (postalias is given alias_database, which our newaliases reads itself).
THEIR_NAME = {"newaliases": "postalias"}


@pytest.fixture(scope="module")
def postfix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A configuration directory for Postfix's sendmail whose command_directory holds
    stand-ins that record how they were run; one for all cases, as Postfix's sendmail
    takes 1.5-2 s on its first run from a new directory (seen, not understood)."""
    conf = tmp_path_factory.mktemp("theirs")
    bin_dir = conf / "bin"
    bin_dir.mkdir()
    for name in ("postqueue", "postalias", "postfix"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "${{0##*/}} $*" > {conf}/argv.new\n')
        (bin_dir / name).chmod(0o755)
    (conf / "main.cf").write_text(f"command_directory = {bin_dir}\n")
    return conf


def _theirs(conf: Path, args: list[str]) -> list[str]:
    """The command Postfix's sendmail runs, without postalias's alias_database."""
    record = conf / "argv.new"
    record.unlink(missing_ok=True)
    assert run_postfix("/usr/sbin/sendmail", "-C", str(conf), *args, stdin="").returncode == 0
    # -bd's postfix start runs in the background.
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    words = record.read_text().split()
    return words[: words.index("--")] if "--" in words else words


def _ours(tmp_path: Path, args: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The command our sendmail runs, with its interpreter and -c DIR set aside."""
    ran: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda _path, argv: ran.append(list(argv)))
    monkeypatch.setattr(os, "posix_spawn", lambda _path, argv, _env: ran.append(list(argv)))
    (tmp_path / "main.cf").write_text("")
    sendmail.main(["-C", str(tmp_path), *args])
    [argv] = ran
    tool = argv[2].rpartition(".")[2]
    assert argv[3:5] == ["-c", str(tmp_path)]
    return [THEIR_NAME.get(tool, tool), *argv[5:]]


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_verbose_passed_on_as_postfix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postfix_dir: Path, args: list[str]
) -> None:
    assert _ours(tmp_path, args, monkeypatch) == _theirs(postfix_dir, args)
