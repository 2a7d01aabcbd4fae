"""smtp(8)'s smtp_generic_maps, compared with real Postfix 3.7's smtp client.

Both clients send the same mail, with the same tables, to Debian's smtp-sink, which dumps
each transaction (`-d`: the MAIL FROM and RCPT TO arguments as X-Mail-Args/X-Rcpt-Args,
then the message): the envelope addresses and the sender/recipient headers must come out
the same, rewritten in canonical(5) order (a regexp table sees the whole address only, a
result `@domain` keeps the local part, no extension propagated by default), the other
headers and the null sender untouched."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
from oxipost.delivery import AgentFatal

from tests.conftest import free_port, smtp_sink
from tests.smtpd.test_postfix_differential import running_postfix

from .conftest import make_config, request, run

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

GENERIC = """\
joe@local.test joe@example.com
@local.test @example.net
bob@other.test robert@other.example
"""
PATTERN = "/^(.*)@regex\\.test$/ ${1}@mapped.example\n"
RCPTS = ["ann@local.test", "bob+tag@other.test", "someone@regex.test", "plain@nowhere.test"]
HEADERS = (
    "From: Joe <joe@local.test>\n"
    'To: ann@local.test, "Bob B" <bob+tag@other.test>\n'
    "Cc: someone@regex.test (Some One)\n"
    "Reply-To: plain@nowhere.test\n"
    "Subject: joe@local.test\n"
    "X-Also: joe@local.test\n"
    "Mail-Followup-To: joe@local.test, (list) list-one@local.test, list-two@local.test,"
    " list-three@local.test\n"
    'Resent-Cc: "q@r", ann@local.test\n'
)
COMPARED = (
    "x-mail-args",
    "x-rcpt-args",
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "x-also",
    "mail-followup-to",
    "resent-cc",
)


def _dumped(dump: Path, count: int) -> list[list[str]]:
    """The compared header lines of each transaction smtp-sink dumped (its own X-*-Args
    cut to the address, a folded header's line breaks shown as "\\n"), oldest first."""
    deadline = time.monotonic() + 30
    while len(files := sorted(dump.iterdir(), key=lambda f: f.stat().st_mtime_ns)) < count:
        assert time.monotonic() < deadline, files
        time.sleep(0.1)
    out = []
    for f in files:
        head = f.read_text().split("\n\n", 1)[0].replace("\n\t", "\\n\t").split("\n")
        kept = []
        for line in head:
            name, _, value = line.partition(": ")
            if name.lower() in COMPARED:
                if name.lower().endswith("-args"):
                    value = value.split()[0]
                kept.append(f"{name}: {value}")
        # Postfix's qmgr sorts a message's recipients.
        rcpts = sorted(k for k in kept if k.startswith("X-Rcpt-Args"))
        out.append(kept[:1] + rcpts + kept[1 + len(rcpts) :])
    return out


@pytest.mark.parametrize("sender", ["joe@local.test", ""])
def test_generic_maps_rewrite_envelope_and_headers_as_postfix(tmp_path, shared_tmp, sender) -> None:
    # Postfix's daemons read the tables, smtp-sink writes as nobody: not pytest's 0700 tree.
    tables = shared_tmp
    dump = tables / "dump"
    dump.mkdir()
    dump.chmod(0o777)
    (tables / "generic").write_text(GENERIC)
    (tables / "pattern").write_text(PATTERN)
    sink = free_port()
    main = (
        # A quoted '@' gets no @$myorigin from Postfix's cleanup: smtp sees "q@r" as it is.
        "recipient_delimiter = +\nappend_at_myorigin = no\n"
        + f"smtp_generic_maps = texthash:{tables}/generic, regexp:{tables}/pattern\n"
    )
    message = HEADERS + "\nbody joe@local.test\n"
    with smtp_sink(sink, "-d", f"{dump}/%M%S."):
        relay_cf = f"mydestination =\nrelayhost = [127.0.0.1]:{sink}\n" + main
        with running_postfix(relay_cf) as (port, _d):
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                assert s.sendmail(sender, RCPTS, message.replace("\n", "\r\n").encode()) == {}
            (theirs,) = _dumped(dump, 1)
        cfg = make_config(tmp_path / "ours", main)
        out = run(request(cfg, "smtp", f"[127.0.0.1]:{sink}", RCPTS, sender, message.encode()))
        assert all(o.delivered for o in out), out
        ours = _dumped(dump, 2)[1]
    assert ours == theirs
    assert theirs[:5] == [
        f"X-Mail-Args: <{'joe@example.com' if sender else ''}>",
        "X-Rcpt-Args: <ann@example.net>",
        "X-Rcpt-Args: <plain@nowhere.test>",
        "X-Rcpt-Args: <robert@other.example>",
        "X-Rcpt-Args: <someone@mapped.example>",
    ]
    assert theirs[5:] == [
        "From: Joe <joe@example.com>",
        'To: ann@example.net, "Bob B" <robert@other.example>',
        "Cc: someone@mapped.example (Some One)",
        "Reply-To: plain@nowhere.test",
        "Subject: joe@local.test",
        "X-Also: joe@local.test",
        # Rebuilt and folded under 70 bytes, as smtp_header_rewrite does.
        "Mail-Followup-To: joe@example.com, list-one@example.net (list),\\n"
        "\tlist-two@example.net, list-three@example.net",
        # Rebuilt for ann: "q@r" written as quote_822_local writes it, its quotes gone.
        "Resent-Cc: q@r, ann@example.net",
    ]


def test_generic_table_lookup_error_is_fatal_as_postfix(tmp_path) -> None:
    """Postfix's smtp_map11_internal dies: 'fatal: smtp_generic_maps map lookup problem
    for ADDR' (qmgr then defers the mail), before any connection: the port here is closed,
    and an attempt would have ended in 'Connection refused'."""
    cfg = make_config(tmp_path / "ours", "smtp_generic_maps = fail:broken\n")
    nexthop = f"[127.0.0.1]:{free_port()}"
    with pytest.raises(AgentFatal) as e:
        run(request(cfg, "smtp", nexthop, ["b@example.net"]))
    assert str(e.value) == "smtp_generic_maps map lookup problem for a@example.org"
