"""postlock(1) beside Postfix 3.7's: exit statuses, messages, the file it creates, and locks
that each MTA's postlock (and local(8)) respects from the other's."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.postfix

POSTFIX_POSTLOCK = "/usr/sbin/postlock"
# The console script: its name in its messages is the path it was run by, as Postfix's.
OURS = [str(Path(sys.executable).with_name("postlock"))]
MAIN_CF = "deliver_lock_attempts = 2\ndeliver_lock_delay = 1s\nimport_environment = FOO=bar\n"


def _run(argv: list[str], conf: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [*argv, "-c", str(conf), *args], capture_output=True, text=True, timeout=60
    )
    # Both name themselves as they were run (argv[0]).
    return done.returncode, done.stdout, done.stderr.replace(argv[0], "PROG")


def _cases(argv: list[str], d: Path) -> list[tuple[int, str, str]]:
    box = d / "box"
    results = [
        # The command runs with the dotlock taken and its status comes back.
        _run(argv, d, str(box), "sh", "-c", f'test -e "{box}.lock" && echo "$FOO"; exit 3'),
        _run(argv, d, "-l", "flock", str(box), "true"),
        _run(argv, d, str(box), "/nonexistent/command"),
        _run(argv, d, "-l", "bogus", str(box), "true"),
        _run(argv, d, "-l", "fcntl, bogus2", str(box), "true"),
        _run(argv, d, str(box)),
        _run(argv, d, "-x", str(box), "true"),
        _run(argv, d, str(box), "sh", "-c", "kill -TERM $$"),
        _run(argv, d, str(d / "no" / "such" / "dir"), "true"),
    ]
    mode = box.stat().st_mode & 0o777
    results.append((mode, "", ""))
    # A dotlock left by someone else: both give up after deliver_lock_attempts.
    Path(f"{box}.lock").touch()
    results.append(_run(argv, d, str(box), "true"))
    os.unlink(f"{box}.lock")
    # A kernel lock held by another process.
    with open(box, "a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        results.append(_run(argv, d, "-l", "fcntl", str(box), "true"))
    with open(box, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        results.append(_run(argv, d, "-l", "flock", str(box), "true"))
    return results


def _side(argv: list[str], d: Path) -> list[tuple[int, str, str]]:
    d.mkdir()
    (d / "main.cf").write_text(MAIN_CF)
    return [(status, out, err.replace(str(d), "DIR")) for status, out, err in _cases(argv, d)]


def test_postlock_as_postfix(tmp_path: Path) -> None:
    # Side by side: each waits out deliver_lock_delay at every lock held against it.
    with ThreadPoolExecutor(2) as pool:
        theirs = pool.submit(_side, [POSTFIX_POSTLOCK], tmp_path / "postfix")
        ours = pool.submit(_side, OURS, tmp_path / "ours")
        sides = {"postfix": theirs.result(), "ours": ours.result()}
    assert sides["ours"] == sides["postfix"]
    assert sides["ours"][0] == (3, "bar\n", "")
    assert sides["ours"][9] == (0o600, "", "")


def test_each_waits_for_the_others_lock(tmp_path: Path) -> None:
    """Postfix's postlock holding the mailbox keeps ours out, and ours keeps Postfix's out."""
    (tmp_path / "main.cf").write_text(MAIN_CF)
    box = tmp_path / "box"
    for holder, waiter in (([POSTFIX_POSTLOCK], OURS), (OURS, [POSTFIX_POSTLOCK])):
        # The holder's command waits for its stdin to close: it holds the locks until then.
        held = subprocess.Popen(
            [*holder, "-c", str(tmp_path), str(box), "sh", "-c", "read _"], stdin=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(f"{box}.lock"):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            status, _out, err = _run(waiter, tmp_path, str(box), "true")
            assert status == 75
            assert f"open file {box}: unable to create lock file {box}.lock: File exists" in err
            # Without the dotlock, the fcntl lock alone keeps it out too.
            status, _out, err = _run(waiter, tmp_path, "-l", "fcntl", str(box), "true")
            assert status == 75
            assert "unable to lock for exclusive access: Resource temporarily unavailable" in err
        finally:
            assert held.stdin is not None
            held.stdin.close()
            held.wait(10)
        assert _run(waiter, tmp_path, str(box), "true")[0] == 0
