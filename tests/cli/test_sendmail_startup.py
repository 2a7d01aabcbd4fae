"""sendmail is started once per message by scripts and web applications: importing it must
not bring in asyncio, smtpd or cleanup's header pass, which -bs alone needs (about half of
its start-up time, bench/RESULTS.md)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("asyncio", "uvloop", "oxipost.smtpd.server", "oxipost.cleanup.header")


def test_sendmail_imports_nothing_heavy() -> None:
    code = (
        "import sys, oxipost.cli.sendmail, oxipost.cli.postdrop, oxipost.cleanup.records\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
