"""mail_date: Postfix's header date form (src/global/mail_date.c)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from oxipost import maildate


@pytest.fixture
def zone() -> Iterator[None]:
    saved = os.environ.get("TZ")
    yield
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.mark.parametrize(
    ("tz", "when", "text"),
    [
        # As real Postfix 3.7 dated its Received: header at this second.
        ("UTC", 1796538885, "Sun,  6 Dec 2026 06:34:45 +0000 (UTC)"),
        ("Asia/Kolkata", 1796538887, "Sun,  6 Dec 2026 12:04:47 +0530 (IST)"),
        # A negative offset with minutes: C's truncating division, "-0330".
        ("America/St_Johns", 1796538886, "Sun,  6 Dec 2026 03:04:46 -0330 (NST)"),
        ("America/St_Johns", 1780000000, "Thu, 28 May 2026 17:56:40 -0230 (NDT)"),
        ("Europe/Berlin", 1780000001, "Thu, 28 May 2026 22:26:41 +0200 (CEST)"),
    ],
)
def test_mail_date_is_postfix_form(zone: None, tz: str, when: int, text: str) -> None:
    os.environ["TZ"] = tz
    time.tzset()
    assert maildate.mail_date(when) == text
