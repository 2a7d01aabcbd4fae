"""tcp_table(5) and socketmap_table(5) clients beside real Postfix 3.7's.

The peers are small servers written here, on loopback, that answer each key as the key
says (found, not found, TEMP, garbage, a close...): they are not what is tested. The same
queries go through Debian's `postmap -q` and ours, which must give the same output, exit
status and warnings, and ask the peer the same requests over as many connections.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from oxipost.maps import TableError, open_table

from tests.conftest import free_port

pytestmark = pytest.mark.postfix

POSTMAP = "/usr/sbin/postmap"


class Peer:
    """A threaded server on one listening socket: `answer(request)` gives the bytes to
    send back, or None to close the connection unanswered. It records every request and
    counts connections."""

    def __init__(self, listener: socket.socket, framing: str, answer: Callable) -> None:
        self.listener = listener
        self.framing = framing
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _request(self, f) -> bytes | None:  # type: ignore[no-untyped-def]
        if self.framing == "line":
            line = f.readline()
            return line if line.endswith(b"\n") else None
        digits = b""
        while (ch := f.read(1)) not in (b":", b""):
            digits += ch
        if not ch:
            return None
        data = f.read(int(digits))
        return data if f.read(1) == b"," else None

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f, contextlib.suppress(ConnectionError):
            # A client that gives up on a reply it has not read all of resets.
            while (request := self._request(f)) is not None:
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    return
                conn.sendall(reply)

    def reset(self) -> None:
        self.requests.clear()
        self.connections = 0


@contextlib.contextmanager
def peer(framing: str, answer: Callable, path: str | None = None) -> Iterator[tuple[Peer, str]]:
    """A Peer on a free 127.0.0.1 port (or the unix socket `path`) and its endpoint."""
    if path is None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        endpoint = path
    listener.listen(16)
    try:
        yield Peer(listener, framing, answer), endpoint
    finally:
        listener.close()


# tcp_table(5): what the peer answers each key with (the key as it arrives, %XX-encoded).
TCP_ANSWERS = {
    b"found": b"200 a%20value%25with%2Cescapes\n",
    b"lower%c3%a9": b"200 mixed%c3%A9case\n",
    b"caf%C3%A9": b"200 utf8%20key\n",
    b"notfound": b"500 no such key\n",
    b"temp": b"400 try again later\n",
    b"garbage": b"garbage\x01reply\n",
    b"status": b"300 what\n",
    b"badhex": b"200 half%4\n",
    b"long": b"200 " + b"x" * 5000 + b"\n",
    b"exact": b"200 " + b"y" * 4091 + b"\n",
    b"latin1": b"200 caf%E9\n",
    b"nul": b"200 before%00after\n",
    b"tab": b"200\tafter%20tab\n",
}


def tcp_answer(request: bytes) -> bytes | None:
    key = request.removeprefix(b"get ").removesuffix(b"\n")
    if key == b"close":
        return None
    return TCP_ANSWERS.get(key, b"500 unknown\n")


@pytest.fixture(scope="module")
def tcp_peer() -> Iterator[tuple[Peer, str]]:
    with peer("line", tcp_answer) as p:
        yield p


@pytest.fixture(scope="module")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("netmaps")
    (d / "main.cf").write_text("")
    return d


def postmaps(confdir: Path, *args: str, stdin: str | None = None) -> Iterator[tuple]:
    """Our postmap then Postfix's, each run as a real process: (status, stdout, stderr),
    as bytes (a reply may hold latin-1)."""
    for argv, executable in (
        ([sys.executable, "-m", "oxipost.cli.postmap"], None),
        (["postmap"], POSTMAP),
    ):
        p = subprocess.run(
            [*argv, "-c", str(confdir), *args],
            executable=executable,
            input=None if stdin is None else stdin.encode(),
            capture_output=True,
            timeout=120,
        )
        yield p.returncode, p.stdout, p.stderr


def both_postmaps(confdir: Path, peer: Peer, *args: str, stdin: str | None = None):
    """(ours, theirs): each postmap's (status, stdout, stderr, the requests the peer had,
    the connections it took)."""
    out = []
    runs = postmaps(confdir, *args, stdin=stdin)
    for _ in range(2):
        peer.reset()
        result = next(runs)
        out.append((*result, list(peer.requests), peer.connections))
    return out[0], out[1]


@pytest.mark.parametrize(
    "key",
    [
        "found",
        "lower\u00e9",
        "caf\u00e9",
        "notfound",
        "temp",
        "garbage",
        "status",
        "badhex",
        "exact",
        "latin1",
        "nul",
        "tab",
        "with space%",
    ],
)
def test_tcp_table_answers_as_postfix(confdir, tcp_peer, key: str) -> None:
    """One key: %XX encoding both ways, 200/500/400, a malformed reply, a bad status code,
    a reply just within 4096 bytes (one over: below), a value that is not UTF-8."""
    p, endpoint = tcp_peer
    ours, theirs = both_postmaps(confdir, p, "-q", key, f"tcp:{endpoint}")
    assert ours == theirs


def test_tcp_table_keeps_its_connection_as_postfix(confdir, tcp_peer) -> None:
    """postmap -q - asks every key over one connection; a 400 reply ends the run."""
    p, endpoint = tcp_peer
    keys = "found\nnotfound\nexact\nfound\ntemp\nfound\n"
    ours, theirs = both_postmaps(confdir, p, "-q", "-", f"tcp:{endpoint}", stdin=keys)
    assert ours == theirs
    assert theirs[4] == 1


@pytest.mark.slow
def test_tcp_table_tries_ten_times_as_postfix(confdir, tcp_peer) -> None:
    """A peer that closes without a reply, a reply over 4096 bytes, and a peer that is
    not there: ten tries a second apart, each with its warning, then the query error."""
    p, endpoint = tcp_peer
    # Nine seconds of pauses in each run: the three cases run side by side, the long reply
    # on a peer of its own (the refused case never reaches one).
    with peer("line", tcp_answer) as (long_peer, long_endpoint), ThreadPoolExecutor(2) as pool:
        long = pool.submit(both_postmaps, confdir, long_peer, "-q", "long", f"tcp:{long_endpoint}")
        refused = pool.submit(list, postmaps(confdir, "-q", "k", f"tcp:127.0.0.1:{free_port()}"))
        ours, theirs = both_postmaps(confdir, p, "-q", "close", f"tcp:{endpoint}")
        assert ours == theirs
        assert theirs[4] == 10
        ours, theirs = long.result()
        assert ours == theirs
        ours, theirs = refused.result()
    assert ours == theirs
    assert theirs[2].count(b"Connection refused") == 11  # ten warnings, then the fatal


# socketmap_table(5): what the peer answers each request with ("mapname key").
SOCKMAP_ANSWERS = {
    b"found": b"OK a value",
    b"empty": b"OK ",
    b"bare": b"OK",
    b"notfound": b"NOTFOUND ",
    b"temp": b"TEMP  database down",
    b"timeout": b"TIMEOUT",
    b"perm": b"PERM bad\x01\xc3\xa9 key",
    b"what": b"WHAT is this",
    b"latin1": b"OK caf\xe9",
    b"caf\xc3\xa9": b"OK utf8 key",
    b"nul": b"OK before\0after",
}


def sockmap_answer(request: bytes) -> bytes | None:
    name, _, key = request.partition(b" ")
    if key == b"close":
        return None
    if key == b"garbage":
        return b"12x:"
    if key == b"huge":
        return b"100001:"
    if key == b"big":
        data = b"OK " + b"z" * 99997
        return b"%d:%s," % (len(data), data)
    if name != b"themap":
        return b"9:NOTFOUND ,"
    data = SOCKMAP_ANSWERS.get(key, b"NOTFOUND ")
    return b"%d:%s," % (len(data), data)


@pytest.fixture(scope="module")
def sockmap_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Peer]]:
    path = str(tmp_path_factory.mktemp("sock") / "socketmap")
    with peer("netstring", sockmap_answer) as inet, peer("netstring", sockmap_answer, path) as unix:
        yield {f"inet:{inet[1]}": inet[0], f"unix:{unix[1]}": unix[0]}


@pytest.mark.parametrize(
    "key",
    [
        "found",
        "empty",
        "bare",
        "notfound",
        "temp",
        "timeout",
        "perm",
        "what",
        "latin1",
        "caf\u00e9",
        "nul",
        "garbage",
        "huge",
        "big",
        "close",
        "Mixed Case",
    ],
)
@pytest.mark.parametrize("server", ["inet", "unix"])
def test_socketmap_answers_as_postfix(confdir, sockmap_peers, server: str, key: str) -> None:
    """OK, NOTFOUND, TEMP/TIMEOUT/PERM/other with and without a reason, netstrings that
    are not, a reply over 100000 bytes and one at it, and a peer that closes (asked once
    more on a new connection), over TCP and a unix socket."""
    endpoint, p = next((e, p) for e, p in sockmap_peers.items() if e.startswith(server))
    ours, theirs = both_postmaps(confdir, p, "-q", key, f"socketmap:{endpoint}:themap")
    assert ours == theirs


def test_socketmap_keeps_its_connection_as_postfix(confdir, sockmap_peers) -> None:
    """postmap -q - with two socketmaps of one server: one connection for both; TEMP
    leaves it open."""
    endpoint, p = next(iter(sockmap_peers.items()))
    keys = "found\nnotfound\nfound\n"
    tables = (f"socketmap:{endpoint}:other", f"socketmap:{endpoint}:themap")
    ours, theirs = both_postmaps(confdir, p, "-q", "-", *tables, stdin=keys)
    assert ours == theirs
    assert theirs[4] == 1
    ours, theirs = both_postmaps(confdir, p, "-q", "-", tables[1], stdin="found\ntemp\nfound\n")
    assert ours == theirs


@pytest.mark.parametrize(
    "spec",
    [
        "socketmap:nocolon",
        "socketmap:inet:themap",
        "socketmap:inet:127.0.0.1:themap",
        "socketmap:bogus:x:themap",
        "tcp:127.0.0.1",
        "socketmap:unix:/nonexistent/socket:themap",
    ],
)
def test_bad_endpoints_as_postfix(confdir, spec: str) -> None:
    """Names Postfix cannot use: its fatal or warning words, its exit status."""
    ours, theirs = postmaps(confdir, "-q", "k", spec)
    assert ours == theirs


def test_socketmap_refused_connection_as_postfix(confdir) -> None:
    spec = f"socketmap:inet:127.0.0.1:{free_port()}:themap"
    ours, theirs = postmaps(confdir, "-q", "k", spec)
    assert ours == theirs
    assert b"Connection refused" in theirs[2]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("tcp:127.0.0.1:1", "tcp:127.0.0.1:1 map is not allowed for security sensitive data"),
        (
            "socketmap:unix:/x:m",
            "socketmap:unix:/x:m map is not allowed for security-sensitive data",
        ),
    ],
)
def test_paranoid_users_refuse_unauthenticated_tables(spec: str, reason: str) -> None:
    """DICT_FLAG_NO_UNAUTH: the words of Postfix 3.7's dict_tcp_open and dict_sockmap_open
    (libpostfix-util.so holds both spellings), also inside a unionmap:; no connection."""
    for table in (spec, f"unionmap:{{static:x, {spec}}}"):
        with pytest.raises(TableError) as e:
            open_table(table, paranoid=True)
        assert str(e.value) == reason
    assert open_table(spec) is not None


def _found_or_silent(request: bytes) -> bytes | None:
    if request.endswith(b" silent"):
        time.sleep(1)  # past the client's time limit, then closed
        return None
    return b"4:OK x,"


def test_time_limit_and_idle_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Postfix's limits, shortened here (100 s to wait, 10 s idle): a socketmap server
    that never answers gives "time limit exceeded" and %m ETIMEDOUT, as Debian's postmap
    says after 100 s; a connection idle past the limit is replaced, as auto_clnt's."""
    from oxipost.maps import net, set_warning_sink

    monkeypatch.setattr(net, "TIMEOUT", 0.3)
    monkeypatch.setattr(net, "SOCKMAP_MAX_IDLE", 0.5)
    warnings: list[str] = []
    previous = set_warning_sink(warnings.append)
    try:
        with peer("netstring", _found_or_silent) as (p, endpoint):
            table = open_table(f"socketmap:inet:{endpoint}:idle")
            assert table.lookup("found") == "x"
            assert table.lookup("found") == "x"
            assert p.connections == 1
            time.sleep(0.6)
            assert table.lookup("found") == "x"
            assert p.connections == 2
            with pytest.raises(TableError) as e:
                table.lookup("silent")
    finally:
        set_warning_sink(previous)
    spec = f"socketmap:inet:{endpoint}:idle"
    assert str(e.value) == f"table {spec}: query error: Connection timed out"
    assert warnings == [f"table {spec} lookup error: time limit exceeded"]
