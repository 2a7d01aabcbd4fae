"""header_checks(5) and body_checks(5) in cleanup: every action, the table per header
class (primary, MIME, nested), and Postfix's log lines."""

from __future__ import annotations

from tests.cleanup.conftest import Run, envelope, header, headers_of

HEADER_CHECKS = """\
    /^Subject:.*reject me/ REJECT spam not wanted
    /^Subject:.*defer me/ REJECT 4.7.1 try later
    /^Subject:.*bare reject/ REJECT
    /^Subject:.*hold me/ HOLD held for review
    /^Subject:.*discard me/ DISCARD
    /^Subject:.*warn me/ WARN looks odd
    /^X-Drop:/ IGNORE
    /^X-Old: (.*)/ REPLACE X-New: $1
    /^Subject:.*prepend me/ PREPEND X-Tag: tagged
    /^Subject:.*redirect me/ REDIRECT trap@example.test
    /^Subject:.*bcc me/ BCC copy@example.test
    /^Subject:.*filter me/ FILTER smtp:[127.0.0.1]:10025
    /^Subject:.*dunno/ DUNNO
    /^Subject:.*unknown action/ FROBNICATE
    /^Content-Type:.*name=".*\\.exe"/ REJECT no executables
    /^Subject: inner/ REJECT nested subject
"""

BODY_CHECKS = """\
    /^BADWORD/ REJECT body not ok
    /^replace this line$/ REPLACE replaced line
    /^strip this line$/ IGNORE
"""

MAIN_CF = """\
header_checks = regexp:{dir}/header_checks
body_checks = regexp:{dir}/body_checks
"""
TABLES = {"header_checks": HEADER_CHECKS, "body_checks": BODY_CHECKS}
CONTEXT = (
    "from client.example[192.0.2.7]; from=<s@example.test> to=<r@example.test> "
    "proto=ESMTP helo=<client.example>"
)


def check(run: Run, content: bytes, main_cf: str = MAIN_CF):  # type: ignore[no-untyped-def]
    return run(main_cf, TABLES, envelope("s@example.test", "r@example.test"), content)


def msg(subject: str, body: str = "body\r\n", extra: str = "") -> bytes:
    return f"From: s@example.test\r\n{extra}Subject: {subject}\r\n\r\n{body}".encode()


def test_reject_with_text(run: Run) -> None:
    res = check(run, msg("please reject me"))
    assert res.reply == "550 5.7.1 spam not wanted"
    assert res.notes == [
        ("info", f"reject: header Subject: please reject me {CONTEXT}: 5.7.1 spam not wanted")
    ]


def test_reject_with_a_4xx_code_defers(run: Run) -> None:
    assert check(run, msg("defer me")).reply == "451 4.7.1 try later"


def test_reject_without_text(run: Run) -> None:
    assert check(run, msg("bare reject")).reply == "550 5.7.1 message content rejected"


def test_hold(run: Run) -> None:
    res = check(run, msg("hold me"))
    assert res.reply is None and not res.discard
    assert res.envelope.attrs["hold"]
    assert res.notes == [
        ("info", f"hold: header Subject: hold me {CONTEXT}: held for review"),
        ("info", "message-id=<>"),
    ]


def test_discard(run: Run) -> None:
    res = check(run, msg("discard me"))
    assert res.reply is None and res.discard
    assert res.notes == [("info", f"discard: header Subject: discard me {CONTEXT}")]


def test_warn_keeps_the_message(run: Run) -> None:
    res = check(run, msg("warn me"))
    assert res.reply is None and not res.discard
    assert res.notes == [
        ("info", f"warning: header Subject: warn me {CONTEXT}: looks odd"),
        ("info", "message-id=<>"),
    ]
    assert header(res.content, "Subject") == ["Subject: warn me"]


def test_ignore_replace_prepend(run: Run) -> None:
    res = check(run, msg("prepend me", extra="X-Drop: yes\r\nX-Old: value\r\n"))
    names = [h.split(":")[0] for h in headers_of(res.content)]
    assert "X-Drop" not in names
    assert header(res.content, "X-New") == ["X-New: value"]
    assert names.index("X-Tag") == names.index("Subject") - 1
    assert ("info", f"replace: header X-Old: value {CONTEXT}: X-New: value") in res.notes


def test_redirect_bcc_filter(run: Run) -> None:
    # The recipients stay, as in Postfix's queue file; qmgr redirects one.
    res = check(run, msg("redirect me"))
    assert [r.address for r in res.envelope.recipients] == ["r@example.test"]
    assert res.envelope.attrs["redirect_to"] == "trap@example.test"
    res = check(run, msg("bcc me"))
    assert [r.address for r in res.envelope.recipients] == ["r@example.test", "copy@example.test"]
    res = check(run, msg("filter me"))
    assert res.envelope.attrs["filter"] == "smtp:[127.0.0.1]:10025"


def test_dunno_and_unknown_action(run: Run) -> None:
    # Postfix logs "message-id=<>" for a kept message without one.
    assert check(run, msg("dunno")).notes == [("info", "message-id=<>")]
    res = check(run, msg("unknown action"))
    assert res.reply is None
    assert res.notes == [
        ("warning", "unknown command in header_checks map: FROBNICATE"),
        ("info", "message-id=<>"),
    ]


def test_body_checks(run: Run) -> None:
    res = check(run, msg("hi", "line one\r\nBADWORD here\r\n"))
    assert res.reply == "550 5.7.1 body not ok"
    assert res.notes == [("info", f"reject: body BADWORD here {CONTEXT}: 5.7.1 body not ok")]
    res = check(run, msg("hi", "a\r\nreplace this line\r\nstrip this line\r\nz\r\n"))
    assert res.content.endswith(b"\r\n\r\na\r\nreplaced line\r\nz\r\n")


def test_body_checks_size_limit(run: Run) -> None:
    body = "x" * 100 + "\r\nBADWORD late\r\n"
    assert check(run, msg("hi", body), MAIN_CF + "body_checks_size_limit = 50\n").reply is None
    assert check(run, msg("hi", body)).reply == "550 5.7.1 body not ok"


MULTIPART = (
    "From: s@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    "preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    '--XX\r\nContent-Type: application/octet-stream; name="evil.exe"\r\n\r\nAAAA\r\n'
    "--XX--\r\n"
)

NESTED = (
    "From: s@example.test\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="YY"\r\n\r\n'
    "--YY\r\nContent-Type: message/rfc822\r\n\r\n"
    "From: x@example.test\r\nSubject: inner\r\n\r\nnested body\r\n--YY--\r\n"
)


def test_mime_header_checks_see_part_headers(run: Run) -> None:
    res = check(run, MULTIPART.encode())
    assert res.reply == "550 5.7.1 no executables"
    assert res.notes[0][1].startswith("reject: header Content-Type: application/octet-stream;")
    res = check(run, MULTIPART.encode(), MAIN_CF + "mime_header_checks =\n")
    assert res.reply is None


def test_nested_header_checks_see_attached_message_headers(run: Run) -> None:
    assert check(run, NESTED.encode()).reply == "550 5.7.1 nested subject"
    assert check(run, NESTED.encode(), MAIN_CF + "nested_header_checks =\n").reply is None
    # The primary header's Subject: is not a nested header.
    assert check(run, msg("inner")).reply == "550 5.7.1 nested subject"


def test_body_checks_skip_part_headers(run: Run) -> None:
    tables = dict(TABLES, body_checks="/^Content-Type/ REJECT part header seen\n")
    res = run(
        "body_checks = regexp:{dir}/body_checks\n",
        tables,
        envelope("s@example.test", "r@example.test"),
        MULTIPART.encode(),
    )
    assert res.reply is None


def test_internal_mail_and_no_header_body_checks_skip_checks(run: Run) -> None:
    env = envelope("s@example.test", "r@example.test")
    assert run(MAIN_CF, TABLES, env, msg("reject me"), internal=True).reply is None
    main_cf = MAIN_CF + "receive_override_options = no_header_body_checks\n"
    assert run(main_cf, TABLES, env, msg("reject me")).reply is None


def test_return_path_removed_and_hopcount(run: Run) -> None:
    res = check(run, msg("hi", extra="Return-Path: <x@y>\r\n"))
    assert header(res.content, "Return-Path") == []
    hops = "".join(f"Received: from h{i}\r\n" for i in range(49))
    res = check(run, msg("hi", extra=hops))
    assert res.reply == "554 5.4.0 Error: too many hops"
    assert res.notes == [("warning", "message rejected: hopcount exceeded")]
    assert check(run, msg("hi", extra=hops[: -len("Received: from h48\r\n")])).reply is None


def test_stray_cr_lf_in_headers_and_body_become_spaces(run: Run) -> None:
    content = b"Subject: a\rb\r\nX-Note: c\nd\r\nX-Plain: e\r\n\r\nf\rg\nh\r\n"
    res = check(run, content)
    assert header(res.content, "Subject") == ["Subject: a b"]
    assert header(res.content, "X-Note") == ["X-Note: c d"]
    assert res.content.endswith(b"X-Plain: e\r\n\r\nf g h\r\n")
    res = check(run, content, MAIN_CF + "cleanup_replace_stray_cr_lf = no\n")
    assert header(res.content, "Subject") == ["Subject: a\rb"]


def test_missing_headers_see_what_the_checks_left(run: Run) -> None:
    # A local client's message gets the Date: and Message-Id: it lacks after the checks:
    # one made by REPLACE counts, one removed by IGNORE does not.
    tables = {"header_checks": "/^X-Date: (.*)/ REPLACE Date: $1\n/^Message-Id:/ IGNORE\n"}
    env = envelope("s@example.test", "r@example.test", client="127.0.0.1")
    content = b"X-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-Id: <a@b>\r\n\r\nbody\r\n"
    res = run("header_checks = regexp:{dir}/header_checks\n", tables, env, content)
    assert header(res.content, "Date") == ["Date: Mon, 1 Jan 2024 00:00:00 +0000"]
    [msgid] = header(res.content, "Message-Id")
    assert msgid != "Message-Id: <a@b>"


def test_unreadable_check_table_tempfails(run: Run) -> None:
    res = run(
        "header_checks = regexp:{dir}/missing\n",
        None,
        envelope("s@example.test", "r@example.test"),
        msg("hi"),
    )
    assert res.reply == "451 4.3.0 Error: queue file write error"


def test_missing_headers_resent_forms_and_undisclosed_recipients(run: Run) -> None:
    local = envelope("s@example.test", "r@example.test", client="127.0.0.1")
    res = run("", None, local, b"Subject: hi\r\n\r\nbody\r\n")
    names = [h.split(":")[0] for h in headers_of(res.content)]
    assert names[-3:] == ["Message-Id", "Date", "From"]
    assert header(res.content, "From") == ["From: s@example.test"]
    assert res.notes[0][1].startswith("message-id=<")
    content = b"Resent-To: x@example.test\r\nMessage-Id: <a@b>\r\nSubject: hi\r\n\r\nbody\r\n"
    res = run("", None, local, content)
    names = [h.split(":")[0] for h in headers_of(res.content)]
    assert names[-3:] == ["Resent-Message-Id", "Resent-Date", "Resent-From"]
    assert res.notes[0] == ("info", "message-id=<a@b>")
    assert res.notes[1][1].startswith("resent-message-id=<")
    res = run(
        "undisclosed_recipients_header = To: undisclosed-recipients:;\n",
        None,
        local,
        b"Subject: hi\r\n\r\nbody\r\n",
    )
    assert header(res.content, "To") == ["To: undisclosed-recipients:;"]
    # A remote client's message is left as it came.
    res = run("", None, envelope("s@example.test", "r@example.test"), b"Subject: hi\r\n\r\nb\r\n")
    assert [h.split(":")[0] for h in headers_of(res.content)] == ["Received", "Subject"]
