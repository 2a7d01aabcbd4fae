"""postkick(1): its diagnostics beside Postfix 3.7's postkick, and a kick that reaches our
qmgr in Postfix's trigger protocol (A: deliver the deferred queue now)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, run_ours, run_postfix, smtp_sink
from tests.delivery.test_e2e_delivery import Oxipost
from tests.qmgr.test_service import wait_log

POSTFIX_POSTKICK = "/usr/sbin/postkick"


def _fifo_reader(path: Path, got: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(path, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def _kicks(tool: str, conf: Path, spool: Path) -> list[tuple[int, str, list[bytes]]]:
    def kick(*args: str) -> tuple[int, str]:
        if tool == "postfix":
            done = run_postfix(POSTFIX_POSTKICK, "-c", str(conf), *args)
        else:
            done = run_ours("postkick", "-c", str(conf), *args)
        return done.returncode, done.stderr

    results = []
    got: list[bytes] = []
    fifo = spool / "public" / "fifo"
    os.mkfifo(fifo)
    reader = _fifo_reader(fifo, got)
    results.append((*kick("public", "fifo", "WI"), got))
    reader.join(10)
    os.unlink(fifo)
    # A socket nothing listens on any more, a plain file, nothing, a bad class.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(spool / "public" / "dead"))
    (spool / "private" / "file").touch()
    for args in (
        ("public", "dead", "W"),
        ("private", "file", "W"),
        ("public", "none", "W"),
        ("bogus", "x", "W"),
        ("public", "../private/file", "W"),
        ("public", "x"),
        ("-x", "public", "x", "W"),
    ):
        results.append((*kick(*args), []))
    return results


@pytest.mark.postfix
def test_postkick_as_postfix(tmp_path: Path) -> None:
    sides = {}
    for tool in ("postfix", "ours"):
        conf = tmp_path / tool
        spool = conf / "spool"
        for sub in ("public", "private"):
            (spool / sub).mkdir(parents=True)
        (conf / "main.cf").write_text(f"queue_directory = {spool}\n")
        sides[tool] = _kicks(tool, conf, spool)
    assert sides["ours"] == sides["postfix"]
    assert sides["ours"][0] == (0, "", [b"WI"])


@pytest.fixture
def oxi() -> Iterator[Oxipost]:
    with contextlib.closing(Oxipost()) as run:
        yield run


def test_postkick_a_flushes_the_deferred_queue(oxi: Oxipost) -> None:
    """A message deferred for a next hop that refused it waits minimal_backoff_time (here an
    hour); `postkick public qmgr A` has it tried again at once, as Postfix's qmgr does."""
    relay = free_port()
    cfg = oxi.start(f"relayhost = [127.0.0.1]:{relay}\nminimal_backoff_time = 3600s\n")
    qid = oxi.swaks("alice@example.com", "far@example.net", "kicked", "later")
    wait_log(cfg, rf"{qid}: to=<far@example\.net>, .*status=deferred", timeout=60)
    with smtp_sink(relay):
        kicked = run_ours("postkick", "-c", str(oxi.conf), "public", "qmgr", "A")
        assert (kicked.returncode, kicked.stderr) == (0, "")
        wait_log(cfg, rf"{qid}: to=<far@example\.net>, .*status=sent", timeout=60)
    # A wakeup alone (W, I) leaves a deferred message to its time; it is answered all the same.
    assert run_ours("postkick", "-c", str(oxi.conf), "public", "qmgr", "WI").returncode == 0
    oxi.stop()
