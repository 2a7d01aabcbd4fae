"""verify(8)'s cache in address_verify_map = lmdb:FILE: what one verify process learned is
what the next one (after a restart) answers, in the file and the form Postfix's verify
keeps, so that Debian's postmap (postfix-lmdb) reads our cache and we read one Postfix's
tools wrote."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.log import Logger
from oxipost.verify.client import STAT_BOUNCE, STAT_OK, STAT_TODO
from oxipost.verify.service import IN_PROGRESS, Verifier

from tests.maps.test_postmap_differential import POSTMAP
from tests.smtpd.conftest import write_config
from tests.verify.test_service import DAY, Clock

pytestmark = pytest.mark.postfix


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _verifier(tmp_path: Path, clock: Clock, main_cf: str = "") -> Verifier:
    write_config(str(tmp_path), f"address_verify_map = lmdb:{tmp_path}/verify_cache\n" + main_cf)
    log = Logger("verify", maillog_file=str(tmp_path / "maillog"))
    return Verifier(load_config(str(tmp_path)), log, clock)


def _postmap(tmp_path: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Debian's postmap on the cache, with a configuration of its own."""
    conf = tmp_path / "postfix-conf"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("")
    cmd = [POSTMAP, "-c", str(conf), *args, f"lmdb:{tmp_path}/verify_cache"]
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def test_the_cache_outlives_a_restart(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    v.update("Good@X.test", STAT_OK, "250 2.1.5 Ok")
    v.update("bad@x.test", STAT_BOUNCE, "550 5.1.1 no such user")
    assert v.query("lost@x.test") == (STAT_TODO, IN_PROGRESS, True)
    v.close()
    clock.now += 60
    again = _verifier(tmp_path, clock)
    assert again.query("good@x.test") == (STAT_OK, "250 2.1.5 Ok", False)
    assert again.query("bad@x.test") == (STAT_BOUNCE, "550 5.1.1 no such user", False)
    # Its probe is still in flight: not sent again before PROBE_TTL.
    assert again.query("lost@x.test") == (STAT_TODO, IN_PROGRESS, False)
    clock.now += 1000
    assert again.query("lost@x.test") == (STAT_TODO, IN_PROGRESS, True)


def test_postfix_reads_our_cache(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    v.update("good@x.test", STAT_OK, "250 2.1.5 Ok: queued: yes")
    v.query("probe@[ipv6:1::2]")
    status, out, err = _postmap(tmp_path, "-s")
    assert (status, err) == (0, "")
    assert sorted(out.splitlines()) == [
        "good@x.test\t0:0:1000000:250 2.1.5 Ok: queued: yes",
        f"probe@[ipv6_1__2]\t3:1000000:0:{IN_PROGRESS}",
    ]
    found = _postmap(tmp_path, "-q", "good@x.test")
    assert found[:2] == (0, "0:0:1000000:250 2.1.5 Ok: queued: yes\n")


def test_we_read_a_cache_postfix_wrote(tmp_path: Path, clock: Clock) -> None:
    entries = (
        "ok@x.test 0:0:999000:250 2.1.5 Ok\n"
        "defer@x.test 1:0:999500:451 4.4.1 later\n"
        "junk@x.test 7:0:1:bad status\n"
        "zero@x.test 0:0:0:no time\n"
        "_LAST_CACHE_CLEANUP_COMPLETED_ 999999\n"
    )
    # -f: keys as verify(8) writes them, unfolded.
    assert _postmap(tmp_path, "-fi", stdin=entries) == (0, "", "")
    v = _verifier(tmp_path, clock)
    assert v.query("ok@x.test") == (STAT_OK, "250 2.1.5 Ok", False)
    assert v.query("defer@x.test")[:2] == (1, "451 4.4.1 later")
    assert v.query("junk@x.test") == (STAT_TODO, IN_PROGRESS, True)
    log = (tmp_path / "maillog").read_text()
    assert "warning: bad address verify table entry: 7:0:1:bad status" in log
    assert "warning: bad address verify table entry: 0:0:0:no time" in log
    assert "999999" not in log
    assert "_LAST_CACHE_CLEANUP_COMPLETED_" not in v.cache


def test_cleanup_drops_from_the_table(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    v.update("good@x.test", STAT_OK, "250 2.1.5 Ok")
    v.update("bad@x.test", STAT_BOUNCE, "550 no")
    clock.now += 3 * DAY + 1
    v.cleanup()
    assert sorted(v.cache) == ["good@x.test"]
    assert _postmap(tmp_path, "-q", "bad@x.test")[0] == 1
    assert _postmap(tmp_path, "-fq", "_LAST_CACHE_CLEANUP_COMPLETED_") == (0, "1259201\n", "")
    log = (tmp_path / "maillog").read_text()
    assert f"cache lmdb:{tmp_path}/verify_cache full cleanup: retained=1 dropped=1 entries" in log
    # What a restart reads back is what the cleanup left.
    assert sorted(_verifier(tmp_path, clock).cache) == ["good@x.test"]


def test_no_negative_cache_keeps_no_failure_in_the_table(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock, "address_verify_negative_cache = no\n")
    v.query("new@x.test")
    v.update("new@x.test", STAT_BOUNCE, "550 no")
    assert _postmap(tmp_path, "-s") == (0, "", "")
