"""Fixtures: real milters on loopback: tests/milter/libmilter_app.py (Sendmail's libmilter
through Debian's python3-milter) and Debian's opendkim."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, wait_port
from tests.smtpd.conftest import _close_raw_clients, start_smtpd  # noqa: F401

HERE = Path(__file__).parent
SYSTEM_PYTHON = "/usr/bin/python3"


class AppMilter:
    """A running libmilter_app: its main.cf endpoint and what it was told."""

    def __init__(self, port: int, record: Path) -> None:
        self.endpoint = f"inet:127.0.0.1:{port}"
        self.record = record

    def events(self) -> list[list[Any]]:
        """The callbacks so far, without the port probes of a starting Postfix (a
        connection from 127.0.0.1 that says nothing) and the close callbacks."""
        if not self.record.exists():
            return []
        out = []
        for line in self.record.read_text().splitlines():
            event = json.loads(line)
            if event[0] == "close" or (event[0] == "connect" and event[2] == "127.0.0.1"):
                continue
            out.append(event)
        return out

    def told(self) -> list[list[Any]]:
        """events() with what differs by nature as placeholders: the queue ID ("i"
        macro) as QID, the program's name and version ("v": $mail_name $mail_version)
        as V; once every session the milter had has ended (libmilter records its last
        events in a thread of its own, after the client has gone)."""
        deadline = time.monotonic() + 20
        while True:
            text = self.record.read_text() if self.record.exists() else ""
            if text.count('["close"]') >= text.count('["connect"'):
                break
            assert time.monotonic() < deadline, "a milter session did not end"
            time.sleep(0.05)
        out = self.events()
        for event in out:
            if isinstance(event[-1], dict):
                for name, value in (("i", "QID"), ("v", "V")):
                    if name in event[-1]:
                        event[-1][name] = value
        return out

    def clear(self) -> None:
        self.record.unlink(missing_ok=True)


@pytest.fixture
def app_milter(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], AppMilter]]:
    """start(rules): a libmilter application answering as `rules` say (see
    libmilter_app.py), on a free 127.0.0.1 port."""
    assert os.path.exists(SYSTEM_PYTHON), "Debian's python3-milter is required"
    procs: list[subprocess.Popen[Any]] = []

    def start(rules: dict[str, Any]) -> AppMilter:
        n = len(procs)
        rules_file = tmp_path / f"rules{n}.json"
        rules_file.write_text(json.dumps(rules))
        record = tmp_path / f"record{n}.jsonl"
        port = free_port()
        proc = subprocess.Popen(
            [
                SYSTEM_PYTHON,
                str(HERE / "libmilter_app.py"),
                f"inet:{port}@127.0.0.1",
                str(rules_file),
                str(record),
            ],
            stdout=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_port(port, proc, "libmilter_app")
        app = AppMilter(port, record)
        app.clear()
        return app

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def opendkim(d: Path, mode: str, key: Path, port: int) -> Iterator[subprocess.Popen[Any]]:
    """Debian's opendkim in the foreground: signing (mode "s") for example.test with
    selector "test" and `key`, or verifying ("v") against the public key beside it."""
    conf = d / f"opendkim-{mode}.conf"
    conf.write_text(
        f"Mode {mode}\n"
        "Domain example.test\n"
        "Selector test\n"
        f"KeyFile {key}\n"
        f"Socket inet:{port}@127.0.0.1\n"
        f"PidFile {d}/opendkim-{mode}.pid\n"
        "Syslog no\n"
        "UserID root\n"
        "Background no\n"
        "Canonicalization relaxed/simple\n"
        "RequireSafeKeys no\n"
        # It signs mail from these clients only (127.0.0.1 by default; ours come from .2).
        "InternalHosts 127.0.0.0/8\n"
        f"TestPublicKeys {key.with_suffix('.keys')}\n"
    )
    with open(d / f"opendkim-{mode}.log", "wb") as err:
        proc = subprocess.Popen(["opendkim", "-f", "-x", str(conf)], stderr=err)
    try:
        wait_port(port, proc, "opendkim")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def dkim_key(d: Path) -> Path:
    """A new 2048-bit key pair (opendkim-genkey): the private key's path; beside it
    test.keys, the public key as TestPublicKeys wants it (name, then the TXT record)."""
    subprocess.run(
        ["opendkim-genkey", "-b", "2048", "-d", "example.test", "-s", "test", "-D", str(d)],
        check=True,
        capture_output=True,
    )
    txt = (d / "test.txt").read_text()
    record = "".join(part for part in txt.split('"')[1::2])
    (d / "test.keys").write_text(f"test._domainkey.example.test {record}\n")
    return d / "test.private"
