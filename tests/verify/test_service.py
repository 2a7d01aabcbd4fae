"""verify(8)'s cache rules (oxipost.verify.service.Verifier) in virtual time: what a query
answers and when it sends a probe, what an update keeps, what a cleanup drops."""

from __future__ import annotations

from pathlib import Path

import pytest
from oxipost.config import load_config
from oxipost.log import Logger
from oxipost.verify.client import STAT_BOUNCE, STAT_DEFER, STAT_OK, STAT_TODO
from oxipost.verify.service import IN_PROGRESS, Verifier

from tests.smtpd.conftest import write_config

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _verifier(tmp_path: Path, clock: Clock, main_cf: str = "") -> Verifier:
    write_config(str(tmp_path), main_cf)
    return Verifier(load_config(str(tmp_path)), Logger("verify"), clock)


def test_unknown_address_is_probed_once(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    assert v.query("A@example.com") == (STAT_TODO, IN_PROGRESS, True)
    # The probe in flight is not sent again, in any case of the address.
    assert v.query("a@example.com") == (STAT_TODO, IN_PROGRESS, False)
    clock.now += 1001
    assert v.query("a@example.com") == (STAT_TODO, IN_PROGRESS, True)


def test_outcomes_expire_and_refresh(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    v.query("a@x.test")
    v.update("a@x.test", STAT_OK, "250 2.1.5 Ok")
    assert v.query("a@x.test") == (STAT_OK, "250 2.1.5 Ok", False)
    # address_verify_positive_refresh_time (7d): still good, probed again.
    clock.now += 7 * DAY + 1
    assert v.query("a@x.test") == (STAT_OK, "250 2.1.5 Ok", True)
    # address_verify_positive_expire_time (31d): forgotten.
    clock.now += 24 * DAY
    assert v.query("a@x.test")[0] == STAT_TODO
    v.update("b@x.test", STAT_BOUNCE, "host said: 550 no")
    assert v.query("b@x.test") == (STAT_BOUNCE, "host said: 550 no", False)
    clock.now += 3 * 3600 + 1  # address_verify_negative_refresh_time
    assert v.query("b@x.test") == (STAT_BOUNCE, "host said: 550 no", True)
    clock.now += 3 * DAY  # address_verify_negative_expire_time
    assert v.query("b@x.test")[0] == STAT_TODO


def test_failure_keeps_a_known_good_address(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    v.update("a@x.test", STAT_OK, "250 2.1.5 Ok")
    v.update("a@x.test", STAT_DEFER, "host said: 450 later")
    assert v.query("a@x.test") == (STAT_OK, "250 2.1.5 Ok", False)


def test_no_negative_cache(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock, "address_verify_negative_cache = no\n")
    v.query("b@x.test")
    v.update("b@x.test", STAT_BOUNCE, "host said: 550 no")
    assert v.query("b@x.test") == (STAT_TODO, IN_PROGRESS, False)


def test_cleanup_drops_what_expired(tmp_path: Path, clock: Clock) -> None:
    v = _verifier(tmp_path, clock)
    v.update("good@x.test", STAT_OK, "250 2.1.5 Ok")
    v.update("bad@x.test", STAT_BOUNCE, "550 no")
    v.query("lost@x.test")  # a probe that never reports
    clock.now += 3 * DAY + 1
    v.cleanup()
    assert sorted(v.cache) == ["good@x.test"]
