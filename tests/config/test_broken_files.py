"""postconf with a main.cf or master.cf that is broken, missing or no file, beside real
Postfix 3.7 (Debian's package): the same output, warnings and exit status.

Postfix's postconf -d never opens main.cf, so a main.cf it would refuse does not stop it; it
still reads master.cf (for the per-service parameters), warning of what it warns of, and of
a master.cf it cannot open. -M, -F and -P read master.cf before main.cf and refuse to go on
without it; the parameter listings read main.cf first and only warn.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import postconf_as_postfix, run_ours

pytestmark = pytest.mark.postfix

MAIN_CF = {
    # The warning of line 2 comes before the fatal of line 3.
    "bad-line": "myhostname = a.example\nmyhostname = b.example\nbad line\n",
    "good": "myhostname = a.example\nmyhostname = b.example\n",
    "missing": None,
    # Postfix opens a directory and fails as it reads it.
    "directory": "",
}
MASTER_CF = {
    "good": "x unix - - n - - pipe argv=/bin/true\n",
    "brace": "x unix - - n - - pipe -o { a\n",
    "field-count": "x y\n",
    "missing": None,
    # Postfix reads nothing from a directory, and says nothing of it.
    "directory": "",
}
ARGS = [
    ("-d", "maximal_queue_lifetime"),
    ("-dx", "myorigin", "x_time_limit"),
    ("-n",),
    ("-M",),
    ("-F", "x/unix/command"),
]


def _put(path: Path, text: str | None, kind: str) -> None:
    if kind == "directory":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
        # Postfix reads a main.cf changed within the last second again, warning twice.
        past = time.time() - 3600
        os.utime(path, (past, past))


@pytest.mark.parametrize("args", ARGS, ids=[" ".join(a) for a in ARGS])
@pytest.mark.parametrize("master_cf", MASTER_CF)
@pytest.mark.parametrize("main_cf", MAIN_CF)
def test_postconf_on_broken_files_as_postfix(tmp_path, main_cf, master_cf, args):
    _put(tmp_path / "main.cf", MAIN_CF[main_cf], main_cf)
    _put(tmp_path / "master.cf", MASTER_CF[master_cf], master_cf)
    postconf_as_postfix(tmp_path, *args)


def test_defaults_ignore_a_broken_main_cf(tmp_path):
    """Not only the same as Postfix: -d answers, with nothing on stderr."""
    _put(tmp_path / "main.cf", MAIN_CF["bad-line"], "bad-line")
    _put(tmp_path / "master.cf", MASTER_CF["good"], "good")
    ours = run_ours("postconf", "-c", str(tmp_path), "-d", "maximal_queue_lifetime")
    assert (ours.returncode, ours.stdout, ours.stderr) == (0, "maximal_queue_lifetime = 5d\n", "")
