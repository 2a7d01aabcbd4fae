"""Shared test fixtures: temp config dirs and the commands under test as real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
POSTFIX_POSTCONF = "/usr/sbin/postconf"


def run_ours(tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run one of our console commands (python -m oxipost.cli.TOOL) as a real process."""
    return subprocess.run(
        [sys.executable, "-m", f"oxipost.cli.{tool}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_postfix(path: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run one of real Postfix's commands (Debian's package, installed by `make test`)."""
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: `make sysdeps` installs Debian's postfix")
    # argv[0] is the bare name, so Postfix's messages start "postconf: " as ours do.
    return subprocess.run(
        [os.path.basename(path), *args],
        executable=path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    """An empty configuration directory with main.cf and master.cf."""
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("")
    return tmp_path


@pytest.fixture
def debian_master_cf() -> str:
    """The master.cf Debian's postfix package ships: a real-world file to read unchanged."""
    for path in ("/etc/postfix/master.cf", "/usr/share/postfix/master.cf.dist"):
        if os.path.exists(path):
            return Path(path).read_text()
    pytest.fail("Debian's postfix master.cf is missing: `make sysdeps` installs it")


def copy_conf(dest: Path) -> Path:
    """A copy of the embedded default conf/ in dest."""
    shutil.copytree(REPO / "conf", dest, dirs_exist_ok=True)
    return dest
