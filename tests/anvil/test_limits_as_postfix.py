"""smtpd_client_*_limit through anvil(8), on a running oxipost (master, two smtpd worker
processes, anvil) and on real Postfix 3.7 with the same main.cf: the same replies, the
same warnings and the same anvil statistics.

master.cf's maxproc 2 over two workers caps each at one session, so the second session is
served by the other worker than the first: its refusal proves the count is shared.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, run_ours, run_postfix
from tests.smtpd.conftest import Raw, write_config
from tests.smtpd.test_postfix_differential import running_postfix
from tests.smtpd.test_tls import _wrap

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

# 127.0.0.1 (the start-up probes) is exempt; 127.0.0.2 is counted.
LIMITS_CF = """\
smtpd_client_event_limit_exceptions = 127.0.0.1
smtpd_client_connection_count_limit = 1
smtpd_client_connection_rate_limit = 3
smtpd_client_message_rate_limit = 2
smtpd_client_recipient_rate_limit = 2
anvil_status_update_time = 1s
smtpd_banner = $myhostname ESMTP
maillog_file = {dir}/maillog
maillog_file_prefixes = /var, /dev/stdout, /tmp
"""


def _play(port: int, read: Callable[[], str]) -> list[str]:
    """The dialogue; each session that ends is over for anvil before the next starts (its
    "disconnect from" line is logged after smtpd told anvil): a client that reconnects at
    once may otherwise still be counted, on either side."""
    ended = 0

    def session() -> Raw:
        return Raw("127.0.0.1", port, source="127.0.0.2")

    def close(raw: Raw) -> None:
        nonlocal ended
        raw.close()
        ended += 1
        _await_disconnects(read, ended)

    replies = []
    first = session()
    replies.append(first.reply())
    second = session()  # over the count limit, on the other worker
    replies.append(second.reply())
    close(second)
    replies.append(first.cmd("HELO client.example"))
    for _ in range(3):
        for command in ("MAIL FROM:<a@example.org>", *["RCPT TO:<postmaster@localhost>"] * 2):
            replies.append(first.cmd(command))
        replies.append(first.cmd("RSET"))
    replies.append(first.cmd("QUIT"))
    close(first)
    for _ in range(3):  # the 3rd, 4th and 5th connection of the time unit
        later = session()
        replies.append(later.reply())
        close(later)
    return replies


_DAEMONS = re.compile(r"/(smtpd|anvil)\[\d+\]: ")
_WANTED = re.compile(r"(warning: |(dis)?connect from unknown\[127\.0\.0\.2\]|statistics: )")


def _outcome(read: Callable[[], str], port: int) -> tuple[list[str], dict[str, str]]:
    """The session lines (sorted: sessions in different processes log side by side) and
    the highest anvil peak of each kind, once every peak has been logged."""
    deadline = time.monotonic() + 20
    while True:
        text = read()
        if "max recipient rate 4/" in text and "max connection rate 5/" in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    time.sleep(1.5)  # the last of the peaks
    lines = [ln.split("]: ", 1)[1] for ln in read().splitlines() if _DAEMONS.search(ln)]
    lines = [ln.replace(f"127.0.0.1:{port}", "SERVICE") for ln in lines if _WANTED.match(ln)]
    sessions = sorted(ln for ln in lines if not ln.startswith("statistics: "))
    peaks: dict[str, str] = {}
    for ln in lines:
        if ln.startswith("statistics: "):
            kind, value = re.match(r"statistics: max (\D+) (\d+)", ln).groups()  # type: ignore[union-attr]
            if int(value) >= int(peaks.get(kind, "0").split()[0]):
                peaks[kind] = f"{value} {ln.partition(' for ')[2].split(' at ')[0]}".strip()
    return sessions, peaks


@contextlib.contextmanager
def running_oxipost(
    main_cf: str, anvil: bool = True
) -> Iterator[tuple[int, Callable[[], str], Path]]:
    """oxipost under master with this main.cf (after write_config's base): two smtpd
    workers of one session each on a free port, and anvil unless told otherwise; yields
    the port, a reader of the maillog and the configuration directory."""
    top = Path(tempfile.mkdtemp(prefix="oxipost-anvil-"))
    top.chmod(0o755)  # the services that run as mail_owner reach it
    port = free_port()
    conf = Path(write_config(str(top), main_cf.replace("{dir}", str(top))))
    with open(conf / "main.cf", "a") as f:
        f.write(f"data_directory = {top}/data\nsmtpd_worker_processes = 2\n")
    (conf / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - 2 smtpd\n"
        + ("anvil unix - - n - 1 anvil\n" if anvil else "")
    )
    log = top / "maillog"
    try:
        assert run_ours("postfix", "-c", str(conf), "start").returncode == 0
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    if s.recv(100).startswith(b"220"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "oxipost did not start listening"
            time.sleep(0.2)
        yield port, lambda: log.read_text() if log.exists() else "", conf
    finally:
        run_ours("postfix", "-c", str(conf), "stop")
        shutil.rmtree(top, ignore_errors=True)


def _ours() -> tuple[list[str], list[str], dict[str, str]]:
    with running_oxipost(LIMITS_CF) as (port, read, _conf):
        replies = _play(port, read)
        sessions, peaks = _outcome(read, port)
        # Two workers served the sessions (the refused one on the other).
        pids = re.findall(r"smtpd\[(\d+)\]: connect from unknown\[127.0.0.2\]", read())
        assert len(set(pids)) == 2, read()
        return replies, sessions, peaks


def test_connection_message_and_recipient_limits_as_postfix() -> None:
    with running_postfix(LIMITS_CF) as (port, d):
        replies = _play(port, (d / "maillog").read_text)
        sessions, peaks = _outcome((d / "maillog").read_text, port)
    our_replies, our_sessions, our_peaks = _ours()
    assert our_replies == replies
    assert our_sessions == sessions
    assert our_peaks == peaks
    assert "421 4.7.0 mx.example.test Error: too many connections from 127.0.0.2" in replies
    assert any("Connection concurrency limit exceeded: 2" in ln for ln in sessions)
    assert peaks["connection count"] == "2 (SERVICE:127.0.0.2)"


def _await_disconnects(read: Callable[[], str], n: int, source: str = "127.0.0.2") -> None:
    """Until n sessions from source are over for anvil too: smtpd logs "disconnect from"
    after telling it."""
    deadline = time.monotonic() + 20
    while read().count(f"disconnect from unknown[{source}]") < n:
        assert time.monotonic() < deadline, read()
        time.sleep(0.05)


def _three_sessions(
    port: int, read: Callable[[], str], dialogue: Callable[[Raw, list[str]], None]
) -> list[str]:
    """Three sessions from 127.0.0.2, one after the other, each adding its replies;
    "(closed)" where the server hung up."""
    replies: list[str] = []
    for n in range(1, 4):
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        try:
            dialogue(raw, replies)
        except (ConnectionError, ssl.SSLError):
            replies.append("(closed)")
        raw.close()
        _await_disconnects(read, n)
    return replies


def _starttls(raw: Raw, replies: list[str]) -> None:
    """The replies from STARTTLS on."""
    raw.reply()
    raw.cmd("EHLO client.example")
    replies.append(raw.cmd("STARTTLS"))
    if replies[-1].startswith("220"):
        _wrap(raw)
        replies.append(raw.cmd("EHLO client.example").splitlines()[-1])
    replies.append(raw.cmd("QUIT"))


def _smtps(raw: Raw, replies: list[str]) -> None:
    """Wrapper mode: what comes after the handshake. Postfix refuses a client before its
    handshake, ours after it (its listener has made it): "(closed)" either way."""
    _wrap(raw)
    replies.append(raw.reply())
    if replies[-1].startswith("220"):
        replies.append(raw.cmd("QUIT"))


def _tls_warnings(text: str) -> list[str]:
    return [
        re.sub(r"for service \S+$", "for service SERVICE", ln.split("]: ", 1)[1])
        for ln in text.splitlines()
        if re.search(r"/smtpd\[\d+\]: warning: ", ln)
    ]


def _tls_cf(cert: tuple[str, str], extra: str) -> str:
    return (
        "smtpd_client_event_limit_exceptions = 127.0.0.1\nsmtpd_banner = $myhostname ESMTP\n"
        f"smtpd_tls_cert_file = {cert[0]}\nsmtpd_tls_key_file = {cert[1]}\n"
        f"smtpd_client_new_tls_session_rate_limit = 1\n{extra}"
    )


_LOG_CF = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"


def _tls_as_postfix(
    start_smtpd: Callable[..., Any], main_cf: str, dialogue: Callable[[Raw, list[str]], None]
) -> tuple[list[str], list[str]]:
    """The dialogue's three sessions on Postfix and on our smtpd: the same replies and the
    same warnings, which are returned."""
    with running_postfix(main_cf + _LOG_CF) as (port, d):
        theirs = _three_sessions(port, (d / "maillog").read_text, dialogue)
        their_warnings = _tls_warnings((d / "maillog").read_text())
    srv = start_smtpd(main_cf)
    ours = _three_sessions(srv.port, lambda: "\n".join(srv.log), dialogue)
    assert ours == theirs
    assert _tls_warnings("\n".join(f"postfix/smtpd[1]: {ln}" for ln in srv.log)) == their_warnings
    return theirs, their_warnings


def test_new_tls_session_rate_limit_as_postfix(start_smtpd, cert: tuple[str, str]) -> None:
    """smtpd_client_new_tls_session_rate_limit: a handshake that makes a new session over
    the limit ends the session (421, over TLS); once over, STARTTLS itself is refused."""
    main_cf = _tls_cf(cert, "smtpd_tls_security_level = may\n")
    replies, warnings = _tls_as_postfix(start_smtpd, main_cf, _starttls)
    assert replies[-2].startswith("454 4.7.0 Error: too many new TLS sessions from")
    assert warnings[-1].startswith("warning: Refusing STARTTLS request from ")


def test_new_tls_session_rate_limit_in_wrapper_mode_as_postfix(
    start_smtpd, cert: tuple[str, str]
) -> None:
    """smtps: a new session over the limit gets the 421 in place of the greeting; once
    over, the client's TLS is refused ("Refusing TLS service request")."""
    main_cf = _tls_cf(cert, "smtpd_tls_security_level = encrypt\nsmtpd_tls_wrappermode = yes\n")
    replies, warnings = _tls_as_postfix(start_smtpd, main_cf, _smtps)
    assert replies[-1] == "(closed)" and replies[-2].startswith("421 4.7.0 ")
    assert warnings[-1].startswith("warning: Refusing TLS service request from ")


def _one_session(port: int, source: str, read: Callable[[], str]) -> list[str]:
    done = read().count(f"disconnect from unknown[{source}]") + 1
    raw = Raw("127.0.0.1", port, source=source)
    replies = [raw.reply(), raw.cmd("HELO client.example"), raw.cmd("QUIT")]
    raw.close()
    _await_disconnects(read, done, source)
    return replies


def _session_lines(text: str) -> list[str]:
    return [ln.split("]: ", 1)[1] for ln in text.splitlines() if re.search(r"/smtpd\[\d+\]: ", ln)]


def test_without_anvil_smtpd_goes_on_with_postfix_warnings() -> None:
    """No anvil in master.cf: each request is tried twice a second apart and given up with
    attr_clnt's warnings, and the session goes on without limits; a client in
    smtpd_client_event_limit_exceptions (127.0.0.3) never asks."""
    main_cf = LIMITS_CF.replace("= 127.0.0.1\n", "= 127.0.0.1, 127.0.0.3\n", 1)

    def play(port: int, read: Callable[[], str]) -> tuple[list[str], list[str]]:
        replies = _one_session(port, "127.0.0.3", read) + _one_session(port, "127.0.0.2", read)
        lines = _session_lines(read())
        return replies, [ln for ln in lines if re.search(r"^warning: |\[127\.0\.0\.[23]\]", ln)]

    with running_postfix(main_cf, without=("anvil",)) as (port, d):
        theirs = play(port, (d / "maillog").read_text)
    with running_oxipost(main_cf, anvil=False) as (port, read, _conf):
        ours = play(port, read)
    assert ours == theirs
    missing = "connect to private/anvil: No such file or directory"
    assert theirs[1].count(f"warning: {missing}") == 4
    assert theirs[1][:2] == [
        "connect from unknown[127.0.0.3]",
        "disconnect from unknown[127.0.0.3] helo=1 quit=1 commands=2",
    ]


def test_anvil_logs_its_peaks_when_postfix_reload_ends_it() -> None:
    """anvil_status_update_time is far off: the peaks are logged because the reload ends
    the old anvil, as Postfix's anvil logs them on exit."""
    main_cf = LIMITS_CF.replace("anvil_status_update_time = 1s\n", "")

    def play(port: int, read: Callable[[], str], reload: Callable[[], object]) -> list[str]:
        _one_session(port, "127.0.0.2", read)
        reload()
        deadline = time.monotonic() + 20
        while "max cache size" not in read():
            assert time.monotonic() < deadline, read()
            time.sleep(0.1)
        return [
            re.sub(r" at .*", "", ln.split("]: ", 1)[1]).replace(f"127.0.0.1:{port}", "SERVICE")
            for ln in read().splitlines()
            if "/anvil[" in ln
        ]

    with running_postfix(main_cf) as (port, d):
        reload = partial(run_postfix, "/usr/sbin/postfix", "-c", str(d), "reload")
        theirs = play(port, (d / "maillog").read_text, reload)
    with running_oxipost(main_cf) as (port, read, conf):
        ours = play(port, read, partial(run_ours, "postfix", "-c", str(conf), "reload"))
    assert ours == theirs
    assert theirs == [
        "statistics: max connection rate 1/60s for (SERVICE:127.0.0.2)",
        "statistics: max connection count 1 for (SERVICE:127.0.0.2)",
        "statistics: max cache size 1",
    ]


def test_mynetworks_never_asks_anvil_by_default() -> None:
    """smtpd_client_event_limit_exceptions defaults to $mynetworks (127.0.0.1/32 here):
    those clients cost no anvil request, which the missing anvil would show."""
    with running_oxipost(_LOG_CF, anvil=False) as (port, read, _conf):
        _one_session(port, "127.0.0.1", read)
        assert "private/anvil" not in read()
        _one_session(port, "127.0.0.2", read)
        assert "warning: problem talking to server private/anvil" in read()
