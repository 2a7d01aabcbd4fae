"""check_policy_service (SMTPD_POLICY_README): the request smtpd sends, the action it
judges, a server that is down, connections kept and reused, sessions not held up.

A small recording policy server on loopback is the scaffolding: real Postfix 3.7 and our
smtpd ask the same server, and what each sends and answers is compared."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import Played


@dataclass
class PolicyServer:
    """Answers every request with `action` (after `delay` seconds), recording the requests
    (each a list of "name=value" lines) and how many connections were made."""

    endpoint: str
    action: str = "DUNNO"
    delay: float = 0.0
    requests: list[list[str]] = field(default_factory=list)
    connections: int = 0


@contextlib.contextmanager
def policy_server(
    action: str = "DUNNO", path: str = "", delay: float = 0.0
) -> Iterator[PolicyServer]:
    if path:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        server = PolicyServer(f"unix:{path}", action, delay)
    else:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        server = PolicyServer(f"inet:127.0.0.1:{listener.getsockname()[1]}", action, delay)
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            while not stop.is_set():
                request = []
                while True:
                    line = f.readline()
                    if not line:
                        return
                    if line == b"\n":
                        break
                    request.append(line.decode().rstrip("\n"))
                server.requests.append(request)
                time.sleep(server.delay)
                # "=" first: the reply as given, without "action=".
                reply = server.action[1:] if server.action.startswith("=") else server.action
                f.write(f"{'' if server.action.startswith('=') else 'action='}{reply}\n\n".encode())
                f.flush()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            server.connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        listener.close()


SESSION = [
    "EHLO client.example",
    "MAIL FROM:<a@example.org> SIZE=100",
    "RCPT TO:<x@localhost>",
    "RCPT TO:<y@localhost>",
    "QUIT",
]


def _main_cf(server: str, extra: str = "") -> str:
    return (
        f"smtpd_recipient_restrictions = check_policy_service {server},"
        " permit_mynetworks, reject_unauth_destination\n" + extra
    )


def _normalized(request: list[str]) -> list[str]:
    """A request without what differs between any two runs: the ports, the queue ID, and
    the instance (checked for Postfix's shape, pid.seconds.microseconds.sequence, in hex)."""
    out = []
    for line in request:
        name, _, value = line.partition("=")
        if name in ("client_port", "server_port"):
            assert value.isdigit(), line
            value = "N"
        elif name == "queue_id" and value:
            assert re.fullmatch(r"[0-9A-F]{10,}", value), line
            value = "Q"
        elif name == "instance" and value:
            assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+", value), line
            value = "I." + value.rsplit(".", 1)[1]
        out.append(f"{name}={value}")
    return out


def _reject_and_warning_lines(lines: list[str]) -> list[str]:
    """smtpd's reject, hold and warning lines, without syslog's prefix (Postfix's) or the
    queue ID, and without the other programs' (postfix-script's warnings at start)."""
    return [
        re.sub(r"^[0-9A-F]{10,}: ", "QID: ", re.sub(r"^.*?postfix/smtpd\[\d+\]: ", "", ln))
        for ln in lines
        if ("warning:" in ln or "reject:" in ln or "hold:" in ln)
        and ("postfix/" not in ln or "postfix/smtpd[" in ln)
    ]


@pytest.mark.postfix
@pytest.mark.slow
def test_request_attributes_as_postfix(start_smtpd) -> None:
    """Two recipients in one transaction, then a second transaction to DATA and its end:
    the requests at RCPT, DATA and END-OF-MESSAGE are Postfix 3.7's, attribute for attribute
    and in order (recipient_count only at DATA and after, the instance the same within a
    transaction, its sequence counting transactions)."""
    dialogue = [
        *SESSION[:-1],
        "RSET",
        "MAIL FROM:<b@example.org>",
        "RCPT TO:<z@localhost>",
        "DATA",
        "Subject: policy\r\n\r\nbody\r\n.",
        "QUIT",
    ]
    with policy_server("DUNNO") as theirs:
        server = theirs.endpoint
        main_cf = _main_cf(server) + (
            f"smtpd_data_restrictions = check_policy_service {server}\n"
            f"smtpd_end_of_data_restrictions = check_policy_service {server}\n"
        )
        both = Played(start_smtpd, dialogue, main_cf)
    assert both.our_replies[1:-2] == both.their_replies[1:-2]
    assert len(theirs.requests) == 10
    postfix, ours = theirs.requests[:5], theirs.requests[5:]
    assert [_normalized(r) for r in ours] == [_normalized(r) for r in postfix]
    instances = [dict(ln.split("=", 1) for ln in r)["instance"] for r in ours]
    assert instances[0] == instances[1] != instances[2] == instances[4]


@pytest.mark.postfix
@pytest.mark.slow
def test_requests_at_each_stage_as_postfix(start_smtpd) -> None:
    """With smtpd_delay_reject = no the client, helo and sender lists ask at CONNECT, EHLO
    and MAIL: those requests too are Postfix 3.7's (no HELO name or sender yet where the
    session has none)."""
    with policy_server("DUNNO") as theirs:
        check = f"check_policy_service {theirs.endpoint}"
        main_cf = (
            "smtpd_delay_reject = no\n"
            f"smtpd_client_restrictions = {check}\n"
            f"smtpd_helo_restrictions = {check}\n"
            f"smtpd_sender_restrictions = {check}\n"
        )
        both = Played(start_smtpd, SESSION, main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    # (Not the probe that saw Postfix listening, from 127.0.0.1.)
    requests = [r for r in theirs.requests if "client_address=127.0.0.2" in r]
    assert len(requests) == 6
    postfix, ours = requests[:3], requests[3:]
    assert [_normalized(r) for r in ours] == [_normalized(r) for r in postfix]
    assert [r[1] for r in postfix] == [
        "protocol_state=CONNECT",
        "protocol_state=EHLO",
        "protocol_state=MAIL",
    ]


@pytest.mark.postfix
@pytest.mark.slow
@pytest.mark.parametrize(
    "action",
    [
        "REJECT go away",
        "REJECT",
        "450 4.7.0 try later",
        "OK",
        "DUNNO",
        "DISCARD",
        "HOLD",
        "521 5.7.1 go away",
        "bogus_restriction",
        "DEFER_IF_PERMIT",
        "DEFER_IF_PERMIT 4.7.9 not now",
        "DEFER_IF_REJECT",
    ],
)
def test_actions_judged_as_postfix(start_smtpd, action: str) -> None:
    """The server's action is judged as an access(5) result: the replies and the reject
    and warning lines are Postfix's. DEFER_IF_PERMIT defers the implicit permit at the end
    of the recipient lists into 450 with its text (or "Service unavailable"); DEFER_IF_REJECT
    defers nothing that is accepted."""
    _assert_played_as_postfix(start_smtpd, action)


@pytest.mark.postfix
@pytest.mark.slow
@pytest.mark.parametrize("reply", ["DUNNO\nfoo=bar", "\n", "=foo=bar"])
def test_malformed_reply_as_postfix(start_smtpd, reply: str) -> None:
    """A reply with an attribute besides action (ignored), an empty action (a warning, then
    the next restriction), a stray empty line after a reply (dropped, not taken for the
    next reply), a reply without action."""
    _assert_played_as_postfix(start_smtpd, reply)


def _assert_played_as_postfix(start_smtpd, reply: str) -> None:
    """SESSION against both servers, each asking a policy server that answers `reply`: the
    same replies (past the greeting's mail_name), reject and warning lines."""
    with policy_server(reply) as server:
        both = Played(start_smtpd, SESSION, _main_cf(server.endpoint))
    assert both.our_replies[1:] == both.their_replies[1:]
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)


@pytest.mark.postfix
@pytest.mark.slow
def test_server_too_slow_as_postfix(start_smtpd) -> None:
    """A server that does not answer within smtpd_policy_service_timeout: the request
    failed, as Postfix words it."""
    with policy_server("DUNNO", delay=3.0) as server:
        extra = "smtpd_policy_service_timeout = 1s\nsmtpd_policy_service_try_limit = 1\n"
        both = Played(start_smtpd, [*SESSION[:3], "QUIT"], _main_cf(server.endpoint, extra))
    assert both.our_replies[1:] == both.their_replies[1:]
    assert both.their_replies[3].startswith("451 4.3.5 ")
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)


@pytest.mark.postfix
@pytest.mark.slow
def test_server_down_default_action_as_postfix(start_smtpd) -> None:
    """Nothing listens: each request is tried smtpd_policy_service_try_limit times, each
    failure logged, then smtpd_policy_service_default_action (451 4.3.5 Server configuration
    problem) answers."""
    down = f"inet:127.0.0.1:{free_port()}"
    both = Played(start_smtpd, SESSION, _main_cf(down))
    assert both.our_replies[1:] == both.their_replies[1:]
    assert both.their_replies[3].startswith("451 4.3.5 ")
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)


@pytest.mark.postfix
@pytest.mark.slow
def test_settings_of_its_own_as_postfix(start_smtpd) -> None:
    """Postfix 3.0's "{ server, name=value, ... }": try_limit, default_action and
    policy_context for this server alone."""
    down = f"inet:127.0.0.1:{free_port()}"
    with policy_server("DUNNO") as server:
        main_cf = (
            "smtpd_recipient_restrictions = check_policy_service"
            f" {{ {down}, try_limit=1, default_action=DEFER }},"
            f" check_policy_service {{ {server.endpoint}, policy_context=ctx2 }}, permit\n"
        )
        both = Played(start_smtpd, [*SESSION[:3], "QUIT"], main_cf)
        # The second server is asked only when the first is up.
        main_cf = main_cf.replace(down, server.endpoint)
        both_up = Played(start_smtpd, [*SESSION[:3], "QUIT"], main_cf)
    assert both.our_replies[1:] == both.their_replies[1:]
    assert both.their_replies[3] == (
        "450 4.7.1 <x@localhost>: Recipient address rejected: Access denied"
    )
    assert _reject_and_warning_lines(both.ours) == _reject_and_warning_lines(both.theirs)
    assert both_up.our_replies[1:] == both_up.their_replies[1:]
    requests = [r for r in server.requests if "client_address=127.0.0.2" in r]
    contexts = [next(ln for ln in r if ln.startswith("policy_context=")) for r in requests]
    assert contexts == ["policy_context=", "policy_context=ctx2"] * 2


def test_connection_kept_and_reused(start_smtpd, tmp_path: Path) -> None:
    """One connection serves every request of the process (over unix:/path too), until
    smtpd_policy_service_request_limit requests."""
    path = str(tmp_path / "policy.sock")
    with policy_server("REJECT no", path=path) as server:
        srv = start_smtpd(_main_cf(server.endpoint))
        for _ in range(2):
            raw = Raw(srv.host, srv.port, source="127.0.0.2")
            replies = [raw.reply()] + [raw.cmd(c) for c in SESSION]
            raw.close()
            assert replies[3] == "554 5.7.1 <x@localhost>: Recipient address rejected: no"
        assert (server.connections, len(server.requests)) == (1, 4)
    with policy_server("DUNNO") as server:
        srv = start_smtpd(_main_cf(server.endpoint, "smtpd_policy_service_request_limit = 1\n"))
        raw = Raw(srv.host, srv.port, source="127.0.0.2")
        [raw.reply()] + [raw.cmd(c) for c in SESSION]
        assert (server.connections, len(server.requests)) == (2, 2)


@pytest.mark.parametrize("setting", ["max_idle", "max_ttl"])
def test_connection_closed_after_max_idle_or_ttl(start_smtpd, setting: str) -> None:
    """A kept connection idle for smtpd_policy_service_max_idle, or alive for _max_ttl, is
    not used again: the next request opens another."""
    with policy_server("DUNNO") as server:
        srv = start_smtpd(_main_cf(server.endpoint, f"smtpd_policy_service_{setting} = 1s\n"))
        raw = Raw(srv.host, srv.port, source="127.0.0.2")
        raw.reply()
        raw.cmd("EHLO client.example")
        raw.cmd("MAIL FROM:<a@example.org>")
        raw.cmd("RCPT TO:<x@localhost>")
        raw.cmd("RCPT TO:<y@localhost>")
        assert server.connections == 1
        time.sleep(1.2)
        raw.cmd("RCPT TO:<z@localhost>")
        assert (server.connections, len(server.requests)) == (2, 3)


def test_slow_policy_server_holds_only_its_session(start_smtpd) -> None:
    """A policy server that takes 2s to answer: another session is served meanwhile."""
    with policy_server("DUNNO", delay=2.0) as server:
        srv = start_smtpd(_main_cf(server.endpoint))
        slow = Raw(srv.host, srv.port, source="127.0.0.2")
        slow.reply()
        slow.cmd("EHLO client.example")
        slow.cmd("MAIL FROM:<a@example.org>")
        slow.send(b"RCPT TO:<x@localhost>\r\n")
        time.sleep(0.3)
        started = time.monotonic()
        other = Raw(srv.host, srv.port, source="127.0.0.3")
        assert other.reply().startswith("220 ")
        assert other.cmd("EHLO other.example").startswith("250-")
        assert time.monotonic() - started < 1.0
        assert slow.reply().startswith("250 ")
        assert len(server.requests) == 1


def test_policy_context_and_unreachable_unix_socket(start_smtpd, tmp_path: Path) -> None:
    """smtpd_policy_service_policy_context is sent as given; a unix socket that does not
    exist gives the default action as configured."""
    with policy_server("DUNNO") as server:
        srv = start_smtpd(_main_cf(server.endpoint, "smtpd_policy_service_policy_context = ctx1\n"))
        raw = Raw(srv.host, srv.port, source="127.0.0.2")
        [raw.reply()] + [raw.cmd(c) for c in SESSION[:3]]
        assert "policy_context=ctx1" in server.requests[0]
    missing = tmp_path / "none.sock"
    srv = start_smtpd(
        _main_cf(
            f"unix:{missing}",
            "smtpd_policy_service_default_action = 450 4.7.1 try again\n"
            "smtpd_policy_service_retry_delay = 1s\n",
        )
    )
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    replies = [raw.reply()] + [raw.cmd(c) for c in SESSION[:3]]
    assert replies[3] == "450 4.7.1 <x@localhost>: Recipient address rejected: try again"
    assert f"warning: connect to {missing}: No such file or directory" in srv.log
    assert not os.path.exists(missing)
