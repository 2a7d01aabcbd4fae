"""mail_date: the RFC 5322 date Postfix writes in the headers it adds (Received:, Date:,
its notices' Arrival-Date:), in Postfix's form: "Sun,  6 Dec 2026 06:34:45 +0000 (UTC)",
the day of the month space-padded, the offset from UTC and the zone's name."""

from __future__ import annotations

import time

_last: tuple[int, str] = (-1, "")


def mail_date(when: float | None = None) -> str:
    """Postfix's mail_date() of `when` (now by default) in local time (the zone as the
    process started: one formatting per second is kept)."""
    global _last
    now = int(time.time() if when is None else when)
    if _last[0] == now:
        return _last[1]  # a busy smtpd dates many messages each second
    lt = time.localtime(now)
    minutes = lt.tm_gmtoff // 60
    # C's division truncates: -3:30 is "-0330", not "-0430".
    hours = int(minutes / 60)
    text = (
        time.strftime("%a, %e %b %Y %H:%M:%S ", lt)
        + f"{hours:+03d}{abs(minutes) % 60:02d}"
        + time.strftime(" (%Z)", lt)
    )
    _last = (now, text)
    return text
