"""anvil(8): its counts in virtual time, and the server over a real unix socket with two
clients standing for two smtpd processes (AnvilClient, as smtpd uses it)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from oxipost.anvil.client import AnvilClient
from oxipost.anvil.service import Anvil, AnvilServer
from oxipost.config import load_config

from tests.smtpd.conftest import ListLog, write_config


def test_rates_restart_a_time_unit_after_their_first_event() -> None:
    """Postfix's anvil does not keep a moving average: counts start again once
    anvil_rate_time_unit has passed since the first."""
    anvil = Anvil(60)
    smtpd: Counter[str] = Counter()
    assert anvil.connect(smtpd, "smtp:192.0.2.1", 1000) == (1, 1)
    assert [anvil.event("message", smtpd, "smtp:192.0.2.1", t) for t in (1000, 1030, 1060)] == [
        1,
        2,
        3,
    ]
    assert anvil.connect(smtpd, "smtp:192.0.2.1", 1060) == (2, 2)
    # 1061 > 1000 + 60: a new time unit; the connection count is not a rate.
    assert anvil.connect(smtpd, "smtp:192.0.2.1", 1061) == (3, 1)
    assert anvil.event("message", smtpd, "smtp:192.0.2.1", 1061) == 1
    assert anvil.event("recipient", smtpd, "smtp:192.0.2.1", 1061) == 1


def test_connections_end_with_their_process_and_idle_identities_expire() -> None:
    anvil = Anvil(60)
    one: Counter[str] = Counter()
    two: Counter[str] = Counter()
    anvil.connect(one, "smtp:192.0.2.1", 0)
    anvil.connect(one, "smtp:192.0.2.1", 0)
    assert anvil.connect(two, "smtp:192.0.2.1", 0) == (3, 3)
    # A process reports only its own connections' ends.
    anvil.disconnect(two, "smtp:192.0.2.1", 1)
    anvil.disconnect(two, "smtp:192.0.2.1", 1)
    assert anvil.report("smtp:192.0.2.1", 1).count == 2
    anvil.drop_local(one, 2)  # the process died
    assert anvil.report("smtp:192.0.2.1", 2).count == 0
    anvil.expire(61)
    assert "smtp:192.0.2.1" in anvil.remotes
    anvil.expire(62)
    assert anvil.remotes == {}


def test_statistics_lines_as_postfix() -> None:
    anvil = Anvil(60)
    smtpd: Counter[str] = Counter()
    when = int(time.mktime((2026, 12, 6, 9, 5, 7, 0, 0, -1)))
    for _ in range(3):
        anvil.connect(smtpd, "smtp:192.0.2.1", when)
    anvil.connect(smtpd, "smtp:192.0.2.2", when)
    anvil.event("recipient", smtpd, "smtp:192.0.2.2", when)
    anvil.event("auth", smtpd, "smtp:192.0.2.1", when)
    assert anvil.statistics() == [
        "statistics: max connection rate 3/60s for (smtp:192.0.2.1) at Dec  6 09:05:07",
        "statistics: max connection count 3 for (smtp:192.0.2.1) at Dec  6 09:05:07",
        "statistics: max recipient rate 1/60s for (smtp:192.0.2.2) at Dec  6 09:05:07",
        "statistics: max auth rate 1/60s for (smtp:192.0.2.1) at Dec  6 09:05:07",
        "statistics: max cache size 2 at Dec  6 09:05:07",
    ]
    # Reported peaks start again from nothing.
    assert anvil.statistics() == []


def _with_anvil(
    tmp_path: Path, main_cf: str, scenario: Callable[[Any, AnvilServer, list[str]], Awaitable[None]]
) -> list[str]:
    cfg = load_config(write_config(str(tmp_path), main_cf)).for_service("smtp")
    lines: list[str] = []

    async def run() -> None:
        server = AnvilServer(cfg, ListLog(lines))
        path = os.path.join(cfg.path("queue_directory"), "private", "anvil")
        os.makedirs(os.path.dirname(path))
        listening = await asyncio.start_unix_server(server.client, path)
        try:
            await scenario(cfg, server, lines)
        finally:
            listening.close()
            await server.close()

    asyncio.run(run())
    return lines


def test_two_smtpd_processes_share_one_count(tmp_path: Path) -> None:
    """Each smtpd process has its own connection to anvil; the count is per client, and a
    process whose connection closes takes its clients' connections with it."""

    async def scenario(cfg: Any, server: AnvilServer, lines: list[str]) -> None:
        one, two = AnvilClient(cfg, ListLog(lines)), AnvilClient(cfg, ListLog(lines))
        got = await asyncio.gather(*(c.connect("192.0.2.1") for c in (one, two, one)))
        assert sorted(got) == [(1, 1), (2, 2), (3, 3)]
        await two.disconnect("192.0.2.1")
        assert await two.rate("message", "192.0.2.1") == 1
        await one.close()
        await asyncio.sleep(0.1)
        assert server.anvil.report("smtp:192.0.2.1", server.now()).count == 0
        # A closed client asks nothing more; a new one is a new connection.
        assert await one.connect("192.0.2.1") is None
        three = AnvilClient(cfg, ListLog(lines))
        assert await three.connect("192.0.2.1") == (1, 4)
        assert await three.rate("newtls_status", "192.0.2.1") == 0
        assert await three.rate("newtls", "192.0.2.1") == 1
        assert await three.rate("bogus", "192.0.2.1") is None
        await two.close()
        await three.close()

    lines = _with_anvil(tmp_path, "", scenario)
    assert lines == ['warning: unrecognized request: "bogus", ignored']


def test_unreachable_anvil_is_no_answer_with_postfix_warnings(tmp_path: Path) -> None:
    """As Postfix's attr_clnt: two tries a second apart, each failed connection logged,
    then the request has no answer and smtpd goes on without the limit."""
    cfg = load_config(write_config(str(tmp_path), "")).for_service("smtp")
    lines: list[str] = []

    async def run() -> tuple[Any, float]:
        client = AnvilClient(cfg, ListLog(lines))
        start = time.monotonic()
        got = await client.connect("192.0.2.1")
        return got, time.monotonic() - start

    got, took = asyncio.run(run())
    assert got is None and took >= 1.0
    assert lines == [
        "warning: connect to private/anvil: No such file or directory",
        "warning: connect to private/anvil: No such file or directory",
        "warning: problem talking to server private/anvil: No such file or directory",
    ]
