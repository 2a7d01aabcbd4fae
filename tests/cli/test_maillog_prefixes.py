"""A maillog_file outside maillog_file_prefixes beside Postfix 3.7: each command that logs
through postlogd refuses to run (maillog_client_init's fatal error, with its own exit
status, on stderr only where that command writes there), those that do not log run on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_ours, run_postfix

pytestmark = pytest.mark.postfix

# (Postfix's program, our tool, arguments after the configuration directory, on a terminal)
COMMANDS = [
    ("/usr/sbin/postfix", "postfix", ["status"], True),
    ("/usr/sbin/postfix", "postfix", ["check"], False),
    ("/usr/sbin/postqueue", "postqueue", ["-p"], False),
    ("/usr/sbin/postsuper", "postsuper", ["-d", "ALL"], False),
    ("/usr/sbin/postlog", "postlog", ["hello"], True),
    ("/usr/sbin/sendmail", "sendmail", ["-bp"], False),
    ("/usr/sbin/sendmail", "sendmail", ["-x", "to@example.test"], False),
    ("/usr/bin/mailq", "mailq", [], False),
    ("/usr/bin/newaliases", "newaliases", [], False),
    ("/usr/sbin/postmap", "postmap", [], False),
    ("/usr/sbin/postdrop", "postdrop", [], False),
    ("/usr/sbin/postcat", "postcat", ["-q", "NOSUCHID"], False),
]


@pytest.mark.parametrize(("theirs", "ours", "args", "terminal"), COMMANDS)
def test_maillog_file_outside_prefixes_as_postfix(
    tmp_path: Path, theirs: str, ours: str, args: list[str], terminal: bool
) -> None:
    # pytest's directory is under /tmp: none of the default prefixes (/var, /dev/stdout).
    (tmp_path / "main.cf").write_text(f"maillog_file = {tmp_path}/maillog\n")
    (tmp_path / "master.cf").write_text("")
    config = ["-C" if ours in ("sendmail", "mailq", "newaliases") else "-c", str(tmp_path)]
    argv = [*config, *args]
    kw: dict = {"terminal": True} if terminal else {"stdin": ""}
    real = run_postfix(theirs, *argv, **kw)
    mine = run_ours(ours, *argv, **kw)
    assert (mine.returncode, mine.stderr) == (real.returncode, real.stderr)
    assert not (tmp_path / "maillog").exists()


def test_master_started_by_hand_refuses_maillog_file_as_postfix(shared_tmp: Path) -> None:
    """A master run without postfix(1) (Postfix's master -d, our python -m oxipost.master)
    makes the check itself: exit 1, its fatal error in syslog alone, no maillog_file."""
    runs = []
    for name, argv in (
        ("theirs", ["/usr/lib/postfix/sbin/master", "-d"]),
        ("ours", [sys.executable, "-m", "oxipost.master"]),
    ):
        d = shared_tmp / name
        # What Postfix's master needs before it reaches the check: its pid and lock files.
        (d / "queue" / "pid").mkdir(parents=True)
        (d / "data").mkdir()
        shutil.chown(d / "data", "postfix")
        (d / "main.cf").write_text(
            f"maillog_file = {d}/maillog\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n"
        )
        (d / "master.cf").write_text("")
        proc = subprocess.run([*argv, "-c", str(d)], capture_output=True, text=True, timeout=20)
        runs.append((proc.returncode, proc.stdout, proc.stderr, (d / "maillog").exists()))
    assert runs[1] == runs[0] == (1, "", "", False)
