"""The DATA reader's bulk path (whole <CR><LF> lines at once) against its line-by-line path.

Both must give the same content, the same too-big and bare-<LF> verdicts and leave the same
pipelined bytes behind, whatever the input and however the network splits it: smuggling
variants, bare <CR> and <LF>, dots at line starts, a size limit crossed mid-stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oxipost.config import load_config
from oxipost.smtpd.server import Session, SmtpdServer

from tests.smtpd.conftest import RecordingQueue, write_config

PIECES = [b"a", b"xyz", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n.\r\n", b"\n.\n"]
PIECES += [b"\r\r\n"]


class ChunkConnection:
    """A listener.Connection stand-in that receives the stream in the given pieces."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.buf = bytearray()

    async def more(self) -> bool:
        if not self.chunks:
            return False
        self.buf += self.chunks.pop(0)
        return True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1025) if name == "peername" else None


def _read(server: SmtpdServer, chunks: list[bytes], bulk: bool) -> tuple[Any, ...]:
    session = Session(server, ChunkConnection(list(chunks)))  # type: ignore[arg-type]
    if not bulk:
        session._crlf_lines = lambda: (0, False, True)  # type: ignore[method-assign]
    content, too_big, bare_lf = asyncio.run(session.read_data())
    return bytes(content), too_big, bare_lf, bytes(session.buf)


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(points) if b > a]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: Any) -> Callable[[int, str], SmtpdServer]:
    """An smtpd server per (message_size_limit, smtpd_forbid_bare_newline)."""
    made: dict[tuple[int, str], SmtpdServer] = {}

    def get(limit: int, bare: str) -> SmtpdServer:
        if (limit, bare) not in made:
            d = str(tmp_path_factory.mktemp("data-reader"))
            write_config(d, f"message_size_limit = {limit}\nsmtpd_forbid_bare_newline = {bare}\n")
            made[limit, bare] = SmtpdServer(load_config(d).for_service("smtp"), RecordingQueue())
        return made[limit, bare]

    return get


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(st.sampled_from(PIECES), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
    limit=st.sampled_from([0, 12, 40]),
    bare=st.sampled_from(["normalize", "reject", "no"]),
)
def test_bulk_and_line_paths_agree(servers, body, cuts, limit, bare) -> None:
    server = servers(limit, bare)
    stream = b"".join(body) + b"\r\n.\r\nQUIT\r\n"
    chunks = _split(stream, cuts)
    assert _read(server, chunks, bulk=True) == _read(server, chunks, bulk=False)


def test_64k_message_in_network_sized_pieces(servers) -> None:
    body = b"".join(b"..line %05d\r\n" % i for i in range(5000)) + b"\r\n.\r\nRSET\r\n"
    chunks = _split(body, list(range(0, len(body), 1448)))
    bulk = _read(servers(0, "normalize"), chunks, bulk=True)
    assert bulk == _read(servers(0, "normalize"), chunks, bulk=False)
    assert bulk[0].startswith(b".line 00000\r\n.line 00001\r\n")
    assert bulk[3] == b"RSET\r\n"
