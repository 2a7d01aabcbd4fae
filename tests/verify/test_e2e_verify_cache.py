"""address_verify_map = lmdb:FILE end to end: a site that moves from real Postfix 3.7 to
oxipost keeps what Postfix's verify(8) learned (our verify answers from Postfix's cache
at once, with no probe), what ours learns outlives its restart, and Postfix's postmap
reads it."""

from __future__ import annotations

import os
import pwd
import re
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.delivery.test_e2e_local import running_ours
from tests.maps.test_postmap_differential import POSTMAP
from tests.smtpd.test_postfix_differential import running_postfix

from .test_reject_unverified import SERVICES, _main_cf, _play, _probes_done, _round, sinks

pytestmark = [pytest.mark.slow, pytest.mark.postfix]
__all__ = ["sinks"]  # the fixture, used by name

NEW = ("", "e@sink.test")


def _probes(maillog: Path) -> list[str]:
    return re.findall(r"qmgr\[\d+\]: (\w+): from=<double-bounce@", maillog.read_text())


def test_the_verify_cache_survives_postfix_to_oxipost_and_a_restart(
    shared_tmp: Path, sinks: list[int]
) -> None:
    # In a directory of mail_owner's: Postfix's verify would write elsewhere ("request to
    # update table ... in non-postfix directory", data_redirect.c).
    data = shared_tmp / "data"
    data.mkdir()
    owner = pwd.getpwnam("postfix")
    os.chown(data, owner.pw_uid, owner.pw_gid)
    cache = data / "verify_cache"
    main_cf = _main_cf(sinks, "").replace(
        "address_verify_map =\n", f"address_verify_map = lmdb:{cache}\n"
    )
    assert f"lmdb:{cache}" in main_cf
    postfix_cf = main_cf + "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(postfix_cf) as (port, d):
        (first, second), _ = _play(port, d / "maillog")
    assert first != second
    # Postfix's answers, from its cache, at our first transaction.
    for run in ("ours1", "ours2"):
        top = shared_tmp / run
        top.mkdir()
        with running_ours(top, main_cf, SERVICES) as port:
            assert _round(port) == second, (run, (top / "maillog").read_text())
            if run == "ours1":
                # One address of our own: probed, and known after the restart.
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                    s.ehlo("client.test")
                    s.mail(NEW[0])
                    assert s.rcpt(NEW[1])[0] == 450
                _probes_done(top / "maillog", 1)
            else:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                    s.ehlo("client.test")
                    s.mail(NEW[0])
                    assert s.rcpt(NEW[1]) == (250, b"2.1.5 Ok")
        assert len(_probes(top / "maillog")) == (1 if run == "ours1" else 0), run
    conf = shared_tmp / "postfix-conf"
    conf.mkdir()
    (conf / "main.cf").write_text("")
    found = subprocess.run(
        [POSTMAP, "-c", str(conf), "-q", NEW[1], f"lmdb:{cache}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert re.fullmatch(r"0:0:\d+:250 2\.1\.5 Ok\n", found.stdout), found.stdout
