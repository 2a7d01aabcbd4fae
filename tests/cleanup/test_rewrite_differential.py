"""Address rewriting and the headers cleanup adds, beside real Postfix 3.7: the same
sessions to Postfix without qmgr and to our smtpd with a real queue, then the queue files'
envelope addresses and headers compared through each one's postcat. Cases the random
differential (sender, recipients and headers against both) found."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.smtpd.conftest import Raw
from tests.smtpd.test_postfix_differential import (
    Queued,
    _commands,
    _queued_on_both,
    running_postfix,
)

pytestmark = [pytest.mark.postfix, pytest.mark.slow]

# Every recipient relayed, one with routing operators too (allow_untrusted_routing).
RELAY_ALL = (
    "smtpd_relay_restrictions = check_recipient_access static:OK, reject_unauth_destination\n"
    "allow_untrusted_routing = yes\n"
)


def _rewritten(queued: Queued) -> list[str]:
    """The envelope's sender and recipient records and the message headers but the
    Received: line, the queue ID and the times cleanup adds made alike."""
    assert queued.postcat.returncode == 0, queued.postcat.stderr
    out: list[str] = []
    head = received = False
    for line in queued.postcat.stdout.splitlines():
        if line.startswith("*** MESSAGE CONTENTS"):
            head = received = True
            continue
        if not head:
            if line.startswith(("sender:", "recipient:", "original_recipient:")):
                out.append(line)
            continue
        if not line:
            break
        if received and line[0] in " \t":
            continue
        received = line.startswith("Received:")
        if not received:
            line = re.sub(r"^((?:Resent-)?Date:) .*", r"\1 DATE", line)
            out.append(re.sub(r"<\d{14}\.[0-9A-Z]+@", "<ID@", line.replace(queued.qid, "ID")))
    return out


def _message(sender: str, rcpts: list[str], headers: str) -> list[str]:
    return [
        "EHLO client.example",
        f"MAIL FROM:<{sender}>",
        *(f"RCPT TO:<{r}>" for r in rcpts),
        "DATA",
        headers + "\r\nbody\r\n.",
    ]


def _same_on_both(start_smtpd: Any, main_cf: str, commands: list[str], count: int) -> list[str]:
    play = _commands(commands)
    theirs, ours = _queued_on_both(start_smtpd, main_cf, play, count)
    assert len(theirs) == len(ours) == count
    views = [_rewritten(q) for q in theirs]
    for mine, view in zip([_rewritten(q) for q in ours], views, strict=True):
        assert "\n".join(mine) == "\n".join(view)
    return [line for view in views for line in view]


def test_percent_bang_and_dot_forms_rewritten_as_postfix(start_smtpd: Any) -> None:
    # The client (127.0.0.2) in mynetworks: envelope and headers in the local context.
    # user%site and site!user without '@' become user@site, a domain without a dot gets
    # .$mydomain (localhost too), one trailing dot goes but not "..". Recipients that
    # differ in case only are one (the duplicate filter folds its whole key).
    main_cf = RELAY_ALL + (
        "allow_percent_hack = yes\nappend_dot_mydomain = yes\nmynetworks = 127.0.0.0/8\n"
        "local_header_rewrite_clients = permit_mynetworks\n"
    )
    rcpts = ["b.example!c", "x!y!d", "e@localhost", "f@host.", "g%h.example", "E@LOCALHOST"]
    headers = (
        "To: b.example!c, a%b.example, e@localhost, f@host., g@h..\r\n"
        'Cc: "q u", "a%b"@c.example, x!y!d\r\nSubject: s\r\n'
    )
    seen = _same_on_both(start_smtpd, main_cf, _message("a%b.example", rcpts, headers), 1)
    assert "sender: a@b.example" in seen
    assert "recipient: c@b.example" in seen
    assert "recipient: y!d@x.example.test" in seen
    assert seen.count("recipient: e@localhost.example.test") == 1


# (main.cf, the session's messages as (sender, recipients, headers), lines both queue
# files must show), each a difference the random differential found.
CASES = {
    # Without swap_bangpath, the percent hack still applies to what has no '@'.
    "swap_bangpath_off": (
        "swap_bangpath = no\nallow_percent_hack = yes\n",
        [("x!a%b.example", ["b.example!c", "c%d%e.example"], "Subject: s\r\n")],
        ["sender: x!a@b.example", "recipient: c%d@e.example"],
    ),
    # static:all, a type:table item, makes every client local: 127.0.0.2's headers get
    # @$myorigin and the headers it lacks.
    "local_header_rewrite_clients_table": (
        "local_header_rewrite_clients = static:all\n",
        [("u", ["r@example.org"], "To: bare\r\n")],
        ["To: bare@mx.example.test", "From: u@mx.example.test"],
    ),
    # A remote client's mail has a header rewriting context when
    # remote_header_rewrite_domain is set: the missing headers are added as for a local
    # client's, the Resent- forms with a Resent- header; "user@" stays as it is.
    "remote_header_rewrite_domain": (
        "remote_header_rewrite_domain = remote.example\n",
        [
            ("a@b.example", ["r@example.org"], "To: bare, a@\r\nSubject: s\r\n"),
            ("a@b.example", ["r@example.org"], "Resent-To: x\r\nSubject: t\r\n"),
        ],
        ["To: bare@remote.example, a@", "Date: DATE", "Resent-From: a@b.example"],
    ),
    # Resent-Bcc: is dropped (message_drop_headers) but seen: the headers added for a
    # local client are the Resent- forms.
    "resent_bcc_alone": (
        "local_header_rewrite_clients = static:all\n",
        [("a@b.example", ["r@example.org"], "Resent-Bcc: x@y.example\r\n")],
        ["Resent-From: a@b.example"],
    ),
    # With append_at_myorigin = no, MAIL FROM:<MAILER-DAEMON> stays MAILER-DAEMON (ours
    # made it the null sender): an address is the null sender only when it has a domain
    # and is the mailer-daemon address rewritten, which here has none.
    "bare_mailer_daemon": (
        "append_at_myorigin = no\n",
        [
            ("MAILER-DAEMON", ["r@example.org"], "Subject: s\r\n"),
            ("mailer-daemon@mx.example.test", ["r@example.org"], "Subject: t\r\n"),
        ],
        ["sender: MAILER-DAEMON", "sender: mailer-daemon@mx.example.test"],
    ),
    # An @domain result keeps the local part quoted where it must be (ours split "q u"
    # into two addresses); an address before a nested comment is rewritten too.
    "domain_mapping_and_nested_comment": (
        "local_header_rewrite_clients = static:all\n"
        "sender_canonical_maps = inline:{{@b.example=@sb.example}}\n"
        "canonical_maps = inline:{{a@c.example=x@c.example}}\n",
        [
            (
                '"q u"@b.example',
                ["r@example.org"],
                'Sender: "q u"@b.example\r\nCc: a@c.example (comment (nested))\r\n',
            )
        ],
        [
            "sender: q u@sb.example",
            'Sender: "q u"@sb.example',
            "Cc: x@c.example (comment (nested))",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rewritten_as_postfix(start_smtpd: Any, case: str) -> None:
    setting, messages, expected = CASES[case]
    commands = [line for message in messages for line in _message(*message)]
    seen = _same_on_both(start_smtpd, RELAY_ALL + setting, commands, len(messages))
    assert [line for line in expected if line not in seen] == []


@pytest.mark.parametrize(
    ("setting", "kept"),
    [
        ("", ["X-Drop: me", "Subject: s"]),
        (
            "message_drop_headers = x-drop, BCC\n",
            [
                "Content-Length: 5",
                "Resent-Bcc: y@example.org",
                "Return-Path: <q@example.org>",
                "Subject: s",
            ],
        ),
    ],
)
def test_message_drop_headers_removed_as_postfix(
    start_smtpd: Any, setting: str, kept: list[str]
) -> None:
    # message_drop_headers (bcc, content-length, resent-bcc, return-path by default) go
    # from every client's mail, here one without a header rewriting context; names in
    # any case.
    headers = (
        "Bcc: x@example.org\r\nContent-Length: 5\r\nResent-Bcc: y@example.org\r\n"
        "Return-Path: <q@example.org>\r\nX-Drop: me\r\nSubject: s\r\n"
    )
    commands = _message("a@b.example", ["r@example.org"], headers)
    seen = _same_on_both(start_smtpd, RELAY_ALL + setting, commands, 1)
    envelope = ("sender:", "recipient:", "original_recipient:")
    assert [h for h in seen if not h.startswith(envelope)] == kept


def test_header_address_forms_as_postfix(start_smtpd: Any) -> None:
    # A '\\"' inside a quoted phrase does not end it: the address is the one in <...>
    # (ours took '"x\\"' as the phrase and wrote "x\\"y <a"@...). The rewrite drops a source
    # route, an address without a local part gets an empty one, a lone '@' is "", and a
    # local part with '@' is quoted.
    main_cf = RELAY_ALL + (
        "local_header_rewrite_clients = static:all\n"
        "canonical_maps = inline:{{a@b.example=c@b.example}}\n"
    )
    headers = (
        'Sender: "x\\"y" <a@b.example>\r\nFrom: Phrase <@r.example:d@b.example>\r\n'
        "Reply-To: @b.example\r\nErrors-To: @\r\nTo: e@f@g.example\r\n"
        'Cc: "q@r", Name <"s@t">, "u v"\r\n'
    )
    seen = _same_on_both(
        start_smtpd, main_cf, _message("s@b.example", ["r@example.org"], headers), 1
    )
    assert 'Sender: "x\\"y" <c@b.example>' in seen
    assert "From: Phrase <d@b.example>" in seen
    assert 'To: "e@f"@g.example' in seen


# Address headers Postfix rebuilds from their tokens once the rewrite changed one of
# their addresses (canonical_maps makes a@b.example x@y.example): ", " between addresses,
# comments after their address, a missing comma added ("John Smith" is two addresses),
# "a @ b . example" joined, quotes only where needed, more than 250 bytes of other text
# in an element cut to <address>, the lines folded under 70 bytes; a header with no
# address changed stays as written.
_C = "a@b.example"
_LONG = ", ".join(f"user{i}@host{i}.example" for i in range(12))
REBUILT = {
    "canonical_local": (
        "local_header_rewrite_clients = static:all\n"
        "canonical_maps = inline:{{a@b.example=x@y.example}}\n",
        [
            f"To: {_C}\r\nCc: <{_C}>\r\nFrom:{_C}\r\nReply-To:   <{_C}>  \r\n",
            f'To: a @ b . example\r\nCc: John Smith\r\nReply-To: "Q u" <{_C}> (c), c@d.example\r\n',
            f"To: undisclosed-recipients:;, {_C}\r\nCc: group: {_C}, c;\r\nResent-To: g: ;\r\n",
            f"To: (lead comment) {_C}\r\nCc: x(inner)@y.example, {_C}\r\n"
            "Reply-To: <a(c)@b.example>\r\n",
            f"To: {_LONG}, {_C}\r\nCc: {_C}, {_LONG}, bare\r\n",
            f'To: "quoted"@b.example, "q u"@b.example, "a\\\\\\"b"@c.example, {_C}\r\n',
            f"To: Ma\u00efs <{_C}>, \u00e9t\u00e9@b.example\r\n",
            f"To: =?utf-8?q?J=C3=B6rg?= <{_C}>, =?utf-8?b?SsO2cmc=?= <c@d.example>\r\n",
            f"To: {_C},\r\n c@d.example,\r\n\te@f.example\r\n"
            f"Cc: x@y.example (a\r\n comment), {_C}\r\n",
            f"To: Phrase. With: Specials <{_C}>\r\nCc: a@[1.2.3.4], <>, {_C}\r\n",
            f"To: {_C} a2@b.example\r\nCc: {_C};c@d.example\r\n"
            "Resent-To: c@d.example c2@d.example\r\n",
            f"To: Some Body <{_C}> junk, x@y.example\r\nCc: <@r.example,@s.example:{_C}>\r\n",
            f'To: "{"x" * 260}" <{_C}>, y@z.example\r\nCc: A.B. Name <{_C}>, "" <{_C}>\r\n',
            f"To: <{_C}> (c1) (c2)\r\nCc: ({_C})\r\nResent-Cc: x <y>\r\n",
            f"To: {'u' * 80}@{'h' * 10}.example, {_C}\r\n",
            # No '>': the address is all the tokens, which trivial-rewrite reads put
            # together again with a blank before '<' (and drops the trailing dot).
            f"To: {_C}, Name <c@d.example.\r\n",
        ],
        [
            "Reply-To: <x@y.example>",
            "Cc: John@mx.example.test, Smith@mx.example.test",
            'Reply-To: "Q u" <x@y.example>(c), c@d.example',
            "To: undisclosed-recipients: ;, x@y.example",
            "To: x@y.example (lead comment)",
            "Reply-To: <x@y.example (c)>",
            "\tuser3@host3.example, user4@host4.example, user5@host5.example,",
            "To: x@y.example, c@d.example, e@f.example",
            "To: Phrase.With@mx.example.test:Specials <x@y.example>",
            "Resent-To: c@d.example c2@d.example",
            "To: Some Body <x@y.example>, junk@mx.example.test, x@y.example",
            "To: <x@y.example>, y@z.example",
            "Cc: (a@b.example)",
            'To: x@y.example, "Name <c"@d.example',
        ],
    ),
    # A rebuilt header longer than header_size_limit is cut at that many bytes before it
    # is folded (here in the middle of the list, its last address gone).
    "rebuilt_past_header_size_limit": (
        "local_header_rewrite_clients = static:all\nheader_size_limit = 200\n"
        f"canonical_maps = inline:{{{{a@b.example={'l' * 60}@y.example}}}}\n",
        [f"To: {_C}, {', '.join(f'u{i}@h.example' for i in range(9))}, {_C}\r\n"],
        ["\tu5@h.example, u6@h.example, u7@h.example, u8@h.example"],
    ),
    "masquerade_remote": (
        "local_header_rewrite_clients =\nremote_header_rewrite_domain = remote.example\n"
        "masquerade_domains = example.com\nappend_dot_mydomain = yes\n",
        [
            "To: a@host.sub.example.com, Name <b@x.example.com>\r\nSender: bare\r\n",
            'To: undisclosed-recipients:;\r\nCc: , a@b.example,, c\r\nReply-To: "x y" <z>\r\n',
            "Cc: Obs <@r1.example,@r2.example:u@example.com>, x\r\n",
            'To: Jo\u00ebl <jo@host>, "\u00e9" <e@host.example.com>\r\n',
            "To: " + ", ".join(f"n{i}" for i in range(40)) + "\r\n",
            "Errors-To: <x@y.example.com>\r\nDisposition-Notification-To: Q <q>\r\n",
            'Mail-Followup-To: "a, b" <ab@sub.example.com>, (only comment)\r\n',
            "To: a;b\r\nCc: :;\r\nTO: lower@sub.example.com\r\ncc:  mixed@sub.example.com\r\n",
        ],
        [
            "To: undisclosed-recipients:;",
            "Cc: , a@b.example, , c@remote.example",
            "\tn39@remote.example",
            "To: a@remote.example;, b@remote.example",
            "cc: mixed@example.com",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(REBUILT))
def test_rebuilt_address_headers_as_postfix(start_smtpd: Any, case: str) -> None:
    setting, messages, expected = REBUILT[case]
    commands = [line for h in messages for line in _message("s@b.example", ["r@x.example"], h)]
    seen = _same_on_both(start_smtpd, RELAY_ALL + setting, commands, len(messages))
    assert [line for line in expected if line not in seen] == []


def test_long_comment_stripped_with_warning_as_postfix(start_smtpd: Any) -> None:
    # More than 250 bytes of comment beside an address in a rebuilt header: the element
    # becomes <address>, with the same warning in both logs (its text shown as printable,
    # cut at 100 bytes).
    main_cf = RELAY_ALL + (
        "local_header_rewrite_clients = static:all\n"
        "canonical_maps = inline:{{a@b.example=x@y.example}}\n"
        "maillog_file = {dir}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, /tmp\n"
    )
    headers = f"To: ({'c' * 300}) a@b.example, Name <q@r.example> (short)\r\n"
    play = _commands(_message("s@b.example", ["r@x.example"], headers))
    with running_postfix(main_cf, without=("qmgr",)) as (port, d):
        raw = Raw("127.0.0.1", port, source="127.0.0.2")
        play(raw, "Postfix")
        raw.close()
        deadline = time.monotonic() + 20
        while "stripping" not in (log := (d / "maillog").read_text()):
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
    theirs = re.findall(r"warning: stripping.*", log)
    srv = start_smtpd(main_cf, real_queue=True)
    raw = Raw(srv.host, srv.port, source="127.0.0.2")
    play(raw, "oxipost")
    raw.close()
    ours = [m.group() for ln in srv.log if (m := re.search(r"warning: stripping.*", ln))]
    assert (
        ours
        == theirs
        == [f"warning: stripping too many comments from address: x@y.example ({'c' * 87}..."]
    )


@pytest.mark.parametrize("smtputf8", ["no", "yes"])
def test_unmatched_extension_kept_for_a_key_folded_in_unicode_as_postfix(
    start_smtpd: Any, smtputf8: str
) -> None:
    """A virtual alias found without the recipient's extension keeps it
    (propagate_unmatched_extensions) when the key that answered is the address without
    it, folded as the table was asked: in ASCII only, so ÉTÉ+ext is asked as ÉtÉ@...,
    which a table folding in Unicode (smtputf8_enable = yes) finds as été@... (ours
    compared the key with Python's lowercase, été@..., and dropped the extension)."""
    setting = (
        f"smtputf8_enable = {smtputf8}\nrecipient_delimiter = +\n"
        "virtual_alias_maps = inline:{{été@example.org=x@example.net}}\n"
    )
    utf8 = " SMTPUTF8" if smtputf8 == "yes" else ""
    commands = [
        "EHLO client.example",
        f"MAIL FROM:<a@b.example>{utf8}",
        "RCPT TO:<ÉTÉ+ext@example.org>",
        "RCPT TO:<été+ext@example.org>",
        "DATA",
        "Subject: s\r\n\r\nbody\r\n.",
    ]
    seen = _same_on_both(start_smtpd, RELAY_ALL + setting, commands, 1)
    assert "recipient: x+ext@example.net" in seen, seen
    assert ("recipient: ÉTÉ+ext@example.org" in seen) == (smtputf8 == "no"), seen
