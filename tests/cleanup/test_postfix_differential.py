"""cleanup beside real Postfix (Debian's 3.7): the same main.cf and tables, the same SMTP
sessions, then the queued envelope and headers compared (Postfix's through postcat, ours
through QueueState.load) and the end-of-DATA replies compared."""

from __future__ import annotations

import re
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oxipost import maps
from oxipost.cleanup.message import cleanup_message
from oxipost.config import load_config
from oxipost.qmgr.queue import QueueState

from tests.cleanup.conftest import RECEIVED, envelope, header, make_config
from tests.conftest import run_ours, run_postfix, wait_for_log
from tests.smtpd.test_postfix_differential import running_postfix

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

# MAIL FROM's BODY= as the queue file's encoding record names it.
_BODY = {"8BITMIME": "8bit", "7BIT": "7bit"}

TABLES = {
    "canonical": "joe@host.example.test joseph@host.example.test\n@old.example @new.example\n",
    "virtual": (
        "team@example.test alice@example.test, bob@example.test\n"
        "bob@example.test robert@example.test\n"
        "self@example.test self@example.test, copy@other.example\n"
        "@lists.example.test team@example.test\n"
        "loop1@example.test loop2@example.test\n"
        "loop2@example.test loop1@example.test\n"
    ),
    "header_checks": (
        "/^Subject:.*reject me/ REJECT not wanted here\n"
        "/^Subject:.*defer me/ REJECT 4.7.1 come back later\n"
        "/^Subject:.*bare reject/ REJECT\n"
    ),
    "body_checks": "/^BADWORD/ REJECT 5.7.0 body refused\n",
}
MAIN_CF = """\
canonical_maps = texthash:{dir}/canonical
virtual_alias_maps = texthash:{dir}/virtual
masquerade_domains = !keep.example.test, example.test
header_checks = regexp:{dir}/header_checks
body_checks = regexp:{dir}/body_checks
recipient_delimiter = +
recipient_canonical_maps = inline:{ postmaster@localhost=admin@localhost }
recipient_canonical_classes = envelope_recipient
"""

# (client address, sender, recipients, content); 127.0.0.2 is not an inet_interfaces
# address, so its headers are not rewritten (local_header_rewrite_clients).
MESSAGES: list[tuple[str, str, list[str], bytes]] = [
    (
        "127.0.0.1",
        "joe@host.example.test",
        ["all@lists.example.test", "self+x@example.test", "x@old.example"],
        b"From: Joe <joe@host.example.test>\r\nTo: a@sub.keep.example.test, b@mx.example.test\r\n"
        b"Cc: someone, x@old.example\r\nReply-To: joe@host.example.test\r\nSubject: hello\r\n"
        b"\r\nbody\r\n",
    ),
    (
        "127.0.0.1",
        "x@example.org",
        ["team@example.test"],
        b"Subject: please reject me\r\n\r\nbody\r\n",
    ),
    ("127.0.0.1", "x@example.org", ["team@example.test"], b"Subject: defer me\r\n\r\nbody\r\n"),
    ("127.0.0.1", "x@example.org", ["team@example.test"], b"Subject: bare reject\r\n\r\nbody\r\n"),
    (
        "127.0.0.1",
        "x@example.org",
        ["team@example.test"],
        b"Subject: body\r\n\r\nok\r\nBADWORD\r\n",
    ),
    ("127.0.0.1", "x@example.org", ["loop1@example.test"], b"Subject: loop\r\n\r\nbody\r\n"),
]
# Header addresses in every form the rewriting parses: quoted local parts, a domain with a
# trailing dot, a group, a comment.
MESSAGES.append(
    (
        "127.0.0.1",
        "joe@host.example.test",
        ["postmaster@localhost"],
        b'From: "Joe Q" <"joe q"@host.example.test.>\r\n'
        b'To: "a b"@example.test, c@example.test., e@example.test (x)\r\n'
        b'Cc: Group: f@old.example, g;, h\r\nReply-To: <"i j"@example.test>\r\n'
        b"Subject: quoted\r\n\r\nbody\r\n",
    )
)
MESSAGES.append(
    (
        "127.0.0.2",
        "joe@host.example.test",
        ["postmaster@localhost"],
        b"From: joe@host.example.test\r\nTo: postmaster@localhost, bare\r\nSubject: remote\r\n"
        b"\r\nbody\r\n",
    )
)


def _send(port: int) -> list[tuple[int, bytes]]:
    replies = []
    for source, sender, rcpts, data in MESSAGES:
        with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0)) as s:
            s.ehlo("client.example")
            s.mail(sender)
            for r in rcpts:
                assert s.rcpt(r)[0] == 250, r
            try:
                replies.append(s.data(data))
            except smtplib.SMTPDataError as e:
                replies.append((e.smtp_code, e.smtp_error))
    return replies


def _postcat(d: Path, qid: str) -> tuple[str, list[tuple[str, str]], bytes]:
    out = subprocess.run(
        ["postcat", "-c", str(d), "-q", qid], capture_output=True, text=True, timeout=30
    ).stdout
    sender = ""
    rcpts: list[tuple[str, str]] = []
    original = ""
    head: list[str] = []
    in_content = False
    for line in out.splitlines():
        if line.startswith("*** MESSAGE CONTENTS"):
            in_content = True
            continue
        if in_content:
            if not line:
                break
            head.append(line)
        elif line.startswith("sender: "):
            sender = line[8:]
        elif line.startswith("original_recipient: "):
            original = line[20:]
        elif line.startswith("recipient: "):
            rcpts.append((line[11:], original))
    return sender, rcpts, ("\r\n".join(head) + "\r\n\r\n").encode()


# Content-Transfer-Encoding against the queue file's encoding: (MAIL FROM options,
# content), each named by its Subject.
ENCODING_MESSAGES = [
    ([], b"Subject: top\r\nContent-Transfer-Encoding: 8bit\r\n\r\nb\xc3\xa9\r\n"),
    (["BODY=7BIT"], b"Subject: over7bit\r\nContent-Transfer-Encoding: BINARY\r\n\r\nx\r\n"),
    (["BODY=8BITMIME"], b"Subject: declared\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx\r\n"),
    (["BODY=7BIT"], b"Subject: only7bit\r\n\r\nx\r\n"),
    ([], b"Subject: folded\r\nContent-Transfer-Encoding:\r\n\t8bit\r\n\r\nx\r\n"),
    ([], b"Subject: comment\r\nContent-Transfer-Encoding: 8bit (raw)\r\n\r\nx\r\n"),
    ([], b"Subject: qp\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n"),
    (
        [],
        b"Subject: part\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nx\r\n--X--\r\n",
    ),
    (
        [],
        b"Subject: nested\r\nContent-Type: message/rfc822\r\n\r\nX-Inner: i\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\nx\r\n",
    ),
    # Header text in a body is no header.
    ([], b"Subject: text\r\nContent-Type: text/plain\r\n\r\nContent-Transfer-Encoding: 8bit\r\n"),
    (
        [],
        b"Subject: partbody\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
        b"\r\nContent-Transfer-Encoding: 8bit\r\n--X--\r\n",
    ),
]


def _send_encoding(port: int) -> list[str]:
    qids = []
    for options, data in ENCODING_MESSAGES:
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo("client.example")
            assert s.mail("x@example.org", options)[0] == 250
            assert s.rcpt("team@example.test")[0] == 250
            code, text = s.data(data)
            assert code == 250, text
            qids.append(text.decode().rsplit(" ", 1)[1])
    return qids


def _encodings(postcat: str) -> tuple[str, list[str]]:
    """(the Subject, each segment's heading and encoding record in order)."""
    subject = re.search(r"^Subject: (\w+)", postcat, re.M)
    assert subject, postcat
    return subject.group(1), re.findall(r"\*\*\* \w+|encoding=\w+", postcat)


@pytest.fixture(scope="module")
def postfix_result() -> Iterator[
    tuple[list[tuple[int, bytes]], list[Any], list[str], dict[str, list[str]]]
]:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(MAIN_CF + logging, without=("qmgr",)) as (port, d):
        for name, text in TABLES.items():
            (d / name).write_text(text)
        # Tables are read when cleanup starts: start it after they exist.
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        replies = _send(port)
        qids = [text.decode().rsplit(" ", 1)[1] for code, text in replies if code == 250]
        queued = [_postcat(d, qid) for qid in qids]
        postcat = ["/usr/sbin/postcat", "-c", str(d), "-q"]
        encodings = dict(_encodings(run_postfix(*postcat, q).stdout) for q in _send_encoding(port))
        # postlogd writes behind: wait for every message's lines.
        expected = ["unreasonable", *(f"{qid}: message-id=" for qid in qids)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = (d / "maillog").read_text()
            if all(e in text for e in expected):
                break
            time.sleep(0.1)
        log = [ln.split("]: ", 1)[1] for ln in (d / "maillog").read_text().splitlines()]
        yield replies, queued, log, encodings


def _content_log(lines: list[str]) -> list[str]:
    """cleanup's reject and warning lines without the queue ID."""
    return [
        re.sub(r"^(warning: )?([0-9A-F]+|NOQUEUE): ", r"\1", ln)
        for ln in lines
        if ": reject: " in ln or "unreasonable" in ln
    ]


def test_same_replies_and_queued_envelope_and_headers(
    postfix_result: Any, start_smtpd: Any, tmp_path: Path
) -> None:
    for name, text in TABLES.items():
        (tmp_path / name).write_text(text)
    srv = start_smtpd(MAIN_CF.replace("{dir}", str(tmp_path)), real_queue=True)
    ours = _send(srv.port)
    theirs, queued, their_log, _ = postfix_result
    assert [(c, t.split(b" queued as ")[0]) for c, t in ours] == [
        (c, t.split(b" queued as ")[0]) for c, t in theirs
    ]
    state = QueueState(load_config(srv.config_dir))
    mine = [state.load(q) for q in state.messages]
    assert len(mine) == len(queued) == 3
    for (env, content), (sender, rcpts, head) in zip(mine, queued, strict=True):
        assert env.sender == sender
        assert [(r.address, r.original) for r in env.recipients] == rcpts
        for name in ("From", "To", "Cc", "Reply-To"):
            assert header(content, name) == header(head, name), name
    assert _content_log(srv.log) == _content_log(their_log)
    assert len(_content_log(srv.log)) == 5


def test_queue_file_encoding_as_in_postfix(
    postfix_result: Any, start_smtpd: Any, tmp_path: Path
) -> None:
    """A Content-Transfer-Encoding: 8bit or binary header of any header block makes the
    queue file's encoding 8bit, over BODY=7BIT too (smtp's BODY=8BITMIME, bounce's 8bit),
    while postcat shows the declared one in the envelope: through a walk for body checks
    and through none (part headers are looked at all the same, as Postfix sees them)."""
    theirs = postfix_result[3]
    for name, text in TABLES.items():
        (tmp_path / name).write_text(text)
    srv = start_smtpd(MAIN_CF.replace("{dir}", str(tmp_path)), real_queue=True)
    postcat = ["postcat", "-c", srv.config_dir, "-q"]
    ours = dict(_encodings(run_ours(*postcat, q).stdout) for q in _send_encoding(srv.port))
    assert ours == theirs
    assert theirs["over7bit"][:2] == ["*** ENVELOPE", "encoding=7bit"]
    assert theirs["over7bit"][-2:] == ["encoding=8bit", "*** MESSAGE"]
    # Without any check, cleanup walks no body but for these part headers.
    (tmp_path / "plain").mkdir()
    cfg = make_config(tmp_path / "plain", "")
    walked: dict[str, str] = {}
    for options, data in ENCODING_MESSAGES:
        env = envelope("x@example.org", "team@example.test")
        env.body_type = options[0][5:] if options else ""
        name = re.findall(rb"^Subject: (\w+)", data)[0].decode()
        walked[name] = cleanup_message(env, data, RECEIVED, cfg).envelope.body_type
    final = {name: [s for s in segs if "=" in s][-1:] for name, segs in theirs.items()}
    assert {n: [f"encoding={_BODY[b]}"] if b else [] for n, b in walked.items()} == final
    assert sum(b == "8BITMIME" for b in walked.values()) == 6


# Latin-1 mail: lines with a byte that is not UTF-8 reach header_checks and body_checks,
# which match them (Postfix 3.7 with smtputf8_enable = yes does not skip them as non-UTF-8
# keys) byte for byte: a rule's 0xE9 matches no other byte, case folds in ASCII only, and
# `.` is one byte, not a UTF-8 character; the others are accepted.
LATIN1_TABLES = {
    "header_checks": (
        b"/^Subject:.*spam/ REJECT subject spam\n"
        b"/^Subject: Caf\xe9!$/ REJECT latin-1 e9\n/^X-One: .$/ REJECT one byte\n"
    ),
    "body_checks": b"/^BADWORD/ REJECT body refused\n/^raw caf\xe9$/ REJECT raw byte\n",
    "canonical": "@old.example @new.example\n",
    "canonical_rx": "/^(.*)@rx.example$/ $1@new.example\n",
}
LATIN1_CF = """\
header_checks = regexp:{dir}/header_checks
body_checks = regexp:{dir}/body_checks
canonical_maps = texthash:{dir}/canonical, regexp:{dir}/canonical_rx
"""
LATIN1 = [
    b"Subject: caf\xe9 spam\r\n\r\nbody\r\n",
    b"Subject: caf\xe9\r\n\r\ncaf\xe9\r\nBADWORD caf\xe9\r\n",
    b"Subject: x\r\n\r\nraw caf\xe9\r\n",
    b"Subject: caf\xe9 ok\r\nX-Other: \xff\xfe\r\n\r\nd\xe9j\xe0 vu\r\n",
    b"Subject: caf\xe9!\r\n\r\nbody\r\n",
    b"Subject: caf\xe8!\r\n\r\nbody\r\n",
    b"Subject: CAF\xc9!\r\n\r\nbody\r\n",
    b"Subject: y\r\nX-One: \xc3\xa9\r\n\r\nbody\r\n",
    b"Subject: y\r\nX-One: \xe9\r\n\r\nbody\r\n",
    # Header addresses go through canonical_maps.
    b"From: Zo\xe9 <zo\xe9@old.example>\r\nTo: caf\xe9@rx.example\r\nSubject: hi\r\n\r\nbody\r\n",
]


def _write_latin1_tables(d: Path) -> None:
    for name, text in LATIN1_TABLES.items():
        (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())


def _send_latin1(port: int) -> list[tuple[int, bytes]]:
    replies = []
    for data in LATIN1:
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.ehlo("client.example")
            s.mail("x@example.org")
            s.rcpt("team@example.test")
            try:
                replies.append(s.data(data))
            except smtplib.SMTPDataError as e:
                replies.append((e.smtp_code, e.smtp_error))
    return replies


def _address_headers(lines: list[bytes]) -> list[bytes]:
    return [ln.rstrip(b"\r") for ln in lines if ln.startswith((b"From:", b"To:"))]


def test_latin1_lines_reach_header_and_body_checks_as_in_postfix(
    start_smtpd: Any, tmp_path: Path
) -> None:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(LATIN1_CF + logging, without=("qmgr",)) as (port, d):
        _write_latin1_tables(d)
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        theirs = _send_latin1(port)
        # postlogd writes behind, and the last message's table warnings come after the
        # last reject: wait for both (a short count fails the comparison below).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = (d / "maillog").read_bytes()
            if text.count(b": reject: ") >= 5 and text.count(b"non-UTF-8") >= 6:
                break
            time.sleep(0.1)
        their_log = [
            ln.split("]: ", 1)[1]
            for ln in (d / "maillog").read_bytes().decode("utf-8", "replace").splitlines()
        ]
        qid = theirs[-1][1].decode().rsplit(" ", 1)[1]
        postcat = subprocess.run(
            ["postcat", "-c", str(d), "-q", qid], capture_output=True, timeout=30
        ).stdout
        their_addresses = _address_headers(postcat.split(b"\n"))
    _write_latin1_tables(tmp_path)
    srv = start_smtpd(LATIN1_CF.replace("{dir}", str(tmp_path)), real_queue=True)
    # Table warnings to the log, as a daemon's child process sends them.
    maps.set_warning_sink(lambda text: srv.log.append(f"warning: {text}"))
    try:
        ours = _send_latin1(srv.port)
    finally:
        maps.set_warning_sink(maps._stderr_warning)
    assert [c for c, _ in theirs] == [550, 550, 550, 250, 550, 250, 250, 250, 550, 250]
    assert [(c, t.split(b" queued as ")[0]) for c, t in ours] == [
        (c, t.split(b" queued as ")[0]) for c, t in theirs
    ]
    # The bytes that are not UTF-8 logged as `?`, as Postfix's printable() shows them.
    assert "reject: body raw caf? from " in "\n".join(their_log)
    # canonical_maps rewrote the header addresses, bytes kept as they came.
    state = QueueState(load_config(srv.config_dir))
    (content,) = [state.load(q)[1] for q in state.messages if b"\nSubject: hi" in state.load(q)[1]]
    assert _address_headers(content.split(b"\n")) == their_addresses
    assert their_addresses == [b"From: Zo\xe9 <zo\xe9@new.example>", b"To: caf\xe9@rx.example"]
    # ListLog keeps the text as logged; Logger writes it as Postfix does (`?` for a byte).
    our_log = [ln.encode("utf-8", "replace").decode() for ln in srv.log]
    assert _content_log(our_log) == _content_log(their_log)
    assert len(_content_log(our_log)) == 5

    # canonical_maps refuse the header addresses that are not UTF-8, as dict_utf8 does.
    def non_utf8(lines: list[str]) -> list[str]:
        return [ln.replace(str(tmp_path), "DIR") for ln in lines if "non-UTF-8" in ln]

    assert non_utf8(our_log) == non_utf8([ln.replace(str(d), str(tmp_path)) for ln in their_log])
    assert len(non_utf8(our_log)) == 6


# A body line longer than line_length_limit reaches body_checks in pieces of that length
# (smtpd queues one record each): a rule matches within one piece only, each piece is
# acted on by itself, a line whose last piece is removed goes on with the next line's,
# and body_checks_size_limit counts a line end after each piece. An empty line is never
# looked up, and a line of exactly line_length_limit bytes is one piece.
LONG_CF = """\
body_checks = regexp:{dir}/body_checks
line_length_limit = 1000
body_checks_size_limit = 20000
"""
LONG_CHECKS = """\
/^a/ INFO starts
/b$/ INFO ends
/mn/ INFO across the cut
/^c/ REPLACE d
/^e/ IGNORE
/^f/ PREPEND before
/^q/ IGNORE
/^$/ INFO empty
/^g/ REJECT second piece
/^late/ INFO late
"""
LONG_BODIES = [
    "\r\n".join(
        [
            "a" + "x" * 1500 + "b",
            "m" * 1000 + "n" * 5,
            "z" * 1000 + "c" * 20,
            "",
            "e" * 1000 + "y" * 10,
            "w" * 1000 + "f" * 10,
            "q" * 1000,
            "v" * 1000 + "e" * 10,
            "next",
            "e" * 1500,
            "kept",
            "r" * 1000 + "eee",
            "",
        ]
    ),
    "k" * 1000 + "g\r\n",
    # 20 pieces: the next line starts past the 20,000 bytes body_checks looks at.
    "s" * 19998 + "\r\nlate\r\n",
    # Bytes, not characters: the same with a character of two bytes.
    "\u00e9" * 9999 + "\r\nlate\r\n",
]


def _send_long(port: int) -> list[tuple[int, bytes]]:
    replies = []
    for i, body in enumerate(LONG_BODIES):
        with smtplib.SMTP("127.0.0.1", port) as s:
            try:
                data = f"Subject: {i}\r\n\r\n{body}".encode()
                s.sendmail("x@example.org", ["team@example.test"], data)
                replies.append((250, b""))
            except smtplib.SMTPDataError as e:
                replies.append((e.smtp_code, e.smtp_error))
    return replies


def _body_log(lines: list[str]) -> list[str]:
    """cleanup's body action lines without the queue ID."""
    return [
        re.sub(r"^([0-9A-F]+|NOQUEUE): ", "", ln)
        for ln in lines
        if re.search(r": (info|replace|prepend|reject): body ", ln)
    ]


def test_long_body_lines_reach_body_checks_in_pieces_as_in_postfix(
    start_smtpd: Any, tmp_path: Path
) -> None:
    logging = "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    with running_postfix(LONG_CF + logging, without=("qmgr",)) as (port, d):
        (d / "body_checks").write_text(LONG_CHECKS)
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        theirs = _send_long(port)
        out = subprocess.run(
            ["postqueue", "-c", str(d), "-j"], capture_output=True, text=True, timeout=30
        ).stdout
        their_bodies = {}
        for qid in re.findall(r'"queue_id": "(\w+)"', out):
            body = subprocess.run(
                ["postcat", "-c", str(d), "-bq", qid], capture_output=True, timeout=30
            ).stdout
            # From the empty line after the header; a last line whose last piece was
            # removed has no line end in the queue file (the delivery agents add it).
            lines = body.split(b"\n")[1:]
            if lines[-1] == b"":
                lines.pop()
            their_bodies[lines[0]] = lines
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (d / "maillog").read_text().count("message-id=") >= 4:
                break
            time.sleep(0.1)
        their_log = [ln.split("]: ", 1)[1] for ln in (d / "maillog").read_text().splitlines()]
    (tmp_path / "body_checks").write_text(LONG_CHECKS)
    srv = start_smtpd(LONG_CF.replace("{dir}", str(tmp_path)), real_queue=True)
    ours = _send_long(srv.port)
    assert ours == theirs == [(250, b""), (550, b"5.7.1 second piece"), (250, b""), (250, b"")]
    state = QueueState(load_config(srv.config_dir))
    our_bodies = {}
    for q in state.messages:
        lines = state.load(q)[1].split(b"\r\n\r\n", 1)[1].split(b"\r\n")
        lines.pop()
        our_bodies[lines[0]] = lines
    assert our_bodies == their_bodies
    assert _body_log(srv.log) == _body_log(their_log)
    # Not a body both left alone, nor checks that saw whole lines.
    body = their_bodies[b"a" + b"x" * 1500 + b"b"]
    assert b"z" * 1000 + b"d" in body
    assert body[body.index(b"w" * 1000 + b"before") + 1] == b"f" * 10
    assert body[body.index(b"f" * 10) + 1 :] == [b"", b"v" * 1000 + b"next", b"kept", b"r" * 1000]
    # Each piece on its own: /^a/ and /b$/ both act on one line, /mn/ of the line cut
    # between its m and n not at all, nor /^late/ past body_checks_size_limit.
    actions = [(ln.split(" ", 1)[0], ln.rsplit(": ", 1)[1]) for ln in _body_log(srv.log)]
    assert actions == [
        ("info:", "starts"),
        ("info:", "ends"),
        ("replace:", "d"),
        ("prepend:", "before"),
        ("reject:", "5.7.1 second piece"),
    ]


# A line that starts with "--" and a multipart's boundary is that boundary whatever follows
# it, as Postfix's mime_state compares (strncmp): the headers after "--BOUNDx" are a part's,
# looked up in mime_header_checks, not body lines; "--BOUND--x" closes the multipart.
BOUNDARY_CF = """\
mime_header_checks = regexp:{dir}/mime
body_checks = regexp:{dir}/body
"""
BOUNDARY_TABLES = {
    "mime": "/^X-Part: (.*)/ REJECT part header $1\n",
    "body": "/^X-Part: (.*)/ REJECT body line $1\n",
}
BOUNDARY_MESSAGES = [
    b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUND\r\n"
    b"\r\npreamble\r\n--BOUNDx trailing\r\nX-Part: one\r\n\r\npart\r\n--BOUND--\r\n",
    b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUND\r\n"
    b"\r\n--BOUND\r\n\r\npart\r\n--BOUND--x\r\n--BOUND\r\nX-Part: two\r\n\r\nz\r\n",
]


# mime_boundary_length_limit = 5: a boundary is matched by its first five characters, as
# mime_state_push() cuts it, so "--BOUNDxyz" is a boundary line of boundary=BOUNDARY-LONG
# (the part header after it a MIME header) and "--BOUND--" closes that multipart.
CUT_BOUNDARY_MESSAGES = [
    b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUNDARY-LONG"
    b"\r\n\r\npreamble\r\n--BOUNDxyz\r\nX-Part: one\r\n\r\npart\r\n--BOUNDARY-LONG--\r\n",
    b"Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; "
    b'boundary="BOUNDARY-LONG"\r\n\r\n--BOUNDARY-LONG\r\n\r\npart\r\n--BOUND--\r\n'
    b"--BOUNDARY-LONG\r\nX-Part: two\r\n\r\nz\r\n",
]


def _send_boundary(port: int, messages: list[bytes] = BOUNDARY_MESSAGES) -> list[tuple[int, bytes]]:
    replies = []
    for data in messages:
        with smtplib.SMTP("127.0.0.1", port) as s:
            try:
                s.sendmail("x@example.org", ["team@example.test"], data)
                replies.append((250, b""))
            except smtplib.SMTPDataError as e:
                replies.append((e.smtp_code, e.smtp_error))
    return replies


def test_boundary_with_trailing_text_as_in_postfix(start_smtpd: Any, tmp_path: Path) -> None:
    with running_postfix(BOUNDARY_CF, without=("qmgr",)) as (port, d):
        for name, text in BOUNDARY_TABLES.items():
            (d / name).write_text(text)
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        theirs = _send_boundary(port)
    for name, text in BOUNDARY_TABLES.items():
        (tmp_path / name).write_text(text)
    srv = start_smtpd(BOUNDARY_CF.replace("{dir}", str(tmp_path)))
    ours = _send_boundary(srv.port)
    assert ours == theirs == [(550, b"5.7.1 part header one"), (550, b"5.7.1 body line two")]


def test_long_boundary_cut_to_mime_boundary_length_limit_as_in_postfix(
    start_smtpd: Any, tmp_path: Path
) -> None:
    main_cf = BOUNDARY_CF + "mime_boundary_length_limit = 5\n"
    with running_postfix(main_cf, without=("qmgr",)) as (port, d):
        for name, text in BOUNDARY_TABLES.items():
            (d / name).write_text(text)
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        theirs = _send_boundary(port, CUT_BOUNDARY_MESSAGES)
    for name, text in BOUNDARY_TABLES.items():
        (tmp_path / name).write_text(text)
    srv = start_smtpd(main_cf.replace("{dir}", str(tmp_path)))
    ours = _send_boundary(srv.port, CUT_BOUNDARY_MESSAGES)
    assert ours == theirs == [(550, b"5.7.1 part header one"), (550, b"5.7.1 body line two")]


def _nested(depth: int) -> bytes:
    """A message of `depth` multiparts, each the first part of the one before."""
    parts = b"".join(
        b"Content-Type: multipart/mixed; boundary=B%d\r\n\r\n--B%d\r\n" % (i, i)
        for i in range(depth)
    )
    return b"Subject: n\r\nMIME-Version: 1.0\r\n" + parts + b"\r\ntext\r\n"


MIME = b"Subject: m\r\nMIME-Version: 1.0\r\n"
MIME_ERROR_MESSAGES = [
    b"Subject: h\xe9llo\r\n\r\nbody\r\n",
    b"Subject: b\r\n\r\nb\xe9dy\r\n",
    MIME + b"Content-Transfer-Encoding: 8bit\r\n\r\nb\xe9dy\r\n",
    b"Subject: b\r\nContent-Transfer-Encoding: 8bit\r\n\r\nb\xe9dy\r\n",
    MIME + b"Content-Type: multipart/mixed; boundary=X\r\nContent-Transfer-Encoding: base64\r\n"
    b"\r\n--X\r\n\r\nx\r\n--X--\r\n",
    MIME + b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nSubject: inner\r\n\r\nx\r\n",
    MIME + b"Content-Type: message/partial; id=x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nx\r\n",
    # The preamble of a multipart is 7bit whatever the multipart's own encoding.
    MIME + b"Content-Type: multipart/mixed; boundary=X\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"\r\npre\xe9\r\n--X\r\n\r\nx\r\n--X--\r\n",
    MIME
    + b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nX-P: \xe9\r\n\r\nx\r\n--X--\r\n",
    MIME + b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n\xe9\r\n--X--\r\n",
    # After the closing boundary, the epilogue is 7bit again.
    MIME + b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n\xe9\r\n--X--\r\nepi\xe9\r\n",
    b"Subject: h\xe9\r\n\r\nb\xe9\r\n",
    MIME + b"Content-Type: message/rfc822\r\n\r\nSubject: inn\xe9r\r\n\r\nx\r\n",
    _nested(3),
    _nested(4),
    _nested(5),
    # message/rfc822 does not count as nesting.
    b"Subject: a\r\nContent-Type: message/rfc822\r\n\r\n" * 6 + b"x\r\n",
]
MIME_ERROR_CF = {
    "strict": "strict_7bit_headers = yes\nstrict_8bitmime_body = yes\n"
    "strict_mime_encoding_domain = yes\nmime_nesting_limit = 2\n",
    "strict_8bitmime": "strict_8bitmime = yes\nmime_nesting_limit = 1\n",
    # Alone it still has part and attached message headers looked at.
    "strict_7bit_headers": "strict_7bit_headers = yes\n",
    # Without MIME processing Postfix's cleanup asks for no report at all.
    "disable_mime": "strict_8bitmime = yes\nstrict_mime_encoding_domain = yes\n"
    "disable_mime_input_processing = yes\n",
    # A header checks table alone asks for nesting errors only.
    "header_checks": "header_checks = regexp:{dir}/none\nmime_nesting_limit = 1\n",
    "body_checks": "body_checks = regexp:{dir}/none\nmime_nesting_limit = 1\n",
}


def _mime_error_lines(log: list[str]) -> list[str]:
    return [re.sub(r"^[0-9A-F]+: ", "", ln) for ln in log if "mime-error" in ln]


@pytest.mark.parametrize("setting", sorted(MIME_ERROR_CF))
def test_mime_errors_refused_as_in_postfix(start_smtpd: Any, tmp_path: Path, setting: str) -> None:
    """strict_7bit_headers, strict_8bitmime_body, strict_8bitmime,
    strict_mime_encoding_domain and mime_nesting_limit: Postfix's cleanup refuses what its
    MIME processor reports (550 5.6.0, one reject: mime-error line for each kind)."""
    main_cf = (
        MIME_ERROR_CF[setting] + "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /tmp\n"
    )
    with running_postfix(main_cf, without=("qmgr",)) as (port, d):
        (d / "none").write_text("")
        subprocess.run(["postfix", "-c", str(d), "reload"], capture_output=True, timeout=30)
        theirs = _send_boundary(port, MIME_ERROR_MESSAGES)
        refused = sum(code != 250 for code, _ in theirs)
        # A message may draw two mime-error lines (strict: 12 for 11 refused), and postlogd
        # writes behind: wait for smtpd's end of the last session, logged after them all.
        ended = r"postfix/smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.1\] ehlo="
        wait_for_log(d / "maillog", ended, len(MIME_ERROR_MESSAGES))
        their_log = (d / "maillog").read_bytes().decode("utf-8", "replace").splitlines()
    (tmp_path / "none").write_text("")
    srv = start_smtpd(main_cf.replace("{dir}", str(tmp_path)))
    ours = _send_boundary(srv.port, MIME_ERROR_MESSAGES)
    assert ours == theirs
    our_log = [ln.encode("utf-8", "replace").decode() for ln in srv.log]
    assert _mime_error_lines(our_log) == _mime_error_lines(
        [ln.split("]: ", 1)[1] for ln in their_log]
    )
    assert (
        refused
        == {
            "strict": 11,
            "strict_8bitmime": 9,
            "strict_7bit_headers": 4,
            "disable_mime": 0,
            "header_checks": 2,
            "body_checks": 0,
        }[setting]
    )
