"""trivial-rewrite's tables under master, compared with real Postfix 3.7: mail whose
recipient cannot be resolved because transport_maps did not open is deferred by the
retry transport, "status=deferred (address resolver failure)", after trivial-rewrite's
lines (the open error, then for the recipient the table's, maps_find's and resolve's
warnings), and qmgr says nothing of its own."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_ours
from tests.delivery.test_e2e_delivery import Oxipost
from tests.smtpd.test_postfix_differential import running_postfix

RCPT = "u@example.net"
DEFERRED = re.compile(
    rf"postfix/error\[\d+\]: \w+: to=<{RCPT}>, relay=none, .*dsn=4\.3\.0,"
    r" status=deferred \(address resolver failure\)"
)


def _wait(read: Callable[[], str]) -> str:
    deadline = time.monotonic() + 60
    while not DEFERRED.search(text := read()):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    return text


def _texts(log: str, d: Path) -> list[str]:
    """Each line without its syslog prefix, the directory as DIR."""
    return [ln.split("]: ", 1)[-1].replace(str(d), "DIR") for ln in log.splitlines()]


def _resolver_lines(texts: list[str]) -> list[str]:
    """The recipient's lines: the table's, maps_find's and resolve's warnings."""
    at = texts.index(f'warning: hash:DIR/missing lookup error for "{RCPT}"')
    return texts[at - 1 : at + 2]


def _theirs() -> list[str]:
    main_cf = (
        "transport_maps = hash:{dir}/missing\n"
        "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    )
    with running_postfix(main_cf) as (_port, d):
        argv = ["/usr/sbin/sendmail", "-C", str(d), "-f", "a@example.org", RCPT]
        sent = subprocess.run(argv, input=b"Subject: x\n\nbody\n", timeout=60)
        assert sent.returncode == 0
        return _texts(_wait(lambda: (d / "maillog").read_text()), d)


@pytest.mark.slow
def test_mail_to_an_unresolvable_recipient_is_deferred_as_postfix() -> None:
    theirs = _theirs()
    oxi = Oxipost()
    try:
        oxi.start(f"transport_maps = hash:{oxi.dir}/missing\n")
        argv = ["-C", str(oxi.conf), "-f", "a@example.org", RCPT]
        sent = run_ours("sendmail", *argv, stdin="Subject: x\n\nbody\n")
        assert sent.returncode == 0, sent.stderr
        ours = _texts(_wait(oxi.log), oxi.dir)
    finally:
        oxi.close()
    error = "error: open database DIR/missing.db: No such file or directory"
    assert error in theirs
    assert error in ours
    expected = _resolver_lines(theirs)
    assert expected[2] == "warning: transport_maps lookup failure", theirs
    assert _resolver_lines(ours) == expected
    assert not [t for t in ours if "address resolver failure for" in t], ours
