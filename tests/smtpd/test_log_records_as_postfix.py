"""smtpd's and cleanup's maillog records byte for byte beside real Postfix 3.7's.

The same bytes go to real Postfix (its postlogd writing maillog_file) and to oxipost under
its master; each side's smtpd and cleanup lines of the session must be the same but for the
time and the pid: msg_logger's `Mmm dd HH:MM:SS host prog[pid]: ` (the day zero-padded, the
host myhostname's first label), msg_vprintf's printable() ('?' for a newline, CR, TAB or
other control character and, with smtputf8_enable = no, for each byte of UTF-8) and the
record cut after 2,000 bytes of text, a severity prefix not counted.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest

from tests.conftest import POSTFIX_CLOCK_SKEW
from tests.delivery.test_e2e_delivery import Oxipost
from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.slow, pytest.mark.postfix]

PREFIX = re.compile(rb"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d mx postfix/(smtpd|cleanup)\[\d+\]: ")

# Folded, with a TAB, a CR and other control characters in the header that header_checks
# warns about (cleanup logs it with its newlines), a header cleanup cuts after 200 bytes
# inside a UTF-8 character, UTF-8 in an address, records longer than
# 2,000 bytes (a long address, a long HELO name in a reject line, a long warning), and a
# non-SMTP command with control characters (smtpd logs its first 100 bytes).
DIALOGUE: list[bytes] = [
    b"EHLO x.example",
    b"MAIL FROM:<a@example.org>",
    b"RCPT TO:<caf\xc3\xa9@example.net>",
    b"RCPT TO:<" + b"l" * 1900 + b"@example.net>",
    b"RCPT TO:<u@localhost>",
    b"DATA",
    b"Subject: a\r\n\tb\tc\x01d\x7fe\rf caf\xc3\xa9\r\nX-Long: "
    + b"y" * 191
    + b"\xc3\xa9" * 9
    + b"\r\n\r\nbody\r\n.",
    b"EHLO " + b"h" * 1990,
    b"MAIL FROM:<a@example.org>",
    b"RCPT TO:<z@example.net>",
    b"GET / a\tb\x01c\rd caf\xc3\xa9 " + b"w" * 120,
]

MAIN_CF = (
    "myhostname = mx.example.test\nmynetworks = 127.0.0.1/32\n"
    "smtpd_recipient_restrictions = reject_unauth_destination\n"
    "header_checks = regexp:{{/^Subject:/ WARN checked}, {/^X-Long:/ WARN long}}\n"
    "alias_maps =\nalias_database =\n"
)


def _play(port: int, dialogue: list[bytes]) -> list[str]:
    raw = Raw("127.0.0.1", port, source="127.0.0.2")
    replies = [raw.reply()]
    try:
        for command in dialogue:
            raw.send(command + b"\r\n")
            replies.append(raw.reply())
    finally:
        raw.close()
    return replies


def _session(maillog: Path) -> list[bytes]:
    """The smtpd and cleanup records of 127.0.0.2's session, each checked for msg_logger's
    prefix and then without it (the time and pid differ), queue IDs as QID."""
    deadline = time.monotonic() + 20
    while True:
        lines = maillog.read_bytes().split(b"\n") if maillog.exists() else []
        if any(b"disconnect from unknown[127.0.0.2]" in ln for ln in lines):
            break
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    start = max(i for i, ln in enumerate(lines) if b": connect from unknown[127.0.0.2]" in ln)
    out = []
    for line in lines[start:]:
        if b" postfix/smtpd[" not in line and b" postfix/cleanup[" not in line:
            continue
        if b"[127.0.0.1]" in line:
            continue  # the probe that waited for the server to listen, logged late
        m = PREFIX.match(line)
        assert m, line
        text = line[m.end() :]
        if POSTFIX_CLOCK_SKEW.match(text.decode(errors="replace")):
            continue
        if b": message-id=<" in text or b"public/qmgr" in text:
            # Postfix's cleanup makes a message-id up in its own format, and this Postfix
            # runs no qmgr to tell of the message.
            continue
        out.append(m.group(1) + b": " + re.sub(rb"\b[0-9A-F]{10,12}\b", b"QID", text))
    return out


def _on_both(main_cf: str, dialogue: list[bytes]) -> tuple[list[bytes], list[bytes], list[str]]:
    """The session's records on real Postfix, on ours, and Postfix's replies (which must
    be ours, queue IDs aside)."""
    log_cf = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    with running_postfix(main_cf + log_cf, without=("qmgr",)) as (port, d):
        their_replies = _play(port, dialogue)
        theirs = _session(d / "maillog")
    with contextlib.closing(Oxipost()) as oxi:
        oxi.start(main_cf)
        our_replies = _play(oxi.port, dialogue)
        ours = _session(oxi.dir / "maillog")

    def without_ids(replies: list[str]) -> list[str]:
        return [re.sub(r"queued as [0-9A-F]+$", "queued as QID", r) for r in replies[1:]]

    assert without_ids(our_replies) == without_ids(their_replies)
    return theirs, ours, their_replies


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_log_records_as_postfix(smtputf8: str) -> None:
    main_cf = f"{MAIN_CF}smtputf8_enable = {smtputf8}\n"
    theirs, ours, their_replies = _on_both(main_cf, DIALOGUE)
    assert their_replies[-1] == "221 2.7.0 Error: I can break rules, too. Goodbye."
    cafe = b"caf\xc3\xa9" if smtputf8 == "yes" else b"caf??"
    header = b"cleanup: QID: warning: header Subject: a??b?c?d?e"
    assert any(ln.startswith(header) and cafe + b" from " in ln for ln in theirs), theirs
    assert any(b" to=<" + cafe + b"@example.net> " in ln for ln in theirs), theirs
    # 200 bytes: the first of a UTF-8 character's two, a '?' as printable() shows it.
    cut = b"y" * 191 + b"? from "
    assert any(b" header X-Long: " + cut in ln for ln in theirs), theirs
    lengths = sorted(len(ln) for ln in theirs)
    assert lengths[-2:] == [len(b"smtpd: ") + 2000] * 2, lengths
    assert ours == theirs


@pytest.mark.parametrize("strict", ["no", "yes"])
def test_illegal_address_syntax_warned_as_postfix(strict: str) -> None:
    """extract_addr's 'Illegal address syntax from CLIENT in RCPT command: <PATH>' before
    501 for a path that holds several addresses (white space, a comma or semicolon, a
    comment or a domain literal between words) and, with strict_rfc821_envelopes, for one
    without <>; control characters that are no white space are part of a word: the address
    is taken, and logged quoted with a '?' for each; any other comment is dropped."""
    paths = [b"a\tb", b"a b", b"a,b", b"a;b", b"a(b)c", b"a[b]c", b"a<b", b"a\x01b\x7fc\x1bd"]
    paths += [b"(c)ab", b"a.(c)b", b"a(b)", b"(b c)ab", b"a(b c)d.e", b"ab@ex(c)ample"]
    dialogue = [b"EHLO x.example"]
    for path in paths:
        dialogue += [b"MAIL FROM:<" + path + b"@example.org>", b"RSET"]
    dialogue += [b"MAIL FROM:s@example.org", b"MAIL FROM:<s@example.org>"]
    dialogue += [b"RCPT TO:<" + p + b"@example.net>" for p in paths]
    dialogue += [b"RCPT TO:u@example.net", b"RCPT TO:<u@example.net"]
    after = [b"x", b"x.y", b"(c)", b"<v@example.net>", b",v"]
    dialogue += [b"RCPT TO:<u@example.net>" + words for words in after]
    main_cf = (
        f"{MAIN_CF}strict_rfc821_envelopes = {strict}\nsmtpd_hard_error_limit = 100\n"
        "smtpd_soft_error_limit = 100\n"
    )
    theirs, ours, _ = _on_both(main_cf, dialogue)
    warned = [ln for ln in theirs if b"Illegal address syntax" in ln]
    # strict_rfc821_envelopes: also the two paths without <> and the five comments dropped.
    assert len(warned) == 20 + 11 * (strict == "yes"), theirs
    assert b'to=<"a?b?c?d"@example.net>' in b"".join(theirs), theirs
    assert ours == theirs
