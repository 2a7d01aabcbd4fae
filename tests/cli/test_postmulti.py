"""postmulti(1) beside Postfix 3.7's: the same sequence of listings, life-cycle edits and
mistakes on each, compared step by step (what the terminal showed, the exit status, the
listing, and the primary's and instances' main.cf settings).

postmulti manages the default configuration directory alone (MAIL_CONFIG naming another is
fatal), so each run sees its own copy of /etc/postfix there, bind-mounted in a private
mount namespace (`unshare -m`, as root): the host's /etc/postfix is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import on_terminal

pytestmark = pytest.mark.postfix

POSTMULTI_OURS = [sys.executable, "-m", "oxipost.cli.postmulti"]
POSTMULTI_POSTFIX = ["/usr/sbin/postmulti"]
POSTFIX_OURS = [sys.executable, "-m", "oxipost.cli.postfix"]
POSTFIX_POSTFIX = ["/usr/sbin/postfix"]
POSTCONF = "/usr/sbin/postconf"
POSTFIX = "postfix"  # a step run by postfix(1), ours or Postfix's, instead of postmulti


def _steps(top: Path) -> list[list[str]]:
    a, b = top / "a", top / "b"

    def create(inst: Path, *opts: str) -> list[str]:
        return [
            *opts,
            "-e",
            "create",
            f"config_directory={inst}/etc",
            f"queue_directory={inst}/queue",
            f"data_directory={inst}/data",
        ]

    return [
        ["-l"],
        create(a, "-I", "postfix-a"),  # before init: the script refuses
        ["-e", "init"],
        ["-l"],
        create(a, "-I", "postfix-a", "-G", "mta"),
        create(b, "-I", "postfix-b", "-i", "a"),  # placed before a
        create(top / "c", "-I", "postfix-c", f"config_directory={a}/etc"),  # a's directory
        ["-l"],
        ["-l", "-g", "mta"],
        ["-l", "-i", "b"],
        ["-l", "-R", "-i", f"{a}/etc"],
        ["-l", "-i", "nosuch"],
        ["-e", "enable", "-i", "postfix-a"],
        ["-e", "assign", "-i", "a", "-G", "relay"],
        ["-e", "assign", "-i", "a", "-G", "relay"],  # no change
        ["-e", "assign", "-i", "b", "-I", "postfix-b2"],
        ["-l"],
        ["-x", "-i", "b2", "sh", "-c", "echo $MAIL_CONFIG $multi_instance_name >&2; exit 3"],
        ["-x", "sh", "-c", "echo $multi_instance_enable $queue_directory >&2"],
        ["-p", "-g", "relay", "status"],
        # postfix(1) of the primary hands the command to the wrapper postmulti.
        [POSTFIX, "status"],
        ["-e", "destroy", "-i", "a"],  # enabled
        ["-e", "disable", "-i", "a"],
        ["-e", "deport", "-i", "a"],
        ["-l"],
        ["-e", "import", f"config_directory={a}/etc"],
        ["-l"],
        ["-e", "destroy", "-i", "b2"],
        ["-e", "destroy", "-i", "-"],
        ["-l"],
        # Mistakes (each a fatal, which pauses Postfix's postmulti a second: a few).
        ["-l", "-p", "status"],
        ["-a", "-i", "a", "-l"],
        ["-e", "create", "-I", "c"],  # no postfix- prefix
        ["-e", "bogus"],
        ["-e", "enable"],
        ["-e", "create", "-I", "postfix-d", "-G", "bad group"],
        ["-e", "import", "-I", "postfix-d", "queue_directory=/tmp/x"],
    ]


def _play(
    top: Path, etc: Path, postmulti: list[str], postfix: list[str]
) -> list[tuple[str, int, str, str]]:
    shutil.copytree("/etc/postfix", etc, symlinks=True)
    (top / "primary" / "queue").mkdir(parents=True)  # postfix(1) starts in it
    (etc / "main.cf").write_text(
        "compatibility_level = 3.6\n"
        f"queue_directory = {top}/primary/queue\ndata_directory = {top}/primary/data\n"
    )
    out = top.parent / f"stdout-{top.name}"
    # stderr on a terminal (where postmulti writes its messages), stdout to a file.
    mount = 'mount --bind "$0" /etc/postfix && exec "$@" > "$1"'
    results = []
    for step in _steps(top):
        argv = ["unshare", "-m", "sh", "-c", mount.replace("$1", str(out)), str(etc)]
        command = [*postfix, *step[1:]] if step[:1] == [POSTFIX] else [*postmulti, *step]
        proc = on_terminal([*argv, *command])
        # The settings after each edit (Postfix's postconf reading both).
        settings = {
            str(cf): subprocess.run(
                [POSTCONF, "-c", str(cf), "-n"], capture_output=True, text=True
            ).stdout
            for cf in sorted([etc, *top.glob("*/etc")])
            if "-e" in step and (cf / "main.cf").exists()
        }
        shown = out.read_text() + proc.stderr
        results.append((" ".join(step), proc.returncode, shown, repr(settings)))
    return results


def test_postmulti_as_postfix(tmp_path: Path) -> None:
    # Side by side (Postfix's postmulti pauses a second at each fatal): paths of one
    # length, so that -l's columns compare.
    with ThreadPoolExecutor(2) as pool:
        real = pool.submit(
            _play, tmp_path / "p", tmp_path / "etc-p", POSTMULTI_POSTFIX, POSTFIX_POSTFIX
        )
        mine = pool.submit(_play, tmp_path / "o", tmp_path / "etc-o", POSTMULTI_OURS, POSTFIX_OURS)
        theirs, ours = real.result(), mine.result()
    for step_ours, step_theirs in zip(ours, theirs, strict=True):
        normal = repr(step_ours).replace(f"{tmp_path}/o", f"{tmp_path}/p")
        assert normal.replace("etc-o", "etc-p") == repr(step_theirs)
