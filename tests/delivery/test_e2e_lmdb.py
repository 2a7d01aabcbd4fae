"""End to end, an lmdb: table as alias_maps: the aliases Debian's postalias built into
<name>.lmdb (postfix-lmdb) are what local(8) expands under our master, and an alias that
our postmap -i adds while it runs is delivered without a reload, as Postfix's daemons see
an lmdb: table change under them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import run_ours
from tests.qmgr.test_service import wait_log

from .test_dovecot_reads import ROOT
from .test_e2e_aliases import _lines, _mailbox, _to_mailbox
from .test_e2e_delivery import Oxipost, oxi

pytestmark = [pytest.mark.slow, pytest.mark.postfix]
__all__ = ["oxi"]  # the fixture, used by name

POSTALIAS = "/usr/sbin/postalias"


def test_lmdb_aliases_built_by_postfix_are_delivered_by_local(oxi: Oxipost, system_user):
    assert ROOT, "the test suite runs as root (CI): local(8) runs apart only under root's master"
    if not shutil.which(POSTALIAS):
        pytest.fail(f"{POSTALIAS} is missing: `make sysdeps` installs Debian's postfix")
    user = system_user.pw_name
    (oxi.conf / "aliases").write_text(f"postmaster: {user}\nteam: b\nb: {user}\n")
    # Debian's postalias, with a configuration of its own (ours names parameters it lacks).
    theirs = oxi.dir / "postfix-conf"
    theirs.mkdir()
    (theirs / "main.cf").write_text("")
    built = subprocess.run(
        [POSTALIAS, "-c", str(theirs), f"lmdb:{oxi.conf}/aliases"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    mail = oxi.dir / "mail"
    mail.mkdir()
    mail.chmod(0o1777)
    cfg = oxi.start(
        "mydestination = localhost, $myhostname\n"
        f"alias_maps = lmdb:{oxi.conf}/aliases\nmail_spool_directory = {mail}/\n"
    )
    qid = oxi.swaks("sender@example.org", "team@localhost", "team", "to an lmdb alias")
    log = wait_log(cfg, rf"{qid}: removed", timeout=60)
    assert _lines(log, qid) == [_to_mailbox(user, "team")], log
    # Added while the MTA runs: local(8) reads it from the same file, no reload.
    added = run_ours(
        "postmap", "-c", str(oxi.conf), "-i", f"lmdb:{oxi.conf}/aliases", stdin=f"late {user}\n"
    )
    assert added.returncode == 0, added.stderr
    late = oxi.swaks("sender@example.org", "late@localhost", "late", "added later")
    log = wait_log(cfg, rf"{late}: removed", timeout=60)
    assert _lines(log, late) == [_to_mailbox(user, "late")], log
    assert sorted(m["Subject"] for m in _mailbox(oxi, user)) == ["late", "team"]
    assert "warning" not in log, log
