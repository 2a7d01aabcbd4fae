"""smtp(8)/lmtp(8) client against Debian's real smtp-sink, with its fault flags.

catalogue 11 (silent after "."), 12 (421/4xx/disconnect in DATA), 47 (loops back needs
DNS: see the report), plus reuse, LMTP over TCP and a unix socket, and TLS policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oxipost.delivery import deliver, smtp
from oxipost.envelope import Outcome

from tests.conftest import shared_dir

from .conftest import make_config, request, run

SINK = "/usr/sbin/smtp-sink"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def sink(tmp_path: Path, *flags: str, listen: str | None = None) -> Iterator[tuple[str, Path]]:
    if not os.path.exists(SINK):
        pytest.fail("smtp-sink is missing: `make sysdeps` installs Debian's postfix")
    # smtp-sink drops to nobody, who cannot enter pytest's 0700 tmp_path.
    with shared_dir("oxipost-sink-", 0o777) as dump:
        if listen is None:
            listen = f"127.0.0.1:{free_port()}"
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        proc = subprocess.Popen(
            [SINK, *user, "-d", f"{dump}/%H%M%S.", *flags, listen, "10"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    if listen.startswith("unix:"):
                        with socket.socket(socket.AF_UNIX) as c:
                            c.connect(listen[5:])
                    else:
                        host, port = listen.rsplit(":", 1)
                        socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        err = proc.stderr.read().decode() if proc.stderr else ""
                        raise RuntimeError(err) from None
                    time.sleep(0.05)
            yield listen, dump
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stderr is not None:
                proc.stderr.close()


def dumps(dump: Path) -> list[str]:
    time.sleep(0.2)
    return [p.read_text() for p in sorted(dump.iterdir())]


def relay_host(listen: str) -> str:
    host, port = listen.rsplit(":", 1)
    return f"[{host}]:{port}"


def test_sent_with_esmtp_parameters(tmp_path):
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path) as (listen, dump):
        out = run(request(cfg, "smtp", relay_host(listen), ["x@example.com", "y@example.com"]))
        assert [o.status for o in out] == ["2.0.0", "2.0.0"], out
        assert out[0].text == "250 2.0.0 Ok"
        assert out[0].relay == f"127.0.0.1[127.0.0.1]:{listen.rsplit(':', 1)[1]}"
        (msg,) = dumps(dump)
    assert "X-Mail-Args: <a@example.org>" in msg
    assert "X-Rcpt-Args: <x@example.com>" in msg and "X-Rcpt-Args: <y@example.com>" in msg
    assert "Subject: test" in msg and "hello" in msg


def test_rcpt_soft_and_hard_reject(tmp_path):
    # catalogue 12: 4xx keeps the message for a retry; 5xx bounces with the remote text.
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-r", "RCPT") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o == Outcome(
        "4.3.0",
        "host 127.0.0.1[127.0.0.1] said: 450 4.3.0 Error: command failed "
        "(in reply to RCPT TO command)",
    )
    with sink(tmp_path, "-f", "RCPT") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o.permanent
    assert o.text.endswith("said: 500 5.3.0 Error: command failed (in reply to RCPT TO command)")


def test_421_after_end_of_data_defers(tmp_path):
    # catalogue 12
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-Q", ".") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o.status.startswith("4"), o
    assert "421" in o.text and "(in reply to end of DATA command)" in o.text


def test_disconnect_in_data_defers(tmp_path):
    # catalogue 12
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-q", "DATA") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o == Outcome(
        "4.4.2", "lost connection with 127.0.0.1[127.0.0.1] while sending DATA command"
    )


def test_lost_in_the_handshake_names_the_phase_and_the_host_reached(tmp_path):
    # Postfix's smtp_helo: "while performing the EHLO handshake", whether the command or
    # its reply was lost, and relay= is the host it was connected to, not "none".
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-q", "EHLO") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o == Outcome(
        "4.4.2",
        "lost connection with 127.0.0.1[127.0.0.1] while performing the EHLO handshake",
    )
    assert o.relay == f"127.0.0.1[127.0.0.1]:{listen.rsplit(':', 1)[1]}"


def test_421_greeting_is_logged_with_the_host_reached(tmp_path):
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-Q", "CONNECT") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o.status.startswith("4"), o
    assert o.text.startswith("host 127.0.0.1[127.0.0.1] refused to talk to me: 421"), o
    assert o.relay == f"127.0.0.1[127.0.0.1]:{listen.rsplit(':', 1)[1]}"


def test_421_to_ehlo_is_a_refusal_not_a_reason_to_try_helo(tmp_path):
    # Postfix's smtp_helo: a 421 reply to EHLO fails the site at once.
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-Q", "EHLO") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o == Outcome(
        "4.0.0",
        "host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.0.0 Server closing connection",
    )
    assert o.site


@pytest.mark.slow
def test_silent_after_dot_defers_may_be_sent_twice(tmp_path):
    # catalogue 11
    cfg = make_config(tmp_path / "c", main="smtp_data_done_timeout = 1s\n")
    with sink(tmp_path, "-W", ".:4") as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o == Outcome(
        "4.4.2",
        "conversation with 127.0.0.1[127.0.0.1] timed out while sending end of data -- "
        "message may be sent more than once",
    )


def test_connection_refused(tmp_path):
    cfg = make_config(tmp_path / "c")
    port = free_port()
    (o,) = run(request(cfg, "smtp", f"[127.0.0.1]:{port}", ["x@example.com"]))
    assert o == Outcome("4.4.1", f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused")
    assert o.relay == ""  # never connected: qmgr logs relay=none


def test_tls_encrypt_requires_starttls(tmp_path):
    cfg = make_config(tmp_path / "c", main="smtp_tls_security_level = encrypt\n")
    with sink(tmp_path) as (listen, _):
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o == Outcome(
        "4.7.4", "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    )


def test_connection_reused_between_messages(tmp_path):
    cfg = make_config(tmp_path / "c", main="smtp_connection_cache_time_limit = 5s\n")
    with sink(tmp_path, "-n", "1") as (listen, dump):
        # smtp-sink -n 1 ends after one session: the second message must reuse it.

        async def two() -> list[Outcome]:
            a = await deliver(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
            b = await deliver(request(cfg, "smtp", relay_host(listen), ["y@example.com"]))
            await smtp.close_cached()
            return a + b

        out = asyncio.run(two())
        assert [o.status for o in out] == ["2.0.0", "2.0.0"], out
        assert len(dumps(dump)) == 2


def test_lmtp_unix_socket_per_recipient(tmp_path):
    cfg = make_config(tmp_path / "c")
    path = tmp_path / "lmtp.sock"
    with sink(tmp_path, "-L", listen=f"unix:{path}") as (_, dump):
        os.chmod(path, 0o777)
        out = run(request(cfg, "lmtp", f"unix:{path}", ["x@example.com", "y@example.com"]))
        assert out == [Outcome("2.2.0", "250 2.2.0 Ok")] * 2
        # Named after this host, as Postfix's lmtp_connect_unix.
        assert out[0].relay == f"{cfg.get('myhostname')}[{path}]"
        (msg,) = dumps(dump)
    assert "X-Client-Proto: LMTP" in msg


def test_lmtp_tcp(tmp_path):
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-L") as (listen, _):
        out = run(request(cfg, "lmtp", f"inet:{listen}", ["x@example.com"]))
    assert out == [Outcome("2.2.0", "250 2.2.0 Ok")]


def test_nexthop_forms():
    assert smtp.parse_nexthop("[10.0.0.1]:2525", 25) == ("10.0.0.1", 2525, True, False)
    assert smtp.parse_nexthop("[mx.example]", 25) == ("mx.example", 25, True, False)
    assert smtp.parse_nexthop("example.com", 25) == ("example.com", 25, False, False)
    assert smtp.parse_nexthop("example.com:587", 25) == ("example.com", 587, False, False)
    assert smtp.parse_nexthop("unix:/run/lmtp", 24) == ("/run/lmtp", 0, True, True)
    assert smtp.parse_nexthop("inet:127.0.0.1:24", 24) == ("127.0.0.1", 24, False, False)
    assert shutil.which("smtp-sink") or os.path.exists(SINK)


def test_dead_cached_session_is_replaced(tmp_path):
    cfg = make_config(tmp_path / "c", main="smtp_connection_cache_time_limit = 30s\n")
    listen = f"127.0.0.1:{free_port()}"

    async def two() -> list[Outcome]:
        with sink(tmp_path, listen=listen):
            a = await deliver(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
        # The first server is gone with the cached session; a new one takes its port.
        with sink(tmp_path, listen=listen):
            b = await deliver(request(cfg, "smtp", relay_host(listen), ["y@example.com"]))
            await smtp.close_cached()
        return a + b

    out = asyncio.run(two())
    assert [o.status for o in out] == ["2.0.0", "2.0.0"], out


@pytest.mark.parametrize("pipelining", [True, False])
def test_mail_from_rejected_bounces_every_recipient(tmp_path, pipelining):
    cfg = make_config(tmp_path / "c")
    flags = ["-f", "MAIL"] + ([] if pipelining else ["-p"])
    # -f implies -p in smtp-sink: the pipelined path is exercised by the DATA tests below.
    with sink(tmp_path, *flags) as (listen, _):
        out = run(request(cfg, "smtp", relay_host(listen), ["x@example.com", "y@example.com"]))
    assert (
        out
        == [
            Outcome(
                "5.3.0",
                "host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: command failed "
                "(in reply to MAIL FROM command)",
            )
        ]
        * 2
    )


def test_data_rejected_defers_accepted_recipients(tmp_path):
    cfg = make_config(tmp_path / "c")
    with sink(tmp_path, "-r", "DATA") as (listen, _):
        out = run(request(cfg, "smtp", relay_host(listen), ["x@example.com", "y@example.com"]))
    assert (
        out
        == [
            Outcome(
                "4.3.0",
                "host 127.0.0.1[127.0.0.1] said: 450 4.3.0 Error: command failed "
                "(in reply to DATA command)",
            )
        ]
        * 2
    )


def test_without_pipelining_and_with_dot_stuffing(tmp_path):
    cfg = make_config(tmp_path / "c")
    content = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    with sink(tmp_path, "-p") as (listen, dump):
        out = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"], content=content))
        assert out[0].delivered, out
        (msg,) = dumps(dump)
    # What the server stored is the original text: stuffing was undone on its side.
    assert msg.endswith("Subject: dots\n\n.leading dot\n..two\nend\n\n")


@contextlib.contextmanager
def scripted_server(replies: dict[str, bytes]) -> Iterator[str]:
    """A next hop that answers each command verb with a fixed reply, to produce replies no
    real server sends (smtp-sink's texts are fixed)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 scripted ESMTP\r\n")
            for line in lines:
                verb = line.split(b" ", 1)[0].strip().upper().decode()
                conn.sendall(replies.get(verb, b"250 2.0.0 Ok\r\n"))
                if verb == "QUIT":
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        listener.close()
        thread.join(10)


def test_overlong_reply_line_is_cut_at_line_length_limit(tmp_path):
    # Postfix's client keeps line_length_limit bytes of a reply line and skips the rest
    # (smtp_get's SMTP_GET_FLAG_SKIP); the session goes on with the next line.
    cfg = make_config(tmp_path / "c")
    long_text = b"550 5.1.1 " + b"y" * 5000 + b"\r\n"
    ehlo = b"250-scripted\r\n250-" + b"z" * 3000 + b"\r\n250 8BITMIME\r\n"
    with scripted_server({"EHLO": ehlo, "RCPT": long_text}) as listen:
        (o,) = run(request(cfg, "smtp", relay_host(listen), ["x@example.com"]))
    assert o.permanent, o
    said = o.text.removeprefix("host 127.0.0.1[127.0.0.1] said: ")
    assert said == "550 5.1.1 " + "y" * (2048 - 10) + " (in reply to RCPT TO command)"


def test_lines_longer_than_smtp_line_length_limit_are_broken():
    """Postfix's smtp_text_out: a line over smtp_line_length_limit goes out in pieces
    joined by CR LF SPACE; shorter lines, and a limit of 0, leave the text as it is."""
    from oxipost.delivery.smtp import _data_bytes

    short = b"Subject: x\r\n\r\n.dot\r\nbody\r\n"
    assert _data_bytes(short, 998) == b"Subject: x\r\n\r\n..dot\r\nbody\r\n"
    long = b"Subject: x\r\n\r\n" + b"y" * 2500 + b"\r\nend\r\n"
    out = _data_bytes(long, 998)
    assert max(len(line) for line in out.split(b"\r\n")) <= 998
    assert out.count(b"\r\n ") == 2
    assert out.replace(b"\r\n ", b"") == long
    assert _data_bytes(long, 0) == long
